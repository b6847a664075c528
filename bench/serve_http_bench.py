"""``tvixmount serve --http`` under load, beside ``python -m http.server`` on a Nix-written cache.

Run with ``python -m bench.serve_http_bench`` (needs nix-bin; adds the
bench's paths to /nix/store and deletes them afterwards). The same trees go
into an embedded tvixmount store (``tvixmount import``, served with
``--secret-key``) and, through ``nix-store --add`` and ``nix copy --to
file://DIR?compression=none``, into a binary cache directory that
``python -m http.server`` serves as static files. Each server then gets, in
turn and for ``--seconds`` (default 30): 32 clients fetching narinfos and 8
fetching NARs (``--narinfo-clients``, ``--nar-clients``; 0 leaves a kind
out), over keep-alive connections where the server allows it (the static
server speaks HTTP/1.0: one connection per request). Clients run in two
processes of their own (narinfo, NAR), each a thread per client.

Reported per server: requests and errors, narinfo p50/p99 latency, NAR
MB/s (all NAR clients together). For scale, nix-serve's published figures
(24-core server): narinfo about 0.1 ms, NAR 0.5 ms + 0.8 ms/MB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from bench.measure import percentile
from tvixmount.testing.mounts import tvixmount_command

T = TypeVar("T")
MB = 1_000_000
NIX_FLAGS = ("--extra-experimental-features", "nix-command")
SMALL_PATHS = 60
NAR_PATHS = 4
NAR_BYTES = 32 << 20  # per NAR path: one file of random bytes
_READY = re.compile(r"^tvixmount: serving .* at (\S+)$")


def _run(*argv: str | Path) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {done.stderr.strip()}")
    return done.stdout


def build_trees(root: Path, salt: str) -> list[Path]:
    """NAR_PATHS big single-file trees first, then SMALL_PATHS small ones."""
    rng = random.Random(salt)
    trees = []
    for i in range(NAR_PATHS + SMALL_PATHS):
        tree = root / f"bench-{i}-{salt}"
        tree.mkdir(parents=True)
        if i < NAR_PATHS:
            (tree / "blob").write_bytes(rng.randbytes(NAR_BYTES))
        else:
            (tree / "README").write_text(f"{salt} {i}\n" * 20)
            (tree / "bin").mkdir()
            (tree / "bin" / "tool").write_bytes(rng.randbytes(4096))
            (tree / "bin" / "tool").chmod(0o755)
            (tree / "link").symlink_to("README")
        trees.append(tree)
    return trees


@contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


# -- clients (run in their own processes) --------------------------------------------------


def _connection(base: str) -> http.client.HTTPConnection:
    address = urlsplit(base)
    return http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)


NarinfoResult = tuple[list[float], int]  # latencies (s), errors
NarResult = tuple[int, int, int]  # bytes, requests, errors


def _narinfo_client(
    base: str, hashes: list[str], deadline: float, out: list[NarinfoResult]
) -> None:
    conn = _connection(base)
    latencies: list[float] = []
    errors = 0
    for i in range(random.randrange(len(hashes)), 1 << 62):
        if time.monotonic() >= deadline:
            break
        started = time.perf_counter()
        try:
            conn.request("GET", f"/{hashes[i % len(hashes)]}.narinfo")
            response = conn.getresponse()
            response.read()
            errors += response.status != 200
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
        latencies.append(time.perf_counter() - started)
    conn.close()
    out.append((latencies, errors))


def _nar_client(base: str, urls: list[str], deadline: float, out: list[NarResult]) -> None:
    conn = _connection(base)
    buffer = bytearray(1 << 20)
    received = requests = errors = 0
    for i in range(random.randrange(len(urls)), 1 << 62):
        if time.monotonic() >= deadline:
            break
        try:
            conn.request("GET", "/" + urls[i % len(urls)])
            response = conn.getresponse()
            while n := response.readinto(buffer):
                received += n
            requests += 1
            errors += response.status != 200
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
    conn.close()
    out.append((received, requests, errors))


def _threads(
    client: Callable[..., None], base: str, targets: list[str], count: int, seconds: float
) -> tuple[list[T], float]:
    """``count`` threads running ``client`` for ``seconds``; what they appended, and the
    seconds until the last finished (a NAR started before the deadline is read to its end).
    """
    started = time.monotonic()
    deadline = started + seconds
    out: list[T] = []
    threads = [
        threading.Thread(target=client, args=(base, targets, deadline, out)) for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out, time.monotonic() - started


def narinfo_clients(
    base: str, hashes: list[str], count: int, seconds: float
) -> tuple[list[NarinfoResult], float]:
    return _threads(_narinfo_client, base, hashes, count, seconds)


def nar_clients(
    base: str, urls: list[str], count: int, seconds: float
) -> tuple[list[NarResult], float]:
    return _threads(_nar_client, base, urls, count, seconds)


@dataclass
class Result:
    server: str
    narinfo_requests: int
    nar_requests: int
    errors: int
    narinfo_p50_ms: float
    narinfo_p99_ms: float
    nar_mb_s: float


@dataclass
class Load:
    seconds: float
    narinfo_clients: int
    nar_clients: int


def load(server: str, base: str, hashes: list[str], nar_urls: list[str], run: Load) -> Result:
    seconds = run.seconds
    with multiprocessing.Pool(2) as pool:
        narinfos = pool.apply_async(narinfo_clients, (base, hashes, run.narinfo_clients, seconds))
        nars = pool.apply_async(nar_clients, (base, nar_urls, run.nar_clients, seconds))
        (narinfo_results, _), (nar_results, nar_seconds) = narinfos.get(), nars.get()
    latencies = [lat for lats, _ in narinfo_results for lat in lats]
    return Result(
        server=server,
        narinfo_requests=len(latencies),
        nar_requests=sum(r[1] for r in nar_results),
        errors=sum(e for _, e in narinfo_results) + sum(r[2] for r in nar_results),
        narinfo_p50_ms=round(percentile(latencies or [0.0], 50) * 1000, 2),
        narinfo_p99_ms=round(percentile(latencies or [0.0], 99) * 1000, 2),
        nar_mb_s=round(sum(r[0] for r in nar_results) / MB / nar_seconds, 1),
    )


def nar_urls(base: str, hashes: list[str]) -> list[str]:
    """Each path's NAR URL, as its narinfo names it (and one warm-up read of each)."""
    urls = []
    conn = _connection(base)
    for digest in hashes:
        conn.request("GET", f"/{digest}.narinfo")
        text = conn.getresponse().read().decode()
        url = re.search(r"^URL: (\S+)$", text, re.MULTILINE)
        assert url is not None, text
        urls.append(url[1])
        conn.request("GET", "/" + url[1])
        conn.getresponse().read()
    conn.close()
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--narinfo-clients", type=int, default=32, metavar="N")
    parser.add_argument("--nar-clients", type=int, default=8, metavar="N")
    args = parser.parse_args()
    salt = os.urandom(6).hex()
    with tempfile.TemporaryDirectory(prefix="serve-http-bench-") as tmp:
        work = Path(tmp)
        trees = build_trees(work / "trees", salt)
        paths = _run("nix-store", "--add", *trees).split()
        try:
            run = Load(args.seconds, args.narinfo_clients, args.nar_clients)
            results = _bench(work, trees, paths, run)
        finally:
            subprocess.run(["nix-store", "--delete", *paths], capture_output=True, check=False)
    for result in results:
        print(json.dumps(asdict(result)))
    print(
        f"{'server':<12} {'narinfo req':>11} {'NAR req':>8} {'errors':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'NAR MB/s':>9}"
    )
    for r in results:
        print(
            f"{r.server:<12} {r.narinfo_requests:>11} {r.nar_requests:>8} {r.errors:>6} "
            f"{r.narinfo_p50_ms:>7} {r.narinfo_p99_ms:>7} {r.nar_mb_s:>9}"
        )
    print("nix-serve (published, 24 cores): narinfo ~0.1 ms, NAR 0.5 ms + 0.8 ms/MB")


