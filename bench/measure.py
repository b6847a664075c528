"""Measurements, each a function of a directory tree (so every peer runs the same code)."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

CHUNK = 1 << 20


def read_file(path: Path) -> int:
    total = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        while n := f.readinto(buf):
            total += n
    return total


def seq_read_mb_s(path: Path) -> float:
    start = time.perf_counter()
    size = read_file(path)
    return size / (1 << 20) / (time.perf_counter() - start)


def random_4k_ops_s(path: Path, count: int = 5000) -> float:
    rng = random.Random(4096)
    size = path.stat().st_size
    offsets = [rng.randrange(0, size - 4096) & ~4095 for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        for offset in offsets:
            os.pread(fd, 4096, offset)
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)


def list_files(root: Path, limit: int | None = None) -> list[Path]:
    files: list[Path] = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if not path.is_symlink():
                files.append(path)
                if limit is not None and len(files) >= limit:
                    return files
    return files


def stat_ops_s(paths: Sequence[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        os.lstat(path)
    return len(paths) / (time.perf_counter() - start)


def walk_and_cat_s(root: Path) -> float:
    """``find -type f | xargs cat`` in Python: walk everything, read every regular file."""
    start = time.perf_counter()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                read_file(Path(path))
    return time.perf_counter() - start


def concurrent_read_mb_s(paths: Sequence[Path], readers: int = 4) -> float:
    """``readers`` threads each reading a share of ``paths``; aggregate MB/s."""
    shares = [list(paths[i::readers]) for i in range(readers)]
    totals = [0] * readers

    def work(i: int) -> None:
        totals[i] = sum(read_file(p) for p in shares[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(readers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(totals) / (1 << 20) / (time.perf_counter() - start)


def lookup_latencies_us(root: Path, names: Sequence[str]) -> list[float]:
    out = []
    for name in names:
        start = time.perf_counter_ns()
        os.lstat(root / name)
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def repeat(
    fn: Callable[[], float], runs: int, before: Callable[[], None] | None = None
) -> list[float]:
    results = []
    for _ in range(runs):
        if before is not None:
            before()
        results.append(fn())
    return results


def timed_command(argv: Sequence[str | Path]) -> tuple[float, str]:
    """Run ``argv`` to its end: its wall time in seconds and its stdout, stripped.

    A failing command ends the bench with its stderr.
    """
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        command = " ".join(map(str, argv))
        raise SystemExit(f"{command} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds, done.stdout.strip()
