"""Nix's base32 codec ("nixbase32").

Not RFC 4648: the alphabet omits e, o, u and t, and characters are emitted
from the most significant 5-bit group down, reading bits little-endian across
bytes. Encoded length of n bytes is ceil(8n / 5).
"""

from __future__ import annotations

import re

from .errors import Nixbase32Error

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
_DECODE = {c: i for i, c in enumerate(ALPHABET)}
_VALID = re.compile(f"[{ALPHABET}]*")
# Digit values as int()'s base-32 digits, so the C parser does the arithmetic.
_TO_BASE32_DIGITS = str.maketrans(ALPHABET, "0123456789abcdefghijklmnopqrstuv")


def encoded_len(n: int) -> int:
    return (8 * n + 4) // 5


def decoded_len(n: int) -> int:
    return (5 * n) // 8


def encode(data: bytes) -> str:
    value = int.from_bytes(data, "little")
    return "".join(
        ALPHABET[(value >> (5 * n)) & 0x1F] for n in range(encoded_len(len(data)) - 1, -1, -1)
    )


def decode(text: str) -> bytes:
    """Decode nixbase32 text, rejecting bad symbols, lengths and leftover bits."""
    size = decoded_len(len(text))
    if encoded_len(size) != len(text):
        raise Nixbase32Error(f"invalid nixbase32 length {len(text)}")
    if not _VALID.fullmatch(text):
        pos, char = next((i, c) for i, c in enumerate(text) if c not in _DECODE)
        raise Nixbase32Error(f"invalid nixbase32 character {char!r} at position {pos}")
    # The first character is the most significant 5-bit group: plain positional
    # base 32. (Store listings decode one digest per path; this is their hot spot.)
    value = int(text.translate(_TO_BASE32_DIGITS), 32) if text else 0
    if value >> (8 * size):
        raise Nixbase32Error("invalid nixbase32: non-zero trailing bits")
    return value.to_bytes(size, "little")
