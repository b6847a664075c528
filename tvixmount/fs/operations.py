"""The pyfuse3 Operations: the only place that turns errors into errno.

Mapping (DESIGN.md's FUSE table): an absent root name -> ENOENT; a missing
Directory or blob, a blob failing verification, and any backend error -> EIO
(with a log line naming the digest); listing the root without ``list_root``
-> EPERM; xattrs disabled -> ENOSYS (the kernel then says EOPNOTSUPP); any
write -> EROFS; a store call that does not answer within the timeout -> EIO.

Handlers simply await the services: a service whose calls may block on the
network runs them in worker threads itself (the gRPC transport and the binary
cache do, abandoning the thread on cancellation), while local stores answer
inline, so one slow fetch never stalls other requests.

Every store call runs under a trio deadline (``timeout``). A process reading
the mount waits in the kernel for the daemon's answer, uninterruptibly for
some requests, so a backend that hangs must not hang it: past the deadline
the request is cancelled, answered with EIO and logged with what timed out.
Nothing is remembered about the failure, so the same request succeeds once
the backend answers again, without a remount.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

import pyfuse3
import trio

from ..castore.blobservice import BlobService
from ..castore.digest import B3Digest
from ..castore.directoryservice import DirectoryService
from ..castore.nodes import Node
from ..errors import NotFoundError, TvixmountError
from .handles import DirectoryHandle, FileHandle, HandleTable
from .inode_tracker import ROOT_INODE, InodeTracker
from .inodes import (
    DirectoryInode,
    FileInode,
    InodeData,
    Listing,
    RootInode,
    SymlinkInode,
    entry_attributes,
    negative_entry,
)
from .listing_cache import ListingCache
from .root_nodes import RootNodes

log = logging.getLogger(__name__)

XATTR_DIRECTORY_DIGEST = b"user.tvix.castore.directory.digest"
XATTR_BLOB_DIGEST = b"user.tvix.castore.blob.digest"

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Files up to this size have their bytes pushed to the page cache on open.
PUSH_MAX = 128 << 10

DEFAULT_TIMEOUT = 30.0  # seconds a store call may take before its request fails with EIO


def _eio(message: str, *args: object) -> pyfuse3.FUSEError:
    log.error(message, *args)
    return pyfuse3.FUSEError(errno.EIO)


async def _within(timeout: float, call: Awaitable[_T], what: str, *args: object) -> _T:
    """Await one store call under the deadline; past it, EIO and a log line naming it.

    ``what % args`` names the call; it is formatted only when logged (reads are hot).
    """
    if timeout == math.inf:
        return await call
    with trio.move_on_after(timeout):
        return await call
    raise _eio(f"{what}: the store did not answer within %gs", *args, timeout)


def _fuse_errors(
    handler: Callable[Concatenate[TvixmountFS, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[TvixmountFS, _P], Coroutine[Any, Any, _T]]:
    """Any exception leaving a handler becomes an errno (pyfuse3 only accepts FUSEError)."""

    @functools.wraps(handler)
    async def wrapper(self: TvixmountFS, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await handler(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except NotFoundError as exc:
            log.debug("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except TvixmountError as exc:
            raise _eio("%s: %s", handler.__name__, exc) from None
        except Exception:
            log.exception("%s failed unexpectedly", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _read_only() -> NoReturn:
    raise pyfuse3.FUSEError(errno.EROFS)


class TvixmountFS(pyfuse3.Operations):
    """A read-only filesystem over castore content, rooted in a RootNodes provider.

    Why inodes are content-addressed: everything below the root is immutable
    and named by its content (a blob digest, a symlink target, a Directory
    digest), so two entries with the same content are indistinguishable to a
    reader. Giving them one inode means the kernel's page cache holds one copy
    of a file shared by a thousand store paths, a Directory is fetched and
    decoded once however many paths contain it, and `find -samefile`/`du`
    see the sharing that really exists in the store. Files are keyed by
    (blob digest, executable bit) because the mode is part of the inode;
    directories by digest; symlinks by target. The inode data itself is
    sparse: a directory inode knows only its digest until the kernel first
    looks below it, which keeps a mount of a huge store cheap to start.

    Why inodes are freed on forget: tvix never frees inodes, so its memory
    grows with every entry ever touched (a `find` over the store keeps all of
    it). Here each inode carries the kernel's lookup count (lookups and the
    readdirplus entries pyfuse3 hands out), and when the kernel forgets it the
    inode and its dedup entry are dropped; a later lookup of the same content
    allocates a new inode, populated afresh. Memory thus follows what the
    kernel holds in its dentry/inode caches, not what was ever visited.
    Numbers are never reused, so a stale inode number cannot name new content.
    """

    # There is no unique parent for a shared directory inode, so '..' lookups
    # (needed only for NFS export) cannot be answered.
    supports_dot_lookup = False

    def __init__(
        self,
        root_nodes: RootNodes,
        blobs: BlobService,
        directories: DirectoryService,
        *,
        list_root: bool = False,
        xattr: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        """``timeout``: seconds any one store call may take (``None``: no limit)."""
        super().__init__()
        self.inodes = InodeTracker()
        self._listings = ListingCache()
        self._root_nodes = root_nodes
        self._blobs = blobs
        self._directories = directories
        self._list_root = list_root
        self._xattr = xattr
        self._timeout = math.inf if timeout is None else timeout
        self._files: HandleTable[FileHandle] = HandleTable()
        self._dirs: HandleTable[DirectoryHandle] = HandleTable()
        # File inodes whose bytes were pushed to the kernel's page cache, and
        # those being pushed now (see _push_once).
        self._pushed: set[int] = set()
        self._pushing: dict[int, trio.Event] = {}

    # -- helpers ---------------------------------------------------------

    def _inode(self, inode: int) -> InodeData:
        data = self.inodes.get(inode)
        if data is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return data

    async def _store(self, call: Awaitable[_T], what: str, *args: object) -> _T:
        return await _within(self._timeout, call, what, *args)

    async def _fetch(self, kind: str, digest: B3Digest, request: Awaitable[_T | None]) -> _T:
        """Content the tree refers to: absent or unreadable means EIO, logged with its digest."""
        try:
            found = await self._store(request, "fetching %s %s", kind, digest)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:  # any backend failure, expected or not; Cancelled passes
            raise _eio("cannot fetch %s %s: %s", kind, digest, exc) from None
        if found is None:
            raise _eio("%s %s is missing from the %s service", kind, digest, kind)
        return found

    async def _listing(self, data: DirectoryInode) -> Listing:
        if data.listing is None:
            data.listing = self._listings.get(data.digest)
        if data.listing is None:
            directory = await self._fetch(
                "directory", data.digest, self._directories.get(data.digest)
            )
            data.listing = Listing.of(directory)
            self._listings.put(data.digest, data.listing)
        return data.listing

    async def _root_list(self) -> tuple[Node, ...]:
        return tuple([node async for node in self._root_nodes.list()])

    async def _child(self, parent: int, name: bytes) -> Node | None:
        data = self._inode(parent)
        if isinstance(data, RootInode):
            try:
                return await self._store(
                    self._root_nodes.lookup(name), "looking up root name %r", name
                )
            except NotFoundError:
                return None
            except TvixmountError as exc:
                raise _eio("cannot look up root name %r: %s", name, exc) from None
        if isinstance(data, DirectoryInode):
            return (await self._listing(data)).by_name.get(name)
        raise pyfuse3.FUSEError(errno.ENOTDIR)

    # -- lookups and attributes ------------------------------------------

    @_fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self._child(parent_inode, name)
        if node is None:
            if parent_inode == ROOT_INODE:
                # Store paths appear in the root (an import, a binary-cache
                # fetch), so its "no such name" must not be cached.
                raise pyfuse3.FUSEError(errno.ENOENT)
            # Below the root a directory's names never change: the kernel may
            # remember the absence as long as the entry itself (a negative
            # dentry), sparing a round trip for every repeated miss (a
            # symlink resolved again and again, a PATH or library search).
            return negative_entry()
        inode, data = self.inodes.remember(node)
        return entry_attributes(inode, data)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        freed = self.inodes.forget_many(inode_list)
        if self._pushed:
            self._pushed.difference_update(freed)

    @_fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry_attributes(inode, self._inode(inode))

    @_fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        data = self._inode(inode)
        if not isinstance(data, SymlinkInode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return data.target

    # -- directories -----------------------------------------------------

    @_fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        data = self._inode(inode)
        if isinstance(data, RootInode):
            if not self._list_root:
                raise pyfuse3.FUSEError(errno.EPERM)
            return self._dirs.add(DirectoryHandle())
        if isinstance(data, DirectoryInode):
            return self._dirs.add(DirectoryHandle((await self._listing(data)).entries))
        raise pyfuse3.FUSEError(errno.ENOTDIR)

    @_fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if handle.entries is None:
            try:
                handle.entries = await self._store(self._root_list(), "listing the root nodes")
            except TvixmountError as exc:
                raise _eio("cannot list the root nodes: %s", exc) from None
        for offset in range(start_id, len(handle.entries)):
            node = handle.entries[offset]
            # readdirplus: an accepted entry counts as a lookup for the kernel.
            inode, data = self.inodes.remember(node)
            if not pyfuse3.readdir_reply(
                token, node.name, entry_attributes(inode, data), offset + 1
            ):
                self.inodes.forget(inode, 1)
                return

    @_fuse_errors
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh)

    # -- files -----------------------------------------------------------

    @_fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        data = self._inode(inode)
        if isinstance(data, RootInode | DirectoryInode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if isinstance(data, SymlinkInode):
            raise pyfuse3.FUSEError(errno.ELOOP)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_CREAT):
            _read_only()
        reader = await self._fetch("blob", data.digest, self._blobs.open_read(data.digest))
        handle = FileHandle(data.digest, reader)
        fh = self._files.add(handle)
        if 0 < data.size <= PUSH_MAX and inode not in self._pushed:
            await self._push_once(inode, handle)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def _push_once(self, inode: int, handle: FileHandle) -> None:
        """The first open of an inode pushes; opens meanwhile wait for that push.

        No open of the inode may return before its push is in: a READ from
        that open would lock the pages the push writes, and the push (a write
        to /dev/fuse that waits for the page lock) would hold up the very
        loop that has to answer the READ. So an inode is only ever pushed
        while nothing can read it.
        """
        pushing = self._pushing.get(inode)
        if pushing is not None:
            await pushing.wait()
            return
        pushing = self._pushing[inode] = trio.Event()
        try:
            await self._push(inode, handle)
        finally:
            del self._pushing[inode]
            self._pushed.add(inode)
            pushing.set()

    async def _push(self, inode: int, handle: FileHandle) -> None:
        """Put a small file's bytes into the kernel's page cache before the open returns.

        Files are read whole right after they are opened (a build, a walk),
        and a small one would then cost a READ round trip of its own. Pushed
        with the open, its reads are page-cache hits. Once per inode: the
        kernel keeps the pages with the inode (keep_cache); if it drops them
        and keeps the inode (memory pressure), reads fetch them as before.
        A forgotten inode's content comes back under a new number, pushed
        again. Only an optimisation: if it fails, reads fetch the bytes.
        """
        try:
            content = await self._store(
                handle.read(0, handle.reader.size), "reading blob %s", handle.digest
            )
            # Any buffer will do (the stub says bytes); a memoryview spares a copy.
            pyfuse3.notify_store(inode, 0, content)  # type: ignore[arg-type]
        except (OSError, TvixmountError, pyfuse3.FUSEError) as exc:
            log.debug("not pushing blob %s to the page cache: %s", handle.digest, exc)

    # pyfuse3 replies from any buffer; a memoryview slice avoids a copy.
    @_fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        handle = self._files.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        try:
            return await self._store(
                handle.read(off, size), "reading blob %s at %d", handle.digest, off
            )
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise _eio("cannot read blob %s at %d: %s", handle.digest, off, exc) from None

    @_fuse_errors
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh)
        if handle is not None:
            await self._store(handle.aclose(), "closing blob %s", handle.digest)

    # -- xattrs and statfs -----------------------------------------------

    def _xattrs(self, inode: int) -> dict[bytes, bytes]:
        if not self._xattr:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        data = self._inode(inode)
        if isinstance(data, DirectoryInode):
            return {XATTR_DIRECTORY_DIGEST: str(data.digest).encode()}
        if isinstance(data, FileInode):
            return {XATTR_BLOB_DIGEST: str(data.digest).encode()}
        return {}

    @_fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        value = self._xattrs(inode).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @_fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return list(self._xattrs(inode))

    @_fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = pyfuse3.StatvfsData()
        stats.f_bsize = 4096
        stats.f_frsize = 4096
        stats.f_blocks = stats.f_bfree = stats.f_bavail = 0
        stats.f_files = len(self.inodes)
        stats.f_ffree = stats.f_favail = 0
        stats.f_namemax = 255
        return stats

    # -- everything that would write -------------------------------------

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        _read_only()

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        _read_only()

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        _read_only()

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        _read_only()

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        _read_only()

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        _read_only()

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        _read_only()

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        _read_only()

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        _read_only()

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        _read_only()

    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        _read_only()

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        _read_only()
