"""Real software on each filesystem: an interpreter, a compiler and a tar walk.

The same two store paths (this machine's Python 3.11 standard library as a
``PYTHONHOME``, and the C/C++ system headers with GCC's own) are read from:
the native directory, squashfuse on a squashfs image of it, a tvixmount of the
embedded store, and a tvixmount of that same store served by ``tvixmount
serve`` over gRPC on loopback. Workloads:

- ``python``: ``python3.11 -s -c 'import ...'`` of 15 stdlib modules with
  ``PYTHONHOME`` on the tree (its bytecode compiled against mtime 1, as Nix
  stores it, so the interpreter reads ``.pyc`` files and never writes);
- ``compile``: ``g++ -fsyntax-only`` of a file including 30 standard headers,
  every include path on the tree (``-nostdinc``; many negative lookups);
- ``tar``: ``tar -cf - | cat >/dev/null`` of the standard library.

``grpc-cache`` is the gRPC mount with ``--cache-dir`` kept across runs: a
second mount of a remote store, warm from verified content on disk.

Cold: kernel caches dropped, and tvixmount's daemons (mount and serve)
started afresh; warm: the same command again on the same mount, ``WARM_RUNS``
times after each cold run (a warm run takes about 0.1 s, and one sample of it
varies by 20% from run to run). Every figure is the median of its samples;
results go to stdout and ``bench/results/realsoftware.json``.

A machine may page its page cache out in the background (a VM giving memory
back to its host: DAMON's ``pageout`` scheme on file pages, as on the bench
machine). A warm run then reads again some pages that the run before it had
read. The report says whether such a scheme is active, since it weighs on warm
figures.

    .venv/bin/python -m bench.realsoftware          (root: drop_caches, FUSE)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.grpc_serving import serving

from . import peers

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
WARM_RUNS = int(os.environ.get("BENCH_WARM_RUNS", "5"))
DAMON = Path("/sys/kernel/mm/damon/admin/kdamonds")
DATA = Path(os.environ.get("TVIXMOUNT_BENCH_DIR", "/var/tmp/tvixmount-bench")) / "realsoftware"
RESULTS = Path(__file__).parent / "results"

PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
GXX = "g++"
MODULES = [
    "json",
    "asyncio",
    "decimal",
    "email.parser",
    "http.client",
    "xml.etree.ElementTree",
    "unittest",
    "logging",
    "argparse",
    "sqlite3",
    "csv",
    "zipfile",
    "tarfile",
    "pathlib",
    "typing",
]
HEADERS = [
    "algorithm",
    "any",
    "array",
    "atomic",
    "bitset",
    "chrono",
    "complex",
    "condition_variable",
    "deque",
    "filesystem",
    "fstream",
    "functional",
    "future",
    "iomanip",
    "iostream",
    "list",
    "map",
    "memory",
    "mutex",
    "numeric",
    "optional",
    "random",
    "regex",
    "set",
    "sstream",
    "string",
    "thread",
    "tuple",
    "unordered_map",
    "variant",
    "vector",
]
SETUPS = tuple(os.environ.get("BENCH_SETUPS", "native squashfuse embedded grpc grpc-cache").split())
WORKLOADS = ("python", "compile", "tar")
NIX_MTIME = 1  # what every file in a Nix store (and a tvixmount) says


def _gcc_include_dirs() -> list[Path]:
    """g++'s default ``#include <...>`` search list, in order."""
    probe = subprocess.run(
        [GXX, "-E", "-x", "c++", "-v", "-"], input="", capture_output=True, text=True, check=True
    ).stderr.splitlines()
    start = probe.index("#include <...> search starts here:") + 1
    end = probe.index("End of search list.")
    return [Path(line.strip()).resolve() for line in probe[start:end]]


