"""The three tvix gRPC services in front of any :class:`~tvixmount.stores.Store`.

Threading model: grpc's server runs every handler in a thread of its pool,
while tvixmount's services are async (trio) and not thread-safe (the local
store shares one SQLite connection, the memory store plain dicts). So trio
runs in the main thread and owns the store; a handler thread hands each store
call to the loop with ``trio.from_thread.run`` and blocks only itself while
waiting. Every store access is thus serialized on one loop — exactly how the
services are used by the FUSE daemon — and CPU-heavy work that is not store
access (hashing synthetic chunks, protobuf encoding) stays in the handler
threads, off the loop.

Chunks: a Stat with ``send_chunks`` for a big unchunked blob answers with
fixed-size chunks whose digests the server computes once and indexes, and
``Read`` of such a chunk digest serves that range of the blob. Clients (tvix's
and ours) then fetch only the chunks a positioned read needs instead of the
whole blob. The index lives in memory; a client that hits a forgotten chunk
after a restart re-Stats the blob, which rebuilds it.

Writes: every Put is refused (PERMISSION_DENIED) unless the server was
started ``writable``; then a PathInfo is kept only once :mod:`.admission`
found it safe (docs/serve.md says what an exposed server lets others do).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, ParamSpec, TypeVar

import blake3
import grpc
import trio

from ..._proto import rpc_blobstore_pb2 as blob_pb
from ..._proto import rpc_blobstore_pb2_grpc as blob_grpc
from ..._proto import rpc_directory_pb2 as dir_pb
from ..._proto import rpc_directory_pb2_grpc as dir_grpc
from ..._proto import rpc_pathinfo_pb2 as pi_pb
from ..._proto import rpc_pathinfo_pb2_grpc as pi_grpc
from ..._proto import tvixmount_blobs_pb2 as batch_pb
from ..._proto import tvixmount_blobs_pb2_grpc as batch_grpc
from ...castore.blobservice import BlobReader, BlobService
from ...castore.digest import B3Digest
from ...castore.directory import Directory
from ...castore.nodes import node_from_proto
from ...errors import DigestError, NotFoundError, StoreError, TvixmountError, ValidationError
from ...pathinfo.model import PathInfo
from ...storepath import DIGEST_LEN
from .. import Store
from .admission import admit
from .status import PermissionDeniedError, Unimplemented, status_of
from .transport import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

READ_MESSAGE_BYTES = 1 << 20  # bytes per BlobChunk the server streams
SYNTHETIC_CHUNK_BYTES = 1 << 20  # blobs larger than this are offered in chunks this big
READ_MANY_DIGESTS = 4096  # digests one ReadMany may ask for
READ_MANY_GROUP_BYTES = 1 << 20  # blob bytes of a ReadMany read in one trip to the loop
DIRECTORY_BATCH = 64  # Directories of a recursive Get read in one trip to the loop
_CHUNK_INDEX_BLOBS = 4096  # blobs whose synthetic chunk lists are remembered
_HANDLER_THREADS = 16


class _Loop:
    """Runs store coroutines on the trio loop from grpc handler threads."""

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token

    def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        return trio.from_thread.run(functools.partial(fn, *args, **kwargs), trio_token=self._token)


async def _collect(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]


async def _take(items: AsyncIterator[T], count: int) -> list[T]:
    """The next ``count`` items of ``items`` (fewer only at its end)."""
    taken: list[T] = []
    for _ in range(count):
        try:
            taken.append(await anext(items))
        except StopAsyncIteration:
            break
    return taken


async def _read_range(blobs: BlobService, blob: B3Digest, offset: int, size: int) -> bytes | None:
    """``size`` bytes of ``blob`` at ``offset`` (``None`` if the blob is gone)."""
    reader = await blobs.open_read(blob)
    if reader is None:
        return None
    try:
        data = bytes(await reader.pread(offset, size))
    finally:
        await reader.aclose()
    if len(data) != size:
        raise StoreError(f"blob {blob}: short read at offset {offset}")
    return data


async def _open_and_read(
    blobs: BlobService, digest: B3Digest, length: int
) -> tuple[BlobReader | None, bytes] | None:
    """The first ``length`` bytes of a blob, and its reader if there is more (else closed).

    ``None`` if the blob is absent.
    """
    reader = await blobs.open_read(digest)
    if reader is None:
        return None
    try:
        wanted = min(length, reader.size)
        data = bytes(await reader.pread(0, wanted))
        if len(data) != wanted:
            raise StoreError(f"blob {digest}: short read at offset 0")
    except BaseException:
        await reader.aclose()
        raise
    if reader.size <= length:
        await reader.aclose()
        return None, data
    return reader, data


async def _open_and_read_many(
    blobs: BlobService, digests: list[B3Digest], budget: int
) -> list[tuple[BlobReader | None, bytes] | None]:
    """``_open_and_read`` of the first of ``digests``, and of the next while their
    bytes stay within ``budget``; a blob with more to send ends the group."""
    group = []
    total = 0
    for digest in digests:
        opened = await _open_and_read(blobs, digest, READ_MESSAGE_BYTES)
        group.append(opened)
        if opened is not None:
            total += len(opened[1])
            if opened[0] is not None or total >= budget:
                break
    return group


def _abort(context: Any, exc: Exception) -> NoReturn:
    if isinstance(exc, TvixmountError):
        code, message = status_of(exc)
    elif isinstance(exc, trio.RunFinishedError):
        code, message = grpc.StatusCode.UNAVAILABLE, "the server is shutting down"
    else:
        log.exception("unexpected error in a gRPC handler")
        code = grpc.StatusCode.INTERNAL
        message = f"internal error: {type(exc).__name__}: {exc}"
    context.abort(code, message)
    raise AssertionError("context.abort raises")


def _unary(fn: Callable[[Any, Any, Any], T]) -> Callable[[Any, Any, Any], T]:
    @functools.wraps(fn)
    def handler(self: Any, request: Any, context: Any) -> T:
        try:
            return fn(self, request, context)
        except Exception as exc:
            _abort(context, exc)

    return handler


def _streaming(
    fn: Callable[[Any, Any, Any], Iterator[T]],
) -> Callable[[Any, Any, Any], Iterator[T]]:
    @functools.wraps(fn)
    def handler(self: Any, request: Any, context: Any) -> Iterator[T]:
        try:
            yield from fn(self, request, context)
        except Exception as exc:
            _abort(context, exc)

    return handler


def _digest(raw: bytes, what: str) -> B3Digest:
    try:
        return B3Digest(raw)
    except DigestError as exc:
        raise ValidationError(f"{what}: {exc}") from None


class ChunkIndex:
    """Synthetic chunk lists (blob -> chunks) and where each chunk lives (chunk -> range).

    Shared by handler threads, hence the lock; bounded by number of blobs.
    """

    def __init__(self, max_blobs: int = _CHUNK_INDEX_BLOBS) -> None:
        self._lock = threading.Lock()
        self._max_blobs = max_blobs
        self._blobs: OrderedDict[B3Digest, list[tuple[B3Digest, int]]] = OrderedDict()
        self._ranges: dict[B3Digest, tuple[B3Digest, int, int]] = {}

    def chunks_of(self, blob: B3Digest) -> list[tuple[B3Digest, int]] | None:
        with self._lock:
            chunks = self._blobs.get(blob)
            if chunks is not None:
                self._blobs.move_to_end(blob)
            return chunks

    def locate(self, chunk: B3Digest) -> tuple[B3Digest, int, int] | None:
        """(blob digest, offset, size) of a chunk, if indexed."""
        with self._lock:
            return self._ranges.get(chunk)

    def add(self, blob: B3Digest, chunks: list[tuple[B3Digest, int]]) -> None:
        with self._lock:
            self._blobs[blob] = chunks
            offset = 0
            for chunk, size in chunks:
                self._ranges[chunk] = (blob, offset, size)
                offset += size
            while len(self._blobs) > self._max_blobs:
                evicted, evicted_chunks = self._blobs.popitem(last=False)
                for chunk, _ in evicted_chunks:
                    if self._ranges.get(chunk, (None,))[0] == evicted:
                        del self._ranges[chunk]


def _refuse_writes(writable: bool, what: str) -> None:
    if not writable:
        raise PermissionDeniedError(f"{what}: this server is read-only (serve --writable)")


class BlobServicer(blob_grpc.BlobServiceServicer):  # type: ignore[misc]
    def __init__(self, loop: _Loop, blobs: BlobService, writable: bool) -> None:
        self._loop = loop
        self._blobs = blobs
        self._writable = writable
        self.index = ChunkIndex()

    @property
    def blobs(self) -> BlobService:
        return self._blobs

    @_unary
    def Stat(self, request: Any, context: Any) -> Any:
        digest = _digest(request.digest, "stat blob")
        chunks = self._loop.run(self._blobs.chunks, digest)
        if chunks is None:
            if self.index.locate(digest) is None:
                raise NotFoundError(f"blob {digest} not found")
            chunks = []  # a synthetic chunk is itself a (small, unchunked) blob
        elif request.send_chunks and not chunks:
            chunks = self._synthetic_chunks(digest)
        return blob_pb.StatBlobResponse(
            chunks=[blob_pb.StatBlobResponse.ChunkMeta(digest=bytes(d), size=s) for d, s in chunks]
        )

    def _synthetic_chunks(self, digest: B3Digest) -> list[tuple[B3Digest, int]]:
        known = self.index.chunks_of(digest)
        if known is not None:
            return known
        reader = self._open(digest)
        try:
            if reader.size <= SYNTHETIC_CHUNK_BYTES:
                return []
            chunks = []
            for offset in range(0, reader.size, SYNTHETIC_CHUNK_BYTES):
                data = self._read_exactly(reader, offset, SYNTHETIC_CHUNK_BYTES, digest)
                chunks.append((B3Digest(blake3.blake3(data).digest()), len(data)))
        finally:
            self._loop.run(reader.aclose)
        self.index.add(digest, chunks)
        return chunks

    def _open(self, digest: B3Digest) -> BlobReader:
        reader = self._loop.run(self._blobs.open_read, digest)
        if reader is None:
            raise NotFoundError(f"blob {digest} not found")
        return reader

    def _read_exactly(
        self, reader: BlobReader, offset: int, length: int, digest: B3Digest
    ) -> bytes:
        length = min(length, reader.size - offset)
        data = bytes(self._loop.run(reader.pread, offset, length))
        if len(data) != length:
            raise StoreError(f"blob {digest}: short read at offset {offset}")
        return data

    @_streaming
    def Read(self, request: Any, context: Any) -> Iterator[Any]:
        digest = _digest(request.digest, "read blob")
        located = self.index.locate(digest)
        if located is not None:
            # A synthetic chunk: one trip to the loop reads its whole range.
            data = self._loop.run(_read_range, self._blobs, *located)
            if data is None:
                raise NotFoundError(f"blob {located[0]} (holding chunk {digest}) not found")
            yield blob_pb.BlobChunk(data=data)
            return
        # Most blobs fit one message: one trip to the loop opens, reads and closes.
        opened = self._loop.run(_open_and_read, self._blobs, digest, READ_MESSAGE_BYTES)
        if opened is None:
            raise NotFoundError(f"blob {digest} not found")
        for data, _ in self.parts(digest, *opened):
            yield blob_pb.BlobChunk(data=data)

    def parts(
        self, digest: B3Digest, reader: BlobReader | None, first: bytes
    ) -> Iterator[tuple[bytes, bool]]:
        """A blob's messages, as (bytes, whether the last), from what ``_open_and_read`` gave."""
        if reader is None:
            yield first, True
            return
        try:
            yield first, False
            for offset in range(READ_MESSAGE_BYTES, reader.size, READ_MESSAGE_BYTES):
                data = self._read_exactly(reader, offset, READ_MESSAGE_BYTES, digest)
                yield data, offset + len(data) >= reader.size
        finally:
            with contextlib.suppress(trio.RunFinishedError):
                self._loop.run(reader.aclose)

    @_unary
    def Put(self, request_iterator: Any, context: Any) -> Any:
        _refuse_writes(self._writable, "put blob")
        writer = self._loop.run(self._blobs.open_write)
        try:
            for message in request_iterator:
                self._loop.run(writer.write, message.data)
        except BaseException:
            self._loop.run(writer.abort)
            raise
        digest = self._loop.run(writer.finish)
        return blob_pb.PutBlobResponse(digest=bytes(digest))


