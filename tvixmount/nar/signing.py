"""Ed25519 narinfo signatures, as Nix makes and checks them.

Keys are text ``NAME:BASE64``: a public key holds the 32-byte ed25519 key;
a secret key (what ``nix-store --generate-binary-cache-key`` writes) holds
libsodium's 64 bytes, the 32-byte seed followed by the public key. A
signature (``Sig:`` line) is ``NAME:BASE64(64 bytes)`` over the narinfo's
fingerprint; it counts only if a trusted key of the same name verifies it.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import SigningKeyError
from ..pathinfo.model import PathInfo, Signature
from .narinfo import Narinfo, fingerprint, split_named_base64

_PUBLIC_LEN = 32
_SECRET_LEN = 64


def _split_key(text: str, kind: str, length: int) -> tuple[str, bytes]:
    try:
        return split_named_base64(text.strip(), length)
    except ValueError as exc:
        # Name only: the text of a secret key must not end up in logs.
        name = text.strip().partition(":")[0]
        raise SigningKeyError(f"invalid ed25519 {kind} key {name!r}: {exc}") from None


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclasses.dataclass(frozen=True)
class PublicKey:
    name: str
    key: Ed25519PublicKey

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        name, raw = _split_key(text, "public", _PUBLIC_LEN)
        return cls(name, Ed25519PublicKey.from_public_bytes(raw))

    def __str__(self) -> str:
        return f"{self.name}:{base64.b64encode(_public_bytes(self.key)).decode()}"

    def verifies(self, fingerprint: bytes, signature: Signature) -> bool:
        """Whether ``signature`` is this key's signature over ``fingerprint``."""
        if signature.name != self.name:
            return False
        try:
            self.key.verify(signature.data, fingerprint)
        except InvalidSignature:
            return False
        return True


@dataclasses.dataclass(frozen=True)
class SecretKey:
    name: str
    key: Ed25519PrivateKey

    @classmethod
    def parse(cls, text: str) -> SecretKey:
        name, raw = _split_key(text, "secret", _SECRET_LEN)
        key = Ed25519PrivateKey.from_private_bytes(raw[:32])
        if _public_bytes(key.public_key()) != raw[32:]:
            raise SigningKeyError(
                f"invalid secret key {name!r}: its public half does not match its seed"
            )
        return cls(name, key)

    @classmethod
    def generate(cls, name: str) -> SecretKey:
        return cls(name, Ed25519PrivateKey.generate())

    def __str__(self) -> str:
        raw = self.key.private_bytes_raw() + _public_bytes(self.key.public_key())
        return f"{self.name}:{base64.b64encode(raw).decode()}"

    def public_key(self) -> PublicKey:
        return PublicKey(self.name, self.key.public_key())

    def sign(self, fingerprint: bytes) -> Signature:
        return Signature(self.name, self.key.sign(fingerprint))


def read_secret_key(path: Path) -> SecretKey:
    """The secret key in a Nix key file (what ``--generate-binary-cache-key`` writes)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read secret key file {str(path)!r}: {exc}") from None
    return SecretKey.parse(text)


def parse_public_keys(texts: Iterable[str]) -> tuple[PublicKey, ...]:
    """Parse keys; each text may hold several, separated by spaces or commas."""
    keys: list[PublicKey] = []
    for text in texts:
        for part in text.replace(",", " ").split():
            key = PublicKey.parse(part)
            if key not in keys:
                keys.append(key)
    return tuple(keys)


def _signers(
    signed: bytes, signatures: Sequence[Signature], keys: Sequence[PublicKey]
) -> list[str]:
    return [key.name for key in keys if any(key.verifies(signed, sig) for sig in signatures)]


def valid_signers(narinfo: Narinfo, keys: Sequence[PublicKey]) -> list[str]:
    """Names of the trusted keys with a valid signature on ``narinfo``."""
    return _signers(narinfo.fingerprint(), narinfo.signatures, keys)


def _pathinfo_fingerprint(info: PathInfo) -> bytes:
    kept = info.narinfo
    return fingerprint(info.store_path, kept.nar_sha256, kept.nar_size, info.reference_paths)


def pathinfo_signers(info: PathInfo, keys: Sequence[PublicKey]) -> list[str]:
    """Names of the trusted keys with a valid signature among those a PathInfo kept."""
    return _signers(_pathinfo_fingerprint(info), info.narinfo.signatures, keys)


def sign_pathinfo(info: PathInfo, keys: Sequence[SecretKey]) -> PathInfo:
    """``info`` with a signature by each of ``keys`` it does not carry yet."""
    signed = _pathinfo_fingerprint(info)
    signatures = list(info.narinfo.signatures)
    for key in keys:
        signature = key.sign(signed)
        if signature not in signatures:
            signatures.append(signature)
    narinfo = dataclasses.replace(info.narinfo, signatures=tuple(signatures))
    return dataclasses.replace(info, narinfo=narinfo)


def sign_narinfo(narinfo: Narinfo, key: SecretKey) -> Narinfo:
    """A copy of ``narinfo`` with ``key``'s signature added (as ``nix store sign`` does)."""
    signature = key.sign(narinfo.fingerprint())
    if signature in narinfo.signatures:
        return narinfo
    return dataclasses.replace(narinfo, signatures=(*narinfo.signatures, signature))
