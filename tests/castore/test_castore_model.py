"""castore data model: B3Digest, nodes and Directory validation, digest and size."""

from __future__ import annotations

import base64
import contextlib

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fixtures.castore import (
    BLOB_A_DIGEST,
    DIRECTORY_COMPLICATED,
    DIRECTORY_WITH_KEEP,
    EMPTY_DIGEST,
)
from tvixmount._proto import castore_pb2 as pb
from tvixmount.castore import (
    B3Digest,
    Directory,
    DirectoryNode,
    FileNode,
    SymlinkNode,
    node_from_proto,
    node_to_proto,
)
from tvixmount.castore.nodes import rename
from tvixmount.errors import DecodeError, DigestError, ValidationError

KEEP_HEX = "8b5b5d642b646bb8ed504b0862c39413e87e57491497de7bd075953f7b83810e"


# --- B3Digest -------------------------------------------------------------


def test_digest_text_form_is_b3_base64_with_padding() -> None:
    digest = B3Digest(bytes.fromhex(KEEP_HEX))
    assert str(digest) == "b3:" + base64.b64encode(bytes.fromhex(KEEP_HEX)).decode()
    assert str(digest).endswith("=")


def test_digest_parse_inverts_str() -> None:
    digest = B3Digest.of(b"x")
    assert B3Digest.parse(str(digest)) == digest


def test_digest_parse_accepts_hex() -> None:
    assert B3Digest.parse(KEEP_HEX) == bytes.fromhex(KEEP_HEX)


def test_digest_parse_rejects_bad_base64() -> None:
    with pytest.raises(DigestError, match="bad base64"):
        B3Digest.parse("b3:not*base64")


def test_digest_parse_rejects_non_ascii_base64() -> None:
    with pytest.raises(DigestError, match="bad base64"):
        B3Digest.parse("b3:\u00e9" * 4)


def test_digest_parse_rejects_base64_of_wrong_length() -> None:
    with pytest.raises(DigestError, match="32 bytes, got 3"):
        B3Digest.parse("b3:" + base64.b64encode(b"abc").decode())


def test_digest_parse_rejects_hex_with_whitespace() -> None:
    with pytest.raises(DigestError, match="64 hex digits"):
        B3Digest.parse(" " + KEEP_HEX[1:])


def test_digest_parse_rejects_short_hex() -> None:
    with pytest.raises(DigestError, match="64 hex digits"):
        B3Digest.parse(KEEP_HEX[:62])


def test_digest_rejects_wrong_length() -> None:
    with pytest.raises(DigestError, match="32 bytes, got 31"):
        B3Digest(bytes(31))


def test_digest_of_is_blake3() -> None:
    assert B3Digest.of(b"abc") == blake3.blake3(b"abc").digest()


@given(st.text(max_size=80))
def test_digest_parse_of_random_text_gives_digest_or_digest_error(text: str) -> None:
    with contextlib.suppress(DigestError):
        B3Digest.parse(text)


# --- Directory validation -------------------------------------------------


def _file(name: bytes) -> FileNode:
    return FileNode(name, EMPTY_DIGEST, 0, False)


def _dir(name: bytes) -> DirectoryNode:
    return DirectoryNode(name, DIRECTORY_WITH_KEEP.digest(), DIRECTORY_WITH_KEEP.size())


def _link(name: bytes, target: bytes = b"target") -> SymlinkNode:
    return SymlinkNode(name, target)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (b"", "empty"),
        (b".", "'.' and '..' are not allowed"),
        (b"..", "'.' and '..' are not allowed"),
        (b"a/b", "contains '/'"),
        (b"a\0b", "contains a NUL byte"),
        (b"x" * 256, "256 bytes, at most 255"),
    ],
)
@pytest.mark.parametrize("make", [_file, _dir, _link])
def test_directory_rejects_bad_node_name(name: bytes, reason: str, make: object) -> None:
    assert callable(make)
    directory = Directory.from_nodes([make(name)])
    with pytest.raises(ValidationError, match=reason):
        directory.validate()


def test_bad_node_name_error_names_the_entry() -> None:
    with pytest.raises(ValidationError, match=r"b'bad/name'"):
        Directory.from_nodes([_file(b"bad/name")]).validate()


def test_bad_entry_error_names_its_list_and_position() -> None:
    directory = Directory.from_nodes([_file(b"a"), _file(b"b"), _file(b"")])
    with pytest.raises(ValidationError, match=r"^files\[0\]: invalid node name: empty"):
        directory.validate()