def _set_mtimes(tree: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + dirnames:
            os.utime(Path(dirpath) / name, (NIX_MTIME, NIX_MTIME), follow_symlinks=False)
    os.utime(tree, (NIX_MTIME, NIX_MTIME))


def _stage_python(home: Path) -> None:
    lib = home / "lib" / "python3.11"
    shutil.copytree(
        STDLIB,
        lib,
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "site-packages", "dist-packages", "test"),
    )
    _set_mtimes(home)  # before compiling: the .pyc files record their sources' mtime
    subprocess.run(
        [
            str(PYTHON),
            "-m",
            "compileall",
            "-q",
            "-j",
            "2",
            "--invalidation-mode",
            "timestamp",
            str(lib),
        ],
        check=False,  # a few stdlib files are bad syntax on purpose (lib2to3 tests)
        capture_output=True,
    )
    _set_mtimes(home)


def _stage_headers(root: Path) -> None:
    for i, include in enumerate(_gcc_include_dirs()):
        target = root / f"{i:02d}"
        if include.is_dir():
            # Each search directory on its own, as Nix keeps each in its own path.
            # c++/: the C++ headers are search directories of their own.
            shutil.copytree(include, target, symlinks=True, ignore=shutil.ignore_patterns("c++"))
        else:
            target.mkdir(parents=True)
    _set_mtimes(root)


