"""DirectoryService client for ``tvix.castore.v1.DirectoryService`` over gRPC.

Nothing a server sends is trusted: every Directory is validated and its
digest recomputed, and a recursive Get must follow tvix's order (the root
first, then each Directory only after one that referred to it, with the size
that one gave, and every referred Directory eventually sent). The order is
checked as the messages arrive, so a server sending junk or repeats is cut
off at its first bad message, and a reply is bounded in count and bytes.

A miss fetches the Directory's closure with one recursive Get (bounded by
``PREFETCH_DIRECTORIES``): a mount then walks a store path at the cost of one
round trip instead of one per Directory. The miss is answered as soon as its
own Directory arrived and was checked; the rest of the reply is read and
checked in the background, and a lookup of a Directory the reply is still to
send waits for it instead of asking again. Every Directory received that way
is authentic (its digest was referred to by one already trusted), so a
prefix cut off at the bound is kept too. Received Directories stay in a
cache bounded by entries, and tell the blob client the sizes of the files
they name (:mod:`.hints`).
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import trio

from ..._proto import castore_pb2
from ..._proto import rpc_directory_pb2 as pb
from ..._proto import rpc_directory_pb2_grpc as pb_grpc
from ...castore.digest import B3Digest
from ...castore.directory import Directory
from ...castore.directoryservice import walk_breadth_first
from ...errors import (
    IntegrityError,
    NotFoundError,
    StoreError,
    TvixmountError,
    ValidationError,
)
from .cache import LocalCache
from .hints import BlobHints
from .transport import GrpcTransport, Ticket

log = logging.getLogger(__name__)

# A recursive reply for get_recursive: past these, the closure is walked one
# Directory at a time instead (no reply is ever held bigger than this).
MAX_RECURSIVE_DIRECTORIES = 100_000
MAX_RECURSIVE_BYTES = 64 << 20
# What a miss fetches ahead of the Directory asked for.
PREFETCH_DIRECTORIES = 4096
PREFETCH_BYTES = 8 << 20
# The Directories below one a mount looks into that its client is told of
# (GrpcBlobService.read_directory_ahead): two levels (a package and its
# __pycache__), at most this many.
ENTERED_DEPTH = 2
ENTERED_DIRECTORIES = 64
CACHE_ENTRIES = 200_000  # Directory entries kept in the cache (about 200 bytes each)


def _received(msg: castore_pb2.Directory, what: str) -> Directory:
    try:
        return Directory.from_proto(msg)
    except ValidationError as exc:
        raise ValidationError(f"{what}: the server sent an invalid Directory: {exc}") from None


class RecursiveOrder:
    """Checks a recursive Get answer message by message."""

    def __init__(self, root: B3Digest) -> None:
        self.root = root
        self.what = f"get directory {root} recursively"
        self._expected: dict[B3Digest, int | None] = {root: None}  # referred to -> size given
        self._received: set[B3Digest] = set()

    def add(self, msg: castore_pb2.Directory) -> Directory:
        position = len(self._received)
        directory = _received(msg, self.what)
        digest = directory.digest()
        if position == 0 and digest != self.root:
            raise IntegrityError(f"{self.what}: the first Directory sent has digest {digest}")
        if digest not in self._expected:
            raise ValidationError(
                f"{self.what}: Directory {digest} (#{position}) was sent "
                + (
                    "twice"
                    if digest in self._received
                    else "but no Directory received before it refers to that digest "
                    "(a child before its parent, or a tampered Directory)"
                )
            )
        size = self._expected.pop(digest)
        if size is not None and size != directory.size():
            raise ValidationError(
                f"{self.what}: Directory {digest} has size {directory.size()}, "
                f"but its parent says {size}"
            )
        self._received.add(digest)
        for child in directory.directories:
            if child.digest not in self._received:
                self._expected[child.digest] = child.size
        return directory

    def finish(self) -> None:
        if not self._received:
            raise NotFoundError(f"directory {self.root} not found")
        if self._expected:
            missing = ", ".join(str(d) for d in sorted(self._expected)[:3])
            raise StoreError(
                f"{self.what}: the server did not send referred Directories ({missing})"
            )


class _Bounded(Exception):
    """A recursive reply reached its bound before it ended."""


def _stream_recursive(
    stub: Any,
    root: B3Digest,
    max_count: int,
    max_bytes: int,
    deliver: Callable[[Directory], object],
    ticket: Ticket,
) -> bool:
    """One recursive Get (in a worker thread): each Directory handed to ``deliver`` as soon
    as it is checked; whether the reply ended within the bounds (past one the call is
    cancelled).
    """
    request = pb.GetDirectoryRequest(digest=bytes(root), recursive=True)
    call = ticket.track(stub.Get(request, timeout=ticket.timeout))
    order = RecursiveOrder(root)
    count = size = 0
    try:
        for msg in call:
            size += msg.ByteSize()
            if count and (count >= max_count or size > max_bytes):
                call.cancel()
                return False
            deliver(order.add(msg))
            count += 1
    except BaseException:
        call.cancel()
        raise
    order.finish()
    return True


def _read_recursive(stub: Any, root: B3Digest, ticket: Ticket) -> list[Directory]:
    """A whole recursive Get (in a worker thread), checked; :class:`_Bounded` past the bounds."""
    directories: list[Directory] = []
    if not _stream_recursive(
        stub, root, MAX_RECURSIVE_DIRECTORIES, MAX_RECURSIVE_BYTES, directories.append, ticket
    ):
        raise _Bounded
    return directories


class _Arrivals:
    """A recursive Get a miss started, as its Directories reach the loop.

    ``waiting`` holds an event per Directory it was told of (the root, then
    the children of each one received) that has not arrived: a lookup of one
    waits for it rather than asking again; all are set when the reply ends.
    """

    def __init__(self, root: B3Digest) -> None:
        self.root = root
        self.received: list[Directory] = []
        self.waiting: dict[B3Digest, trio.Event] = {root: trio.Event()}
        self.error: Exception | None = None


class DirectoryCache:
    """Verified Directories by digest, least recently used dropped first, bounded by entries."""

    def __init__(self, max_entries: int = CACHE_ENTRIES) -> None:
        self._max = max_entries
        self._items: OrderedDict[B3Digest, Directory] = OrderedDict()
        self._entries = 0

    def get(self, digest: B3Digest) -> Directory | None:
        directory = self._items.get(digest)
        if directory is not None:
            self._items.move_to_end(digest)
        return directory

    def peek(self, digest: B3Digest) -> Directory | None:
        """The Directory if cached, leaving its place in the eviction order as it is."""
        return self._items.get(digest)

    def put(self, digest: B3Digest, directory: Directory) -> None:
        if digest in self._items:
            return
        self._items[digest] = directory
        self._entries += len(directory) + 1
        while self._entries > self._max and self._items:
            _, evicted = self._items.popitem(last=False)
            self._entries -= len(evicted) + 1


class GrpcDirectoryService:
    def __init__(
        self,
        transport: GrpcTransport,
        hints: BlobHints | None = None,
        cache_dir: LocalCache | None = None,
        entered: Callable[[Directory, list[Directory]], None] | None = None,
    ) -> None:
        """``entered`` is told of every Directory a ``get`` returns (a mount looking
        into it), with the cached Directories just below it (``_below``)."""
        self._transport = transport
        self._entered = entered
        self._cache_dir = cache_dir
        self._stub = pb_grpc.DirectoryServiceStub(transport.channel)
        self.hints = hints if hints is not None else BlobHints()
        self._cache = DirectoryCache()
        # Directories a recursive Get in flight was told of and has not sent yet.
        self._arriving: dict[B3Digest, trio.Event] = {}
        self.get_calls = 0  # Get calls made: lets tests and benchmarks count round trips

    def _keep(self, directory: Directory) -> None:
        """Cache ``directory`` (received, or read from disk) and note its files' sizes."""
        digest = directory.digest()
        self._cache.put(digest, directory)
        self.hints.note_directory(digest, directory)

    def _keep_on_disk(self, closure: list[Directory]) -> None:
        """Keep a whole closure received (root first) in the local cache, if there is one."""
        if self._cache_dir is not None:
            self._cache_dir.keep_directories(closure)

    async def get(self, digest: B3Digest) -> Directory | None:
        directory = await self._get(digest)
        if directory is not None and self._entered is not None:
            self._entered(directory, self._below(directory))
            if self._arriving and (events := self._arrivals_below(directory)):
                trio.lowlevel.spawn_system_task(self._enter_again, directory, events)
        return directory

    def _arrivals_below(self, directory: Directory) -> list[trio.Event]:
        """Of the Directories up to ``ENTERED_DEPTH`` levels below ``directory``, those a
        reply in flight is still to send (their events)."""
        events: list[trio.Event] = []
        level = [directory]
        for _ in range(ENTERED_DEPTH):
            below: list[Directory] = []
            for parent in level:
                for node in parent.directories:
                    event = self._arriving.get(node.digest)
                    if event is not None:
                        events.append(event)
                    elif (child := self._cache.peek(node.digest)) is not None:
                        below.append(child)
            level = below
        return events

    async def _enter_again(self, directory: Directory, events: list[trio.Event]) -> None:
        """Tell of ``directory`` again once the Directories below it arrived.

        A walk looks into a store path's top Directories while the reply with
        its closure still streams in; told again, its client reads ahead in
        the Directories below as well.
        """
        while events:
            for event in events:
                await event.wait()
            events = self._arrivals_below(directory)
        if self._entered is not None:
            try:
                self._entered(directory, self._below(directory))
            except Exception:  # reading ahead only helps: never end the mount over it
                log.exception("reading ahead below directory %s failed", directory.digest())

    def _below(self, directory: Directory) -> list[Directory]:
        """Cached Directories up to ``ENTERED_DEPTH`` levels below ``directory``, nearest first."""
        below: list[Directory] = []
        level = [directory]
        for _ in range(ENTERED_DEPTH):
            cached = (
                child
                for parent in level
                for node in parent.directories
                if (child := self._cache.peek(node.digest)) is not None
            )
            level = list(itertools.islice(cached, ENTERED_DIRECTORIES - len(below)))
            below.extend(level)
        return below

    async def _get(self, digest: B3Digest) -> Directory | None:
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        if self._cache_dir is not None:
            kept = await self._cache_dir.directory(digest)
            if kept is not None:
                self._keep(kept)  # already on disk
                return kept
        arriving = self._arriving.get(digest)
        if arriving is not None:
            await arriving.wait()
            cached = self._cache.get(digest)
            if cached is not None:
                return cached
            # That reply ended without it (cut off, or broken): ask for it alone.
        return await self._fetch_closure(digest)

    async def _fetch_closure(self, digest: B3Digest) -> Directory | None:
        """``digest``'s Directory, answered as soon as it arrived (and was checked).

        The rest of its closure comes in the same reply (bounded by
        ``PREFETCH_DIRECTORIES``), read and checked meanwhile in the background.
        """
        self.get_calls += 1
        arrivals = _Arrivals(digest)
        root_arrived = arrivals.waiting[digest]
        self._arriving[digest] = root_arrived
        trio.lowlevel.spawn_system_task(self._stream, arrivals, name=f"get directory {digest}")
        await root_arrived.wait()
        if arrivals.received:
            return arrivals.received[0]
        if arrivals.error is None or isinstance(arrivals.error, NotFoundError):
            return None
        raise arrivals.error

    def _arrived(self, arrivals: _Arrivals, directory: Directory) -> None:
        """A Directory of ``arrivals`` reached the loop: cached, and its waiters woken."""
        arrivals.received.append(directory)
        self._keep(directory)
        for child in directory.directories:
            if child.digest not in arrivals.waiting and child.digest not in self._arriving:
                event = arrivals.waiting[child.digest] = trio.Event()
                self._arriving[child.digest] = event
        self._woken(arrivals, directory.digest())

    def _woken(self, arrivals: _Arrivals, digest: B3Digest) -> None:
        event = arrivals.waiting.pop(digest, None)
        if event is not None:
            if self._arriving.get(digest) is event:
                del self._arriving[digest]
            event.set()

    async def _stream(self, arrivals: _Arrivals) -> None:
        what = f"get directory {arrivals.root}"
        token = trio.lowlevel.current_trio_token()

        def deliver(directory: Directory) -> None:  # in the worker thread
            token.run_sync_soon(self._arrived, arrivals, directory)

        try:
            complete = await self._transport.call(
                what,
                lambda ticket: _stream_recursive(
                    self._stub, arrivals.root, PREFETCH_DIRECTORIES, PREFETCH_BYTES, deliver, ticket
                ),
                stream=True,
            )
            if complete:
                self._keep_on_disk(arrivals.received)
        except (IntegrityError, ValidationError) as exc:
            log.warning("%s", exc)
            arrivals.error = exc
        except TvixmountError as exc:
            log.debug("%s", exc)
            arrivals.error = exc
        except Exception as exc:
            # A background task: what it does not expect must fail the lookups
            # waiting on it (EIO), not end the mount.
            log.exception("%s failed unexpectedly", what)
            arrivals.error = StoreError(f"{what} failed: {exc}")
        finally:
            # Its deliveries were queued on the loop before its end: all have run.
            for digest in list(arrivals.waiting):
                self._woken(arrivals, digest)

    async def get_recursive(self, root: B3Digest) -> AsyncIterator[Directory]:
        self.get_calls += 1
        try:
            directories = await self._transport.call(
                f"get directory {root} recursively",
                lambda ticket: _read_recursive(self._stub, root, ticket),
                stream=True,
            )
        except NotFoundError:
            raise NotFoundError(f"directory {root} not found") from None
        except _Bounded:
            log.info("the closure of directory %s is too big for one reply; walking it", root)
            async for directory in walk_breadth_first(self._get_checked, root):
                yield directory
            return
        except (IntegrityError, ValidationError) as exc:
            log.warning("%s", exc)
            raise
        for directory in directories:
            self._keep(directory)
        self._keep_on_disk(directories)
        for directory in directories:
            yield directory

    async def _get_checked(self, digest: B3Digest) -> Directory | None:
        directory = await self._get(digest)
        if directory is not None and directory.digest() != digest:
            raise IntegrityError(f"get directory {digest}: the server sent another Directory")
        return directory

    async def put_many(self, directories: Sequence[Directory]) -> B3Digest:
        if not directories:
            raise ValidationError("no directories to put")
        for directory in directories:
            directory.validate()
        root = directories[-1].digest()
        messages = [d.to_proto() for d in directories]

        def put(ticket: Ticket) -> bytes:
            return bytes(ticket.unary(self._stub.Put, iter(messages)).root_digest)

        answered = await self._transport.call(f"put directories (root {root})", put, stream=True)
        if answered != root:
            raise IntegrityError(
                f"put directories: the server answered root {answered.hex()}, expected {root}"
            )
        return root

    async def aclose(self) -> None:
        pass  # the transport (shared by the store's three clients) closes the channel
