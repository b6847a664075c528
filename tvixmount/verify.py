"""Check store paths for rot, like ``nix store verify --check-contents``, over any store.

A path is intact when every Directory it reaches is present and hashes to
the digest its parent names (with the size its parent says), every blob is
present and hashes to its digest (blob readers only hand out verified bytes,
per the BlobService contract), and the NAR the tree serialises to has the
recorded NarSize and NarHash. Only the three service Protocols are used, so
a remote store is read, never changed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from .castore.digest import B3Digest
from .castore.directory import Directory
from .castore.nodes import DirectoryNode, Node
from .errors import NarError, NotFoundError, StoreError, TvixmountError, ValidationError
from .nar.writer import calculate_nar
from .pathinfo.model import NixHash, PathInfo
from .stores import Store


@dataclass(frozen=True)
class Verdict:
    """One path's result: ``damage`` is None when it is intact."""

    info: PathInfo
    damage: str | None

    @property
    def ok(self) -> bool:
        return self.damage is None


class _Fetched:
    """The DirectoryService view the NAR writer reads: the Directories checked before."""

    def __init__(self, directories: dict[B3Digest, Directory]) -> None:
        self._directories = directories

    async def get(self, digest: B3Digest) -> Directory | None:
        return self._directories.get(digest)

    def get_recursive(self, root: B3Digest) -> AsyncIterator[Directory]:
        raise NotImplementedError  # the NAR writer only gets one at a time

    async def put_many(self, directories: Sequence[Directory]) -> B3Digest:
        raise NotImplementedError  # verification never writes

    async def aclose(self) -> None:
        pass


async def _directories(store: Store, node: Node) -> dict[B3Digest, Directory]:
    """Every Directory below ``node``, each checked against the digest and size naming it."""
    found: dict[B3Digest, Directory] = {}
    if not isinstance(node, DirectoryNode):
        return found
    expected = {node.digest: node.size}
    async for directory in store.directories.get_recursive(node.digest):
        digest = directory.digest()
        if digest not in expected:
            raise StoreError(f"the store sent directory {digest}, which nothing here refers to")
        if directory.size() != expected[digest]:
            raise StoreError(
                f"directory {digest} has size {directory.size()}, "
                f"its parent says {expected[digest]}"
            )
        found[digest] = directory
        for child in directory.directories:
            expected.setdefault(child.digest, child.size)
    missing = expected.keys() - found.keys()
    if missing:
        raise NotFoundError(f"directory {min(missing)} is missing")
    return found


async def verify_path(store: Store, info: PathInfo) -> Verdict:
    """Check one path; damage is described, never raised (other paths go on)."""
    try:
        directories = await _directories(store, info.node)
        size, sha256 = await calculate_nar(info.node, store.blobs, _Fetched(directories))
    except (NotFoundError, StoreError, ValidationError, NarError) as exc:
        return Verdict(info, str(exc))
    except TvixmountError as exc:
        return Verdict(info, f"cannot be read: {exc}")
    narinfo = info.narinfo
    if sha256 != narinfo.nar_sha256:
        return Verdict(
            info,
            f"was modified: expected NAR hash '{NixHash('sha256', narinfo.nar_sha256)}', "
            f"got '{NixHash('sha256', sha256)}'",
        )
    if size != narinfo.nar_size:
        return Verdict(info, f"NAR is {size} bytes, NarSize says {narinfo.nar_size}")
    return Verdict(info, None)


async def verify_all(store: Store, infos: Sequence[PathInfo] | None = None) -> list[Verdict]:
    """Verdicts for ``infos``, or for every path in the store (sorted by name)."""
    if infos is None:
        infos = [info async for info in store.pathinfos.list()]
    return [await verify_path(store, info) for info in infos]
