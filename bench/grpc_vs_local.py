"""Read throughput and lookup latency through gRPC vs the embedded store.

Service level (no FUSE): the same embedded store is used once in-process and
once through ``tvixmount serve`` on loopback, with a fresh client per run so
nothing is cached across runs; with /dev/fuse, also through a fresh FUSE
mount per run. Every figure is the median of ``RUNS`` runs;
the last column is gRPC's figure over the local one.

    .venv/bin/python -m bench.grpc_vs_local
"""

from __future__ import annotations

import functools
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tests.grpc_serving import serving
from tests.mounting import mounted
from tvixmount.castore import B3Digest, Directory, FileNode
from tvixmount.castore.blobservice import put_stream
from tvixmount.pathinfo import NarInfo, PathInfo
from tvixmount.storepath import from_nar_hash
from tvixmount.stores import Store, StoreOptions, open_store

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
BIG_BLOB = 64 << 20
READ_SIZE = 128 << 10  # what the kernel asks FUSE for per read
RANDOM_READS = 2000
PATHS = 300
LOOKUPS = 300

Figure = tuple[str, str, bool, Callable[[Store], Awaitable[float]]]  # name, unit, higher?, run
Row = tuple[str, str, bool, float, float]  # name, unit, higher?, local, grpc


@dataclass
class Dataset:
    big: B3Digest  # the blob of BIG_BLOB bytes
    big_name: str  # the store path basename whose root file is that blob
    paths: list[bytes]  # store path digests of PATHS small files
    names: list[str]  # their basenames
    directories: list[B3Digest]


async def _build(store_dir: Path) -> Dataset:
    store = open_store(str(store_dir), StoreOptions(create=True))
    rng = random.Random(7)
    try:
        big = await put_stream(store.blobs, [rng.randbytes(BIG_BLOB)])
        big_nar = rng.randbytes(32)
        big_path = from_nar_hash(big_nar, "bench-big")
        big_node = FileNode(str(big_path).encode(), big, BIG_BLOB)
        await store.pathinfos.put(PathInfo(big_node, (), NarInfo(BIG_BLOB, big_nar)))
        digests, names, directories = [], [], []
        for i in range(PATHS):
            blob = await put_stream(store.blobs, [rng.randbytes(1024)])
            directory = Directory.from_nodes([FileNode(b"file", blob, 1024)])
            await store.directories.put_many([directory])
            fake_nar = rng.randbytes(32)
            path = from_nar_hash(fake_nar, f"bench-{i}")
            node = FileNode(str(path).encode(), blob, 1024)
            await store.pathinfos.put(PathInfo(node, (), NarInfo(1024, fake_nar)))
            digests.append(path.digest)
            names.append(str(path))
            directories.append(directory.digest())
    finally:
        await store.aclose()
    return Dataset(big, str(big_path), digests, names, directories)


async def _timed(open_: Callable[[], Store], fn: Callable[[Store], Awaitable[float]]) -> float:
    store = open_()
    try:
        return await fn(store)
    finally:
        await store.aclose()


def _seq_read(big: B3Digest) -> Callable[[Store], Awaitable[float]]:
    async def run(store: Store) -> float:
        start = time.perf_counter()
        reader = await store.blobs.open_read(big)
        assert reader is not None
        for offset in range(0, reader.size, READ_SIZE):
            await reader.pread(offset, READ_SIZE)
        await reader.aclose()
        return BIG_BLOB / (1 << 20) / (time.perf_counter() - start)

    return run


def _random_reads(big: B3Digest) -> Callable[[Store], Awaitable[float]]:
    async def run(store: Store) -> float:
        rng = random.Random(11)
        start = time.perf_counter()
        reader = await store.blobs.open_read(big)
        assert reader is not None
        for _ in range(RANDOM_READS):
            await reader.pread(rng.randrange(BIG_BLOB - 4096), 4096)
        await reader.aclose()
        return RANDOM_READS / (time.perf_counter() - start)

    return run


def _latency_us(
    keys: list[Any], op: Callable[[Store, Any], Awaitable[object]]
) -> Callable[[Store], Awaitable[float]]:
    async def run(store: Store) -> float:
        samples = []
        for key in keys[:LOOKUPS]:
            start = time.perf_counter_ns()
            assert await op(store, key) is not None
            samples.append((time.perf_counter_ns() - start) / 1000)
        return statistics.median(samples)

    return run


