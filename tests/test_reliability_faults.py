"""A backend that hangs gives EIO within the timeout; other paths keep answering; recovery.

First the fs layer alone (hanging in-memory services, fractions of a second),
then real mounts over a gRPC server and an HTTP binary cache on 127.0.0.1
that hang for one store path only, mounted with ``--timeout``.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pyfuse3
import pytest
import trio

from tests.fixtures import castore as fx
from tests.grpc_serving import FakeBackend, fake_server
from tests.mounting import Mount, mounted, requires_fuse, run_tvixmount
from tests.nixcache import build_cache, requires_nix
from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.digest import B3Digest
from tvixmount.castore.directory import Directory
from tvixmount.cli import mount as cli_mount
from tvixmount.fs import operations
from tvixmount.fs.inode_tracker import ROOT_INODE
from tvixmount.fs.mounttable import is_mounted
from tvixmount.fs.operations import TvixmountFS
from tvixmount.fs.processes import serving_pids
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.pathinfo.root_nodes import PathInfoRootNodes
from tvixmount.storepath import StorePath
from tvixmount.stores.memory.castore import (
    MemoryBlobReader,
    MemoryBlobService,
    MemoryDirectoryService,
)
from tvixmount.stores.memory.pathinfo import MemoryPathInfoService

CTX = cast(pyfuse3.RequestContext, None)
TIMEOUT = 0.3  # the fs-level tests' deadline
MOUNT_TIMEOUT = 2.0  # --timeout of the real mounts
MARGIN = 3.0  # slack for a loaded 2-core machine


# -- the fs layer over hanging services -----------------------------------------------------


class Gate:
    """Holds every call for the chosen keys until opened: a backend that hangs, then recovers."""

    def __init__(self, *keys: object) -> None:
        self.keys = set(keys)
        self.opened = trio.Event()

    async def passage(self, key: object) -> None:
        if key in self.keys:
            await self.opened.wait()


class HangingPathInfos(MemoryPathInfoService):
    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    async def get(self, digest: bytes) -> PathInfo | None:
        await self.gate.passage(digest)
        return await super().get(digest)


class HangingDirectories(MemoryDirectoryService):
    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    async def get(self, digest: B3Digest) -> Directory | None:
        await self.gate.passage(digest)
        return await super().get(digest)


class HangingReader(MemoryBlobReader):
    def __init__(self, data: bytes, gate: Gate) -> None:
        super().__init__(data)
        self.gate = gate

    async def pread(self, offset: int, length: int) -> memoryview:
        await self.gate.passage(("read", offset))
        return await super().pread(offset, length)


class HangingBlobs(MemoryBlobService):
    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    async def open_read(self, digest: B3Digest) -> MemoryBlobReader | None:
        await self.gate.passage(digest)
        reader = await super().open_read(digest)
        if reader is None:
            return None
        return HangingReader(bytes(await reader.pread(0, reader.size)), self.gate)


def _digest_of(node_index: int) -> bytes:
    return StorePath.from_basename(fx.ROOT_NODES[node_index].name).digest


async def _fs(*hanging: object, timeout: float | None = TIMEOUT) -> tuple[TvixmountFS, Gate]:
    gate = Gate(*hanging)
    blobs = HangingBlobs(gate)
    for blob in fx.BLOBS:
        await put_stream(blobs, [blob])
    directories = HangingDirectories(gate)
    await directories.put_many(fx.DIRECTORIES)
    pathinfos = HangingPathInfos(gate)
    for node in fx.ROOT_NODES:
        await pathinfos.put(PathInfo(node, (), NarInfo(0, bytes(32))))
    fs = TvixmountFS(PathInfoRootNodes(pathinfos), blobs, directories, timeout=timeout)
    return fs, gate


async def _errno_and_seconds(call: Any) -> tuple[int, float]:
    started = trio.current_time()
    with pytest.raises(pyfuse3.FUSEError) as excinfo:
        await call
    return excinfo.value.errno, trio.current_time() - started


async def test_hanging_root_lookup_is_eio_within_the_timeout() -> None:
    fs, _ = await _fs(_digest_of(0))
    code, seconds = await _errno_and_seconds(fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX))
    assert code == errno.EIO
    assert TIMEOUT <= seconds < TIMEOUT + MARGIN


async def test_hanging_directory_fetch_is_eio() -> None:
    fs, _ = await _fs(fx.DIRECTORY_COMPLICATED.digest())
    entry = await fs.lookup(ROOT_INODE, fx.ROOT_DIRECTORY_COMPLICATED, CTX)
    code, _ = await _errno_and_seconds(fs.opendir(entry.st_ino, CTX))
    assert code == errno.EIO


async def test_hanging_blob_open_is_eio() -> None:
    fs, _ = await _fs(fx.BLOB_A_DIGEST)
    entry = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    code, _ = await _errno_and_seconds(fs.open(entry.st_ino, os.O_RDONLY, CTX))
    assert code == errno.EIO


async def test_hanging_blob_read_is_eio() -> None:
    fs, _ = await _fs(("read", 4096))
    entry = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_B, CTX)
    fh = (await fs.open(entry.st_ino, os.O_RDONLY, CTX)).fh
    assert bytes(await fs.read(fh, 0, 4096)) == fx.BLOB_B[:4096]
    code, _ = await _errno_and_seconds(fs.read(fh, 4096, 4096))
    assert code == errno.EIO


async def test_timeout_is_logged_naming_what_timed_out(caplog: pytest.LogCaptureFixture) -> None:
    fs, _ = await _fs(fx.BLOB_A_DIGEST)
    entry = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    with caplog.at_level(logging.ERROR, logger=operations.__name__):
        await _errno_and_seconds(fs.open(entry.st_ino, os.O_RDONLY, CTX))
    assert f"fetching blob {fx.BLOB_A_DIGEST}" in caplog.text
    assert f"did not answer within {TIMEOUT:g}s" in caplog.text


async def test_other_paths_answer_while_one_hangs() -> None:
    fs, _ = await _fs(_digest_of(0))
    answered_while_hanging: list[float] = []

    async def hang() -> None:
        await _errno_and_seconds(fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang)
        await trio.sleep(TIMEOUT / 3)
        started = trio.current_time()
        entry = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_B, CTX)
        answered_while_hanging.append(trio.current_time() - started)
    assert entry.st_size == len(fx.BLOB_B)
    assert answered_while_hanging[0] < TIMEOUT / 3


async def test_lookup_succeeds_once_the_backend_answers_again() -> None:
    fs, gate = await _fs(_digest_of(0))
    code, _ = await _errno_and_seconds(fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX))
    assert code == errno.EIO
    gate.opened.set()
    entry = await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)
    assert entry.st_size == len(fx.BLOB_A)


async def test_without_a_timeout_a_lookup_waits_as_long_as_the_backend_takes() -> None:
    fs, gate = await _fs(_digest_of(0), timeout=None)
    sizes: list[int] = []

    async def look() -> None:
        sizes.append((await fs.lookup(ROOT_INODE, fx.ROOT_BLOB_A, CTX)).st_size)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(look)
        await trio.sleep(TIMEOUT * 2)
        gate.opened.set()
    assert sizes == [len(fx.BLOB_A)]


def test_cli_default_timeout_is_the_fs_default() -> None:
    assert cli_mount.DEFAULT_TIMEOUT == operations.DEFAULT_TIMEOUT


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "soon"])
def test_mount_refuses_a_timeout_that_is_not_a_number_of_seconds(text: str) -> None:
    result = run_tvixmount("mount", "/nonexistent", "--timeout", text)
    assert result.returncode == 2
    assert f"--timeout: not a number of seconds: {text!r}" in result.stderr


# -- real mounts over backends that hang for one path ---------------------------------------


class GatedDict(dict[bytes, Any]):
    """A FakeBackend table whose lookups of ``hanging`` keys block until ``release``.

    The fake gRPC server's handlers look their answers up here, so a handler
    asked for a hanging key sleeps in the server's thread like a stuck backend.
    """

    def __init__(self, hanging: set[bytes]) -> None:
        super().__init__()
        self.hanging = hanging
        self.released = threading.Event()

    def get(self, key: bytes, default: Any = None) -> Any:
        if key in self.hanging:
            self.released.wait()
        return super().get(key, default)


def _grpc_backend(hanging_pathinfo: bytes, hanging_blob: bytes) -> FakeBackend:
    backend = FakeBackend()
    backend.pathinfos = GatedDict({hanging_pathinfo})
    backend.blobs = GatedDict({hanging_blob})
    for node in fx.ROOT_NODES:
        info = PathInfo(node, (), NarInfo(0, bytes(32)))
        backend.pathinfos[info.store_path.digest] = info.to_proto()
    for blob in fx.BLOBS:
        backend.blobs[bytes(B3Digest.of(blob))] = blob
    backend.put_directories(fx.DIRECTORIES)
    return backend


def _release(backend: FakeBackend) -> None:
    for table in (backend.pathinfos, backend.blobs):
        assert isinstance(table, GatedDict)
        table.released.set()


@contextlib.contextmanager
def _gated_mount(
    tmp_path: Path, hanging_pathinfo: bytes = b"", hanging_blob: bytes = b""
) -> Iterator[tuple[Mount, FakeBackend]]:
    """The fixtures over a gRPC server that hangs for the given keys, mounted with --timeout."""
    backend = _grpc_backend(hanging_pathinfo, hanging_blob)
    with fake_server(backend) as url:
        try:
            with mounted(url, tmp_path / "mnt", "--timeout", str(MOUNT_TIMEOUT)) as mnt:
                yield mnt, backend
        finally:
            _release(backend)  # let stuck handlers finish, or the server cannot stop


@contextlib.contextmanager
def _while_a_lookup_hangs(path: Path) -> Iterator[threading.Thread]:
    """A thread stat-ing ``path`` (which hangs) for the duration of the block."""
    hanging = threading.Thread(target=_oserror_and_seconds, args=(os.stat, path))
    hanging.start()
    try:
        time.sleep(MOUNT_TIMEOUT / 4)  # the lookup has reached the daemon
        yield hanging
    finally:
        hanging.join()


def _oserror_and_seconds(call: Any, *args: Any) -> tuple[int | None, float]:
    started = time.monotonic()
    with pytest.raises(OSError) as excinfo:
        call(*args)
    return excinfo.value.errno, time.monotonic() - started


@requires_fuse
def test_hanging_grpc_lookup_is_eio_within_the_timeout(tmp_path: Path) -> None:
    with _gated_mount(tmp_path, hanging_pathinfo=_digest_of(0)) as (mnt, _):
        code, seconds = _oserror_and_seconds(os.stat, mnt / fx.ROOT_BLOB_A)
        log = mnt.log()
    assert code == errno.EIO
    assert seconds < MOUNT_TIMEOUT + MARGIN
    assert "did not answer within 2s" in log


@requires_fuse
def test_paths_already_looked_up_are_served_while_a_lookup_hangs(tmp_path: Path) -> None:
    with _gated_mount(tmp_path, hanging_pathinfo=_digest_of(0)) as (mnt, _):
        os.stat(mnt / fx.ROOT_BLOB_B)
        os.stat(mnt / fx.ROOT_DIRECTORY_COMPLICATED)
        with _while_a_lookup_hangs(mnt / fx.ROOT_BLOB_A) as hanging:
            started = time.monotonic()
            assert (mnt / fx.ROOT_BLOB_B).read_bytes() == fx.BLOB_B
            assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]
            answered = time.monotonic() - started
            assert hanging.is_alive()  # all of that happened while the lookup hung
    assert answered < MOUNT_TIMEOUT / 2


@requires_fuse
def test_hanging_grpc_blob_is_eio_while_other_paths_are_served(tmp_path: Path) -> None:
    with _gated_mount(tmp_path, hanging_blob=bytes(fx.BLOB_A_DIGEST)) as (mnt, _):
        code, seconds = _oserror_and_seconds((mnt / fx.ROOT_BLOB_A).read_bytes)
        assert (mnt / fx.ROOT_BLOB_B).read_bytes() == fx.BLOB_B
        assert os.listdir(mnt / fx.ROOT_DIRECTORY_COMPLICATED) == [".keep", "aa", "keep"]
        log = mnt.log()
    assert code == errno.EIO
    assert seconds < MOUNT_TIMEOUT + MARGIN
    assert f"fetching blob {fx.BLOB_A_DIGEST}" in log


@requires_fuse
def test_hanging_grpc_backend_recovers_without_remount(tmp_path: Path) -> None:
    hanging = {"hanging_pathinfo": _digest_of(0), "hanging_blob": bytes(fx.BLOB_B_DIGEST)}
    with _gated_mount(tmp_path, **hanging) as (mnt, backend):
        _oserror_and_seconds(os.stat, mnt / fx.ROOT_BLOB_A)
        _oserror_and_seconds((mnt / fx.ROOT_BLOB_B).read_bytes)
        _release(backend)
        assert (mnt / fx.ROOT_BLOB_A).read_bytes() == fx.BLOB_A
        assert (mnt / fx.ROOT_BLOB_B).read_bytes() == fx.BLOB_B


@requires_fuse
def test_sigterm_while_a_lookup_hangs_exits_within_the_timeout(tmp_path: Path) -> None:
    with _gated_mount(tmp_path, hanging_pathinfo=_digest_of(0)) as (mnt, _):
        (pid,) = mnt.pids
        with _while_a_lookup_hangs(mnt / fx.ROOT_BLOB_A):
            started = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            while pid in serving_pids() and time.monotonic() - started < MOUNT_TIMEOUT + MARGIN:
                time.sleep(0.05)
            exited = time.monotonic() - started
        assert not is_mounted(str(mnt.path))
    assert exited < MOUNT_TIMEOUT + MARGIN


# -- an HTTP binary cache that never answers for one narinfo --------------------------------


@contextlib.contextmanager
def _gated_http(root: Path, hanging: str) -> Iterator[tuple[str, threading.Event]]:
    """``root`` over loopback HTTP; GETs of ``hanging`` wait (unanswered) until released."""
    released = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            if self.path.lstrip("/") == hanging:
                released.wait()
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", released
    finally:
        released.set()
        server.shutdown()
        server.server_close()
        thread.join()


@requires_nix
@requires_fuse
def test_hanging_http_binary_cache_is_eio_serves_others_and_recovers(tmp_path: Path) -> None:
    cache = build_cache(tmp_path / "nix", "none", trees=2, with_reference=False)
    stuck, good = (path.removeprefix("/nix/store/") for path in cache.paths)
    hanging = cache.narinfo_file(cache.paths[0]).name
    with (
        _gated_http(cache.dir, hanging) as (url, released),
        mounted(
            url,
            tmp_path / "mnt",
            "--cache-dir",
            str(tmp_path / "local"),
            "--timeout",
            str(MOUNT_TIMEOUT),
        ) as mnt,
    ):
        code, seconds = _oserror_and_seconds(os.stat, mnt / stuck)
        assert (mnt / good / "hello.txt").read_text() == "Hello World!\n"
        released.set()
        assert (mnt / stuck / "hello.txt").read_text() == "Hello World!\n"
        log = mnt.log()
    assert code == errno.EIO
    assert seconds < MOUNT_TIMEOUT + MARGIN
    assert "looking up root name" in log