class BatchBlobServicer(batch_grpc.BatchBlobServiceServicer):  # type: ignore[misc]
    """tvixmount's ReadMany (protos/tvixmount_blobs.proto): a directory's small files in one call.

    A Read costs the server a call's worth of grpc and thread hand-overs (most
    of a millisecond of CPU), which a mount walking thousands of small files
    pays per file; here one trip to the loop reads up to ``READ_MANY_GROUP_BYTES``.
    """

    def __init__(self, loop: _Loop, blobs: BlobServicer) -> None:
        self._loop = loop
        self._blobs = blobs

    @_streaming
    def ReadMany(self, request: Any, context: Any) -> Iterator[Any]:
        if len(request.digests) > READ_MANY_DIGESTS:
            raise ValidationError(
                f"read blobs: at most {READ_MANY_DIGESTS} digests a call, "
                f"got {len(request.digests)}"
            )
        digests = [_digest(raw, "read blobs") for raw in request.digests]
        done = 0
        while done < len(digests):
            # The first blob alone: a client opening it waits for it, not for the group.
            budget = READ_MANY_GROUP_BYTES if done else 0
            group = self._loop.run(_open_and_read_many, self._blobs.blobs, digests[done:], budget)
            parts = []
            for opened in group:
                digest = digests[done]
                done += 1
                if opened is None:
                    parts.append(batch_pb.BlobPart(missing=True, end=True))
                    continue
                for data, last in self._blobs.parts(digest, *opened):
                    parts.append(batch_pb.BlobPart(data=data, end=last))
                    if not last:  # a big blob: one message per part
                        yield batch_pb.BlobParts(parts=parts)
                        parts = []
            if parts:
                yield batch_pb.BlobParts(parts=parts)