def prepare() -> tuple[Path, Path, Path, dict[str, str]]:
    """Embedded store, native layout and squashfs image (each made once).

    ``BENCH_SETUPS`` (space-separated) measures only some of the setups.
    """
    store, native, image = DATA / "store", DATA / "native", DATA / "native.sqsh"
    done = DATA / ".complete"
    if not done.exists():
        if DATA.exists():
            shutil.rmtree(DATA)
        src = DATA / "src"
        _stage_python(src / "python-home")
        _stage_headers(src / "cxx-headers")
        out = subprocess.run(
            [
                *peers.TVIXMOUNT,
                "import",
                "--store",
                str(store),
                str(src / "python-home"),
                str(src / "cxx-headers"),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        native.mkdir(parents=True)
        names = {}
        for key, staged, store_path in zip(
            ("python", "headers"), ("python-home", "cxx-headers"), out, strict=True
        ):
            (src / staged).rename(native / Path(store_path).name)
            names[key] = Path(store_path).name
        done.write_text(json.dumps(names))
    peers.make_squashfs(native, image)
    return store, native, image, json.loads(done.read_text())


def _python(root: Path, names: dict[str, str]) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONHOME": str(root / names["python"])}
    subprocess.run([str(PYTHON), "-s", "-c", "import " + ", ".join(MODULES)], env=env, check=True)


def _compile(root: Path, names: dict[str, str]) -> None:
    source = DATA / "all_headers.cpp"
    if not source.exists():
        source.write_text("".join(f"#include <{h}>\n" for h in HEADERS) + "int main() {}\n")
    headers = root / names["headers"]
    flags = ["-nostdinc", "-nostdinc++", "-std=c++17", "-fsyntax-only"]
    for search in sorted(headers.iterdir()):
        flags += ["-isystem", str(search)]
    subprocess.run([GXX, *flags, str(source)], check=True)


def _tar(root: Path, names: dict[str, str]) -> None:
    subprocess.run(
        f"tar -cf - -C '{root / names['python']}' . | cat >/dev/null", shell=True, check=True
    )


RUN: dict[str, Callable[[Path, dict[str, str]], None]] = {
    "python": _python,
    "compile": _compile,
    "tar": _tar,
}


def _timed(workload: str, root: Path, names: dict[str, str]) -> float:
    start = time.perf_counter()
    RUN[workload](root, names)
    return time.perf_counter() - start


@contextmanager
def _mounted(setup: str, store: Path, native: Path, image: Path, mnt: Path) -> Iterator[Path]:
    """The tree of ``setup``, freshly mounted (daemons started anew)."""
    if setup == "native":
        yield native
        return
    with ExitStack() as stack:
        if setup == "squashfuse":
            stack.enter_context(peers.squashfuse_mounted(image, mnt))
        elif setup == "embedded":
            stack.enter_context(peers.tvixmount_mounted(store, mnt))
        else:
            served = stack.enter_context(serving(str(store), DATA / "serve.log"))
            # grpc-cache: --cache-dir kept across runs, so only its first cold run is
            # cold; the others start as a second mount does (from verified content on disk).
            cache = ("--cache-dir", str(DATA / "grpc-cache")) if setup == "grpc-cache" else ()
            stack.enter_context(peers.tvixmount_mounted(served.url, mnt, *cache))
        yield mnt


def measure(
    store: Path, native: Path, image: Path, names: dict[str, str]
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """workload -> setup -> {"cold": seconds, "warm": seconds}."""
    mnt = DATA / "mnt"
    results: dict[str, dict[str, dict[str, list[float]]]] = {
        w: {s: {"cold": [], "warm": []} for s in SETUPS} for w in WORKLOADS
    }
    # Setups take turns within each run: on a shared machine, load that comes
    # and goes then weighs on every setup alike instead of on whichever ran then.
    for workload in WORKLOADS:
        for _ in range(RUNS):
            for setup in SETUPS:
                with _mounted(setup, store, native, image, mnt) as root:
                    peers.drop_caches()
                    cold = _timed(workload, root, names)
                    warm = [_timed(workload, root, names) for _ in range(WARM_RUNS)]
                results[workload][setup]["cold"].append(cold)
                results[workload][setup]["warm"].extend(warm)
        print(f"  {workload:<8} done", file=sys.stderr)
    return results


def background_pageout() -> str | None:
    """What pages file pages out in the background, if anything does (DAMON's sysfs)."""
    for scheme in DAMON.glob("[0-9]*/contexts/[0-9]*/schemes/[0-9]*"):
        kdamond, context = scheme.parents[3], scheme.parents[1]
        try:
            if (kdamond / "state").read_text().strip() != "on":
                continue
            if (scheme / "action").read_text().strip() != "pageout":
                continue
            age = int((scheme / "access_pattern/age/min").read_text())
            aggr_us = int((context / "monitoring_attrs/intervals/aggr_us").read_text())
        except (OSError, ValueError):
            continue
        # DAMON ages regions of physical memory, not pages: a page read a
        # second ago, in a region idle this long, goes too.
        return f"DAMON pageout of regions idle for {age * aggr_us / 1e6:g} s ({kdamond.name})"
    return None


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ratio(med: dict[str, float], mine: str, theirs: str, width: int) -> str:
    if mine not in med or theirs not in med:
        return f"{'-':>{width}}"
    return f"{med[mine] / med[theirs]:>{width - 1}.2f}x"


def report(results: dict[str, dict[str, dict[str, list[float]]]], pageout: str | None) -> list[str]:
    lines = [
        f"real software: seconds, median of {RUNS} cold and {RUNS * WARM_RUNS} warm runs "
        "(lower is better); "
        "ratios of medians; targets: grpc/embedded cold <= 2.0x, warm <= 1.1x; "
        "embedded <= 1.0x squashfuse; embedded warm python, compile <= 1.25x native, "
        "tar <= 2.0x native",
        f"{'workload':<9}{'phase':<6}"
        + "".join(f"{s:>11}" for s in SETUPS)
        + f"{'grpc/emb':>10}{'cache/emb':>10}{'emb/squash':>11}{'emb/native':>11}",
    ]
    if pageout is not None:
        lines.insert(1, f"background page reclaim active: {pageout}")
    for workload in WORKLOADS:
        for phase in ("cold", "warm"):
            med = {s: _median(results[workload][s][phase]) for s in SETUPS}
            lines.append(
                f"{workload:<9}{phase:<6}"
                + "".join(f"{med[s]:>11.3f}" for s in SETUPS)
                + _ratio(med, "grpc", "embedded", 10)
                + _ratio(med, "grpc-cache", "embedded", 10)
                + _ratio(med, "embedded", "squashfuse", 11)
                + _ratio(med, "embedded", "native", 11)
            )
    return lines


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (drop_caches, FUSE mounts)", file=sys.stderr)
        return 1
    if shutil.which(GXX) is None or not PYTHON.exists():
        print(f"bench: real software needs {GXX} and {PYTHON}; skipped", file=sys.stderr)
        return 0
    store, native, image, names = prepare()
    results = measure(store, native, image, names)
    pageout = background_pageout()
    lines = report(results, pageout)
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "realsoftware.json").write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "runs": RUNS,
                "warm_runs": WARM_RUNS,
                "background_pageout": pageout,
                "seconds": results,
                "table": lines,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
