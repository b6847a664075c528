"""gRPC servers for tests: the real ``tvixmount serve`` in a subprocess, and a
dict-backed in-process server that serves whatever it is given (so tests can
make it lie).

Both always stop in ``finally``, whatever the test did.
"""

from __future__ import annotations

import hashlib
import re
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tests.mounting import tvixmount_command
from tvixmount import nixbase32
from tvixmount._proto import castore_pb2
from tvixmount._proto import rpc_blobstore_pb2 as blob_pb
from tvixmount._proto import rpc_blobstore_pb2_grpc as blob_grpc
from tvixmount._proto import rpc_directory_pb2_grpc as dir_grpc
from tvixmount._proto import rpc_pathinfo_pb2_grpc as pi_grpc
from tvixmount._proto import tvixmount_blobs_pb2_grpc as batch_grpc
from tvixmount._proto.pathinfo_pb2 import PathInfo as PathInfoMsg
from tvixmount.castore import B3Digest, DirectoryNode, FileNode
from tvixmount.castore.directory import Directory
from tvixmount.pathinfo.model import NarInfo, PathInfo

_READY = re.compile(r"^tvixmount: serving .* at (\S+)$")
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


@dataclass
class Served:
    """A running ``tvixmount serve`` subprocess."""

    url: str
    process: subprocess.Popen[str]
    log_file: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


