"""gc and verify of the bench data set, and verify against ``nix store verify`` (Nix 2.8).

Run with ``python -m bench.housekeeping_bench [--paths N] [--no-big] [--keep]``
(needs nix-store; adds the same trees to /nix/store and deletes them again
unless ``--keep``). The data set is bench/dataset.py's: ``N`` store paths of
about 100 entries each (1000 paths: about 100,000 entries) plus, unless
``--no-big``, one path holding a 256 MiB file. Both verifiers read from the
page cache (the trees were just imported) and check the same bytes: Nix
hashes each path's NAR; tvixmount also checks every Directory and blob
against its BLAKE3 digest. Figures printed:

- import of the data set (for scale);
- ``verify`` of every path: seconds and MB/s of NAR;
- ``nix store verify`` of the same paths (Nix 2.8 checks contents unless
  ``--no-contents``; later versions name it ``--check-contents``): seconds and MB/s;
- ``gc`` with nothing to collect (the mark of every path), ``info``;
- ``delete`` of half the paths, then ``gc``: seconds and bytes freed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import dataset
from .measure import timed_command
from .peers import TVIXMOUNT

MB = 1_000_000
DATA = Path("/var/tmp/tvixmount-housekeeping-bench")
NIX = ["--extra-experimental-features", "nix-command"]


def sources(paths: int, big: bool) -> list[Path]:
    bigfile, trees = dataset.generate(DATA)
    return ([bigfile] if big else []) + trees[:paths]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=dataset.TREE_PATHS)
    parser.add_argument("--no-big", dest="big", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the paths added to /nix/store")
    args = parser.parse_args()

    trees = sources(args.paths, args.big)
    work = Path(tempfile.mkdtemp(prefix="housekeeping-", dir=DATA))
    store = work / "store"
    try:
        seconds, out = timed_command(
            [*TVIXMOUNT, "import", "--store", str(store), *map(str, trees)]
        )
        paths = out.split()
        _, info_text = timed_command([*TVIXMOUNT, "info", "--store", str(store), "--json"])
        info = json.loads(info_text)
        nar_mb = info["narSize"] / MB
        entries = sum(1 + sum(1 for _ in tree.rglob("*")) for tree in trees)
        print(f"data: {len(paths)} paths, {entries} entries, {nar_mb:.0f} MB of NAR")
        print(f"import:                       {seconds:7.2f} s")

        verify_s, _ = timed_command([*TVIXMOUNT, "verify", "--store", str(store)])
        print(f"tvixmount verify:             {verify_s:7.2f} s  {nar_mb / verify_s:7.1f} MB/s")

        _, nix_out = timed_command(["nix-store", "--add", *map(str, trees)])
        nix_paths = nix_out.split()
        assert nix_paths == paths, "nix-store --add names the paths as tvixmount import does"
        try:
            nix_s, _ = timed_command(["nix", *NIX, "store", "verify", *nix_paths])
            print(f"nix store verify (contents):  {nix_s:7.2f} s  {nar_mb / nix_s:7.1f} MB/s")
        finally:
            if not args.keep:
                subprocess.run(["nix-store", "--delete", *nix_paths], capture_output=True)

        gc_s, _ = timed_command([*TVIXMOUNT, "gc", "--store", str(store), "--json"])
        print(f"gc, nothing to collect:       {gc_s:7.2f} s")
        info_s, _ = timed_command([*TVIXMOUNT, "info", "--store", str(store), "--json"])
        print(f"info:                         {info_s:7.2f} s")

        doomed = paths[::2]
        delete_s, _ = timed_command([*TVIXMOUNT, "delete", "--store", str(store), *doomed])
        gc_s, report_text = timed_command([*TVIXMOUNT, "gc", "--store", str(store), "--json"])
        report = json.loads(report_text)
        print(f"delete of {len(doomed)} paths:          {delete_s:7.2f} s")
        print(
            f"gc after it:                  {gc_s:7.2f} s  freed {report['freedBytes'] / MB:.0f} MB"
            f" ({report['blobs']} blobs, {report['directories']} directories,"
            f" {report['packsRewritten']} packs rewritten)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
