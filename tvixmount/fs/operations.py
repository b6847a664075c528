"""The pyfuse3 Operations: the only place that turns errors into errno.

Every handler answers through one decorator (:func:`_answers`) and one table
(:data:`ERRNO`, DESIGN.md's FUSE table): a handler that cannot answer raises
:class:`_Refused` naming the :class:`Situation`, and only the decorator looks
up its errno. Exceptions from the services never reach it raw: every store
call goes through ``_store``, which names the situation of a failure there
(a name absent, content missing, the store failing or not answering in
time), so the same exception type cannot mean ENOENT at one call and EIO at
another depending on which handler caught it first. Anything else escaping a
handler is a bug: EIO, logged with its traceback.

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

import enum
import errno
import functools
import logging
import math
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

import pyfuse3
import trio

from ..castore.blobservice import BlobReader, BlobService
from ..castore.digest import B3Digest
from ..castore.directoryservice import DirectoryService
from ..castore.nodes import Node
from ..errors import NotFoundError
from .handles import DirectoryHandle, FileHandle, FilesByInode, HandleTable, Opening
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
# No-open mode: files whose blob stays open between reads, and their bytes in
# all (see FilesByInode).
OPEN_FILES = 64
OPEN_BYTES = 64 << 20
OPEN_KEPT = 4  # the most recently read, kept whatever their size

DEFAULT_TIMEOUT = 30.0  # seconds a store call may take before its request fails with EIO


class Situation(enum.Enum):
    NO_SUCH_NAME = enum.auto()  # a root name invalid or unknown to the provider
    NO_SUCH_INODE = enum.auto()  # an inode the kernel has forgotten
    NOT_A_DIRECTORY = enum.auto()
    IS_A_DIRECTORY = enum.auto()
    IS_A_SYMLINK = enum.auto()  # open of a symlink (the kernel follows them first)
    NOT_A_SYMLINK = enum.auto()
    NO_SUCH_HANDLE = enum.auto()
    ROOT_NOT_LISTABLE = enum.auto()  # readdir of the root without list_root
    NO_XATTRS = enum.auto()  # --no-xattr
    NO_SUCH_XATTR = enum.auto()
    READ_ONLY = enum.auto()  # any write
    OPEN_NOT_NEEDED = enum.auto()  # no-open mode: the kernel opens files itself
    CONTENT_MISSING = enum.auto()  # a Directory or blob the tree refers to is absent
    CONTENT_INVALID = enum.auto()  # it fails verification, or its size is not the node's
    STORE_FAILED = enum.auto()  # the service raised
    STORE_TIMEOUT = enum.auto()  # the service did not answer within the deadline


# The errno table: situation -> (errno, level of the log line naming it).
ERRNO: dict[Situation, tuple[int, int]] = {
    Situation.NO_SUCH_NAME: (errno.ENOENT, logging.DEBUG),
    Situation.NO_SUCH_INODE: (errno.ENOENT, logging.DEBUG),
    Situation.NOT_A_DIRECTORY: (errno.ENOTDIR, logging.DEBUG),
    Situation.IS_A_DIRECTORY: (errno.EISDIR, logging.DEBUG),
    Situation.IS_A_SYMLINK: (errno.ELOOP, logging.DEBUG),
    Situation.NOT_A_SYMLINK: (errno.EINVAL, logging.DEBUG),
    Situation.NO_SUCH_HANDLE: (errno.EBADF, logging.DEBUG),
    Situation.ROOT_NOT_LISTABLE: (errno.EPERM, logging.DEBUG),
    Situation.NO_XATTRS: (errno.ENOSYS, logging.DEBUG),
    Situation.NO_SUCH_XATTR: (pyfuse3.ENOATTR, logging.DEBUG),
    Situation.READ_ONLY: (errno.EROFS, logging.DEBUG),
    Situation.OPEN_NOT_NEEDED: (errno.ENOSYS, logging.DEBUG),
    Situation.CONTENT_MISSING: (errno.EIO, logging.ERROR),
    Situation.CONTENT_INVALID: (errno.EIO, logging.ERROR),
    Situation.STORE_FAILED: (errno.EIO, logging.ERROR),
    Situation.STORE_TIMEOUT: (errno.EIO, logging.ERROR),
}


class _Refused(Exception):
    """A request fails in ``situation``; ``message % args`` says why (formatted only if logged)."""

    def __init__(self, situation: Situation, message: str = "", *args: object) -> None:
        super().__init__(situation, message, *args)
        self.situation = situation
        self.message = message
        self.args_ = args


def _refuse(situation: Situation, message: str = "", *args: object) -> NoReturn:
    raise _Refused(situation, message, *args)


def _answers(
    handler: Callable[Concatenate[TvixmountFS, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[TvixmountFS, _P], Coroutine[Any, Any, _T]]:
    """The one place a handler's failure becomes an errno (pyfuse3 only accepts FUSEError)."""
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: TvixmountFS, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await handler(self, *args, **kwargs)
        except _Refused as refused:
            number, level = ERRNO[refused.situation]
            if refused.message and log.isEnabledFor(level):
                log.log(level, f"{name}: {refused.message}", *refused.args_)
            raise pyfuse3.FUSEError(number) from None
        except Exception:
            log.exception("%s failed unexpectedly", name)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


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
        no_open: bool = False,
    ) -> None:
        """``timeout``: seconds any one store call may take (``None``: no limit).

        ``no_open``: FUSE's no-open mode (see :meth:`open`); only with a pyfuse3
        that gives ``read`` the inode of a file opened that way.
        """
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
        self._no_open = no_open
        self._by_inode = FilesByInode(OPEN_FILES, OPEN_BYTES, OPEN_KEPT)
        self._dirs: HandleTable[DirectoryHandle] = HandleTable()
        # File inodes whose blob was opened and found to be the node's size:
        # opening them again needs no store call (see open).
        self._checked: set[int] = set()
        # File inodes whose bytes were pushed to the kernel's page cache, and
        # those being pushed now (see _push_once).
        self._pushed: set[int] = set()
        self._pushing: dict[int, trio.Event] = {}

    # -- helpers ---------------------------------------------------------

    def _inode(self, inode: int) -> InodeData:
        data = self.inodes.get(inode)
        if data is None:
            _refuse(Situation.NO_SUCH_INODE)
        return data

    async def _store(
        self,
        call: Awaitable[_T],
        what: str,
        *args: object,
        not_found: Situation = Situation.CONTENT_MISSING,
    ) -> _T:
        """Await one store call under the deadline; a failure names its situation.

        ``what % args`` names the call; it is formatted only when logged
        (reads are hot). A service raising NotFoundError means ``not_found``.
        """
        try:
            if self._timeout == math.inf:
                return await call
            with trio.move_on_after(self._timeout):
                return await call
        except NotFoundError as exc:
            _refuse(not_found, f"{what}: %s", *args, exc)
        except Exception as exc:  # any backend failure, expected or not; Cancelled passes
            _refuse(Situation.STORE_FAILED, f"{what}: %s", *args, exc)
        _refuse(
            Situation.STORE_TIMEOUT,
            f"{what}: the store did not answer within %gs",
            *args,
            self._timeout,
        )

    async def _fetch(self, kind: str, digest: B3Digest, request: Awaitable[_T | None]) -> _T:
        """Content the tree refers to: absent means EIO, logged with its digest."""
        found = await self._store(request, "fetching %s %s", kind, digest)
        if found is None:
            _refuse(Situation.CONTENT_MISSING, "%s %s is missing from the store", kind, digest)
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
            return await self._store(
                self._root_nodes.lookup(name),
                "looking up root name %r",
                name,
                not_found=Situation.NO_SUCH_NAME,
            )
        if isinstance(data, DirectoryInode):
            return (await self._listing(data)).by_name.get(name)
        _refuse(Situation.NOT_A_DIRECTORY)

    async def _open_blob(self, data: FileInode) -> BlobReader:
        """A reader of the file's blob, which must be exactly the file node's size.

        A smaller node would serve a prefix of the content (a script cut
        short), a larger one a read past the end: either is EIO.
        """
        reader = await self._fetch("blob", data.digest, self._blobs.open_read(data.digest))
        size = reader.size  # a closed reader may no longer know it
        if size != data.size:
            await self._store(reader.aclose(), "closing blob %s", data.digest)
            _refuse(
                Situation.CONTENT_INVALID,
                "blob %s has %d bytes, its file node says %d",
                data.digest,
                size,
                data.size,
            )
        return reader

    # -- lookups and attributes ------------------------------------------

    @_answers
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self._child(parent_inode, name)
        if node is None:
            if parent_inode == ROOT_INODE:
                # Store paths appear in the root (an import, a binary-cache
                # fetch), so its "no such name" must not be cached.
                _refuse(Situation.NO_SUCH_NAME)
            # Below the root a directory's names never change: the kernel may
            # remember the absence as long as the entry itself (a negative
            # dentry), sparing a round trip for every repeated miss (a
            # symlink resolved again and again, a PATH or library search).
            return negative_entry()
        inode, data = self.inodes.remember(node)
        return entry_attributes(inode, data)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        freed = self.inodes.forget_many(inode_list)
        if self._checked:
            self._checked.difference_update(freed)
            self._pushed.difference_update(freed)
        if len(self._by_inode):
            for inode in freed:
                handle = self._by_inode.forget(inode)
                if handle is not None:
                    await self._close_quietly(handle)

    @_answers
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry_attributes(inode, self._inode(inode))

    @_answers
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        data = self._inode(inode)
        if not isinstance(data, SymlinkInode):
            _refuse(Situation.NOT_A_SYMLINK)
        return data.target

    # -- directories -----------------------------------------------------

    @_answers
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        data = self._inode(inode)
        if isinstance(data, RootInode):
            if not self._list_root:
                _refuse(Situation.ROOT_NOT_LISTABLE)
            return self._dirs.add(DirectoryHandle())
        if isinstance(data, DirectoryInode):
            return self._dirs.add(DirectoryHandle((await self._listing(data)).entries))
        _refuse(Situation.NOT_A_DIRECTORY)

    @_answers
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs.get(fh)
        if handle is None:
            _refuse(Situation.NO_SUCH_HANDLE)
        if handle.entries is None:
            handle.entries = await self._store(self._root_list(), "listing the root nodes")
        for offset in range(start_id, len(handle.entries)):
            node = handle.entries[offset]
            # readdirplus: an accepted entry counts as a lookup for the kernel.
            inode, data = self.inodes.remember(node)
            if not pyfuse3.readdir_reply(
                token, node.name, entry_attributes(inode, data), offset + 1
            ):
                self.inodes.forget(inode, 1)
                return

    @_answers
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh)

    # -- files -----------------------------------------------------------

    @_answers
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        """A handle on the file's blob; the blob is opened now only on the inode's first open.

        Once a blob was opened and found to be the node's size, later opens of
        the inode (a warm walk, a build reading a header again) make no store
        call: their reads are mostly answered from the kernel's page cache
        (keep_cache), and one that reaches the daemon opens the blob then. For
        a remote store that spares a round trip per open.

        In no-open mode the answer is ENOSYS. The kernel then opens every file
        of the mount itself from now on (with keep_cache), sending no OPEN,
        FLUSH or RELEASE: a warm walk of 1,341 files sent 2,682 requests fewer.
        Reads then name the inode; a missing or corrupt blob is found by the
        first read (EIO) instead of the open.
        """
        data = self._inode(inode)
        if isinstance(data, RootInode | DirectoryInode):
            _refuse(Situation.IS_A_DIRECTORY)
        if isinstance(data, SymlinkInode):
            _refuse(Situation.IS_A_SYMLINK)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_CREAT):
            _refuse(Situation.READ_ONLY)
        if self._no_open:
            _refuse(Situation.OPEN_NOT_NEEDED)
        handle = FileHandle(data)
        if inode not in self._checked:
            handle.reader = await self._open_blob(data)
            self._checked.add(inode)
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
            content = await self._read(handle, 0, handle.data.size)
            # Any buffer will do (the stub says bytes); a memoryview spares a copy.
            pyfuse3.notify_store(inode, 0, content)  # type: ignore[arg-type]
        except (OSError, _Refused) as exc:
            log.debug("not pushing blob %s to the page cache: %s", handle.data.digest, exc)

    async def _read(self, handle: FileHandle, off: int, size: int) -> bytes | memoryview:
        if handle.reader is None:
            await self._open_reader(handle)
        return await self._store(
            handle.read(off, size), "reading blob %s at %d", handle.data.digest, off
        )

    async def _open_reader(self, handle: FileHandle) -> None:
        """Open the handle's blob; reads of it meanwhile (the kernel sends a few
        at once) wait for that instead of opening it again, and leaking a reader.

        Not a trio.Lock: acquiring one always yields to the scheduler, and a
        handler that yields costs the request loop a hand-over (fuse_loop).
        """
        while handle.reader is None:
            opening = handle.opening
            if opening is not None:
                await opening.done.wait()
                if opening.failed is not None:
                    # Its own request logged why; this one fails alike, at once.
                    _refuse(opening.failed)
                continue  # the opening read was cancelled: open it here
            opening = handle.opening = Opening(trio.Event())
            try:
                handle.reader = await self._open_blob(handle.data)
            except _Refused as refused:
                opening.failed = refused.situation
                raise
            except Exception:
                opening.failed = Situation.STORE_FAILED
                raise
            finally:
                handle.opening = None
                opening.done.set()

    # pyfuse3 replies from any buffer; a memoryview slice avoids a copy.
    @_answers
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        if self._no_open:
            return await self._read_inode(fh, off, size)
        handle = self._files.get(fh)
        if handle is None:
            _refuse(Situation.NO_SUCH_HANDLE)
        return await self._read(handle, off, size)

    async def _read_inode(self, inode: int, off: int, size: int) -> bytes | memoryview:
        """No-open mode: pyfuse3 passes the inode in place of the zero handle."""
        data = self._inode(inode)
        if not isinstance(data, FileInode):
            _refuse(Situation.NO_SUCH_HANDLE)
        handle = self._by_inode.use(inode, data)
        try:
            return await self._read(handle, off, size)
        finally:
            # Not shielded from a deadline (a cancel scope costs 7% of the daemon's
            # CPU on cold reads): no store's reader yields when it is closed.
            for evicted in self._by_inode.done(inode, handle):
                await self._close_quietly(evicted)

    async def _close_quietly(self, handle: FileHandle) -> None:
        """Close a handle no request asked to close (no-open mode): a failure is only logged."""
        if handle.reader is not None:
            try:
                await handle.reader.aclose()
            except Exception as exc:
                log.warning("closing blob %s: %s", handle.data.digest, exc)
            handle.reader = None

    @_answers
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh)
        if handle is not None and handle.reader is not None:
            await self._store(handle.reader.aclose(), "closing blob %s", handle.data.digest)

    # -- xattrs and statfs -----------------------------------------------

    def _xattrs(self, inode: int) -> dict[bytes, bytes]:
        if not self._xattr:
            _refuse(Situation.NO_XATTRS)
        data = self._inode(inode)
        if isinstance(data, DirectoryInode):
            return {XATTR_DIRECTORY_DIGEST: str(data.digest).encode()}
        if isinstance(data, FileInode):
            return {XATTR_BLOB_DIGEST: str(data.digest).encode()}
        return {}

    @_answers
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        value = self._xattrs(inode).get(name)
        if value is None:
            _refuse(Situation.NO_SUCH_XATTR)
        return value

    @_answers
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return list(self._xattrs(inode))

    @_answers
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

    @_answers
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        _refuse(Situation.READ_ONLY)

    @_answers
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        _refuse(Situation.READ_ONLY)
