"""BLAKE3-256 digests, the addresses of everything in castore."""

from __future__ import annotations

import base64
import binascii
import re

import blake3

from ..errors import DigestError

DIGEST_SIZE = 32
_PREFIX = "b3:"
_HEX = re.compile(r"[0-9a-fA-F]{64}")


class B3Digest(bytes):
    """32 raw bytes; ``str()`` is tvix's text form ``b3:<base64 with padding>``."""

    __slots__ = ()

    def __new__(cls, value: bytes) -> B3Digest:
        if len(value) != DIGEST_SIZE:
            raise DigestError(f"a BLAKE3 digest is {DIGEST_SIZE} bytes, got {len(value)}")
        return super().__new__(cls, value)

    @classmethod
    def of(cls, data: bytes | memoryview) -> B3Digest:
        return cls(blake3.blake3(data).digest())

    @classmethod
    def parse(cls, text: str) -> B3Digest:
        """Parse ``b3:<base64>`` (also accepts 64 hex characters)."""
        if text.startswith(_PREFIX):
            try:
                raw = base64.b64decode(text[len(_PREFIX) :], validate=True)
            # Non-ASCII text raises a plain ValueError, not binascii.Error.
            except (binascii.Error, ValueError):
                raise DigestError(f"invalid digest {text!r}: bad base64") from None
            return cls(raw)
        # bytes.fromhex would also accept embedded whitespace; digests have none.
        if not _HEX.fullmatch(text):
            raise DigestError(f"invalid digest {text!r}: expected b3:<base64> or 64 hex digits")
        return cls(bytes.fromhex(text))

    def __str__(self) -> str:
        return _PREFIX + base64.b64encode(self).decode()

    def __repr__(self) -> str:
        return f"B3Digest({str(self)!r})"


def trusted_digest(value: bytes) -> B3Digest:
    """``value`` as a B3Digest without the length check: for bytes validated as a digest before.

    The check runs in Python (``B3Digest(raw)`` costs 0.85 µs, this 0.4 µs),
    and decoding a stored Directory makes one digest per entry.
    """
    return bytes.__new__(B3Digest, value)


EMPTY_DIGEST = B3Digest.of(b"")