class DirectoryServicer(dir_grpc.DirectoryServiceServicer):  # type: ignore[misc]
    def __init__(self, loop: _Loop, store: Store, writable: bool) -> None:
        self._loop = loop
        self._directories = store.directories
        self._writable = writable

    @_streaming
    def Get(self, request: Any, context: Any) -> Iterator[Any]:
        if request.WhichOneof("by_what") != "digest":
            raise ValidationError("get directory: no digest given")
        digest = _digest(request.digest, "get directory")
        if not request.recursive:
            root = self._loop.run(self._directories.get, digest)
            if root is None:
                raise NotFoundError(f"directory {digest} not found")
            yield root.to_proto()
            return
        closure = self._directories.get_recursive(digest)
        sent = 0
        try:
            # The root alone first: a client answers the lookup that asked with it
            # while the rest of the closure is still being read here.
            while batch := self._loop.run(_take, closure, DIRECTORY_BATCH if sent else 1):
                for directory in batch:
                    yield directory.to_proto()
                sent += len(batch)
        except NotFoundError as exc:
            if not sent:
                raise NotFoundError(f"directory {digest} not found") from None
            raise StoreError(f"the closure of directory {digest} is incomplete: {exc}") from None
        finally:
            with contextlib.suppress(trio.RunFinishedError):
                self._loop.run(closure.aclose)  # type: ignore[attr-defined]

    @_unary
    def Put(self, request_iterator: Any, context: Any) -> Any:
        _refuse_writes(self._writable, "put directories")
        directories = [Directory.from_proto(message) for message in request_iterator]
        root = self._loop.run(self._directories.put_many, directories)
        return dir_pb.PutDirectoryResponse(root_digest=bytes(root))


