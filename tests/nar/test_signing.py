"""Ed25519 narinfo signatures: key parsing, verification, signing; Nix as the oracle."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from tests.nixcache import build_cache, generate_key, requires_nix
from tvixmount.errors import SigningKeyError
from tvixmount.nar.narinfo import Narinfo
from tvixmount.nar.signing import (
    PublicKey,
    SecretKey,
    parse_public_keys,
    sign_narinfo,
    valid_signers,
)

NARINFO = Narinfo.parse(
    "StorePath: /nix/store/9nfz1dd7qmd9wgxv6z94gh62n0vddgln-nixdir\n"
    "URL: nar/x.nar\n"
    "Compression: none\n"
    "NarHash: sha256:1sy94p3ilc7c9q0qk5xvrwyy7n1gf44yh070xj2y490np8r23dfw\n"
    "NarSize: 896\n"
    "References: 00bgd045z0d4icpbc2yyz4gx48ak44la-a\n"
)


def test_secret_key_text_round_trips():
    key = SecretKey.generate("test-1")
    assert str(SecretKey.parse(str(key))) == str(key)


def test_public_key_text_round_trips():
    public = SecretKey.generate("test-1").public_key()
    assert PublicKey.parse(str(public)) == public


def test_signed_narinfo_verifies_with_the_matching_key():
    key = SecretKey.generate("test-1")
    assert valid_signers(sign_narinfo(NARINFO, key), [key.public_key()]) == ["test-1"]


def test_signature_does_not_verify_with_another_key_of_the_same_name():
    key, other = SecretKey.generate("test-1"), SecretKey.generate("test-1")
    assert valid_signers(sign_narinfo(NARINFO, key), [other.public_key()]) == []


def test_signature_only_counts_for_the_key_it_names():
    key = SecretKey.generate("test-1")
    renamed = PublicKey("test-2", key.public_key().key)
    assert valid_signers(sign_narinfo(NARINFO, key), [renamed]) == []


def test_signature_breaks_when_a_fingerprinted_field_changes():
    key = SecretKey.generate("test-1")
    signed = sign_narinfo(NARINFO, key)
    tampered = dataclasses.replace(signed, nar_size=signed.nar_size + 8)
    assert valid_signers(tampered, [key.public_key()]) == []


def test_signing_twice_with_one_key_adds_one_signature():
    key = SecretKey.generate("test-1")
    assert len(sign_narinfo(sign_narinfo(NARINFO, key), key).signatures) == 1


def test_public_keys_split_on_spaces_and_commas_without_duplicates():
    a, b = (SecretKey.generate(n).public_key() for n in ("a", "b"))
    assert parse_public_keys([f"{a} {b}", f"{b},{a}"]) == (a, b)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no-colon", "expected NAME:BASE64"),
        (":" + base64.b64encode(bytes(32)).decode(), "expected NAME:BASE64"),
        ("k:not base64!", "bad base64"),
        ("k:" + base64.b64encode(bytes(31)).decode(), "public key 'k': 31 bytes, expected 32"),
    ],
)
def test_bad_public_key_is_a_clear_error(text, reason):
    with pytest.raises(SigningKeyError, match=reason):
        PublicKey.parse(text)


def test_secret_key_of_public_key_length_is_rejected():
    with pytest.raises(SigningKeyError, match="secret key 'k': 32 bytes, expected 64"):
        SecretKey.parse("k:" + base64.b64encode(bytes(32)).decode())


def test_secret_key_with_mismatched_public_half_is_rejected():
    raw = base64.b64decode(str(SecretKey.generate("k")).split(":")[1])
    broken = "k:" + base64.b64encode(raw[:32] + bytes(32)).decode()
    with pytest.raises(SigningKeyError, match="public half does not match"):
        SecretKey.parse(broken)


@requires_nix
def test_nix_generated_keys_parse_and_pair(tmp_path: Path):
    key = generate_key(tmp_path, "nixkey-1")
    assert str(SecretKey.parse(key.secret).public_key()) == key.public


@requires_nix
def test_nix_signatures_verify_including_references(tmp_path: Path):
    key = generate_key(tmp_path, "nixkey-1")
    cache = build_cache(tmp_path, "none", key=key)
    public = PublicKey.parse(key.public)
    referring = [n for n in cache.narinfos.values() if n.references]
    assert referring, "the cache should hold a path with references"
    for narinfo in cache.narinfos.values():
        assert valid_signers(narinfo, [public]) == ["nixkey-1"]


@requires_nix
def test_our_signature_equals_the_one_nix_made(tmp_path: Path):
    key = generate_key(tmp_path, "nixkey-1")
    cache = build_cache(tmp_path, "none", key=key)
    for narinfo in cache.narinfos.values():
        unsigned = dataclasses.replace(narinfo, signatures=())
        assert sign_narinfo(unsigned, SecretKey.parse(key.secret)).signatures == (
            narinfo.signatures
        )
