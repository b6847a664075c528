"""Compression as a layer on the way out: a NAR stream into a compressed, hashed spool file.

The counterpart of ``decompress.py``. :func:`start_spool` takes the NAR as
the caller produces it (under trio, or with no loop: :mod:`tvixmount.loopless`);
a worker thread hashes it and compresses it,
batch by batch, into a spool file whose bytes are hashed as they are
written, so memory stays flat whatever the NAR's size. Compression runs
beside the NAR's production, on both cores: zstd in libzstd's worker
threads; xz as ``xz -T2`` with 4 MiB blocks (a 52 MB NAR: 26.7 s with one
thread, as Nix compresses, 10.6 s so, for 4% more bytes; Python's lzma has
no threaded encoder); bzip2 as the ``bzip2`` program. Without those
programs, Python's lzma and bz2 compress in the worker.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import fcntl
import hashlib
import lzma
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import zstandard

from ... import loopless
from ...errors import StoreError

if TYPE_CHECKING:
    import trio

# The compressions written, and the NAR file's extension for each (as Nix names them).
EXTENSIONS = {"none": "", "xz": ".xz", "zstd": ".zst", "bzip2": ".bz2"}
# Compressor programs, used when installed: xz with two threads, bzip2 beside the NAR's producer.
_PROGRAMS = {
    "xz": ("xz", "-6", "-T2", "--block-size=4MiB", "--stdout", "--quiet"),
    "bzip2": ("bzip2", "-9", "--stdout", "--quiet"),
}
# Level 3, as Nix; libzstd's default job for it held 200 MB of incompressible input in
# flight (RSS 231 MB copying a 96 MB NAR), 2 MiB jobs hold 64 MB for 0.4% more bytes.
_ZSTD = zstandard.ZstdCompressionParameters.from_level(3, threads=-1, job_size=2 << 20)
_COPY_SIZE = 1 << 20
_BATCH = 256 << 10  # NAR bytes per hand-over to the compressing thread
_PIPE_SIZE = 1 << 20  # a compressor program's input pipe: fewer wake-ups between the two

Progress = Callable[[int], None]


# -- compression ----------------------------------------------------------------------------


class _HashingWriter:
    """The spool file, hashed and counted as the compressor writes it."""

    def __init__(self, handle: BinaryIO, hashed: bool = True) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256() if hashed else None
        self.size = 0

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        self.size += len(data)


class _Compressobj(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Encoder(Protocol):
    """Compresses into the spool file; called from one worker thread at a time."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None:
        """Everything written so far reaches the spool file."""
        ...

    def abort(self) -> None:
        """Stop at once (from any thread); the spool file is then garbage."""
        ...


class _LibraryEncoder:
    """None, zstd (libzstd's own worker threads compress), and Python's lzma/bz2 as fallbacks."""

    def __init__(self, compression: str, out: _HashingWriter) -> None:
        self._out = out
        self._encoder: _Compressobj | None = None
        if compression == "zstd":
            self._encoder = zstandard.ZstdCompressor(compression_params=_ZSTD).compressobj()
        elif compression == "xz":  # no xz program: one thread, as Nix compresses
            self._encoder = lzma.LZMACompressor(preset=6)
        elif compression == "bzip2":
            self._encoder = bz2.BZ2Compressor(9)

    def write(self, data: bytes) -> None:
        self._out.write(data if self._encoder is None else self._encoder.compress(data))

    def finish(self) -> None:
        if self._encoder is not None:
            self._out.write(self._encoder.flush())

    def abort(self) -> None:
        pass