def _await_ready(process: subprocess.Popen[str], log_file: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            match = _READY.match(line.strip())
            if match:
                return match.group(1)
            if not line and process.poll() is not None:
                break
    raise AssertionError(
        f"tvixmount serve did not become ready (exit {process.poll()}): {log_file.read_text()}"
    )


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    """Signal the server and reap it (SIGKILL as the last resort); returns its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@contextmanager
def serving(
    store: str, log_file: Path, listen: str = "127.0.0.1:0", *, writable: bool = False
) -> Iterator[Served]:
    """``tvixmount serve --store STORE --listen LISTEN [--writable]`` until the block ends."""
    flags = ["--writable"] if writable else []
    with log_file.open("a") as log:
        process = subprocess.Popen(
            tvixmount_command("serve", "--listen", listen, "--store", store, *flags),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        yield Served(_await_ready(process, log_file), process, log_file)
    finally:
        stop(process)


@dataclass
class FakeBackend:
    """What the in-process server answers, keyed by the raw digest asked for.

    Values are served as they are, so a test makes the server lie by storing
    the wrong thing under a key.
    """

    blobs: dict[bytes, bytes] = field(default_factory=dict)
    chunks: dict[bytes, list[tuple[bytes, int]]] = field(default_factory=dict)
    directories: dict[bytes, list[castore_pb2.Directory]] = field(default_factory=dict)
    pathinfos: dict[bytes, PathInfoMsg] = field(default_factory=dict)
    read_calls: list[bytes] = field(default_factory=list)
    stat_calls: int = 0
    pathinfo_delay: float = 0.0  # seconds each PathInfo Get stalls before answering
    endless_blobs: set[bytes] = field(default_factory=set)  # Read streams these forever
    # Directories whose recursive Get sends the first message, then repeats it forever
    endless_directories: set[bytes] = field(default_factory=set)
    hung_blobs: set[bytes] = field(default_factory=set)  # Stat and Read of these hang
    hung_calls: int = 0  # calls that started hanging
    # Set: a recursive Get sends the root Directory, then waits for it before the rest.
    rest_of_closure: threading.Event | None = None
    release: threading.Event = field(default_factory=threading.Event)

    def put_directories(self, directories: Iterable[Directory]) -> None:
        """Store each Directory as tvix answers a recursive Get: its closure, breadth first."""
        by_digest = {bytes(d.digest()): d for d in directories}
        for digest in by_digest:
            closure, queue, seen = [], deque([digest]), {digest}
            while queue:
                directory = by_digest[queue.popleft()]
                closure.append(directory.to_proto())
                for child in directory.directories:
                    if bytes(child.digest) not in seen:
                        seen.add(bytes(child.digest))
                        queue.append(bytes(child.digest))
            self.directories[digest] = closure


def store_basename(name: str) -> str:
    """A store path basename (hash derived from ``name``) for a fake server's PathInfo."""
    return f"{nixbase32.encode(hashlib.sha256(name.encode()).digest()[:20])}-{name}"


def _serve_node(backend: FakeBackend, node: FileNode | DirectoryNode) -> str:
    info = PathInfo(node, (), NarInfo(0, bytes(32)))
    backend.pathinfos[info.store_path.digest] = info.to_proto()
    return node.name.decode()


def serve_file(backend: FakeBackend, name: str, data: bytes, size: int | None = None) -> str:
    """A store path holding one file of ``data`` (its FileNode claiming ``size``)."""
    digest = B3Digest.of(data)
    backend.blobs[bytes(digest)] = data
    basename = store_basename(name).encode()
    return _serve_node(backend, FileNode(basename, digest, len(data) if size is None else size))


def serve_directory(backend: FakeBackend, name: str, directory: Directory) -> str:
    """A store path holding ``directory`` (served alone, without the Directories below it)."""
    backend.directories[bytes(directory.digest())] = [directory.to_proto()]
    basename = store_basename(name).encode()
    return _serve_node(backend, DirectoryNode(basename, directory.digest(), directory.size()))


def _hang(backend: FakeBackend, context: Any) -> None:
    """Wait until the test releases the server or the client gives up."""
    backend.hung_calls += 1
    while context.is_active() and not backend.release.wait(0.05):
        pass


class _Blobs(blob_grpc.BlobServiceServicer):  # type: ignore[misc]
    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    def Stat(self, request: Any, context: Any) -> Any:
        self.backend.stat_calls += 1
        if request.digest in self.backend.hung_blobs:
            _hang(self.backend, context)
        if request.digest not in self.backend.blobs and request.digest not in self.backend.chunks:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such blob")
        chunks = self.backend.chunks.get(request.digest, []) if request.send_chunks else []
        return blob_pb.StatBlobResponse(
            chunks=[blob_pb.StatBlobResponse.ChunkMeta(digest=d, size=s) for d, s in chunks]
        )

    def Read(self, request: Any, context: Any) -> Iterator[Any]:
        self.backend.read_calls.append(request.digest)
        if request.digest in self.backend.hung_blobs:
            _hang(self.backend, context)
        if request.digest in self.backend.endless_blobs:
            message = blob_pb.BlobChunk(data=bytes(1 << 20))
            while context.is_active():
                yield message
            return
        data = self.backend.blobs.get(request.digest)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such blob")
            return
        for offset in range(0, len(data), 1 << 16):
            yield blob_pb.BlobChunk(data=data[offset : offset + (1 << 16)])


class _Directories(dir_grpc.DirectoryServiceServicer):  # type: ignore[misc]
    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    def Get(self, request: Any, context: Any) -> Iterator[Any]:
        messages = self.backend.directories.get(request.digest)
        if messages is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such directory")
            return
        if request.recursive and request.digest in self.backend.endless_directories:
            while context.is_active():
                yield messages[0]
            return
        if request.recursive and self.backend.rest_of_closure is not None:
            yield messages[0]
            self.backend.rest_of_closure.wait(30)
            yield from messages[1:]
            return
        yield from messages if request.recursive else messages[:1]


class _PathInfos(pi_grpc.PathInfoServiceServicer):  # type: ignore[misc]
    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    def Get(self, request: Any, context: Any) -> Any:
        time.sleep(self.backend.pathinfo_delay)
        info = self.backend.pathinfos.get(request.by_output_hash)
        if info is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such path")
        return info


@contextmanager
def fake_server(
    backend: FakeBackend, batch: batch_grpc.BatchBlobServiceServicer | None = None
) -> Iterator[str]:
    """A dict-backed gRPC server on a free loopback port; yields its store URL.

    ``batch`` answers tvixmount's ReadMany (without it: UNIMPLEMENTED, as tvix-store).
    """
    # Enough handler threads that calls a test leaves hanging do not queue the rest.
    server = grpc.server(ThreadPoolExecutor(max_workers=128))
    blob_grpc.add_BlobServiceServicer_to_server(_Blobs(backend), server)
    dir_grpc.add_DirectoryServiceServicer_to_server(_Directories(backend), server)
    pi_grpc.add_PathInfoServiceServicer_to_server(_PathInfos(backend), server)
    if batch is not None:
        batch_grpc.add_BatchBlobServiceServicer_to_server(batch, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"grpc+http://127.0.0.1:{port}"
    finally:
        backend.release.set()
        server.stop(0).wait()
