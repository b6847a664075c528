"""NAR response bodies: built from castore as they are sent, checked against NarHash.

A client must never receive a wrong NAR that looks complete. The bytes are
hashed as they go out and the last piece of a response is held back until
the whole NAR has been produced and matched the PathInfo's NarHash and
NarSize; on a mismatch the stream raises instead, so the connection drops
short of its Content-Length (or before the end of its zstd frame). A byte
range is checked the same way: the NAR is produced to its end either way.

SHA-256 costs 1.1 ms a MiB here (no SHA extensions): most of what a NAR
costs the server. So a path's NAR is hashed until it matched once; after
that only its size is checked. That is sound because castore reads are
verified against their BLAKE3 digests (the BlobService and
DirectoryService contracts), so the NAR is a function of the root node: the
same node cannot produce other bytes. Large pieces are hashed in a worker
thread (hashlib releases the GIL), which keeps the loop free for other
requests and puts the second core to work.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator
from typing import NamedTuple

import trio
import zstandard

from ....errors import IntegrityError
from ....nar.writer import write_nar
from ... import Store
from .catalog import Entry

_HASH_IN_THREAD = 256 << 10  # smaller pieces cost less to hash than a thread hand-over
ZSTD_LEVEL = 3  # zstd's default: about 300 MB/s a core, near level 19's ratio on NARs
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class ByteRange(NamedTuple):
    start: int
    stop: int  # exclusive


class Unsatisfiable(Exception):
    """A Range header naming no byte of the NAR (416)."""


def parse_range(header: str, size: int) -> ByteRange | None:
    """The one range ``bytes=A-B``, ``bytes=A-`` or ``bytes=-N`` names within ``size`` bytes.

    ``None`` for a header this server does not honour (several ranges, other
    units, junk): RFC 9110 lets it answer those with the whole NAR.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        start, stop = max(size - int(last), 0), size
    else:
        start = int(first)
        stop = min(int(last) + 1, size) if last else size
        if last and int(last) < start:
            return None
    if start >= stop:
        raise Unsatisfiable
    return ByteRange(start, stop)


async def checked_nar(
    entry: Entry, store: Store, wanted: ByteRange | None = None
) -> AsyncGenerator[bytes, None]:
    """The bytes of ``wanted`` (default: all) of the path's NAR; see the module doc.

    Raises :class:`IntegrityError` when the NAR does not match the PathInfo,
    and what :func:`write_nar` raises for missing objects.
    """
    info = entry.info
    size, expected = info.narinfo.nar_size, info.narinfo.nar_sha256
    start, stop = wanted or ByteRange(0, size)
    sha = None if entry.nar_verified else hashlib.sha256()
    offset = 0
    held: bytes | None = None
    async for chunk in write_nar(info.node, store.blobs, store.directories):
        if sha is not None:
            if len(chunk) >= _HASH_IN_THREAD:
                await trio.to_thread.run_sync(sha.update, chunk)
            else:
                sha.update(chunk)
        end = offset + len(chunk)
        if end > size:
            raise IntegrityError(f"{info.store_path}: the NAR is longer than its NarSize {size}")
        if start < end and offset < stop:
            # A whole-chunk slice of bytes is the chunk itself, not a copy.
            piece = chunk[max(start - offset, 0) : min(stop, end) - offset]
            if held is not None:
                yield held
            held = piece
        offset = end
    if offset != size or (sha is not None and sha.digest() != expected):
        raise IntegrityError(
            f"{info.store_path}: the NAR built from the store does not match its NarHash"
        )
    entry.nar_verified = True
    if held is not None:
        yield held


async def zstd_compressed(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """``chunks`` as one zstd frame, ended only once ``chunks`` ended without an error.

    Compression runs in a worker thread (zstandard releases the GIL), so a
    compressed download leaves the loop free for other requests.
    """
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    async for chunk in chunks:
        out = await trio.to_thread.run_sync(compressor.compress, chunk)
        if out:
            yield out
    yield compressor.flush()
