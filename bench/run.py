"""``make bench``: tvixmount vs squashfuse vs the native filesystem, same data, same run.

Every figure is taken at least ``RUNS`` times and reported as min/median, plus
the ratio of tvixmount's median to each peer's. Results go to stdout as a table
and to ``bench/results/latest.json``. Needs root (drop_caches, FUSE).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tvixmount.stores.local.store import FORMAT

from . import measure, peers, realsoftware
from .dataset import generate
from .synthetic import build_store

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DATA = Path(os.environ.get("TVIXMOUNT_BENCH_DIR", "/var/tmp/tvixmount-bench"))
RESULTS = Path(__file__).parent / "results"


@dataclass
class Figure:
    name: str
    unit: str
    higher_is_better: bool
    values: dict[str, list[float]] = field(default_factory=dict)
    target: str = ""

    def summary(self, peer: str) -> tuple[float, float] | None:
        vals = self.values.get(peer)
        if not vals:
            return None
        best = max(vals) if self.higher_is_better else min(vals)
        return best, statistics.median(vals)

    def ratio(self, peer: str) -> float | None:
        mine, theirs = self.summary("tvixmount"), self.summary(peer)
        if mine is None or theirs is None or theirs[1] == 0:
            return None
        return mine[1] / theirs[1]


def _current_format(native: Path) -> bool:
    """Whether the data set was imported by this store layout.

    Recorded at import time: opening an older store upgrades its marker, but
    not the way its blobs were laid out when they were written.
    """
    try:
        return (native / ".store-format").read_text() == FORMAT
    except OSError:
        return False


def prepare() -> tuple[Path, Path, Path, list[Path]]:
    """Data, embedded store, native store layout and squashfs image (each made once)."""
    store = DATA / "store"
    native = DATA / "native"
    image = DATA / "native.sqsh"
    done = native / ".complete"
    if done.exists() and not _current_format(native):
        # Imported by an older layout (say, before small blobs were packed):
        # measuring it would measure the old store, so start again.
        print(f"bench: {store} has an older store format; regenerating the data set")
        for stale in (store, native, image, DATA / "src"):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
    if not done.exists():
        big, trees = generate(DATA)
        start = time.perf_counter()
        out = subprocess.run(
            [*peers.TVIXMOUNT, "import", "--store", str(store), str(big), *map(str, trees)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        print(f"imported {len(out)} store paths in {time.perf_counter() - start:.1f}s")
        native.mkdir(parents=True, exist_ok=True)
        for src, store_path in zip([big, *trees], out, strict=True):
            src.rename(native / Path(store_path).name)
        (native / ".store-format").write_text(FORMAT)
        done.write_text("\n".join(Path(p).name for p in out) + "\n")
    peers.make_squashfs(native, image)
    names = done.read_text().split()
    return store, native, image, [Path(n) for n in names]


def run_suite(root: Path, names: list[Path], label: str, figures: dict[str, Figure]) -> None:
    big = root / names[0] / "blob.bin"
    trees = [root / n for n in names[1:]]
    stat_targets = [p for t in trees[:200] for p in measure.list_files(t)][:10_000]
    stat_targets = [root / p.relative_to(root) for p in stat_targets]

    def add(key: str, values: list[float]) -> None:
        figures[key].values[label] = values

    add("seq_cold", measure.repeat(lambda: measure.seq_read_mb_s(big), RUNS, peers.drop_caches))
    add("seq_warm", measure.repeat(lambda: measure.seq_read_mb_s(big), RUNS))
    add("rand_4k", measure.repeat(lambda: measure.random_4k_ops_s(big), RUNS))

    def stat_first() -> float:
        return measure.stat_ops_s(stat_targets)

    add("stat_first", measure.repeat(stat_first, RUNS, peers.drop_caches))
    add("stat_second", measure.repeat(stat_first, RUNS))
    walk_cold: list[float] = []
    for _ in range(RUNS):
        peers.drop_caches()
        walk_cold.append(sum(measure.walk_and_cat_s(t) for t in trees))
    add("walk_cold", walk_cold)
    add("walk_warm", [sum(measure.walk_and_cat_s(t) for t in trees) for _ in range(RUNS)])
    readers_files = [f for t in trees[:300] for f in measure.list_files(t)]
    add(
        "concurrent4",
        measure.repeat(
            lambda: measure.concurrent_read_mb_s(readers_files, 4), RUNS, peers.drop_caches
        ),
    )


def lookup_and_memory(figures: dict[str, Figure], mnt: Path) -> None:
    names = build_store(DATA / "lookup-store", 100_000, 0)
    lat: list[float] = []
    with peers.tvixmount_mounted(DATA / "lookup-store", mnt):
        for run in range(RUNS):
            sample = names[run * 2000 : (run + 1) * 2000]
            lat.extend(measure.lookup_latencies_us(mnt, sample))
    figures["lookup_p50"].values["tvixmount"] = [measure.percentile(lat, 50)]
    figures["lookup_p99"].values["tvixmount"] = [measure.percentile(lat, 99)]

    inode_names = build_store(DATA / "inode-store", 1000, 1000)
    with peers.tvixmount_mounted(DATA / "inode-store", mnt):
        pid = peers.serving_pid(mnt)
        assert pid is not None, "cannot find the serving tvixmount process"
        start_rss = peers.rss_kib(pid)
        for name in inode_names:
            for j in range(1000):
                os.lstat(mnt / name / f"f{j:06d}")
        touched = peers.rss_kib(pid)
        peers.drop_caches()
        _wait_until_forgotten(mnt)
        forgotten = peers.rss_kib(pid)
    per_inode = (touched - start_rss) * 1024 / 1_001_000
    figures["rss_start"].values["tvixmount"] = [start_rss / 1024]
    figures["rss_touched"].values["tvixmount"] = [touched / 1024]
    figures["rss_forgotten"].values["tvixmount"] = [forgotten / 1024]
    figures["bytes_per_inode"].values["tvixmount"] = [per_inode]


def _wait_until_forgotten(mnt: Path, timeout: float = 60.0) -> None:
    """Wait until the daemon holds only the root inode (statfs ``f_files``), then a moment more.

    The kernel hands a million FORGETs over for a second or two after
    ``drop_caches`` returns; reading RSS at a fixed delay caught the daemon
    half-way through them.
    """
    deadline = time.monotonic() + timeout
    while os.statvfs(mnt).f_files > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)


def new_figures() -> dict[str, Figure]:
    specs: list[tuple[str, str, bool, str]] = [
        ("seq_cold", "MB/s", True, ">= 1.0x squashfuse"),
        ("seq_warm", "MB/s", True, ">= 0.9x native"),
        ("rand_4k", "ops/s", True, ""),
        ("stat_first", "ops/s", True, ">= 0.8x squashfuse"),
        ("stat_second", "ops/s", True, ">= 0.9x native"),
        ("walk_cold", "s", False, "<= 1.5x squashfuse"),
        ("walk_warm", "s", False, "<= 2.0x native"),
        ("concurrent4", "MB/s", True, ">= 1.0x squashfuse"),
        ("mount_start", "s", False, ""),
        ("lookup_p50", "us", False, ""),
        ("lookup_p99", "us", False, "< 1000 us"),
        ("rss_start", "MiB", False, ""),
        ("rss_touched", "MiB", False, ""),
        ("rss_forgotten", "MiB", False, "near rss_start"),
        ("bytes_per_inode", "B", False, "< 1024 B"),
    ]
    return {n: Figure(n, u, h, target=t) for n, u, h, t in specs}


def _fmt(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:.4g}/{pair[1]:.4g}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_table(figures: dict[str, Figure]) -> None:
    header = (
        "figure",
        "unit",
        "native",
        "squashfuse",
        "tvixmount",
        "vs squashfuse",
        "vs native",
        "target",
    )
    rows = [header] + [
        (
            f.name,
            f.unit + ("" if f.higher_is_better else " (lower better)"),
            _fmt(f.summary("native")),
            _fmt(f.summary("squashfuse")),
            _fmt(f.summary("tvixmount")),
            _fmt_ratio(f.ratio("squashfuse")),
            _fmt_ratio(f.ratio("native")),
            f.target,
        )
        for f in figures.values()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print("values: best/median over the runs; ratios: tvixmount median / peer median")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (drop_caches, FUSE mounts)", file=sys.stderr)
        return 1
    store, native, image, names = prepare()
    figures = new_figures()
    mnt = DATA / "mnt"
    run_suite(native, names, "native", figures)
    with peers.squashfuse_mounted(image, mnt) as started:
        figures["mount_start"].values["squashfuse"] = [started]
        run_suite(mnt, names, "squashfuse", figures)
    starts = []
    for _ in range(RUNS - 1):
        with peers.tvixmount_mounted(store, mnt) as started:
            starts.append(started)
    with peers.tvixmount_mounted(store, mnt) as started:
        starts.append(started)
        run_suite(mnt, names, "tvixmount", figures)
    figures["mount_start"].values["tvixmount"] = starts
    lookup_and_memory(figures, mnt)
    print_table(figures)
    RESULTS.mkdir(exist_ok=True)
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "runs": RUNS,
        "figures": {
            k: asdict(v)
            | {"ratio_squashfuse": v.ratio("squashfuse"), "ratio_native": v.ratio("native")}
            for k, v in figures.items()
        },
    }
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    return realsoftware.main()


if __name__ == "__main__":
    sys.exit(main())
