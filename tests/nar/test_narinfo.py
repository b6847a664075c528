"""Narinfo parsing, formatting, fingerprints and PathInfo conversion."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from tests.fixtures.castore import DIRECTORY_COMPLICATED
from tests.nixcache import COMPRESSIONS, build_cache, requires_nix
from tvixmount import nixbase32
from tvixmount.castore.nodes import DirectoryNode
from tvixmount.errors import NarinfoError
from tvixmount.nar.narinfo import Narinfo, NixHash
from tvixmount.pathinfo.model import CAHash, PathInfo

# Verbatim from Nix 2.8 (PROTOCOL.md).
NIX_NARINFO = (
    "StorePath: /nix/store/9nfz1dd7qmd9wgxv6z94gh62n0vddgln-nixdir\n"
    "URL: nar/1lizc4xw4zba61qhqadnsrv1fvarnqyzs16ks97kiwzm0szb2ba3.nar.xz\n"
    "Compression: xz\n"
    "FileHash: sha256:1lizc4xw4zba61qhqadnsrv1fvarnqyzs16ks97kiwzm0szb2ba3\n"
    "FileSize: 256\n"
    "NarHash: sha256:1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw\n"
    "NarSize: 896\n"
    "References: \n"
    "CA: fixed:r:sha256:1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw\n"
)
NAR_HASH = nixbase32.decode("1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw")
REF_A = "00bgd045z0d4icpbc2yyz4gx48ak44la-a"
REF_B = "0c5b8vw40dy178xlpddw65q9gf1h2186-b"
SIG = "cache.example.org-1:" + base64.b64encode(bytes(range(64))).decode()


def with_lines(*extra: str, drop: tuple[str, ...] = ()) -> str:
    lines = [line for line in NIX_NARINFO.splitlines() if line.split(":")[0] not in drop]
    return "\n".join([*lines, *extra]) + "\n"


def test_nix_written_narinfo_parses():
    info = Narinfo.parse(NIX_NARINFO)
    assert str(info.store_path) == "9nfz1dd7qmd9wgxv6z94gh62n0vddgln-nixdir"
    assert info.url == "nar/1lizc4xw4zba61qhqadnsrv1fvarnqyzs16ks97kiwzm0szb2ba3.nar.xz"
    assert info.compression == "xz"
    assert info.file_size == 256
    assert info.nar_hash == NAR_HASH
    assert info.nar_size == 896
    assert info.references == ()
    assert info.ca is not None and info.ca.hash_type == CAHash.NAR_SHA256


def test_nix_written_narinfo_formats_back_verbatim():
    assert Narinfo.parse(NIX_NARINFO).format() == NIX_NARINFO


def test_bytes_input_is_accepted():
    assert Narinfo.parse(NIX_NARINFO.encode()) == Narinfo.parse(NIX_NARINFO)


def test_references_deriver_system_and_signatures_parse():
    text = with_lines(
        f"Deriver: {REF_A}.drv", "System: x86_64-linux", f"Sig: {SIG}", drop=("References",)
    ).replace("NarSize: 896", f"NarSize: 896\nReferences: {REF_B} {REF_A}")
    info = Narinfo.parse(text)
    assert [str(r) for r in info.references] == [REF_A, REF_B]
    assert str(info.deriver) == f"{REF_A}.drv"
    assert info.system == "x86_64-linux"
    assert [str(s) for s in info.signatures] == [SIG]


def test_repeated_sig_lines_are_all_kept():
    other = "other-1:" + base64.b64encode(bytes(64)).decode()
    info = Narinfo.parse(with_lines(f"Sig: {SIG}", f"Sig: {other}"))
    assert [str(s) for s in info.signatures] == [SIG, other]


def test_unknown_fields_are_tolerated_and_kept():
    info = Narinfo.parse(with_lines("FutureField: something new"))
    assert info.unknown == (("FutureField", "something new"),)
    assert "FutureField: something new\n" in info.format()


def test_missing_compression_defaults_to_bzip2_as_in_nix():
    assert Narinfo.parse(with_lines(drop=("Compression",))).compression == "bzip2"


def test_unknown_deriver_placeholder_means_no_deriver():
    assert Narinfo.parse(with_lines("Deriver: unknown-deriver")).deriver is None


@pytest.mark.parametrize(
    "encoded",
    [
        "sha256:" + NAR_HASH.hex(),
        "sha256:" + base64.b64encode(NAR_HASH).decode(),
        "sha256-" + base64.b64encode(NAR_HASH).decode(),
    ],
    ids=["base16", "base64", "sri"],
)
def test_nar_hash_in_other_encodings_is_accepted(encoded):
    text = NIX_NARINFO.replace(
        "NarHash: sha256:1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw",
        f"NarHash: {encoded}",
    )
    assert Narinfo.parse(text).nar_hash == NAR_HASH


def test_nix_hash_prints_nixbase32():
    assert str(NixHash("sha256", NAR_HASH)) == (
        "sha256:1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("garbage without colon", "line 10: expected 'Field: value'"),
        ("NarSize: 12", "line 10: duplicate NarSize (first on line 7)"),
        ("References:x", "line 10: no space after ':'"),
        ("Sig: nocolon", "line 10: signature 'nocolon': expected NAME:BASE64"),
        ("Sig: k:AAAA", "line 10: signature 'k:AAAA': 3 bytes"),
    ],
)
def test_malformed_line_is_an_error_naming_the_line(text, reason):
    with pytest.raises(NarinfoError, match=re.escape(reason)):
        Narinfo.parse(with_lines(text), source="x.narinfo")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("StorePath", "/nix/store/tooshort", "invalid StorePath"),
        ("StorePath", "/usr/9nfz1dd7qmd9wgxv6z94gh62n0vddgln-nixdir", "not in /nix/store"),
        ("NarHash", "sha256:zzzz", "invalid NarHash"),
        ("NarHash", "md5:" + "0" * 32, "must be a sha256 hash"),
        ("NarHash", "1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw", "no '<algorithm>:'"),
        ("NarSize", "-1", "invalid NarSize"),
        ("NarSize", "0", "a NAR is never empty"),
        ("FileSize", "12k", "invalid FileSize"),
        ("FileHash", "whirlpool:abc", "unknown algorithm"),
        ("References", "not-a-path", "invalid References"),
        ("CA", "fixed:r:sha256:nothash", "invalid CA"),
        ("URL", "", "invalid URL"),
        ("Compression", "", "invalid Compression"),
    ],
)
def test_invalid_field_value_is_an_error_naming_field_and_line(field, value, reason):
    text = with_lines(f"{field}: {value}", drop=(field,))
    with pytest.raises(NarinfoError, match=reason) as caught:
        Narinfo.parse(text, source="x.narinfo")
    assert str(caught.value).startswith("x.narinfo: line ")


@pytest.mark.parametrize("field", ["StorePath", "URL", "NarHash", "NarSize"])
def test_missing_required_field_is_an_error(field):
    with pytest.raises(NarinfoError, match=f"missing required field {field}"):
        Narinfo.parse(with_lines(drop=(field,)))


def test_non_utf8_narinfo_is_an_error():
    with pytest.raises(NarinfoError, match="not UTF-8"):
        Narinfo.parse(NIX_NARINFO.encode() + b"X: \xff\n")


def test_fingerprint_has_nix_layout_with_sorted_absolute_references():
    text = NIX_NARINFO.replace("References: ", f"References: {REF_B} {REF_A}")
    assert Narinfo.parse(text).fingerprint() == (
        b"1;/nix/store/9nfz1dd7qmd9wgxv6z94gh62n0vddgln-nixdir;"
        b"sha256:1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw;896;"
        b"/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-a,/nix/store/0c5b8vw40dy178xlpddw65q9gf1h2186-b"
    )


def test_fingerprint_uses_nixbase32_whatever_the_narinfo_encoding():
    text = NIX_NARINFO.replace(
        "NarHash: sha256:1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw",
        f"NarHash: sha256:{NAR_HASH.hex()}",
    )
    assert Narinfo.parse(text).fingerprint() == Narinfo.parse(NIX_NARINFO).fingerprint()


def test_to_pathinfo_carries_the_nix_metadata():
    text = with_lines(f"Deriver: {REF_A}.drv", f"Sig: {SIG}").replace(
        "References: ", f"References: {REF_A}"
    )
    narinfo = Narinfo.parse(text)
    node = DirectoryNode(b"whatever", DIRECTORY_COMPLICATED.digest(), DIRECTORY_COMPLICATED.size())
    info = narinfo.to_pathinfo(node)
    assert info.node.name == b"9nfz1dd7qmd9wgxv6z94gh62n0vddgln-nixdir"
    assert info.references == (nixbase32.decode(REF_A[:32]),)
    assert info.narinfo.reference_names == (REF_A,)
    assert info.narinfo.nar_sha256 == NAR_HASH
    assert info.narinfo.nar_size == 896
    assert [str(s) for s in info.narinfo.signatures] == [SIG]
    assert info.narinfo.deriver is not None and info.narinfo.deriver.name == "a"
    assert info.narinfo.ca == narinfo.ca
    assert PathInfo.parse(info.serialize()) == info


def test_file_hash_hasher_matches_algorithm():
    digest = hashlib.sha256(b"x").digest()
    hasher = NixHash("sha256", digest).hasher()
    hasher.update(b"x")
    assert hasher.digest() == digest


@requires_nix
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_every_narinfo_nix_writes_parses_and_formats_back(tmp_path: Path, compression):
    cache = build_cache(tmp_path, compression)
    files = sorted(cache.dir.glob("*.narinfo"))
    assert len(files) == len(cache.paths)
    for file in files:
        text = file.read_text()
        narinfo = Narinfo.parse(text, source=str(file))
        assert narinfo.compression == compression
        assert narinfo.format() == text
