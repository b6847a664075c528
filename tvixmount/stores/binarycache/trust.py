"""Which narinfos a binary cache may serve: Nix's ``require-sigs`` policy.

With ``require-sigs`` on (Nix's default), a path is served only if its
narinfo carries a valid signature by a trusted key, or it is content
addressed and its content address checks out: the store path is the one
the CA names, and the ingested content hashes to the CA's hash (Nix accepts
such paths unsigned, as anyone can recompute them). Otherwise the path is
absent, with a warning saying why. With it off, every narinfo whose NAR
matches its NarHash is served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...castore.blobservice import BlobService
from ...castore.nodes import FileNode, Node
from ...nar.narinfo import Narinfo
from ...nar.signing import PublicKey, pathinfo_signers, valid_signers
from ...pathinfo.model import CAHash, ContentAddress, NarInfo, PathInfo
from ...storepath import StorePath, from_nar_hash, from_text_hash, make_store_path

_READ = 1 << 20


@dataclass
class TrustPolicy:
    keys: tuple[PublicKey, ...]
    require_sigs: bool = True
    off_by: str = ""  # what turned require-sigs off, for the warning
    # (root node name, NarInfo) pairs already found trusted: all the check reads, so each
    # cached path costs one ed25519 verify (or CA hash) per service.
    _trusted: set[tuple[bytes, NarInfo]] = field(default_factory=set, repr=False)

    def signed(self, narinfo: Narinfo) -> bool:
        return not self.require_sigs or bool(valid_signers(narinfo, self.keys))

    def unsigned_reason(self, narinfo: Narinfo) -> str:
        """Why ``narinfo`` is not trusted by signature (for the warning)."""
        trusted = ", ".join(key.name for key in self.keys) or "none"
        if not narinfo.signatures:
            return f"is not signed (trusted keys: {trusted})"
        signed_by = ", ".join(sig.name for sig in narinfo.signatures)
        return f"has no valid signature by a trusted key ({trusted}); signed by {signed_by}"

    async def trusts(self, info: PathInfo, blobs: BlobService) -> bool:
        """Whether a PathInfo (fetched or cached) may be served."""
        if not self.require_sigs:
            return True
        seen = (info.node.name, info.narinfo)
        if seen in self._trusted:
            return True
        trusted = bool(pathinfo_signers(info, self.keys)) or await ca_mismatch(info, blobs) is None
        if trusted:
            self._trusted.add(seen)
        return trusted


def expected_path(
    ca: ContentAddress, name: str, references: Sequence[StorePath], self_ref: bool
) -> StorePath:
    """The store path Nix computes for content address ``ca`` (makeFixedOutputPath et al.)."""
    if ca.hash_type is CAHash.TEXT_SHA256:
        return from_text_hash(ca.digest, name, references)
    if ca.hash_type is CAHash.NAR_SHA256:
        return from_nar_hash(ca.digest, name, references, self_ref)
    recursive = "r:" if ca.hash_type.name.startswith("NAR_") else ""
    inner = hashlib.sha256(f"fixed:out:{recursive}{ca.hash.algorithm}:{ca.digest.hex()}:".encode())
    return make_store_path("output:out", inner.hexdigest(), name)


async def _file_hash(node: Node, algorithm: str, blobs: BlobService) -> bytes | None:
    if not isinstance(node, FileNode):
        return None
    reader = await blobs.open_read(node.digest)
    if reader is None:
        return None
    hasher = hashlib.new(algorithm)
    try:
        offset = 0
        while offset < reader.size:
            data = await reader.pread(offset, _READ)
            if not data:
                return None
            hasher.update(data)
            offset += len(data)
    finally:
        await reader.aclose()
    return hasher.digest()


async def ca_mismatch(info: PathInfo, blobs: BlobService) -> str | None:
    """Why ``info``'s content address does not check out; ``None`` when it does.

    ``info``'s NAR is already known to match its NarHash (it was checked on
    the way in), so a recursive sha256 CA is checked against that.
    """
    ca = info.narinfo.ca
    if ca is None:
        return "has no content address"
    store_path = info.store_path
    references = [ref for ref in info.reference_paths if ref != store_path]
    self_ref = len(references) != len(info.reference_paths)
    if self_ref and ca.hash_type is not CAHash.NAR_SHA256:
        return f"CA {ca} cannot refer to itself"
    if references and ca.hash_type not in (CAHash.NAR_SHA256, CAHash.TEXT_SHA256):
        return f"CA {ca} cannot have references"
    if ca.hash_type is CAHash.NAR_SHA256:
        digest: bytes | None = info.narinfo.nar_sha256
    elif ca.hash_type is CAHash.TEXT_SHA256 or ca.hash_type in _FLAT:
        executable = isinstance(info.node, FileNode) and info.node.executable
        digest = None if executable else await _file_hash(info.node, ca.hash.algorithm, blobs)
        if digest is None:
            return f"CA {ca} needs a plain file"
    else:
        return f"CA {ca} (a recursive non-sha256 hash) is not checked here"
    if digest != ca.digest:
        return f"content does not match its CA {ca}"
    if expected_path(ca, store_path.name, references, self_ref) != store_path:
        return f"CA {ca} names another store path"
    return None


_FLAT = (CAHash.FLAT_MD5, CAHash.FLAT_SHA1, CAHash.FLAT_SHA256, CAHash.FLAT_SHA512)

__all__ = ["TrustPolicy", "ca_mismatch", "expected_path"]
