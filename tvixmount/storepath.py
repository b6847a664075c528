"""Nix store paths: ``/nix/store/<32 nixbase32 chars>-<name>``.

A :class:`StorePath` is parsed from a basename or an absolute path and is
validated exactly as Nix does; every way a string can fail has its own reason
in the :class:`~tvixmount.errors.StorePathError` message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from . import nixbase32
from .errors import Nixbase32Error, StorePathError

STORE_DIR = "/nix/store"
DIGEST_LEN = 20
ENCODED_DIGEST_LEN = nixbase32.encoded_len(DIGEST_LEN)  # 32
MAX_NAME_LEN = 211
NAME_CHARS = r"[A-Za-z0-9+\-_?=.]"  # a character class: what a store path name may hold
_NAME_CHAR = re.compile(NAME_CHARS)
_NAME = re.compile(NAME_CHARS + "+")


def _validate_name(name: str) -> None:
    if not name:
        raise StorePathError("invalid store path name: empty")
    if len(name) > MAX_NAME_LEN:
        raise StorePathError(
            f"invalid store path name: {len(name)} bytes long, at most {MAX_NAME_LEN} allowed"
        )
    if _NAME.fullmatch(name):
        return
    for pos, char in enumerate(name):
        if not _NAME_CHAR.fullmatch(char):
            raise StorePathError(
                f"invalid store path name {name!r}: bad character {char!r} at position {pos}"
            )


@dataclass(frozen=True, order=False, slots=True)
class StorePath:
    """A validated store path; ``str()`` gives the basename."""

    digest: bytes
    name: str

    def __post_init__(self) -> None:
        if len(self.digest) != DIGEST_LEN:
            raise StorePathError(
                f"store path digest must be {DIGEST_LEN} bytes, got {len(self.digest)}"
            )
        _validate_name(self.name)
        # Equal paths must hash equally whatever bytes-like type the digest came in.
        if type(self.digest) is not bytes:
            object.__setattr__(self, "digest", bytes(self.digest))

    @classmethod
    def from_basename(cls, basename: str | bytes) -> StorePath:
        if isinstance(basename, bytes):
            try:
                basename = basename.decode("ascii")
            except UnicodeDecodeError:
                raise StorePathError("invalid store path: not ASCII") from None
        if len(basename) < ENCODED_DIGEST_LEN + 2:
            raise StorePathError(
                f"invalid store path {basename!r}: too short "
                f"(at least {ENCODED_DIGEST_LEN + 2} characters)"
            )
        if basename[ENCODED_DIGEST_LEN] != "-":
            raise StorePathError(
                f"invalid store path {basename!r}: missing '-' after the "
                f"{ENCODED_DIGEST_LEN}-character hash"
            )
        try:
            digest = nixbase32.decode(basename[:ENCODED_DIGEST_LEN])
        except Nixbase32Error as exc:
            raise StorePathError(f"invalid store path {basename!r}: bad digest: {exc}") from None
        return cls(digest, basename[ENCODED_DIGEST_LEN + 1 :])

    @classmethod
    def from_absolute(cls, path: str) -> StorePath:
        prefix = STORE_DIR + "/"
        if not path.startswith(prefix):
            raise StorePathError(f"invalid store path {path!r}: not in {STORE_DIR}")
        base = path[len(prefix) :]
        if "/" in base:
            raise StorePathError(f"invalid store path {path!r}: has a subpath")
        return cls.from_basename(base)

    @classmethod
    def parse(cls, text: str) -> StorePath:
        """Parse a basename or an absolute ``/nix/store/...`` path."""
        if text.startswith("/"):
            return cls.from_absolute(text)
        return cls.from_basename(text)

    @classmethod
    def parse_with_subpath(cls, text: str) -> tuple[StorePath, tuple[str, ...]]:
        """Parse ``STORE_PATH[/SUBPATH]``; returns the path and the subpath components."""
        if text.startswith("/"):
            prefix = STORE_DIR + "/"
            if not text.startswith(prefix):
                raise StorePathError(f"invalid store path {text!r}: not in {STORE_DIR}")
            text = text[len(prefix) :]
        base, _, rest = text.partition("/")
        parts = tuple(p for p in rest.split("/") if p)
        if any(p in (".", "..") for p in parts):
            raise StorePathError(f"invalid subpath {rest!r}: '.' and '..' are not allowed")
        return cls.from_basename(base), parts

    @property
    def encoded_digest(self) -> str:
        return nixbase32.encode(self.digest)

    @property
    def absolute(self) -> str:
        return f"{STORE_DIR}/{self}"

    def __str__(self) -> str:
        return f"{self.encoded_digest}-{self.name}"

    def __repr__(self) -> str:
        return f"StorePath({str(self)!r})"

    # Nix orders store paths by their basename text (hash first, then name).
    def __lt__(self, other: object) -> bool:
        if not isinstance(other, StorePath):
            return NotImplemented
        return str(self) < str(other)

    def __le__(self, other: object) -> bool:
        if not isinstance(other, StorePath):
            return NotImplemented
        return str(self) <= str(other)

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, StorePath):
            return NotImplemented
        return str(self) > str(other)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, StorePath):
            return NotImplemented
        return str(self) >= str(other)


def compress_hash(digest: bytes, size: int = DIGEST_LEN) -> bytes:
    """Fold a hash to ``size`` bytes by XOR, as Nix's compressHash does."""
    out = bytearray(size)
    for i, byte in enumerate(digest):
        out[i % size] ^= byte
    return bytes(out)


def make_store_path(path_type: str, inner_hash_hex: str, name: str) -> StorePath:
    """Nix's makeStorePath: ``<type>:sha256:<hex>:/nix/store:<name>`` hashed and folded."""
    _validate_name(name)
    fingerprint = f"{path_type}:sha256:{inner_hash_hex}:{STORE_DIR}:{name}"
    return StorePath(compress_hash(hashlib.sha256(fingerprint.encode()).digest()), name)


def _type_with_references(kind: str, references: Iterable[StorePath], self_ref: bool) -> str:
    parts = [kind, *sorted(p.absolute for p in references)]
    if self_ref:
        parts.append("self")
    return ":".join(parts)


def from_nar_hash(
    nar_sha256: bytes,
    name: str,
    references: Iterable[StorePath] = (),
    self_ref: bool = False,
) -> StorePath:
    """The path of a recursive (NAR) sha256 content-addressed store object.

    This is what ``nix-store --add DIR`` prints (no references), and what Nix
    computes for ``fixed:r:sha256`` sources that refer to other paths.
    """
    path_type = _type_with_references("source", references, self_ref)
    return make_store_path(path_type, nar_sha256.hex(), name)


def from_text_hash(
    text_sha256: bytes, name: str, references: Iterable[StorePath] = ()
) -> StorePath:
    """The path of a ``text:sha256`` store object (``builtins.toFile``)."""
    path_type = _type_with_references("text", references, False)
    return make_store_path(path_type, text_sha256.hex(), name)
