"""StorePath: parsing, each rejection reason, formatting, order, and Nix's path computation."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tvixmount import nixbase32
from tvixmount.errors import StorePathError
from tvixmount.storepath import (
    MAX_NAME_LEN,
    STORE_DIR,
    StorePath,
    compress_hash,
    from_nar_hash,
    make_store_path,
)

HASH = "00bgd045z0d4icpbc2yyz4gx48ak44la"
HASH_BYTES = bytes.fromhex("8a12321522fd91efbd60ebb2481af88580f61600")
BASENAME = f"{HASH}-net-tools-1.60_p20170221182432"

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-_?=."

requires_nix = pytest.mark.skipif(
    shutil.which("nix-store") is None, reason="nix-store (Debian package nix-bin) not installed"
)


def test_from_basename_splits_digest_and_name() -> None:
    path = StorePath.from_basename(BASENAME)
    assert path.digest == HASH_BYTES
    assert path.name == "net-tools-1.60_p20170221182432"


def test_from_basename_accepts_ascii_bytes() -> None:
    assert StorePath.from_basename(BASENAME.encode()) == StorePath.from_basename(BASENAME)


def test_parse_accepts_absolute_path() -> None:
    assert StorePath.parse(f"{STORE_DIR}/{BASENAME}") == StorePath.parse(BASENAME)


def test_str_is_the_basename() -> None:
    assert str(StorePath.parse(BASENAME)) == BASENAME


def test_absolute_is_under_the_store_dir() -> None:
    assert StorePath.parse(BASENAME).absolute == f"/nix/store/{BASENAME}"


def test_name_may_start_with_a_dot() -> None:
    assert StorePath.parse(f"{HASH}-.dotfile").name == ".dotfile"


def test_name_of_maximum_length_is_accepted() -> None:
    assert len(StorePath.parse(f"{HASH}-{'a' * MAX_NAME_LEN}").name) == 211


def test_rejects_too_short() -> None:
    with pytest.raises(StorePathError, match="too short"):
        StorePath.parse(HASH + "-")


def test_rejects_missing_dash() -> None:
    with pytest.raises(StorePathError, match="missing '-'"):
        StorePath.parse(HASH + "_foo")


def test_rejects_bad_digest() -> None:
    with pytest.raises(StorePathError, match="bad digest"):
        StorePath.parse("e" * 32 + "-foo")


def test_rejects_bad_name_character_naming_its_position() -> None:
    with pytest.raises(StorePathError, match=r"bad character '!' at position 3"):
        StorePath.parse(f"{HASH}-foo!bar")


def test_rejects_name_too_long() -> None:
    with pytest.raises(StorePathError, match="212 bytes long, at most 211"):
        StorePath.parse(f"{HASH}-{'a' * (MAX_NAME_LEN + 1)}")


def test_rejects_empty_name() -> None:
    with pytest.raises(StorePathError, match="empty"):
        StorePath(HASH_BYTES, "")


def test_rejects_digest_of_wrong_length() -> None:
    with pytest.raises(StorePathError, match="20 bytes"):
        StorePath(bytes(19), "foo")


def test_rejects_non_ascii_bytes() -> None:
    with pytest.raises(StorePathError, match="not ASCII"):
        StorePath.from_basename(HASH.encode() + "-f\u00f6o".encode())


def test_rejects_absolute_path_outside_the_store() -> None:
    with pytest.raises(StorePathError, match="not in /nix/store"):
        StorePath.parse(f"/gnu/store/{BASENAME}")


def test_rejects_absolute_path_with_subpath() -> None:
    with pytest.raises(StorePathError, match="subpath"):
        StorePath.parse(f"{STORE_DIR}/{BASENAME}/bin")


def test_reasons_are_distinct() -> None:
    bad = [
        HASH + "-",
        HASH + "_foo",
        "e" * 32 + "-foo",
        f"{HASH}-foo!bar",
        f"{HASH}-{'a' * 212}",
    ]
    messages = set()
    for text in bad:
        with pytest.raises(StorePathError) as info:
            StorePath.parse(text)
        # Drop the quoted input so only the reason is compared.
        messages.add(re.sub(r"'[^']*'", "", str(info.value)))
    assert len(messages) == len(bad)


def test_equal_paths_hash_equally() -> None:
    a = StorePath.parse(BASENAME)
    b = StorePath(bytearray(HASH_BYTES), a.name)  # type: ignore[arg-type]
    assert a == b
    assert len({a, b}) == 1


def test_order_follows_basename_text() -> None:
    texts = [f"{HASH}-b", f"{HASH}-a", f"{'1' * 32}-z", f"{'0' * 32}-zz", f"{HASH}-A"]
    assert [str(p) for p in sorted(StorePath.parse(t) for t in texts)] == sorted(texts)


def test_comparison_with_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        _ = StorePath.parse(BASENAME) < BASENAME


def test_parse_with_subpath_of_a_basename() -> None:
    path, parts = StorePath.parse_with_subpath(f"{BASENAME}/bin/ls")
    assert path == StorePath.parse(BASENAME)
    assert parts == ("bin", "ls")


def test_parse_with_subpath_of_an_absolute_path_drops_empty_components() -> None:
    path, parts = StorePath.parse_with_subpath(f"{STORE_DIR}/{BASENAME}//share/")
    assert path == StorePath.parse(BASENAME)
    assert parts == ("share",)


def test_parse_with_subpath_without_subpath() -> None:
    assert StorePath.parse_with_subpath(BASENAME) == (StorePath.parse(BASENAME), ())


@pytest.mark.parametrize("component", [".", ".."])
def test_parse_with_subpath_rejects_dot_components(component: str) -> None:
    with pytest.raises(StorePathError, match="not allowed"):
        StorePath.parse_with_subpath(f"{BASENAME}/{component}/x")


def test_parse_with_subpath_rejects_other_store_dir() -> None:
    with pytest.raises(StorePathError, match="not in /nix/store"):
        StorePath.parse_with_subpath(f"/tmp/{BASENAME}/x")


def test_compress_hash_folds_by_xor() -> None:
    data = bytes(range(32))
    expected = bytes(data[i] ^ (data[i + 20] if i + 20 < 32 else 0) for i in range(20))
    assert compress_hash(data) == expected


def test_make_store_path_follows_the_fingerprint_rule() -> None:
    inner = "ab" * 32
    fingerprint = f"source:sha256:{inner}:/nix/store:foo"
    expected = compress_hash(hashlib.sha256(fingerprint.encode()).digest())
    assert make_store_path("source", inner, "foo") == StorePath(expected, "foo")


def test_make_store_path_rejects_bad_name() -> None:
    with pytest.raises(StorePathError, match="bad character"):
        make_store_path("source", "00" * 32, "a b")


def test_from_nar_hash_matches_narinfo_from_nix() -> None:
    # PROTOCOL.md's verbatim narinfo: NarHash and StorePath of one `nix copy`.
    nar_sha256 = nixbase32.decode("1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw")
    path = from_nar_hash(nar_sha256, "nixdir")
    assert path.absolute == "/nix/store/9nfz1dd7qmd9wgxv6z94gh62n0vddgln-nixdir"


store_names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=MAX_NAME_LEN)


@given(st.binary(min_size=20, max_size=20), store_names)
def test_parse_inverts_str(digest: bytes, name: str) -> None:
    path = StorePath(digest, name)
    assert StorePath.parse(str(path)) == path
    assert StorePath.parse(path.absolute) == path


@given(st.text(max_size=260))
def test_parse_of_random_text_gives_store_path_or_store_path_error(text: str) -> None:
    try:
        path = StorePath.parse(text)
    except StorePathError:
        return
    assert str(path) in text


@given(st.from_regex(r"[0-9a-z]{32}-[ -~]{0,215}", fullmatch=True))
def test_parse_of_near_miss_text_gives_store_path_or_store_path_error(text: str) -> None:
    try:
        path = StorePath.parse(text)
    except StorePathError:
        return
    assert str(path) == text


@given(st.binary(max_size=260))
def test_from_basename_of_random_bytes_gives_store_path_or_store_path_error(data: bytes) -> None:
    try:
        path = StorePath.from_basename(data)
    except StorePathError:
        return
    assert str(path).encode() == data


def _build_tree(root: Path) -> None:
    (root / "nested" / "deeper").mkdir(parents=True)  # creates root too
    (root / "empty-dir").mkdir()
    (root / "empty-file").write_bytes(b"")
    (root / "nested" / "deeper" / "data.txt").write_bytes(b"hello\n" * 100)
    script = root / "nested" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    os.symlink("nested/deeper/data.txt", root / "relative-link")
    os.symlink("/etc/hostname", root / "absolute-link")


def _regular_file(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def _executable(path: Path) -> None:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


@requires_nix
@pytest.mark.parametrize(
    ("name", "build"),
    [("oracle-tree", _build_tree), ("data.bin", _regular_file), ("tool", _executable)],
    ids=["directory", "file", "executable"],
)
def test_from_nar_hash_equals_nix_store_add(
    tmp_path: Path, name: str, build: Callable[[Path], None]
) -> None:
    target = tmp_path / name
    build(target)
    added = subprocess.run(
        ["nix-store", "--add", str(target)], check=True, capture_output=True, text=True
    ).stdout.strip()
    nar = subprocess.run(
        ["nix-store", "--dump", str(target)], check=True, capture_output=True
    ).stdout
    computed = from_nar_hash(hashlib.sha256(nar).digest(), name)
    assert computed.absolute == added