def test_node_name_of_255_bytes_is_accepted() -> None:
    Directory.from_nodes([_file(b"x" * 255)]).validate()


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (b"", "empty target"),
        (b"a\0b", "target contains NUL"),
        (b"t" * 4096, "target is 4096 bytes, at most 4095"),
    ],
)
def test_directory_rejects_bad_symlink_target_naming_the_entry(target: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=f"symlink b'link': {reason}"):
        Directory.from_nodes([_link(b"link", target)]).validate()


def test_symlink_target_of_4095_bytes_is_accepted() -> None:
    Directory.from_nodes([_link(b"link", b"t" * 4095)]).validate()


@pytest.mark.parametrize(
    ("field", "make"), [("directories", _dir), ("files", _file), ("symlinks", _link)]
)
def test_directory_rejects_unsorted_list(field: str, make: object) -> None:
    assert callable(make)
    directory = Directory(**{field: (make(b"b"), make(b"a"))})
    with pytest.raises(ValidationError, match=f"{field} not sorted: b'a' after b'b'"):
        directory.validate()


@pytest.mark.parametrize(
    ("field", "make"), [("directories", _dir), ("files", _file), ("symlinks", _link)]
)
def test_directory_rejects_duplicate_within_a_list(field: str, make: object) -> None:
    assert callable(make)
    directory = Directory(**{field: (make(b"a"), make(b"a"))})
    with pytest.raises(ValidationError, match=f"duplicate name b'a' in {field}"):
        directory.validate()


@pytest.mark.parametrize(
    ("first", "second"), [(_dir, _file), (_file, _link), (_dir, _link)], ids=["d-f", "f-l", "d-l"]
)
def test_directory_rejects_duplicate_across_lists(first: object, second: object) -> None:
    assert callable(first) and callable(second)
    directory = Directory.from_nodes([first(b"same"), second(b"same")])
    with pytest.raises(ValidationError, match="duplicate name b'same' across lists"):
        directory.validate()


def test_directory_sorting_is_by_raw_bytes() -> None:
    # b"B" (0x42) sorts before b"a" (0x61) and b"\xff" after everything ASCII.
    directory = Directory(files=(_file(b"B"), _file(b"a"), _file(b"\xff")))
    directory.validate()


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_from_proto_rejects_digest_of_wrong_length_naming_the_entry(kind: str) -> None:
    if kind == "directory":
        msg = pb.Directory(directories=[pb.DirectoryNode(name=b"d", digest=bytes(31), size=1)])
    else:
        msg = pb.Directory(files=[pb.FileNode(name=b"f", digest=bytes(33), size=1)])
    with pytest.raises(ValidationError, match=r"entry b'[df]': .*32 bytes"):
        Directory.from_proto(msg)


def test_validate_rejects_plain_bytes_digest_of_wrong_length() -> None:
    node = FileNode(b"f", bytes(5), 0, False)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="entry b'f': digest is 5 bytes"):
        Directory.from_nodes([node]).validate()


def test_validate_rejects_size_beyond_uint64() -> None:
    with pytest.raises(ValidationError, match="not a uint64"):
        Directory.from_nodes([FileNode(b"f", EMPTY_DIGEST, 1 << 64, False)]).validate()


def test_each_validation_failure_has_a_distinct_message() -> None:
    broken = [
        Directory.from_nodes([_file(b"")]),
        Directory.from_nodes([_file(b".")]),
        Directory.from_nodes([_file(b"a/b")]),
        Directory.from_nodes([_file(b"a\0")]),
        Directory.from_nodes([_file(b"x" * 256)]),
        Directory.from_nodes([_link(b"l", b"")]),
        Directory.from_nodes([_link(b"l", b"\0")]),
        Directory.from_nodes([_link(b"l", b"t" * 4096)]),
        Directory(files=(_file(b"b"), _file(b"a"))),
        Directory(files=(_file(b"a"), _file(b"a"))),
        Directory.from_nodes([_file(b"a"), _link(b"a")]),
    ]
    messages = set()
    for directory in broken:
        with pytest.raises(ValidationError) as info:
            directory.validate()
        messages.add(str(info.value))
    assert len(messages) == len(broken)


# --- size and digest ------------------------------------------------------


def test_size_counts_entries_plus_child_directory_sizes() -> None:
    directory = Directory.from_nodes(
        [
            DirectoryNode(b"d1", DIRECTORY_COMPLICATED.digest(), 4),
            DirectoryNode(b"d2", DIRECTORY_WITH_KEEP.digest(), 1),
            _file(b"f"),
            _link(b"l"),
        ]
    )
    assert directory.size() == 4 + 4 + 1


def test_size_of_empty_directory_is_zero() -> None:
    assert Directory().size() == 0


