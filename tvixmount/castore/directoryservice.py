"""The DirectoryService seam: content-addressed Directory objects.

Contract:
- ``get`` returns ``None`` when absent, else a validated Directory whose
  digest equals the one asked for;
- ``get_recursive`` yields the root first and then breadth-first, each
  Directory only after one that refers to it (tvix's order);
- ``put_many`` takes leaves first, root last; every DirectoryNode must refer
  to a Directory already stored or earlier in the same batch, with the right
  size, else :class:`~tvixmount.errors.ValidationError` and nothing stored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from ..errors import NotFoundError, ValidationError
from .digest import B3Digest
from .directory import Directory


class DirectoryService(Protocol):
    async def get(self, digest: B3Digest) -> Directory | None: ...

    def get_recursive(self, root: B3Digest) -> AsyncIterator[Directory]: ...

    async def put_many(self, directories: Sequence[Directory]) -> B3Digest:
        """Store a closure (leaves first, root last); returns the root digest."""
        ...

    async def aclose(self) -> None: ...


async def walk_breadth_first(
    get: Callable[[B3Digest], Awaitable[Directory | None]], root: B3Digest
) -> AsyncIterator[Directory]:
    """Breadth-first traversal using ``get`` (an async getter); shared by implementations."""
    queue: deque[B3Digest] = deque([root])
    seen = {root}
    while queue:
        digest = queue.popleft()
        directory = await get(digest)
        if directory is None:
            raise NotFoundError(f"directory {digest} not found")
        yield directory
        for child in directory.directories:
            if child.digest not in seen:
                seen.add(child.digest)
                queue.append(child.digest)


def check_closure(
    directories: Sequence[Directory], present: Callable[[B3Digest], Directory | None]
) -> dict[B3Digest, Directory]:
    """Validate a put batch (leaves first); returns the new directories by digest.

    ``present`` looks a digest up among already stored directories.
    """
    if not directories:
        raise ValidationError("no directories to put")
    batch: dict[B3Digest, Directory] = {}
    for directory in directories:
        directory.validate()
        for child in directory.directories:
            # Not `or`: the empty Directory is falsy (it has no entries).
            known = batch.get(child.digest)
            if known is None:
                known = present(child.digest)
            if known is None:
                raise ValidationError(
                    f"directory entry {child.name!r} refers to {child.digest}, "
                    "which is neither stored nor put before it"
                )
            if known.size() != child.size:
                raise ValidationError(
                    f"directory entry {child.name!r} has size {child.size}, "
                    f"but {child.digest} has size {known.size()}"
                )
        batch[directory.digest()] = directory
    return batch
