"""nixbase32: the PROTOCOL.md vectors, each rejection reason, and round trips."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tvixmount import nixbase32
from tvixmount.errors import Nixbase32Error

VECTORS = [
    ("", ""),
    ("0z", "1f"),
    ("00bgd045z0d4icpbc2yyz4gx48ak44la", "8a12321522fd91efbd60ebb2481af88580f61600"),
    (
        "0c5b8vw40dy178xlpddw65q9gf1h2186jcc3p4swinwggbllv8mk",
        "b3a24de97a8fdbc835b9833169501030b8977031bcb54b3b3ac13740f846ab30",
    ),
]


@pytest.mark.parametrize(("text", "hex_bytes"), VECTORS)
def test_encode_matches_vector(text: str, hex_bytes: str) -> None:
    assert nixbase32.encode(bytes.fromhex(hex_bytes)) == text


@pytest.mark.parametrize(("text", "hex_bytes"), VECTORS)
def test_decode_matches_vector(text: str, hex_bytes: str) -> None:
    assert nixbase32.decode(text) == bytes.fromhex(hex_bytes)


def test_twenty_bytes_encode_to_thirty_two_characters() -> None:
    assert nixbase32.encoded_len(20) == 32
    assert len(nixbase32.encode(bytes(20))) == 32


def test_alphabet_omits_e_o_u_t() -> None:
    assert len(nixbase32.ALPHABET) == 32
    assert not set("eout") & set(nixbase32.ALPHABET)


@pytest.mark.parametrize("text", ["zz", "c0"])
def test_decode_rejects_non_zero_trailing_bits(text: str) -> None:
    with pytest.raises(Nixbase32Error, match="trailing bits"):
        nixbase32.decode(text)


@pytest.mark.parametrize("text", ["0", "0zz", "000"])
def test_decode_rejects_bad_length(text: str) -> None:
    with pytest.raises(Nixbase32Error, match="length"):
        nixbase32.decode(text)


@pytest.mark.parametrize(("text", "symbol", "position"), [("0e", "e", 1), ("u0", "u", 0)])
def test_decode_rejects_bad_symbol_naming_it(text: str, symbol: str, position: int) -> None:
    with pytest.raises(Nixbase32Error, match=f"character '{symbol}' at position {position}"):
        nixbase32.decode(text)


def test_decode_rejects_uppercase() -> None:
    with pytest.raises(Nixbase32Error, match="character"):
        nixbase32.decode("0Z")


@given(st.binary(max_size=128))
def test_decode_inverts_encode(data: bytes) -> None:
    encoded = nixbase32.encode(data)
    assert len(encoded) == nixbase32.encoded_len(len(data))
    assert nixbase32.decode(encoded) == data


# Plain random text almost never decodes; text over the alphabet often does.
@given(st.text(max_size=80) | st.text(alphabet=nixbase32.ALPHABET, max_size=80))
def test_decode_of_random_text_gives_bytes_or_nixbase32_error(text: str) -> None:
    try:
        data = nixbase32.decode(text)
    except Nixbase32Error:
        return
    assert nixbase32.encode(data) == text


requires_nix_hash = pytest.mark.skipif(
    shutil.which("nix-hash") is None, reason="nix-hash (Debian package nix-bin) not installed"
)

NIX_HASH_SIZES = {"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64}


def _nix_hash(direction: str, algorithm: str, values: list[str]) -> list[str]:
    out = subprocess.run(
        ["nix-hash", "--type", algorithm, direction, *values],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


@requires_nix_hash
@pytest.mark.parametrize("algorithm", sorted(NIX_HASH_SIZES))
def test_encode_agrees_with_nix_hash(algorithm: str) -> None:
    rng = random.Random(algorithm)
    digests = [rng.randbytes(NIX_HASH_SIZES[algorithm]) for _ in range(64)]
    expected = _nix_hash("--to-base32", algorithm, [d.hex() for d in digests])
    assert [nixbase32.encode(d) for d in digests] == expected


@requires_nix_hash
@pytest.mark.parametrize("algorithm", sorted(NIX_HASH_SIZES))
def test_decode_agrees_with_nix_hash(algorithm: str) -> None:
    rng = random.Random(algorithm + "-decode")
    texts = [nixbase32.encode(rng.randbytes(NIX_HASH_SIZES[algorithm])) for _ in range(64)]
    expected = _nix_hash("--to-base16", algorithm, texts)
    assert [nixbase32.decode(t).hex() for t in texts] == expected
