"""PathInfo: validation rules of PROTOCOL.md, protobuf round trip, CA text."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fixtures.castore import BLOB_A_DIGEST, DIRECTORY_WITH_KEEP
from tvixmount import nixbase32
from tvixmount._proto import pathinfo_pb2 as pb
from tvixmount.castore import DirectoryNode, FileNode, SymlinkNode
from tvixmount.errors import DecodeError, ValidationError
from tvixmount.pathinfo import CAHash, ContentAddress, NarInfo, PathInfo, Signature
from tvixmount.storepath import StorePath

ROOT = b"00bgd045z0d4icpbc2yyz4gx48ak44la-net-tools-1.60"
REF = StorePath.parse("0c5b8vw40dy178xlpddw65q9gf1h2186-glibc-2.38")
NAR_SHA256 = bytes(range(32))
CA_TEXT = "fixed:r:sha256:1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw"


def _info(**narinfo: object) -> PathInfo:
    fields: dict[str, object] = {
        "nar_size": 896,
        "nar_sha256": NAR_SHA256,
        "reference_names": (str(REF),),
    }
    fields.update(narinfo)
    return PathInfo(
        node=DirectoryNode(ROOT, DIRECTORY_WITH_KEEP.digest(), DIRECTORY_WITH_KEEP.size()),
        references=(REF.digest,),
        narinfo=NarInfo(**fields),  # type: ignore[arg-type]
    )


def test_valid_path_info_validates_to_its_store_path() -> None:
    assert _info().validate() == StorePath.from_basename(ROOT)


def test_store_path_and_reference_paths() -> None:
    info = _info()
    assert str(info.store_path).encode() == ROOT
    assert info.reference_paths == [REF]


def test_rejects_root_name_that_is_not_a_store_path() -> None:
    info = dataclasses.replace(_info(), node=FileNode(b"not-a-store-path", BLOB_A_DIGEST, 2))
    with pytest.raises(ValidationError, match="root node name is not a store path"):
        info.validate()


def test_rejects_invalid_root_node() -> None:
    info = dataclasses.replace(_info(), node=SymlinkNode(ROOT, b""))
    with pytest.raises(ValidationError, match="empty target"):
        info.validate()


def test_rejects_reference_of_wrong_length() -> None:
    info = dataclasses.replace(_info(), references=(REF.digest[:19],))
    with pytest.raises(ValidationError, match="reference 0 is not 20 bytes"):
        info.validate()


def test_rejects_more_references_than_names() -> None:
    info = dataclasses.replace(_info(), references=(REF.digest, REF.digest))
    with pytest.raises(ValidationError, match="2 references but 1 reference names"):
        info.validate()


def test_rejects_more_names_than_references() -> None:
    info = dataclasses.replace(_info(), references=())
    with pytest.raises(ValidationError, match="0 references but 1 reference names"):
        info.validate()


def test_rejects_reference_name_with_other_digest() -> None:
    other = StorePath(bytes(20), "glibc-2.38")
    with pytest.raises(ValidationError, match="does not match reference 0"):
        _info(reference_names=(str(other),)).validate()


def test_rejects_reference_name_that_is_not_a_store_path() -> None:
    with pytest.raises(ValidationError, match="reference name 0"):
        _info(reference_names=("glibc",)).validate()


@pytest.mark.parametrize("size", [0, 20, 31, 33, 64])
def test_rejects_nar_sha256_not_32_bytes(size: int) -> None:
    with pytest.raises(ValidationError, match=f"nar_sha256 is {size} bytes, expected 32"):
        _info(nar_sha256=bytes(size)).validate()


def test_from_proto_rejects_missing_node() -> None:
    msg = _info().to_proto()
    msg.ClearField("node")
    with pytest.raises(ValidationError, match="no root node"):
        PathInfo.from_proto(msg)


def test_from_proto_rejects_missing_narinfo() -> None:
    msg = _info().to_proto()
    msg.ClearField("narinfo")
    with pytest.raises(ValidationError, match="no narinfo"):
        PathInfo.from_proto(msg)


def test_from_proto_rejects_unset_node_oneof() -> None:
    msg = _info().to_proto()
    msg.node.Clear()
    msg.node.SetInParent()
    with pytest.raises(ValidationError, match="node is not set"):
        PathInfo.from_proto(msg)


def test_from_proto_rejects_invalid_deriver() -> None:
    msg = _info().to_proto()
    msg.narinfo.deriver.name = "bad name"
    msg.narinfo.deriver.digest = bytes(20)
    with pytest.raises(ValidationError, match="invalid deriver"):
        PathInfo.from_proto(msg)


def test_from_proto_rejects_unknown_ca_hash_type() -> None:
    msg = _info().to_proto()
    msg.narinfo.ca.type = 42  # type: ignore[assignment]
    msg.narinfo.ca.digest = NAR_SHA256
    with pytest.raises(ValidationError, match="unknown CA hash type 42"):
        PathInfo.from_proto(msg)


def test_from_proto_rejects_ca_digest_of_wrong_length() -> None:
    msg = _info().to_proto()
    msg.narinfo.ca.type = pb.NARInfo.CA.NAR_SHA256
    msg.narinfo.ca.digest = bytes(20)
    with pytest.raises(ValidationError, match="digest is 20 bytes, expected 32"):
        PathInfo.from_proto(msg)


def test_proto_round_trip_of_a_full_path_info() -> None:
    info = _info(
        signatures=(Signature("cache.example.org-1", bytes(64)),),
        deriver=StorePath.parse("0c5b8vw40dy178xlpddw65q9gf1h2186-net-tools-1.60"),
        ca=ContentAddress.parse(CA_TEXT),
    )
    assert PathInfo.parse(info.serialize()) == info


def test_proto_round_trip_of_a_minimal_path_info() -> None:
    info = _info(reference_names=())
    info = dataclasses.replace(info, references=())
    assert PathInfo.parse(info.serialize()) == info


def test_deriver_is_stored_by_name_and_digest() -> None:
    deriver = StorePath.parse("0c5b8vw40dy178xlpddw65q9gf1h2186-net-tools-1.60")
    msg = _info(deriver=deriver).to_proto()
    assert msg.narinfo.deriver.name == "net-tools-1.60"
    assert msg.narinfo.deriver.digest == deriver.digest


def test_proto_carries_references_as_raw_digests() -> None:
    assert list(_info().to_proto().references) == [REF.digest]


def test_parse_rejects_garbage_as_decode_error() -> None:
    with pytest.raises(DecodeError):
        PathInfo.parse(b"\xff\xff\xff")


def test_signature_text_form() -> None:
    assert str(Signature("k-1", b"\x00\x01")) == "k-1:AAE="


# --- content addresses -----------------------------------------------------


def test_ca_parse_fixed_recursive_sha256() -> None:
    ca = ContentAddress.parse(CA_TEXT)
    assert ca.hash_type is CAHash.NAR_SHA256
    assert ca.digest == nixbase32.decode(CA_TEXT.rpartition(":")[2])


def test_ca_format_inverts_parse() -> None:
    assert str(ContentAddress.parse(CA_TEXT)) == CA_TEXT


def test_ca_parse_text_sha256() -> None:
    text = "text:sha256:" + nixbase32.encode(NAR_SHA256)
    ca = ContentAddress.parse(text)
    assert ca == ContentAddress(CAHash.TEXT_SHA256, NAR_SHA256)
    assert str(ca) == text


def test_ca_parse_flat_sha1() -> None:
    text = "fixed:sha1:" + nixbase32.encode(bytes(20))
    assert ContentAddress.parse(text) == ContentAddress(CAHash.FLAT_SHA1, bytes(20))


def test_ca_parse_accepts_hex_hash() -> None:
    assert ContentAddress.parse("fixed:r:sha256:" + NAR_SHA256.hex()).digest == NAR_SHA256


@pytest.mark.parametrize(
    ("hash_type", "prefix"),
    [
        (CAHash.NAR_SHA256, "fixed:r:sha256"),
        (CAHash.NAR_SHA512, "fixed:r:sha512"),
        (CAHash.FLAT_MD5, "fixed:md5"),
        (CAHash.TEXT_SHA256, "text:sha256"),
    ],
)
def test_ca_prefixes(hash_type: CAHash, prefix: str) -> None:
    assert hash_type.prefix == prefix


def test_ca_hash_enum_matches_the_protobuf_enum() -> None:
    # The protobuf enum itself is pinned against PROTOCOL.md in test_protos.py.
    assert {h.name: h.value for h in CAHash} == dict(pb.NARInfo.CA.Hash.items())


@pytest.mark.parametrize(
    "text",
    [
        "fixed:r:sha256:" + "e" * 52,
        "fixed:r:sha256:" + "0" * 51,
        "fixed:r:sha1:" + nixbase32.encode(NAR_SHA256),
        "sha256:" + nixbase32.encode(NAR_SHA256),
        "fixed:r:blake3:" + nixbase32.encode(NAR_SHA256),
        "",
    ],
)
def test_ca_parse_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValidationError, match="CA"):
        ContentAddress.parse(text)


def test_ca_rejects_digest_of_wrong_length() -> None:
    with pytest.raises(ValidationError, match="expected 32"):
        ContentAddress(CAHash.NAR_SHA256, bytes(20))


@given(st.text(max_size=120))
def test_ca_parse_of_random_text_gives_value_or_validation_error(text: str) -> None:
    with contextlib.suppress(ValidationError):
        ContentAddress.parse(text)


@given(st.binary(max_size=300))
def test_parse_of_random_bytes_gives_path_info_or_project_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError, ValidationError):
        PathInfo.parse(data)


@given(st.binary(max_size=64), st.integers(0, len(_info().serialize())))
def test_parse_of_corrupted_path_info_gives_value_or_project_error(
    noise: bytes, position: int
) -> None:
    data = _info(ca=ContentAddress.parse(CA_TEXT)).serialize()
    with contextlib.suppress(DecodeError, ValidationError):
        PathInfo.parse(data[:position] + noise + data[position + len(noise) :])
