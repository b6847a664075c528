"""Narinfo files: a Nix binary cache's per-path metadata (``<hash>.narinfo``).

The parser is strict where a mistake could let wrong data through (every
known field is checked, a malformed line is an error naming its line number)
and lenient where Nix is (unknown fields are kept and ignored, hashes may be
nixbase32, hex, base64 or SRI, ``Compression`` defaults to ``bzip2``).
:meth:`Narinfo.format` writes the text the way Nix 2.8 does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..castore.nodes import Node, rename
from ..errors import NarinfoError, StorePathError, ValidationError
from ..pathinfo.model import (
    ContentAddress,
    NarInfo,
    NixHash,
    PathInfo,
    Signature,
    decode_base64,
)
from ..storepath import StorePath

# Fields that may appear at most once; "Sig" is the only repeatable one.
_SINGLE_FIELDS = (
    "StorePath",
    "URL",
    "Compression",
    "FileHash",
    "FileSize",
    "NarHash",
    "NarSize",
    "References",
    "Deriver",
    "System",
    "CA",
)
_SIGNATURE_LEN = 64  # ed25519
_UNKNOWN_DERIVER = "unknown-deriver"  # what some tools write instead of leaving the field out


def _parse_size(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{text!r} is not a non-negative decimal integer")
    return int(text)


def split_named_base64(text: str, length: int) -> tuple[str, bytes]:
    """``NAME:BASE64`` (signatures, keys) -> the name and ``length`` decoded bytes."""
    name, sep, encoded = text.partition(":")
    if not sep or not name:
        raise ValueError("expected NAME:BASE64")
    return name, decode_base64(encoded, length)


def _parse_signature(text: str) -> Signature:
    try:
        return Signature(*split_named_base64(text, _SIGNATURE_LEN))
    except ValueError as exc:
        raise ValueError(f"signature {text!r}: {exc}") from None


def fingerprint(
    store_path: StorePath, nar_sha256: bytes, nar_size: int, references: Iterable[StorePath]
) -> bytes:
    """What a ``Sig:`` signs: ``1;<path>;sha256:<NarHash>;<NarSize>;<sorted refs, ","-joined>``."""
    refs = ",".join(sorted(ref.absolute for ref in references))
    nar_hash = NixHash("sha256", nar_sha256)
    return f"1;{store_path.absolute};{nar_hash};{nar_size};{refs}".encode()


@dataclass(frozen=True, slots=True)
class Narinfo:
    """One parsed narinfo. ``references`` and ``deriver`` are full store paths."""

    store_path: StorePath
    url: str
    nar_hash: bytes  # sha256
    nar_size: int
    compression: str = "bzip2"
    file_hash: NixHash | None = None
    file_size: int | None = None
    references: tuple[StorePath, ...] = ()
    deriver: StorePath | None = None
    system: str | None = None
    signatures: tuple[Signature, ...] = ()
    ca: ContentAddress | None = None
    unknown: tuple[tuple[str, str], ...] = field(default=())  # kept, never interpreted

    @classmethod
    def parse(cls, text: str | bytes, source: str = "narinfo") -> Narinfo:
        """Parse narinfo text; ``source`` (a URL or file name) prefixes every error."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise NarinfoError(f"{source}: not UTF-8 text: {exc}") from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        values: dict[str, tuple[int, str]] = {}
        # An ordered set: a narinfo of many Sig lines parses in linear time.
        signatures: dict[Signature, None] = {}
        unknown: list[tuple[str, str]] = []
        for lineno, line in enumerate(lines, start=1):
            key, sep, value = line.partition(":")
            if not sep or not key or " " in key:
                raise NarinfoError(
                    f"{source}: line {lineno}: expected 'Field: value', got {line!r}"
                )
            if value.startswith(" "):
                value = value[1:]
            elif value:
                raise NarinfoError(f"{source}: line {lineno}: no space after ':' in {line!r}")
            if key == "Sig":
                try:
                    signature = _parse_signature(value)
                except ValueError as exc:
                    raise NarinfoError(f"{source}: line {lineno}: {exc}") from None
                # Nix keeps signatures in a set: a repeated one counts once.
                signatures.setdefault(signature)
            elif key in _SINGLE_FIELDS:
                if key in values:
                    raise NarinfoError(
                        f"{source}: line {lineno}: duplicate {key} (first on line {values[key][0]})"
                    )
                values[key] = (lineno, value)
            else:
                unknown.append((key, value))
        for required in ("StorePath", "URL", "NarHash", "NarSize"):
            if required not in values:
                raise NarinfoError(f"{source}: missing required field {required}")
        return cls._from_fields(values, tuple(signatures), tuple(unknown), source)

    @classmethod
    def _from_fields(
        cls,
        values: dict[str, tuple[int, str]],
        signatures: tuple[Signature, ...],
        unknown: tuple[tuple[str, str], ...],
        source: str,
    ) -> Narinfo:
        def field_error(key: str, reason: object) -> NarinfoError:
            lineno, value = values[key]
            return NarinfoError(f"{source}: line {lineno}: invalid {key} {value!r}: {reason}")

        def get(key: str) -> str | None:
            entry = values.get(key)
            return None if entry is None else entry[1]

        try:
            store_path = StorePath.from_absolute(values["StorePath"][1])
        except StorePathError as exc:
            raise field_error("StorePath", exc) from None
        url = values["URL"][1]
        if not url:
            raise field_error("URL", "empty")
        try:
            nar_hash = NixHash.parse(values["NarHash"][1])
        except ValueError as exc:
            raise field_error("NarHash", exc) from None
        if nar_hash.algorithm != "sha256":
            raise field_error("NarHash", "must be a sha256 hash")
        try:
            nar_size = _parse_size(values["NarSize"][1])
        except ValueError as exc:
            raise field_error("NarSize", exc) from None
        if nar_size == 0:
            raise field_error("NarSize", "a NAR is never empty")
        compression = get("Compression")
        if compression == "":
            raise field_error("Compression", "empty")
        file_hash = file_size = None
        if get("FileHash") is not None:
            try:
                file_hash = NixHash.parse(values["FileHash"][1])
            except ValueError as exc:
                raise field_error("FileHash", exc) from None
        if get("FileSize") is not None:
            try:
                file_size = _parse_size(values["FileSize"][1])
            except ValueError as exc:
                raise field_error("FileSize", exc) from None
        references: list[StorePath] = []
        for basename in (get("References") or "").split():
            try:
                references.append(StorePath.from_basename(basename))
            except StorePathError as exc:
                raise field_error("References", exc) from None
        deriver = None
        deriver_text = get("Deriver")
        if deriver_text and deriver_text != _UNKNOWN_DERIVER:
            try:
                deriver = StorePath.from_basename(deriver_text)
            except StorePathError as exc:
                raise field_error("Deriver", exc) from None
        ca = None
        if get("CA"):
            try:
                ca = ContentAddress.parse(values["CA"][1])
            except ValidationError as exc:
                raise field_error("CA", exc) from None
        return cls(
            store_path=store_path,
            url=url,
            nar_hash=nar_hash.digest,
            nar_size=nar_size,
            compression=compression or "bzip2",
            file_hash=file_hash,
            file_size=file_size,
            references=tuple(sorted(set(references))),
            deriver=deriver,
            system=get("System") or None,
            signatures=signatures,
            ca=ca,
            unknown=unknown,
        )

    @property
    def nar_hash_text(self) -> str:
        return str(NixHash("sha256", self.nar_hash))

    def fingerprint(self) -> bytes:
        return fingerprint(self.store_path, self.nar_hash, self.nar_size, self.references)

    def format(self) -> str:
        """The narinfo text, field order and spelling as Nix 2.8 writes it."""
        lines = [
            f"StorePath: {self.store_path.absolute}",
            f"URL: {self.url}",
            f"Compression: {self.compression}",
        ]
        if self.file_hash is not None:
            lines.append(f"FileHash: {self.file_hash}")
        if self.file_size is not None:
            lines.append(f"FileSize: {self.file_size}")
        lines.append(f"NarHash: {self.nar_hash_text}")
        lines.append(f"NarSize: {self.nar_size}")
        lines.append("References: " + " ".join(str(ref) for ref in self.references))
        if self.deriver is not None:
            lines.append(f"Deriver: {self.deriver}")
        if self.system is not None:
            lines.append(f"System: {self.system}")
        lines.extend(f"Sig: {sig}" for sig in self.signatures)
        if self.ca is not None:
            lines.append(f"CA: {self.ca}")
        lines.extend(f"{key}: {value}" for key, value in self.unknown)
        return "\n".join(lines) + "\n"

    @classmethod
    def from_pathinfo(
        cls,
        info: PathInfo,
        url: str,
        compression: str,
        file_hash: NixHash | None = None,
        file_size: int | None = None,
    ) -> Narinfo:
        """The narinfo of ``info`` with its NAR at ``url`` (its kept signatures stay)."""
        kept = info.narinfo
        deriver = None
        if kept.deriver is not None:
            # tvix keeps a deriver's name without ".drv"; a narinfo names the file.
            deriver = StorePath(kept.deriver.digest, f"{kept.deriver.name}.drv")
        return cls(
            store_path=info.store_path,
            url=url,
            nar_hash=kept.nar_sha256,
            nar_size=kept.nar_size,
            compression=compression,
            file_hash=file_hash,
            file_size=file_size,
            references=tuple(sorted(info.reference_paths)),
            deriver=deriver,
            signatures=kept.signatures,
            ca=kept.ca,
        )

    def to_pathinfo(self, node: Node) -> PathInfo:
        """The PathInfo for this path, with ``node`` (the ingested NAR root) as its root."""
        deriver = None
        if self.deriver is not None:
            # tvix stores the deriver's name without ".drv".
            deriver = StorePath(self.deriver.digest, self.deriver.name.removesuffix(".drv"))
        info = PathInfo(
            node=rename(node, str(self.store_path).encode()),
            references=tuple(ref.digest for ref in self.references),
            narinfo=NarInfo(
                nar_size=self.nar_size,
                nar_sha256=self.nar_hash,
                signatures=self.signatures,
                reference_names=tuple(str(ref) for ref in self.references),
                deriver=deriver,
                ca=self.ca,
            ),
        )
        info.validate()
        return info


__all__ = ["Narinfo", "NixHash"]