def _bench(work: Path, trees: list[Path], paths: list[str], run: Load) -> list[Result]:
    cache = work / "cache"
    _run("nix", *NIX_FLAGS, "copy", "--to", f"file://{cache}?compression=none", *paths)
    store = work / "store"
    imported = _run(*tvixmount_command("import", *trees, "--store", store)).split()
    assert imported == paths, "tvixmount import and nix-store --add disagree on the paths"
    key = work / "bench.secret"
    key.write_text(_run("nix", *NIX_FLAGS, "key", "generate-secret", "--key-name", "bench-1"))
    hashes = [path.removeprefix("/nix/store/")[:32] for path in paths]
    results = []
    tvixmount = tvixmount_command("serve", "--http", "127.0.0.1:0")
    with process(
        [*tvixmount, "--store", str(store), "--secret-key", str(key)], work / "t.log"
    ) as p:
        assert p.stdout is not None
        ready = _READY.match(p.stdout.readline().strip())
        if ready is None:
            raise SystemExit(f"tvixmount serve failed: {(work / 't.log').read_text()}")
        base = ready[1]
        results.append(load("tvixmount", base, hashes, nar_urls(base, hashes[:NAR_PATHS]), run))
    port = free_port()
    static = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(cache)]
    with process([*static, str(port)], work / "s.log"):
        wait_listening(port)
        base = f"http://127.0.0.1:{port}"
        results.append(load("http.server", base, hashes, nar_urls(base, hashes[:NAR_PATHS]), run))
    return results


if __name__ == "__main__":
    main()
