"""``tvixmount copy --to file://`` against ``nix copy --to file://`` of the same path, same run.

The tree (default /usr/lib/python3.11, a 52 MB NAR of many files) is added
to Nix's store with ``nix-store --add`` and imported into a fresh embedded
store with ``tvixmount import``: both give the same store path. Each
compression is timed ``--rounds`` times per tool, interleaved, into a fresh
cache directory each time; the best round counts. Throughput is NAR bytes
per second of wall time.

tvixmount runs from compiled bytecode, as an installed tvixmount does (pip
compiles it): from a source checkout under ``PYTHONDONTWRITEBYTECODE`` every
run would compile each of its modules again (35 ms of a 0.2 s start-up).
Its bytecode goes to a cache of the bench's own (``PYTHONPYCACHEPREFIX``),
written by an untimed run before the timed ones; ``--no-bytecode-cache``
times the compiling start-up instead.

    python -m bench.copy_bench [--tree DIR] [--split] [--rounds N] [--compression xz zstd]
                               [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.measure import timed_command
from bench.peers import use_bytecode_cache
from tvixmount.testing.mounts import tvixmount_command

NIX = ("nix", "--extra-experimental-features", "nix-command")


def run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path("/usr/lib/python3.11"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compression", nargs="+", default=["zstd", "xz"])
    parser.add_argument("--split", action="store_true", help="one store path per subdirectory")
    parser.add_argument(
        "--no-bytecode-cache",
        dest="bytecode_cache",
        action="store_false",
        help="run tvixmount as PYTHONDONTWRITEBYTECODE says, compiling at every start",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="copy-bench-"))
    if args.bytecode_cache:
        use_bytecode_cache(work / "bytecode")
    try:
        tree = work / args.tree.name
        shutil.copytree(args.tree, tree, symlinks=True)
        # --split: every subdirectory its own store path, as a closure of many paths.
        trees = [d for d in sorted(tree.iterdir()) if d.is_dir() and not d.is_symlink()]
        trees = trees if args.split else [tree]
        store = work / "store"
        paths = []
        for index, part in enumerate(trees):
            nix_path = run(["nix-store", "--add", str(part)])
            # A root, so a garbage collection elsewhere on the machine cannot take it mid-run.
            root = work / f"root-{index}"
            run(["nix-store", "--realise", nix_path, "--add-root", str(root), "--indirect"])
            ours_path = run(tvixmount_command("import", part, "--store", store))
            assert ours_path == nix_path, (ours_path, nix_path)
            paths.append(nix_path)
        infos = json.loads(run([*NIX, "path-info", "--json", *paths]))
        nar_size = sum(int(info["narSize"]) for info in infos)
        print(f"{len(paths)} paths from {args.tree}: NAR {nar_size / 1e6:.1f} MB")
        for compression in args.compression:
            best = {"nix": float("inf"), "tvixmount": float("inf")}
            # An untimed first round (of the first compression) writes tvixmount's bytecode
            # cache and brings the paths into the page cache for both tools alike.
            first = -1 if compression == args.compression[0] else 0
            for round_ in range(first, args.rounds):
                for tool in best:
                    dest = work / f"{tool}-{compression}-{round_}"
                    url = f"file://{dest}?compression={compression}"
                    if tool == "nix":
                        argv = [*NIX, "copy", "--to", url, *paths]
                    else:
                        argv = tvixmount_command("copy", "--from", store, "--to", url, *paths)
                    seconds = timed_command(argv)[0]
                    if round_ >= 0:
                        best[tool] = min(best[tool], seconds)
                    shutil.rmtree(dest)
            rates = {tool: nar_size / seconds / 1e6 for tool, seconds in best.items()}
            print(
                f"{compression:5} nix copy {best['nix']:6.2f} s ({rates['nix']:6.1f} MB/s)   "
                f"tvixmount copy {best['tvixmount']:6.2f} s ({rates['tvixmount']:6.1f} MB/s)   "
                f"ratio {rates['tvixmount'] / rates['nix']:.2f}x"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
