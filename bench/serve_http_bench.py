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
server speaks HTTP/1.0: one connection per request).

The clients are wrk (C, epoll; Debian's ``wrk``): two processes of one
thread each, narinfo and NAR, every connection rotating over its URLs with
a small Lua script. Python client threads on these 2 cores cost as much CPU
as the server and add GIL scheduling to every latency; wrk measures the
server, and both servers the same way in the same run. Latencies are from
wrk's histogram (from each request sent to its response complete).

Reported per server: requests and errors, narinfo p50/p99 latency, NAR
MB/s (all NAR clients together). For scale, nix-serve's published figures
(24-core server): narinfo about 0.1 ms, NAR 0.5 ms + 0.8 ms/MB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from subprocess import PIPE, Popen
from urllib.parse import urlsplit

from tvixmount.testing.mounts import tvixmount_command

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


# -- load: wrk, one process per kind of client --------------------------------------------

# wrk runs this in each of its threads: requests rotate over the paths file
# (one URL path a line, from a random start), and the summary is one JSON line.
WRK_SCRIPT = """
local paths, i = {}, 0
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  i = math.random(#paths)
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "bytes": %d, "micros": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


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


def _wrk(work: Path, base: str, paths: list[str], clients: int, seconds: float) -> Popen[str]:
    """A wrk process of ``clients`` connections on one thread, rotating over ``paths``."""
    targets = work / f"paths-{len(paths)}-{clients}"
    targets.write_text("".join(f"/{path}\n" for path in paths))
    script = work / "rotate.lua"
    script.write_text(WRK_SCRIPT)
    argv = ["wrk", "--threads", "1", "--connections", str(clients)]
    argv += ["--duration", f"{round(seconds)}s", "--timeout", "60s", "--script", str(script)]
    return Popen([*argv, base, "--", str(targets)], stdout=PIPE, stderr=PIPE, text=True)


def _summary(proc: Popen[str] | None) -> dict[str, int]:
    """The JSON line ``done`` wrote (zeros for a kind of client left out)."""
    if proc is None:
        return {"requests": 0, "bytes": 0, "micros": 1, "errors": 0, "p50_us": 0, "p99_us": 0}
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed: {err.strip() or out.strip()}")
    summary: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return summary


def load(server: str, work: Path, base: str, hashes: list[str], run: Load) -> Result:
    """Both kinds of client at once, the NAR clients on the first NAR_PATHS paths; wrk's NAR
    bytes include headers (a few hundred a NAR)."""
    narinfos = [f"{digest}.narinfo" for digest in hashes]
    nars = nar_urls(base, hashes[:NAR_PATHS])
    procs = [
        _wrk(work, base, targets, clients, run.seconds) if clients else None
        for targets, clients in ((narinfos, run.narinfo_clients), (nars, run.nar_clients))
    ]
    narinfo, nar = (_summary(proc) for proc in procs)
    return Result(
        server=server,
        narinfo_requests=narinfo["requests"],
        nar_requests=nar["requests"],
        errors=narinfo["errors"] + nar["errors"],
        narinfo_p50_ms=narinfo["p50_us"] / 1000,
        narinfo_p99_ms=narinfo["p99_us"] / 1000,
        nar_mb_s=round(nar["bytes"] / MB / (nar["micros"] / 1e6), 1),
    )


def _connection(base: str) -> http.client.HTTPConnection:
    address = urlsplit(base)
    return http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)


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
        results.append(load("tvixmount", work, base, hashes, run))
    port = free_port()
    static = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(cache)]
    with process([*static, str(port)], work / "s.log"):
        wait_listening(port)
        base = f"http://127.0.0.1:{port}"
        results.append(load("http.server", work, base, hashes, run))
    return results


if __name__ == "__main__":
    main()
