"""``tvixmount copy --to file://`` against ``nix copy --to file://`` of the same path, same run.

The tree (default /usr/lib/python3.11, a 52 MB NAR of many files) is added
to Nix's store with ``nix-store --add`` and imported into a fresh embedded
store with ``tvixmount import``: both give the same store path. Each
compression is timed ``--rounds`` times per tool, interleaved, into a fresh
cache directory each time; the best round counts. Throughput is NAR bytes
per second of wall time.

    python -m bench.copy_bench [--tree DIR] [--split] [--rounds N] [--compression xz zstd]
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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="copy-bench-"))
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
            for round_ in range(args.rounds):
                for tool in best:
                    dest = work / f"{tool}-{compression}-{round_}"
                    url = f"file://{dest}?compression={compression}"
                    if tool == "nix":
                        argv = [*NIX, "copy", "--to", url, *paths]
                    else:
                        argv = tvixmount_command("copy", "--from", store, "--to", url, *paths)
                    best[tool] = min(best[tool], timed_command(argv)[0])
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
