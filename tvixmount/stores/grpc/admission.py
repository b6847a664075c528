"""What a writable ``serve`` checks before it keeps a PathInfo a client Put.

A store path names fixed content forever: readers (a mount, ``nar``) trust the
PathInfo they find, so a Put must not be able to swap what an existing path
holds, point at content the store does not have, or claim a content address
its content does not have. Runs on the server's trio loop, next to the store.
"""

from __future__ import annotations

import hashlib

from ...castore.blobservice import BlobService
from ...castore.nodes import DirectoryNode, FileNode, Node
from ...errors import NotFoundError, ValidationError
from ...nar.writer import calculate_nar
from ...pathinfo.model import CAHash, PathInfo
from ...storepath import StorePath, from_nar_hash, from_text_hash, make_store_path
from .. import Store
from .status import PermissionDeniedError


async def admit(store: Store, info: PathInfo) -> PathInfo:
    """The PathInfo to answer a Put of ``info`` with, once it is safe to keep.

    An identical PathInfo already stored is a no-op; the same path with another
    root node is refused; otherwise every Directory and blob the node refers to
    must be present, the NAR they make must have the NarHash and NarSize
    claimed, and a content address must check out.
    """
    store_path = info.validate()
    existing = await store.pathinfos.get(store_path.digest)
    if existing is not None:
        if existing.node != info.node:
            raise PermissionDeniedError(
                f"{store_path} is already stored with other content; a store path is never replaced"
            )
        return existing
    await _check_present(store, info.node, store_path)
    nar_size, nar_sha256 = await calculate_nar(info.node, store.blobs, store.directories)
    if (nar_size, nar_sha256) != (info.narinfo.nar_size, info.narinfo.nar_sha256):
        raise ValidationError(
            f"{store_path}: its content makes a NAR of {nar_size} bytes with sha256 "
            f"{nar_sha256.hex()}, not the {info.narinfo.nar_size} bytes and "
            f"{info.narinfo.nar_sha256.hex()} the PathInfo claims"
        )
    if info.narinfo.ca is not None:
        await _check_ca(store.blobs, info, store_path)
    return await store.pathinfos.put(info)


async def _check_present(store: Store, node: Node, store_path: StorePath) -> None:
    files: list[FileNode] = []
    if isinstance(node, FileNode):
        files.append(node)
    elif isinstance(node, DirectoryNode):
        try:
            async for directory in store.directories.get_recursive(node.digest):
                files.extend(directory.files)
        except NotFoundError as exc:
            raise ValidationError(f"{store_path}: a Directory it needs is missing: {exc}") from None
    for file in files:
        if not await store.blobs.has(file.digest):
            raise ValidationError(f"{store_path}: blob {file.digest} of {file.name!r} is missing")


async def _check_ca(blobs: BlobService, info: PathInfo, store_path: StorePath) -> None:
    ca = info.narinfo.ca
    assert ca is not None
    references = [p for p in info.reference_paths if p != store_path]
    self_ref = len(references) != len(info.reference_paths)
    name = store_path.name
    if ca.hash_type == CAHash.NAR_SHA256:
        if ca.digest != info.narinfo.nar_sha256:
            raise ValidationError(f"{store_path}: its CA {ca} is not the hash of its NAR")
        expected = from_nar_hash(ca.digest, name, references, self_ref)
    elif ca.hash_type == CAHash.TEXT_SHA256:
        if await _flat_hash(blobs, info.node, "sha256", store_path) != ca.digest:
            raise ValidationError(f"{store_path}: its CA {ca} is not the hash of its text")
        expected = from_text_hash(ca.digest, name, references)
    elif ca.hash_type.name.startswith("FLAT_"):
        algorithm = ca.hash_type.algorithm
        if await _flat_hash(blobs, info.node, algorithm, store_path) != ca.digest:
            raise ValidationError(f"{store_path}: its CA {ca} is not the hash of its file")
        inner = hashlib.sha256(f"fixed:out:{algorithm}:{ca.digest.hex()}:".encode()).hexdigest()
        expected = make_store_path("output:out", inner, name)
    else:
        kind = ca.hash_type.prefix
        raise ValidationError(f"{store_path}: a CA of kind {kind} cannot be checked here")
    if expected != store_path:
        raise ValidationError(f"{store_path}: its CA {ca} makes the store path {expected}")


async def _flat_hash(
    blobs: BlobService, node: Node, algorithm: str, store_path: StorePath
) -> bytes:
    if not isinstance(node, FileNode):
        raise ValidationError(f"{store_path}: a flat or text CA needs a single file")
    reader = await blobs.open_read(node.digest)
    if reader is None:
        raise ValidationError(f"{store_path}: blob {node.digest} is missing")
    hasher = hashlib.new(algorithm)
    try:
        offset = 0
        while offset < reader.size:
            data = await reader.pread(offset, 1 << 20)
            if not data:
                break
            hasher.update(data)
            offset += len(data)
    finally:
        await reader.aclose()
    return hasher.digest()


__all__ = ["admit"]
