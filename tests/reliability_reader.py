"""Random reads of mounted files checked byte for byte against their sources.

Standard library only: reader processes import it, and sixteen of them
starting at once on two cores must start reading within a second, not after
importing the test suite's dependencies.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_MAX_READ = 256 << 10


def uncached_pread(fd: int, length: int, offset: int) -> bytes:
    """A read that reaches the daemon: the file's pages are dropped from the page cache first.

    Files are opened with keep_cache, so without this every read after the
    first would be answered by the kernel and never exercise the daemon.
    """
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return os.pread(fd, length, offset)


@dataclass
class Tally:
    reads: int = 0
    bytes: int = 0
    wrong: int = 0
    errors: int = 0

    def line(self) -> str:
        return f"{self.reads} {self.bytes} {self.wrong} {self.errors}"


def read_and_check(pairs: list[tuple[str, str]], until: float, seed: int) -> Tally:
    """Random reads (half of them of the first file) until ``until`` (``time.time()``).

    ``pairs`` are (mounted path, source path); every read is compared with the source.
    """
    rng = random.Random(seed)
    sources = [Path(source).read_bytes() for _, source in pairs]
    fds = [os.open(mounted_path, os.O_RDONLY) for mounted_path, _ in pairs]
    tally = Tally()
    try:
        while time.time() < until:
            index = 0 if rng.random() < 0.5 else rng.randrange(len(pairs))
            source = sources[index]
            if rng.random() < 0.05:
                # Reopen now and then, so opens and releases race with reads too.
                os.close(fds[index])
                fds[index] = os.open(pairs[index][0], os.O_RDONLY)
            offset = rng.randrange(len(source) + 1)
            length = rng.randrange(1, _MAX_READ)
            try:
                data = uncached_pread(fds[index], length, offset)
            except OSError:
                tally.errors += 1
                continue
            tally.reads += 1
            tally.bytes += len(data)
            if data != source[offset : offset + length]:
                tally.wrong += 1
    finally:
        for fd in fds:
            os.close(fd)
    return tally


def main() -> None:
    """``until seed mounted source [mounted source ...]``; prints the tally."""
    until, seed, *paths = sys.argv[1:]
    pairs = list(zip(paths[::2], paths[1::2], strict=True))
    print(read_and_check(pairs, float(until), int(seed)).line(), flush=True)


if __name__ == "__main__":
    main()
