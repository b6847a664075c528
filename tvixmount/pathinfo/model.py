"""PathInfo: a store path's root node plus its Nix metadata (tvix.store.v1)."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
from dataclasses import dataclass

from google.protobuf.message import DecodeError as _PbDecodeError

from .. import nixbase32
from .._proto import pathinfo_pb2 as pb
from ..castore.nodes import Node, node_from_proto, node_to_proto
from ..errors import DecodeError, StorePathError, ValidationError
from ..storepath import DIGEST_LEN, StorePath

_HASH_LEN = {"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64}


class CAHash(enum.IntEnum):
    NAR_SHA256 = 0
    NAR_SHA1 = 1
    NAR_SHA512 = 2
    NAR_MD5 = 3
    TEXT_SHA256 = 4
    FLAT_SHA1 = 5
    FLAT_MD5 = 6
    FLAT_SHA256 = 7
    FLAT_SHA512 = 8

    @property
    def algorithm(self) -> str:
        """The hash algorithm, e.g. ``sha256``."""
        return self.name.lower().split("_")[1]

    @property
    def prefix(self) -> str:
        """The Nix CA text prefix, e.g. ``fixed:r:sha256``."""
        method, algo = self.name.lower().split("_")
        return {"nar": f"fixed:r:{algo}", "flat": f"fixed:{algo}", "text": f"text:{algo}"}[method]


def decode_base64(encoded: str, length: int) -> bytes:
    """Exactly ``length`` bytes of standard base64; :class:`ValueError` says what is wrong."""
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad base64") from None
    if len(data) != length:
        raise ValueError(f"{len(data)} bytes, expected {length}")
    return data


def _decode_hash(encoded: str, size: int) -> bytes:
    """A hash in any encoding Nix prints: nixbase32, hex or base64 (told apart by length)."""
    if len(encoded) == nixbase32.encoded_len(size):
        return nixbase32.decode(encoded)
    if len(encoded) == 2 * size:
        if not all(c in "0123456789abcdefABCDEF" for c in encoded):
            raise ValueError("bad hex digit")
        return bytes.fromhex(encoded)
    if len(encoded) == 4 * ((size + 2) // 3):
        return decode_base64(encoded, size)
    raise ValueError(f"hash text of length {len(encoded)} fits no encoding")


@dataclass(frozen=True, slots=True)
class NixHash:
    """A hash with its algorithm; ``str()`` is Nix's ``sha256:<nixbase32>``."""

    algorithm: str
    digest: bytes

    def __str__(self) -> str:
        return f"{self.algorithm}:{nixbase32.encode(self.digest)}"

    @classmethod
    def decode(cls, algorithm: str, encoded: str) -> NixHash:
        """``encoded`` (nixbase32, hex or base64) as a hash of ``algorithm``.

        Raises :class:`ValueError` with the reason.
        """
        size = _HASH_LEN.get(algorithm)
        if size is None:
            raise ValueError(f"unknown hash algorithm {algorithm!r}")
        return cls(algorithm, _decode_hash(encoded, size))

    @classmethod
    def parse(cls, text: str) -> NixHash:
        """Parse ``<algo>:<nixbase32|hex|base64>`` or SRI ``<algo>-<base64>``.

        Raises :class:`ValueError` with the reason.
        """
        algorithm, sep, encoded = text.partition(":")
        sri = not sep
        if sri:
            algorithm, sep, encoded = text.partition("-")
            if not sep:
                raise ValueError(
                    f"hash {text!r} has no '<algorithm>:' or SRI '<algorithm>-' prefix"
                )
        size = _HASH_LEN.get(algorithm)
        if size is None:
            raise ValueError(f"hash {text!r}: unknown algorithm {algorithm!r}")
        try:
            # SRI hashes are base64 only; Nix tells the other encodings apart by length.
            if sri:
                return cls(algorithm, decode_base64(encoded, size))
            return cls(algorithm, _decode_hash(encoded, size))
        except ValueError as exc:
            raise ValueError(f"hash {text!r}: {exc}") from None

    def hasher(self) -> hashlib._Hash:
        """A fresh hashlib object of this hash's algorithm."""
        return hashlib.new(self.algorithm)


@dataclass(frozen=True, slots=True)
class ContentAddress:
    hash_type: CAHash
    digest: bytes

    def __post_init__(self) -> None:
        expected = _HASH_LEN[self.hash_type.algorithm]
        if len(self.digest) != expected:
            raise ValidationError(
                f"CA {self.hash_type.prefix}: digest is {len(self.digest)} bytes, "
                f"expected {expected}"
            )

    def __str__(self) -> str:
        return f"{self.hash_type.prefix}:{nixbase32.encode(self.digest)}"

    @property
    def hash(self) -> NixHash:
        return NixHash(self.hash_type.algorithm, self.digest)

    @classmethod
    def parse(cls, text: str) -> ContentAddress:
        """Parse Nix's CA text (``fixed:r:sha256:<hash>``, ``text:sha256:<hash>``).

        Nix prints the hash in nixbase32; hex and base64 are accepted as Nix does.
        """
        prefix, _, encoded = text.rpartition(":")
        for hash_type in CAHash:
            if hash_type.prefix == prefix:
                try:
                    nix_hash = NixHash.decode(hash_type.algorithm, encoded)
                except ValueError as exc:
                    raise ValidationError(f"invalid CA {text!r}: {exc}") from None
                return cls(hash_type, nix_hash.digest)
        raise ValidationError(f"invalid or unsupported CA {text!r}")


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    data: bytes

    def __str__(self) -> str:
        return f"{self.name}:{base64.b64encode(self.data).decode()}"


