"""Pin the tvix fixture set against PROTOCOL.md's table."""

from __future__ import annotations

import pytest

from tests.fixtures import castore as fx
from tvixmount.castore import B3Digest, DirectoryNode, FileNode, SymlinkNode
from tvixmount.storepath import StorePath


@pytest.mark.parametrize(
    ("blob", "constant", "hex_digest"),
    [
        (
            fx.EMPTY_BLOB,
            fx.EMPTY_DIGEST,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        ),
        (
            fx.HELLOWORLD_BLOB,
            fx.HELLOWORLD_DIGEST,
            "5ca7815adcb484e9a136c11efe69c1d530176d549b5d18d038eb5280b4b3470c",
        ),
        (
            fx.BLOB_A,
            fx.BLOB_A_DIGEST,
            "7b7015bb92cf0b318037702a6cdd81dee41224f734684c2c122cd6359cb1ee63",
        ),
        (
            fx.BLOB_B,
            fx.BLOB_B_DIGEST,
            "a82c5154a7a0c262c6fdb929a317585646f8fbcf80326d0a7b8747edaf2d99d2",
        ),
    ],
    ids=["EMPTY", "HELLOWORLD", "BLOB_A", "BLOB_B"],
)
def test_blob_digest_is_pinned(blob: bytes, constant: B3Digest, hex_digest: str) -> None:
    assert B3Digest.of(blob).hex() == hex_digest
    assert constant.hex() == hex_digest


def test_blob_sizes() -> None:
    assert [len(b) for b in fx.BLOBS] == [0, 12, 2, 1_044_480]


def test_helloworld_content() -> None:
    assert fx.HELLOWORLD_BLOB == b"Hello World!"


def test_blob_b_is_bytes_0_to_254_repeated() -> None:
    assert fx.BLOB_B[:255] == bytes(range(255))
    assert fx.BLOB_B[:255] * 4096 == fx.BLOB_B


def test_directory_with_keep_digest_and_size() -> None:
    assert fx.DIRECTORY_WITH_KEEP.digest().hex() == (
        "8b5b5d642b646bb8ed504b0862c39413e87e57491497de7bd075953f7b83810e"
    )
    assert fx.DIRECTORY_WITH_KEEP.size() == 1


def test_directory_with_keep_text_digest() -> None:
    assert str(fx.DIRECTORY_WITH_KEEP.digest()) == "b3:i1tdZCtka7jtUEsIYsOUE+h+V0kUl9570HWVP3uDgQ4="


def test_directory_complicated_digest_and_size() -> None:
    assert fx.DIRECTORY_COMPLICATED.digest().hex() == (
        "3f951a15afd586fb3121ef4d13d582e811ce0e5a7f21c0497fd87490e9e2355a"
    )
    assert fx.DIRECTORY_COMPLICATED.size() == 4


def test_fixture_directories_are_valid() -> None:
    for directory in fx.DIRECTORIES:
        directory.validate()


def test_directories_are_leaves_first() -> None:
    assert fx.DIRECTORIES == (fx.DIRECTORY_WITH_KEEP, fx.DIRECTORY_COMPLICATED)


def test_seven_root_names() -> None:
    assert [n.name for n in fx.ROOT_NODES] == [
        b"00000000000000000000000000000000-test",
        b"11111111111111111111111111111111-test",
        b"22222222222222222222222222222222-test",
        b"33333333333333333333333333333333-test",
        b"44444444444444444444444444444444-test",
        b"55555555555555555555555555555555-test",
        b"66666666666666666666666666666666-test",
    ]


def test_root_names_are_store_paths() -> None:
    for node in fx.ROOT_NODES:
        assert str(StorePath.from_basename(node.name)).encode() == node.name


def test_root_nodes_point_at_the_right_content() -> None:
    by_name = {n.name: n for n in fx.ROOT_NODES}
    assert by_name[fx.ROOT_BLOB_A] == FileNode(fx.ROOT_BLOB_A, fx.BLOB_A_DIGEST, 2, False)
    assert by_name[fx.ROOT_BLOB_B] == FileNode(fx.ROOT_BLOB_B, fx.BLOB_B_DIGEST, 1_044_480, False)
    assert by_name[fx.ROOT_HELLOWORLD_EXECUTABLE] == FileNode(
        fx.ROOT_HELLOWORLD_EXECUTABLE, fx.HELLOWORLD_DIGEST, 12, True
    )
    assert by_name[fx.ROOT_SYMLINK_TO_A] == SymlinkNode(
        fx.ROOT_SYMLINK_TO_A, b"00000000000000000000000000000000-test"
    )
    assert by_name[fx.ROOT_SYMLINK_ABSOLUTE] == SymlinkNode(
        fx.ROOT_SYMLINK_ABSOLUTE, b"/nix/store/somewhereelse"
    )
    assert by_name[fx.ROOT_DIRECTORY_WITH_KEEP] == DirectoryNode(
        fx.ROOT_DIRECTORY_WITH_KEEP, fx.DIRECTORY_WITH_KEEP.digest(), 1
    )
    assert by_name[fx.ROOT_DIRECTORY_COMPLICATED] == DirectoryNode(
        fx.ROOT_DIRECTORY_COMPLICATED, fx.DIRECTORY_COMPLICATED.digest(), 4
    )


def test_directory_complicated_entries() -> None:
    assert fx.DIRECTORY_COMPLICATED.directories == (
        DirectoryNode(b"keep", fx.DIRECTORY_WITH_KEEP.digest(), 1),
    )
    assert fx.DIRECTORY_COMPLICATED.files == (FileNode(b".keep", fx.EMPTY_DIGEST, 0, False),)
    assert fx.DIRECTORY_COMPLICATED.symlinks == (SymlinkNode(b"aa", b"/nix/store/somewhereelse"),)