class PathInfoServicer(pi_grpc.PathInfoServiceServicer):  # type: ignore[misc]
    def __init__(self, loop: _Loop, store: Store, writable: bool) -> None:
        self._loop = loop
        self._store = store
        self._writable = writable
        # Puts are admitted one at a time: two racing Puts of one path could
        # both find it absent and both be kept.
        self._admitting = trio.Lock()

    @_unary
    def Get(self, request: Any, context: Any) -> Any:
        if request.WhichOneof("by_what") != "by_output_hash":
            raise ValidationError("get path info: no output hash given")
        digest = request.by_output_hash
        if len(digest) != DIGEST_LEN:
            raise ValidationError(
                f"get path info: an output hash is {DIGEST_LEN} bytes, got {len(digest)}"
            )
        info = self._loop.run(self._store.pathinfos.get, digest)
        if info is None:
            raise NotFoundError("path info not found")
        return info.to_proto()

    @_unary
    def Put(self, request: Any, context: Any) -> Any:
        _refuse_writes(self._writable, "put path info")
        info = PathInfo.from_proto(request)
        return self._loop.run(self._admit, info).to_proto()

    async def _admit(self, info: PathInfo) -> PathInfo:
        async with self._admitting:
            return await admit(self._store, info)

    @_streaming
    def List(self, request: Any, context: Any) -> Iterator[Any]:
        for info in self._loop.run(_collect, self._store.pathinfos.list()):
            yield info.to_proto()

    @_unary
    def CalculateNAR(self, request: Any, context: Any) -> Any:
        node = node_from_proto(request)
        try:
            from ...nar.writer import calculate_nar
        except ImportError:
            raise Unimplemented("this server cannot write NARs") from None
        size, sha256 = self._loop.run(
            calculate_nar, node, self._store.blobs, self._store.directories
        )
        return pi_pb.CalculateNARResponse(nar_size=size, nar_sha256=sha256)