def test_digest_of_empty_directory_is_blake3_of_empty_input() -> None:
    assert Directory().digest() == blake3.blake3(b"").digest()


def test_digest_is_blake3_of_the_serialized_message() -> None:
    assert (
        DIRECTORY_COMPLICATED.digest() == blake3.blake3(DIRECTORY_COMPLICATED.serialize()).digest()
    )


def test_from_nodes_sorts_each_list() -> None:
    directory = Directory.from_nodes([_file(b"b"), _link(b"c"), _file(b"a"), _dir(b"z")])
    assert [f.name for f in directory.files] == [b"a", b"b"]
    directory.validate()


def test_entries_merge_lists_by_raw_name() -> None:
    assert [n.name for n in DIRECTORY_COMPLICATED.entries()] == [b".keep", b"aa", b"keep"]


def test_lookup_finds_each_kind_and_misses_absent_names() -> None:
    assert isinstance(DIRECTORY_COMPLICATED.lookup(b"keep"), DirectoryNode)
    assert isinstance(DIRECTORY_COMPLICATED.lookup(b".keep"), FileNode)
    assert isinstance(DIRECTORY_COMPLICATED.lookup(b"aa"), SymlinkNode)
    assert DIRECTORY_COMPLICATED.lookup(b"zz") is None


def test_len_counts_all_entries() -> None:
    assert len(DIRECTORY_COMPLICATED) == 3


# --- protobuf -------------------------------------------------------------


def test_proto_round_trip_preserves_directory_and_digest() -> None:
    parsed = Directory.parse(DIRECTORY_COMPLICATED.serialize())
    assert parsed == DIRECTORY_COMPLICATED
    assert parsed.digest() == DIRECTORY_COMPLICATED.digest()


def test_parse_rejects_truncated_bytes_as_decode_error() -> None:
    with pytest.raises(DecodeError):
        Directory.parse(DIRECTORY_COMPLICATED.serialize()[:-3])


def test_parse_validates() -> None:
    msg = pb.Directory(files=[pb.FileNode(name=b"..", digest=bytes(EMPTY_DIGEST))])
    with pytest.raises(ValidationError):
        Directory.parse(msg.SerializeToString())


@pytest.mark.parametrize(
    "node",
    [
        DirectoryNode(b"d", DIRECTORY_WITH_KEEP.digest(), 1),
        FileNode(b"f", BLOB_A_DIGEST, 2, True),
        SymlinkNode(b"l", b"/nix/store/somewhereelse"),
    ],
)
def test_node_proto_round_trip(node: DirectoryNode | FileNode | SymlinkNode) -> None:
    assert node_from_proto(node_to_proto(node)) == node


def test_node_from_proto_rejects_unset_node() -> None:
    with pytest.raises(ValidationError, match="not set"):
        node_from_proto(pb.Node())


def test_node_from_proto_validates_name() -> None:
    with pytest.raises(ValidationError, match="'/'"):
        node_from_proto(pb.Node(symlink=pb.SymlinkNode(name=b"a/b", target=b"t")))


def test_rename_keeps_everything_but_the_name() -> None:
    node = FileNode(b"f", BLOB_A_DIGEST, 2, True)
    assert rename(node, b"g") == FileNode(b"g", BLOB_A_DIGEST, 2, True)


names = st.binary(min_size=1, max_size=8)
nodes = st.one_of(
    st.builds(
        lambda n, s: DirectoryNode(n, DIRECTORY_WITH_KEEP.digest(), s), names, st.integers(0, 9)
    ),
    st.builds(lambda n, x: FileNode(n, BLOB_A_DIGEST, 2, x), names, st.booleans()),
    st.builds(SymlinkNode, names, st.binary(min_size=1, max_size=8)),
)


@given(st.lists(nodes, max_size=6, unique_by=lambda n: n.name))
def test_parse_inverts_serialize_for_valid_directories(children: list[DirectoryNode]) -> None:
    directory = Directory.from_nodes(children)
    try:
        directory.validate()
    except ValidationError:
        return
    assert Directory.parse(directory.serialize()) == directory


@given(st.binary(max_size=200))
def test_parse_of_random_bytes_gives_directory_or_project_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError, ValidationError):
        Directory.parse(data)


@given(
    st.lists(
        st.sampled_from([b"\x0a", b"\x12", b"\x1a", b"\x04", b"\x20", b"\x08"])
        | st.binary(max_size=4),
        max_size=40,
    )
)
def test_parse_of_field_shaped_bytes_gives_directory_or_project_error(parts: list[bytes]) -> None:
    with contextlib.suppress(DecodeError, ValidationError):
        Directory.parse(b"".join(parts))
