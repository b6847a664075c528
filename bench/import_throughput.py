"""Import throughput: ``tvixmount import`` vs ``nix-store --add`` of the same 1 GiB tree.

Run with ``python -m bench.import_throughput`` (needs nix-store; writes to
/nix/store and deletes the added path afterwards). The tree mixes file
sizes: two 256 MiB files, 64 files of 4 MiB and about 16k small files of
1-32 KiB in nested directories, plus some executables and symlinks. Its
content is unique per run, so neither side can skip work because an earlier
run already stored it. Both tools read the tree from the page cache (it was
just written), and each writes to the same disk. A third timing imports into
``memory://`` to separate the walk and hashing from the store's writes.
Each import runs ``--repeat`` times, interleaved, and every run is printed:
the machine may be shared, so the best run is the least disturbed one.
On a machine where others drop the page cache (cold benchmarks), put the
tree on a tmpfs with ``--dir /dev/shm``: the stores stay on the disk
(``--store-dir``, default the system's temp directory, and /nix/store).

``--tree PATH`` imports an existing tree instead (read from the page cache
too: it is read once before the runs), e.g. ``/usr/lib/python3.11`` for a
tree of real small files. Its store path must not be in use in /nix/store
(it is deleted after each run).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import timed_command
from tvixmount.castore.ingest import regular_files
from tvixmount.testing.mounts import tvixmount_command

GIB = 1 << 30
MB = 1_000_000


def build_tree(root: Path, total: int, seed: int) -> int:
    """Write the tree; returns the number of file bytes written."""
    rng = random.Random(seed)
    block = rng.randbytes(1 << 20)
    written = 0
    serial = 0

    def write(path: Path, size: int, executable: bool = False) -> None:
        nonlocal written, serial
        serial += 1
        # A unique prefix per file keeps every blob distinct (no dedup shortcuts).
        head = f"{seed}:{serial}:".encode()
        with open(path, "wb") as out:
            out.write(head[:size])
            left = size - min(size, len(head))
            while left:
                piece = block[: min(left, len(block))]
                out.write(piece)
                left -= len(piece)
        if executable:
            path.chmod(0o755)
        written += size

    big = root / "big"
    big.mkdir(parents=True)
    for i in range(2):
        write(big / f"blob{i}.bin", total // 4)
    medium = root / "medium"
    medium.mkdir()
    for i in range(64):
        write(medium / f"part{i:02d}.dat", total // 256, executable=i % 8 == 0)
    small_budget = total - written
    index = 0
    while written < total:
        directory = root / "small" / f"d{index // 256:03d}" / f"s{(index // 32) % 8}"
        directory.mkdir(parents=True, exist_ok=True)
        size = min(rng.randint(1 << 10, 32 << 10), total - written)
        write(directory / f"f{index:05d}", size, executable=index % 50 == 0)
        if index % 100 == 0:
            os.symlink(f"f{index:05d}", directory / f"link{index:05d}")
        index += 1
    assert small_budget > 0
    return written


def nix_delete(path: str) -> None:
    subprocess.run(["nix-store", "--delete", path], capture_output=True, check=False)


def report(label: str, data: int, seconds: list[float]) -> float:
    """Print every run's rate and the best; returns the best rate in MB/s."""
    rates = [data / MB / s for s in seconds]
    runs = "  ".join(f"{r:6.1f}" for r in rates)
    print(f"{label:34}: best {max(rates):7.1f} MB/s  (runs: {runs})")
    return max(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=GIB, help="tree size in bytes")
    parser.add_argument(
        "--dir", type=Path, default=None, help="scratch directory for the generated tree"
    )
    parser.add_argument(
        "--store-dir",
        type=Path,
        default=None,
        help="where the embedded store goes (default: the system's temp directory)",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        default=None,
        help="import this existing tree instead of a generated one",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs of each import, interleaved (the machine may be shared: report all)",
    )
    args = parser.parse_args()
    if shutil.which("nix-store") is None:
        print("nix-store not found: cannot compare", file=sys.stderr)
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="tvixmount-import-bench-", dir=args.dir))
    # Apart from the tree: with --dir on a tmpfs (a tree no one's dropping of
    # caches can make cold), the store must still be on a disk, like /nix/store.
    store_scratch = Path(tempfile.mkdtemp(prefix="tvixmount-import-bench-", dir=args.store_dir))
    nix_path = ""
    times: dict[str, list[float]] = {"embedded": [], "memory": [], "nix": []}
    try:
        if args.tree is None:
            tree = scratch / "tree"
            data = build_tree(tree, args.size, seed=time.time_ns())
            subprocess.run(["sync"], check=True)
        else:
            tree = args.tree.absolute()
            data = 0
            for path, size in regular_files(os.fsencode(tree)):
                Path(os.fsdecode(path)).read_bytes()
                data += size
        for _ in range(args.repeat):
            store = store_scratch / "store"
            shutil.rmtree(store, ignore_errors=True)
            tvix_s, tvix_path = timed_command(tvixmount_command("import", tree, "--store", store))
            # The same ingestion into memory://: the cost of the walk and hashing
            # alone, without the embedded store's writes and syncs.
            mem_s, mem_path = timed_command(
                tvixmount_command("import", tree, "--store", "memory://")
            )
            # Deleted between runs: adding a path that is already valid skips the copy.
            if nix_path:
                nix_delete(nix_path)
            nix_s, nix_path = timed_command(["nix-store", "--add", str(tree)])
            if not tvix_path == mem_path == nix_path:
                print(f"store paths differ: {tvix_path} {mem_path} {nix_path}", file=sys.stderr)
                return 1
            times["embedded"].append(tvix_s)
            times["memory"].append(mem_s)
            times["nix"].append(nix_s)
        files = sum(len(names) for _root, _dirs, names in os.walk(tree))
        print(f"tree: {data / MB:.0f} MB of file data in {files} entries, {nix_path}")
        tvix_rate = report("tvixmount import (embedded store)", data, times["embedded"])
        report("tvixmount import (memory://)", data, times["memory"])
        nix_rate = report("nix-store --add", data, times["nix"])
        ratio = tvix_rate / nix_rate
        print(f"ratio tvixmount/nix throughput (embedded store, best runs): {ratio:.2f}")
    finally:
        if nix_path:
            nix_delete(nix_path)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(store_scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