class _ProcessEncoder:
    """A compressor program (xz, bzip2) fed through a pipe; a thread copies its output."""

    def __init__(self, argv: Sequence[str], out: _HashingWriter) -> None:
        self._name = argv[0]
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._process.stdin is not None
        with contextlib.suppress(OSError):  # a smaller pipe only costs wake-ups
            fcntl.fcntl(self._process.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self._out = out
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=argv[0], daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            with stdout:
                while data := stdout.read(_COPY_SIZE):
                    self._out.write(data)
        except BaseException as exc:
            self._error = exc
            self._process.kill()  # its writer must not wait on a full pipe

    def write(self, data: bytes) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(data)
        except BrokenPipeError:
            self._wait()  # says why it stopped reading
            raise StoreError(f"{self._name} stopped reading its input") from None

    def finish(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._wait()

    def _wait(self) -> None:
        self._thread.join()
        status = self._process.wait()
        if self._error is not None:
            raise StoreError(f"writing the {self._name} output: {self._error}") from self._error
        if status != 0:
            raise StoreError(f"{self._name} exited with status {status}")

    def abort(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._thread.join()
        self._process.wait()


def _encoder(compression: str, out: _HashingWriter) -> _Encoder:
    program = _PROGRAMS.get(compression)
    if program is not None and shutil.which(program[0]) is not None:
        return _ProcessEncoder(program, out)
    return _LibraryEncoder(compression, out)


@dataclasses.dataclass(frozen=True)
class Spooled:
    """A NAR compressed into a spool file, with the digests of both."""

    path: Path
    nar_sha256: bytes
    nar_size: int
    file_sha256: bytes
    file_size: int


class _Done(Protocol):
    """A batch handed to the worker thread is done: ``set`` there, awaited by the producer."""

    def set(self) -> None: ...

    async def wait(self) -> None: ...


class _ThreadDone:
    """Without an event loop (loopless) the producer blocks until the worker is done."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        self._event.wait()


class _TrioDone:
    def __init__(self, token: trio.lowlevel.TrioToken, event: trio.Event) -> None:
        self._token = token
        self._event = event

    @staticmethod
    def factory() -> Callable[[], _Done]:
        import trio

        token = trio.lowlevel.current_trio_token()
        return lambda: _TrioDone(token, trio.Event())

    def set(self) -> None:
        import trio

        with contextlib.suppress(trio.RunFinishedError):  # the run ended: nobody waits
            self._token.run_sync_soon(self._event.set)

    async def wait(self) -> None:
        await self._event.wait()


class Spool:
    """A NAR handed over to compression: a worker thread hashes it and compresses it into
    the spool file, batch by batch, and may still be writing once the NAR is all fed.

    :meth:`result` waits for it; :meth:`discard` stops it. Either removes the
    spool file if it is not a result.
    """

    def __init__(self, compression: str, path: Path, handle: BinaryIO, progress: Progress) -> None:
        self._path = path
        self._handle = handle
        self._progress = progress
        # An uncompressed NAR's file hash is its NAR hash: one SHA-256 pass, not two.
        self._out = _HashingWriter(handle, hashed=compression != "none")
        self._encoder = _encoder(compression, self._out)
        self._nar_sha256 = hashlib.sha256()
        self._nar_size = 0
        self._error: BaseException | None = None
        self._done: Callable[[], _Done] = _ThreadDone if loopless.active() else _TrioDone.factory()
        # A batch, or None: the NAR ended, finish the encoder; None alone: stop.
        self._queue: queue.SimpleQueue[tuple[list[bytes] | None, _Done] | None] = (
            queue.SimpleQueue()
        )
        self._pending: _Done | None = None
        self._pending_size = 0
        self._thread = threading.Thread(target=self._run, name="spool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            batch, done = work
            if self._error is None:
                try:
                    if batch is None:
                        self._encoder.finish()
                    else:
                        for chunk in batch:
                            self._nar_sha256.update(chunk)
                            self._nar_size += len(chunk)
                            self._encoder.write(chunk)
                except BaseException as exc:
                    self._error = exc
            done.set()
            if batch is None:
                return

    async def _settle(self) -> None:
        if self._pending is not None:
            await self._pending.wait()
            self._pending = None
        if self._error is not None:
            raise self._error
        # Progress is what the compressor took, not what was produced ahead of it.
        self._progress(self._pending_size)
        self._pending_size = 0

    async def feed(self, batch: list[bytes] | None, size: int = 0) -> None:
        """Hand a batch (None: the end) over once the previous one is done (one in the
        works at a time)."""
        await self._settle()
        self._pending = self._done()
        self._pending_size = size
        self._queue.put((batch, self._pending))

    async def result(self) -> Spooled:
        """Once the end is handed over: wait for the compressor to write everything."""
        try:
            await self._settle()
            await loopless.to_thread(self._thread.join)
        except BaseException:
            self.discard()
            raise
        self._handle.close()
        nar_sha256 = self._nar_sha256.digest()
        file_sha256 = self._out.sha256.digest() if self._out.sha256 is not None else nar_sha256
        return Spooled(self._path, nar_sha256, self._nar_size, file_sha256, self._out.size)

    def discard(self) -> None:
        """Stop the encoder and the thread, and remove the spool file."""
        self._encoder.abort()
        self._queue.put(None)
        self._thread.join()
        self._handle.close()
        self._path.unlink(missing_ok=True)


async def start_spool(
    nar: AsyncIterable[bytes], compression: str, spool_dir: Path, progress: Progress
) -> Spool:
    """Hand the NAR stream over to compression into a new file in ``spool_dir``;
    returns once the stream has ended.

    The NAR is gathered into batches of :data:`_BATCH` bytes and the worker
    hashes and compresses one batch while the next is produced: SHA-256,
    libzstd and file writes release the GIL, so the two overlap on two
    cores, at one thread hand-over per batch. The compressor's last batch
    and its flush run while the caller goes on (say, to the next NAR).
    """
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".nar", dir=spool_dir)
    path = Path(name)
    handle = open(fd, "wb")
    try:
        spool = Spool(compression, path, handle, progress)
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise
    try:
        batch: list[bytes] = []
        size = 0
        async for chunk in nar:
            batch.append(chunk)
            size += len(chunk)
            if size >= _BATCH:
                await spool.feed(batch, size)
                batch, size = [], 0
        await spool.feed(batch, size)
        await spool.feed(None)
    except BaseException:
        spool.discard()
        raise
    return spool


__all__ = ["EXTENSIONS", "Progress", "Spool", "Spooled", "start_spool"]