def _bind(server: Any, listen: str) -> str:
    """Bind ``listen`` (``HOST:PORT`` or ``unix:///PATH``); returns the client store URL.

    The store URLs clients take for the same address (``grpc+http://HOST:PORT``,
    ``grpc+unix:///PATH``) are accepted too.
    """
    given = listen.removeprefix("grpc+http://").removeprefix("grpc+")
    if given.startswith("unix:"):
        path = given.removeprefix("unix:").removeprefix("//")
        if not path.startswith("/") or path == "/":
            raise TvixmountError(f"cannot listen on {listen!r}: expected unix:///ABSOLUTE/PATH")
        address, url = f"unix:{path}", f"grpc+unix://{path}"
    else:
        host, sep, port = given.rpartition(":")
        if not sep or not host or "/" in host or not port.isdigit() or int(port) > 65535:
            raise TvixmountError(f"cannot listen on {listen!r}: expected HOST:PORT or unix:///PATH")
        _probe_tcp(listen, host, int(port))
        address, url = given, ""
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise TvixmountError(f"cannot listen on {listen!r}: {exc}") from None
    if not bound:
        raise TvixmountError(f"cannot listen on {listen!r}: the address is in use or invalid")
    return url or f"grpc+http://{host}:{bound}"


def _probe_tcp(listen: str, host: str, port: int) -> None:
    """Refuse an address in use (or not on this host) before grpc tries it.

    grpc's own bind failure writes a log line of its own to stderr beside our
    error, and is vaguer ("Failed to bind"). grpc binds every address ``host``
    resolves to, so one of them in use is refused.
    """
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise TvixmountError(f"cannot listen on {listen!r}: {exc.strerror}") from None
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise TvixmountError(f"cannot listen on {listen!r}: {exc.strerror}") from None
                failures.append(exc)
    if failures and len(failures) == len(addresses):
        raise TvixmountError(f"cannot listen on {listen!r}: {failures[0].strerror}")


class GrpcServer:
    """A started gRPC server; create with :meth:`start` inside ``trio.run``."""

    def __init__(self, server: Any, url: str, blobs: BlobServicer) -> None:
        self._server = server
        self.url = url
        self.blob_servicer = blobs

    @classmethod
    def start(cls, store: Store, listen: str, *, writable: bool = False) -> GrpcServer:
        """Serve ``store`` on ``listen``; Puts are refused unless ``writable``."""
        loop = _Loop(trio.lowlevel.current_trio_token())
        server = grpc.server(
            ThreadPoolExecutor(max_workers=_HANDLER_THREADS, thread_name_prefix="grpc-handler"),
            options=(
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # grpc's default SO_REUSEPORT lets a second server bind a busy
                # port and silently share its traffic; fail loudly instead.
                ("grpc.so_reuseport", 0),
            ),
        )
        blobs = BlobServicer(loop, store.blobs, writable)
        blob_grpc.add_BlobServiceServicer_to_server(blobs, server)
        batch_grpc.add_BatchBlobServiceServicer_to_server(BatchBlobServicer(loop, blobs), server)
        dir_grpc.add_DirectoryServiceServicer_to_server(
            DirectoryServicer(loop, store, writable), server
        )
        pi_grpc.add_PathInfoServiceServicer_to_server(
            PathInfoServicer(loop, store, writable), server
        )
        url = _bind(server, listen)
        server.start()
        log.info("serving %s on %s (%s)", store.url, url, "writable" if writable else "read-only")
        return cls(server, url, blobs)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting calls and let running ones finish for ``grace`` seconds.

        Shielded and run in a thread so the loop keeps serving the store calls
        of in-flight handlers while they drain.
        """
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: self._server.stop(grace).wait())


__all__ = [
    "READ_MANY_DIGESTS",
    "READ_MESSAGE_BYTES",
    "SYNTHETIC_CHUNK_BYTES",
    "ChunkIndex",
    "GrpcServer",
]