async def _get_pathinfo(store: Store, digest: bytes) -> object:
    return await store.pathinfos.get(digest)


async def _get_directory(store: Store, digest: B3Digest) -> object:
    return await store.directories.get(digest)


async def _open_small_file(store: Store, digest: bytes) -> object:
    info = await store.pathinfos.get(digest)
    assert info is not None and isinstance(info.node, FileNode)
    reader = await store.blobs.open_read(info.node.digest)
    assert reader is not None
    data = await reader.pread(0, 1024)
    await reader.aclose()
    return data


async def _measure(local_url: str, grpc_url: str, figures: list[Figure]) -> list[Row]:
    rows = []
    for name, unit, higher, fn in figures:
        values = {}
        for label, url in (("local", local_url), ("grpc", grpc_url)):
            runs = [await _timed(functools.partial(open_store, url), fn) for _ in range(RUNS)]
            values[label] = statistics.median(runs)
        rows.append((name, unit, higher, values["local"], values["grpc"]))
    return rows


def _fuse_seq_read(mnt: Path, data: Dataset) -> float:
    start = time.perf_counter()
    with (mnt / data.big_name).open("rb", buffering=0) as f:
        while f.read(READ_SIZE):
            pass
    return BIG_BLOB / (1 << 20) / (time.perf_counter() - start)


def _fuse_lookup_us(mnt: Path, data: Dataset) -> float:
    samples = []
    for name in data.names[:LOOKUPS]:
        start = time.perf_counter_ns()
        os.lstat(mnt / name)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def _measure_fuse(local_url: str, grpc_url: str, data: Dataset, base: Path) -> list[Row]:
    """The same through a fresh FUSE mount per run (cold kernel caches)."""
    probes: list[tuple[str, str, bool, Callable[[Path, Dataset], float]]] = [
        ("FUSE sequential read, fresh mount", "MiB/s", True, _fuse_seq_read),
        ("FUSE first lookup of a store path", "us (median)", False, _fuse_lookup_us),
    ]
    values: dict[tuple[str, str], list[float]] = {}
    for label, url in (("local", local_url), ("grpc", grpc_url)):
        for run in range(RUNS):
            with mounted(url, base / f"mnt-{label}-{run}") as mount:
                for name, _, _, probe in probes:
                    values.setdefault((name, label), []).append(probe(mount.path, data))
    return [
        (
            name,
            unit,
            higher,
            statistics.median(values[name, "local"]),
            statistics.median(values[name, "grpc"]),
        )
        for name, unit, higher, _ in probes
    ]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tvixmount-grpc-bench-") as tmp:
        base = Path(tmp)
        store_dir = base / "store"
        data = trio.run(_build, store_dir)
        figures: list[Figure] = [
            ("sequential read, cold client", "MiB/s", True, _seq_read(data.big)),
            ("random 4 KiB reads, cold client", "reads/s", True, _random_reads(data.big)),
            ("path info lookup", "us (median)", False, _latency_us(data.paths, _get_pathinfo)),
            (
                "directory get",
                "us (median)",
                False,
                _latency_us(data.directories, _get_directory),
            ),
            (
                "lookup + open + read 1 KiB file",
                "us (median)",
                False,
                _latency_us(data.paths, _open_small_file),
            ),
        ]
        with serving(str(store_dir), base / "serve.log") as served:
            rows = trio.run(_measure, str(store_dir), served.url, figures)
            if os.path.exists("/dev/fuse"):
                rows += _measure_fuse(str(store_dir), served.url, data, base)
    print(f"gRPC ({served.url}, loopback) vs embedded store; median of {RUNS} runs")
    print(f"{'figure':<34} {'unit':<12} {'local':>10} {'grpc':>10} {'grpc/local':>11}")
    for name, unit, _higher, local, remote in rows:
        print(f"{name:<34} {unit:<12} {local:>10.1f} {remote:>10.1f} {remote / local:>10.2f}x")
    print("(throughput: higher is better, so <1x is slower; latency: >1x is slower)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
