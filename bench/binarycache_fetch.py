"""Binary cache fetch latency: tvixmount's first and second access vs ``nix copy --from``.

Run with ``python -m bench.binarycache_fetch`` (needs nix-bin; adds one ~100 MB
path to /nix/store and deletes it afterwards). For each compression the
path is copied into a fresh ``file://`` cache by Nix, then timed, in the same
run:

- ``first``: a get on a cold local cache (fetch narinfo, read, decompress,
  hash and ingest the NAR into castore, check NarHash, record the PathInfo);
- ``second``: a get on the same cache dir by a new service instance (what a
  new mount or command sees: open the local cache, read the PathInfo);
- ``mount first`` / ``mount second``: ``stat`` of the path through a fresh
  FUSE mount, with a cold and then a warm local cache;
- ``nix copy``: ``nix copy --from file://DIR --store SCRATCH PATH`` into a
  fresh scratch store (decompress, hash, write the tree, register it).

The path is signed; both sides check the signature against the trusted key.

The tree holds 100 MB of file data: half random bytes, half compressible
text, in files from 4 KiB to 32 MiB, unique per run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import trio

from tvixmount.storepath import StorePath
from tvixmount.stores import StoreOptions, open_store
from tvixmount.testing.mounts import mounted

MB = 1_000_000
NIX_FLAGS = ("--extra-experimental-features", "nix-command")


def build_tree(root: Path, total: int, seed: int) -> None:
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(2, 9)).hex() for _ in range(2000)]
    sizes = [32 << 20, 8 << 20, *([1 << 20] * 8), *([64 << 10] * 64), *([4 << 10] * 256)]
    root.mkdir(parents=True)
    written = 0
    for serial, size in enumerate(sizes):
        if written >= total:
            break
        size = min(size, total - written)
        if serial % 2:
            data = rng.randbytes(size)
        else:
            text = " ".join(rng.choice(words) for _ in range(size // 8 + 1)).encode()
            data = text[:size]
        sub = root / f"d{serial % 16:02d}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{serial:04d}").write_bytes(f"{seed}:{serial}:".encode() + data)
        written += size
    # Make up whatever the size list did not reach with one last random file.
    if written < total:
        (root / "rest.bin").write_bytes(rng.randbytes(total - written))


def nix(*args: str) -> str:
    done = subprocess.run(["nix", *NIX_FLAGS, *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def _get(url: str, cache_dir: Path, digest: bytes) -> None:
    store = open_store(url, StoreOptions(cache_dir=cache_dir))
    try:
        info = await store.pathinfos.get(digest)
        assert info is not None
    finally:
        await store.aclose()


def service_get(url: str, cache_dir: Path, digest: bytes) -> float:
    return timed(lambda: trio.run(_get, url, cache_dir, digest))


def mount_stat(url: str, cache_dir: Path, basename: str, work: Path) -> float:
    """Seconds for the first ``stat`` of the path through a fresh background mount."""
    mnt = work / "mnt"
    with mounted(url, mnt, "--cache-dir", cache_dir, log_file=work / "mount.log"):
        return timed(lambda: os.stat(mnt / basename))


def summary(values: list[float]) -> str:
    return f"min {min(values):8.3f}s  median {statistics.median(values):8.3f}s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100, help="file data in the path (MB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compression", action="append", help="default: xz and zstd")
    parser.add_argument("--no-mount", action="store_true", help="skip the FUSE figures")
    args = parser.parse_args()
    compressions = args.compression or ["xz", "zstd"]
    if shutil.which("nix-store") is None:
        print("needs nix-bin (nix-store)", file=sys.stderr)
        return 1
    seed = random.SystemRandom().randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="tvixmount-bench-bc-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        build_tree(work / "tree", args.size_mb * MB, seed)
        path = subprocess.run(
            ["nix-store", "--add", str(work / "tree")], check=True, capture_output=True, text=True
        ).stdout.strip()
        try:
            key = signing_key(work, path)
            nar_size = json.loads(nix("path-info", "--json", path))[0]["narSize"]
            print(f"path {path}\nNAR {nar_size / MB:.1f} MB, {args.runs} runs each\n")
            for compression in compressions:
                run_compression(work, path, key, compression, args.runs, not args.no_mount)
        finally:
            subprocess.run(["nix-store", "--delete", path], capture_output=True, check=False)
    return 0


def signing_key(work: Path, path: str) -> str:
    """Sign the path (both sides then check the signature, as users run them); the public key."""
    secret, public = work / "key.sec", work / "key.pub"
    subprocess.run(
        ["nix-store", "--generate-binary-cache-key", "bench-1", str(secret), str(public)],
        check=True,
    )
    nix("store", "sign", "--key-file", str(secret), path)
    return public.read_text().strip()


def run_compression(
    work: Path, path: str, key: str, compression: str, runs: int, mount: bool
) -> None:
    cache = work / f"cache-{compression}"
    started = time.perf_counter()
    nix("copy", "--to", f"file://{cache}?compression={compression}&parallel-compression=true", path)
    file_size = sum(f.stat().st_size for f in (cache / "nar").iterdir())
    print(
        f"[{compression}] cache written by nix copy --to in {time.perf_counter() - started:.1f}s"
        f", file {file_size / MB:.1f} MB"
    )
    nix_url = f"file://{cache}"
    url = f"{nix_url}?trusted-public-keys={quote(key, safe='')}"
    digest = StorePath.parse(path).digest
    basename = path.removeprefix("/nix/store/")
    figures: dict[str, list[float]] = {}
    for run in range(runs):
        local = work / f"local-{compression}-{run}"
        figures.setdefault("tvixmount first access (get)", []).append(
            service_get(url, local, digest)
        )
        figures.setdefault("tvixmount second access (new instance, get)", []).append(
            service_get(url, local, digest)
        )
        if mount:
            mlocal = work / f"mlocal-{compression}-{run}"
            figures.setdefault("tvixmount mount: first stat, cold cache", []).append(
                mount_stat(url, mlocal, basename, work)
            )
            figures.setdefault("tvixmount mount: first stat, warm cache", []).append(
                mount_stat(url, mlocal, basename, work)
            )
        scratch = work / f"scratch-{compression}-{run}"
        copy_from = ["copy", "--option", "trusted-public-keys", key, "--from", nix_url]
        copy_from += ["--store", str(scratch), path]
        figures.setdefault("nix copy --from file:// --store SCRATCH", []).append(
            timed(functools.partial(nix, *copy_from))
        )
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(local, ignore_errors=True)
    for name, values in figures.items():
        print(f"  {name:48s} {summary(values)}")
    print()


if __name__ == "__main__":
    sys.exit(main())
