"""Warm walks: every file opened and read again while its pages are in the page cache.

A warm ``tar``/``cat`` walk reads nothing from the daemon, so what it costs
is one OPEN and one RELEASE per file, and whatever the daemon does for an
open. The tree has many small files (pushed to the page cache at first open)
and enough 1 MiB files to overflow the gRPC client's verified-blob cache
(256 MiB), so a re-open that went to the store would fetch a blob again.
Measured through the embedded store and through ``tvixmount serve`` on
loopback; every figure is the median of ``RUNS`` warm walks after one cold.

    .venv/bin/python -m bench.warm_walk [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

from bench import measure, peers
from tests.grpc_serving import serving
from tvixmount.testing.mounts import run_tvixmount

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SMALL_FILES = 3000
BIG_FILES = 320  # x 1 MiB: more than the gRPC client's 256 MiB verified cache


def _tree(root: Path) -> None:
    rng = random.Random(24)
    for i in range(SMALL_FILES):
        directory = root / f"d{i % 60:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{i}").write_bytes(rng.randbytes(rng.randint(100, 16 << 10)))
    (root / "big").mkdir()
    for i in range(BIG_FILES):
        (root / "big" / f"b{i}").write_bytes(rng.randbytes(1 << 20))


def _walks(mnt: Path) -> tuple[float, list[float]]:
    """(cold seconds, warm seconds of each run)."""
    peers.drop_caches()
    cold = measure.walk_and_cat_s(mnt)
    return cold, [measure.walk_and_cat_s(mnt) for _ in range(RUNS)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build (or reuse) the store here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (drop_caches, FUSE mounts)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="tvixmount-warm-walk-") as tmp:
        base = args.keep or Path(tmp)
        store = base / "store"
        path_file = base / "store-path"
        if not path_file.exists():
            _tree(base / "tree")
            imported = run_tvixmount("import", base / "tree", "--store", store, timeout=600)
            if imported.returncode != 0:
                raise SystemExit(imported.stderr)
            path_file.write_text(imported.stdout.strip())
        basename = Path(path_file.read_text()).name
        print(f"{SMALL_FILES} files of 0.1-16 KiB, {BIG_FILES} of 1 MiB; median of {RUNS} warm")
        with serving(str(store), base / "serve.log") as served:
            for label, url in (("embedded", str(store)), ("gRPC", served.url)):
                with peers.tvixmount_mounted(url, base / "mnt"):
                    cold, warm = _walks(base / "mnt" / basename)
                print(
                    f"{label:9} cold {cold:6.2f} s   warm median {statistics.median(warm):6.3f} s"
                    f"   (min {min(warm):.3f}, max {max(warm):.3f})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