@dataclass(frozen=True, slots=True)
class NarInfo:
    nar_size: int
    nar_sha256: bytes
    signatures: tuple[Signature, ...] = ()
    reference_names: tuple[str, ...] = ()
    deriver: StorePath | None = None  # name without the .drv suffix, as tvix stores it
    ca: ContentAddress | None = None


@dataclass(frozen=True, slots=True)
class PathInfo:
    """``node.name`` is the store path basename; references are 20-byte digests."""

    node: Node
    references: tuple[bytes, ...]
    narinfo: NarInfo

    @property
    def store_path(self) -> StorePath:
        return StorePath.from_basename(self.node.name)

    @property
    def reference_paths(self) -> list[StorePath]:
        return [StorePath.from_basename(n) for n in self.narinfo.reference_names]

    def validate(self) -> StorePath:
        """Check the PROTOCOL.md rules; returns the parsed store path."""
        try:
            store_path = self.store_path
        except StorePathError as exc:
            raise ValidationError(f"root node name is not a store path: {exc}") from None
        self.node.validate()
        if len(self.narinfo.nar_sha256) != 32:
            raise ValidationError(
                f"{store_path}: nar_sha256 is {len(self.narinfo.nar_sha256)} bytes, expected 32"
            )
        if len(self.references) != len(self.narinfo.reference_names):
            raise ValidationError(
                f"{store_path}: {len(self.references)} references but "
                f"{len(self.narinfo.reference_names)} reference names"
            )
        for i, (ref, name) in enumerate(
            zip(self.references, self.narinfo.reference_names, strict=True)
        ):
            if len(ref) != DIGEST_LEN:
                raise ValidationError(f"{store_path}: reference {i} is not {DIGEST_LEN} bytes")
            try:
                parsed = StorePath.from_basename(name)
            except StorePathError as exc:
                raise ValidationError(f"{store_path}: reference name {i}: {exc}") from None
            if parsed.digest != ref:
                raise ValidationError(
                    f"{store_path}: reference name {name!r} does not match reference {i} "
                    f"({nixbase32.encode(ref)})"
                )
        return store_path

    def to_proto(self) -> pb.PathInfo:
        info = self.narinfo
        msg = pb.PathInfo(
            node=node_to_proto(self.node),
            references=list(self.references),
            narinfo=pb.NARInfo(
                nar_size=info.nar_size,
                nar_sha256=info.nar_sha256,
                signatures=[
                    pb.NARInfo.Signature(name=s.name, data=s.data) for s in info.signatures
                ],
                reference_names=list(info.reference_names),
            ),
        )
        if info.deriver is not None:
            msg.narinfo.deriver.name = info.deriver.name
            msg.narinfo.deriver.digest = info.deriver.digest
        if info.ca is not None:
            msg.narinfo.ca.type = int(info.ca.hash_type)  # type: ignore[assignment]
            msg.narinfo.ca.digest = info.ca.digest
        return msg

    def serialize(self) -> bytes:
        return self.to_proto().SerializeToString(deterministic=True)

    @classmethod
    def from_proto(cls, msg: pb.PathInfo) -> PathInfo:
        """Convert and validate a PathInfo message."""
        if not msg.HasField("node"):
            raise ValidationError("PathInfo has no root node")
        if not msg.HasField("narinfo"):
            raise ValidationError("PathInfo has no narinfo")
        n = msg.narinfo
        deriver = None
        if n.HasField("deriver"):
            try:
                deriver = StorePath(n.deriver.digest, n.deriver.name)
            except StorePathError as exc:
                raise ValidationError(f"invalid deriver: {exc}") from None
        ca = None
        if n.HasField("ca"):
            try:
                hash_type = CAHash(n.ca.type)
            except ValueError:
                raise ValidationError(f"unknown CA hash type {n.ca.type}") from None
            ca = ContentAddress(hash_type, n.ca.digest)
        info = cls(
            node=node_from_proto(msg.node),
            references=tuple(msg.references),
            narinfo=NarInfo(
                nar_size=n.nar_size,
                nar_sha256=n.nar_sha256,
                signatures=tuple(Signature(s.name, s.data) for s in n.signatures),
                reference_names=tuple(n.reference_names),
                deriver=deriver,
                ca=ca,
            ),
        )
        info.validate()
        return info

    @classmethod
    def parse(cls, data: bytes) -> PathInfo:
        msg = pb.PathInfo()
        try:
            msg.ParseFromString(data)
        except (_PbDecodeError, RuntimeError, ValueError) as exc:
            raise DecodeError(f"corrupt PathInfo protobuf: {exc}") from None
        return cls.from_proto(msg)
