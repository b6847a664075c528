"""Decompression as a layer over a stream of chunks (as S3QL's comprenc wraps a backend).

:func:`decompressed` turns an async stream of compressed chunks into an
async stream of decompressed ones. It serves both a NAR file's
``Compression`` and an HTTP response's ``Content-Encoding``, and never
decodes more than :data:`READ_SIZE` bytes at a time, so however well a
hostile input compresses (a 33 KB zstd frame can expand to gigabytes),
memory holds one chunk and the consumer, counting what it gets, stops the
stream as soon as it exceeds what it expects.

Decompressing is CPU work: it runs in one worker thread per stream, on
the limiter of its stage (``threads.py``), pulling compressed chunks from
the trio side and handing decompressed ones back through a small channel.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import IO, Protocol, cast

import trio
import zstandard

from ...errors import IntegrityError, StoreError
from .threads import BODY_DECODE_THREADS

READ_SIZE = 1 << 20
_CHANNEL_DEPTH = 4  # decompressed chunks in flight between the worker thread and the consumer

# HTTP Content-Encoding -> the decompressor for it ("identity": none).
CONTENT_CODINGS = {
    "identity": "none",
    "gzip": "gzip",
    "x-gzip": "gzip",
    "br": "br",
    "zstd": "zstd",
    "xz": "xz",  # Nix's S3 store uploads narinfos so with narinfo-compression=xz
    "bzip2": "bzip2",
}


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _ThreadSource(io.RawIOBase):
    """Worker thread side: the async chunk stream as a readable file."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = trio.from_thread.run(self._next)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


class _BrotliReader:
    """Brotli has no file reader; this one bounds each output like the others do."""

    def __init__(self, source: io.RawIOBase) -> None:
        import brotli  # type: ignore[import-untyped]  # only needed for br caches

        self._source = source
        self._decompressor = brotli.Decompressor()
        self._error = brotli.error

    def read(self, size: int = -1, /) -> bytes:
        decompressor = self._decompressor
        try:
            while True:
                if decompressor.can_accept_more_data():
                    data = self._source.read(READ_SIZE)
                    if not data:
                        if not decompressor.is_finished():
                            raise EOFError("brotli stream ends early")
                        return b""
                    if decompressor.is_finished():
                        raise EOFError("data after the end of the brotli stream")
                else:
                    data = b""
                out: bytes = decompressor.process(data, output_buffer_limit=size)
                if out:
                    return out
        except self._error as exc:
            raise EOFError(f"invalid brotli data: {exc}") from exc


def _brotli(source: io.RawIOBase) -> _Readable:
    try:
        return _BrotliReader(source)
    except ImportError:
        raise StoreError("Compression br needs the 'brotli' package") from None


# What the decompressors read from is a RawIOBase; their stubs ask for IO[bytes].
_READERS: dict[str, Callable[[io.RawIOBase], _Readable]] = {
    "xz": lambda source: lzma.LZMAFile(cast("IO[bytes]", source)),
    "bzip2": lambda source: bz2.BZ2File(cast("IO[bytes]", source)),
    "gzip": lambda source: gzip.GzipFile(fileobj=cast("IO[bytes]", source)),
    "zstd": lambda source: zstandard.ZstdDecompressor().stream_reader(
        cast("IO[bytes]", source), read_across_frames=True
    ),
    "br": _brotli,
}


_DECOMPRESSION_ERRORS = (EOFError, OSError, lzma.LZMAError, zstandard.ZstdError)


class _Received:
    """The consumer's side: decompressed chunks, then the worker's error if it failed."""

    def __init__(self, receive: trio.MemoryReceiveChannel[bytes], error: list[Exception]) -> None:
        self._receive = receive
        self._error = error

    def __aiter__(self) -> _Received:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._error:
                raise self._error[0] from None
            raise StopAsyncIteration from None


def _pump(
    compression: str,
    chunks: AsyncIterator[bytes],
    where: str,
    send: Callable[[bytes], Awaitable[None]],
) -> None:
    """Worker thread: read the decompressor's output and hand it to the trio side."""
    try:
        reader = _READERS[compression](_ThreadSource(chunks))
        while data := reader.read(READ_SIZE):
            trio.from_thread.run(send, data)
    except _DECOMPRESSION_ERRORS as exc:
        raise IntegrityError(f"{where}: cannot decompress ({compression}): {exc}") from exc


@asynccontextmanager
async def decompressed(
    chunks: AsyncIterator[bytes],
    compression: str,
    where: str,
    threads: trio.CapacityLimiter = BODY_DECODE_THREADS,
) -> AsyncIterator[AsyncIterator[bytes]]:
    """``chunks`` decompressed with ``compression`` (``none``, xz, bzip2, gzip, zstd, br).

    ``threads``: the limiter of the decoding stage (a response body's
    encoding, by default; a NAR's Compression has its own).

    Errors (the source's, or undecodable input as
    :class:`~tvixmount.errors.IntegrityError`) are raised by the iterator.
    Leaving the context early stops the worker.
    """
    if compression == "none":
        yield chunks
        return
    if compression not in _READERS:
        raise IntegrityError(f"{where}: unsupported Compression {compression!r}")
    send, receive = trio.open_memory_channel[bytes](_CHANNEL_DEPTH)
    error: list[Exception] = []

    async def pump() -> None:
        with send:
            try:
                await trio.to_thread.run_sync(
                    _pump, compression, chunks, where, send.send, limiter=threads
                )
            except trio.BrokenResourceError:
                pass  # the consumer stopped reading
            except Exception as exc:
                error.append(exc)

    consumer_error: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump)
        try:
            yield _Received(receive, error)
        except Exception as exc:
            consumer_error = exc  # raised below, not wrapped in the nursery's exception group
        finally:
            receive.close()
            nursery.cancel_scope.cancel()
    if consumer_error is not None:
        raise consumer_error


@asynccontextmanager
async def content_decoded(
    chunks: AsyncIterator[bytes], content_encoding: str | None, where: str
) -> AsyncIterator[AsyncIterator[bytes]]:
    """A response body decoded as its ``Content-Encoding`` header says (``None``: identity).

    Transports use this rather than their client's transparent decoding, which
    expands a whole received chunk at once.
    """
    encoding = (content_encoding or "identity").strip().lower()
    coding = CONTENT_CODINGS.get(encoding)
    if coding is None:
        raise StoreError(f"{where}: unsupported Content-Encoding {encoding!r}")
    async with decompressed(chunks, coding, where) as decoded:
        yield decoded


__all__ = ["CONTENT_CODINGS", "READ_SIZE", "content_decoded", "decompressed"]
