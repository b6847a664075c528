"""A bounded cache of Directory bytes, keyed by Directory digest.

A decoded listing belongs to its directory inode and goes when the kernel
forgets that inode. After the kernel drops its caches (memory pressure, or
``drop_caches``), the next walk would fetch every Directory again: a
database query, or a network round trip to a remote store. This cache keeps
the most recently used Directories across that, as the bytes they serialize
to, bounded by their total size.

Why bytes and not the decoded listings: a decoded entry is several small
objects (about 200 bytes, scattered over the heap among the inodes of the
same walk, which is what keeps a process's pages resident after those inodes
are freed); its serialized form is about 45 bytes in one block per
Directory. The same memory holds four times the entries, and decoding them
again costs a few microseconds per entry, far less than the fetch it saves.
"""

from __future__ import annotations

from collections import OrderedDict

from ..castore.digest import B3Digest

# 4 MiB: about 90,000 entries of a typical closure (the bench's: 45 bytes each).
DEFAULT_MAX_BYTES = 4 << 20


class ListingCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._directories: OrderedDict[B3Digest, bytes] = OrderedDict()

    def get(self, digest: B3Digest) -> bytes | None:
        """The bytes of Directory ``digest``, as cached: the caller verifies and decodes them."""
        data = self._directories.get(digest)
        if data is not None:
            self._directories.move_to_end(digest)
        return data

    def put(self, digest: B3Digest, data: bytes) -> None:
        if digest in self._directories or len(data) > self._max_bytes:
            return
        self._directories[digest] = data
        self._bytes += len(data)
        while self._bytes > self._max_bytes:
            _, evicted = self._directories.popitem(last=False)
            self._bytes -= len(evicted)

    def __len__(self) -> int:
        return len(self._directories)
