"""A closure's entry point run cold: ``tvixmount run`` with and without prefetch, ``nix copy``.

Run with ``python -m bench.run_closure_bench`` as root (needs nix-bin and
/dev/fuse). It builds a closure with Nix: an entry point ``app`` (a busybox
script) that runs a ``load`` script in each of ``--layers`` layer paths, each
of which reads every file of its own data path (``--data-mb`` in all, half
random and half text, unique per run). The closure goes into a zstd binary
cache written by ``nix copy``; then, in one run, each timed ``--repeat``
times from a cold local cache:

- ``tvixmount run`` of the entry point over ``file://`` and over a loopback
  ``http://`` server (python's http.server), with ``--prefetch 8`` and
  ``--prefetch 0``;
- ``nix copy --from`` the same cache (file and http) into the host's
  /nix/store, from which the closure was deleted first, followed by the
  native run of the entry point.

Wall and CPU seconds (user + system of every process involved) are shown:
on a shared machine the CPU figure is the steadier one. The closure's paths
are deleted from /nix/store at the end.

tvixmount runs as installed, with its modules' bytecode compiled once
beforehand (into a scratch ``PYTHONPYCACHEPREFIX``): with
``PYTHONDONTWRITEBYTECODE`` set, as in a development shell, every run
would compile them from source again (~0.08 s of CPU per run), which Nix,
a compiled program, never pays.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.peers import use_bytecode_cache
from tvixmount.testing.mounts import tvixmount_command

NIX_FLAGS = ("--extra-experimental-features", "nix-command")
BUSYBOX = Path("/bin/busybox")
MB = 1_000_000

EXPRESSION = """
let
  bb = builtins.storePath "@busybox@";
  system = builtins.currentSystem;
  data = map builtins.storePath (builtins.fromJSON ''@data@'');
  layer = i: d: derivation {
    name = "layer-${toString i}-@salt@";
    inherit system;
    builder = "${bb}/bin/sh";
    args = [ "-c" ''
      ${bb}/bin/busybox mkdir -p $out/bin
      echo '#!${bb}/bin/sh' > $out/bin/load
      echo '${bb}/bin/busybox cat ${d}/* > /dev/null' >> $out/bin/load
      ${bb}/bin/busybox chmod 555 $out/bin/load
    '' ];
  };
  layers = builtins.genList (i: layer i (builtins.elemAt data i)) (builtins.length data);
  calls = builtins.concatStringsSep "\\n" (map (l: "${l}/bin/load") layers);
in derivation {
  name = "app-@salt@";
  inherit system;
  builder = "${bb}/bin/sh";
  args = [ "-c" ''
    ${bb}/bin/busybox mkdir -p $out/bin
    ${bb}/bin/busybox printf '#!${bb}/bin/sh\\nset -e\\n%s\\necho done\\n' '${calls}' > $out/bin/app
    ${bb}/bin/busybox chmod 555 $out/bin/app
  '' ];
}
"""


def _run(*argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=cwd)
    return done.stdout.strip()


def compile_tvixmount(pycache: Path) -> None:
    """tvixmount's bytecode compiled into ``pycache``, and every later run using it."""
    use_bytecode_cache(pycache)
    package = Path(__file__).resolve().parent.parent / "tvixmount"
    _run(sys.executable, "-m", "compileall", "-q", str(package))


def _data_tree(root: Path, size: int, rng: random.Random) -> Path:
    root.mkdir(parents=True)
    for i in range(4):
        part = size // 4
        if i % 2:
            data = rng.randbytes(part)
        else:
            data = b"".join(rng.randbytes(4).hex().encode() + b" " for _ in range(part // 9 + 1))
        (root / f"part{i}").write_bytes(data[:part])
    return root


def build_closure(work: Path, layers: int, data_mb: int) -> tuple[str, list[str], list[str]]:
    """Build the closure with Nix: the entry point's path, its closure, its derivations."""
    salt = secrets.token_hex(6)
    rng = random.Random(salt)
    busybox_dir = work / f"busybox-{salt}" / "bin"
    busybox_dir.mkdir(parents=True)
    shutil.copy(BUSYBOX, busybox_dir / "busybox")
    (busybox_dir / "sh").symlink_to("busybox")
    busybox = _run("nix-store", "--add", str(busybox_dir.parent))
    size = data_mb * MB // layers
    data = [
        _run("nix-store", "--add", str(_data_tree(work / f"data{i}-{salt}", size, rng)))
        for i in range(layers)
    ]
    expression = (
        EXPRESSION.replace("@busybox@", busybox)
        .replace("@data@", json.dumps(data))
        .replace("@salt@", salt)
    )
    (work / "default.nix").write_text(expression)
    app = _run("nix-build", "--no-out-link", str(work / "default.nix"))
    closure = _run("nix-store", "--query", "--requisites", app).split()
    deriver = _run("nix-store", "--query", "--deriver", app)
    derivations = _run("nix-store", "--query", "--requisites", deriver).split()
    return app, closure, derivations


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds (user + system) of the child processes ``fn`` waited for.

    The CPU figure holds up on a loaded machine, where wall time mostly
    measures the wait for a core.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def tvixmount_run(url: str, key: str, cache_dir: Path, prefetch: int, app: str) -> None:
    out = _run(
        *tvixmount_command(
            "run",
            "--store",
            url,
            "--trusted-public-key",
            key,
            "--cache-dir",
            cache_dir,
            "--prefetch",
            str(prefetch),
            "--",
            f"{app}/bin/app",
        )
    )
    assert out == "done", out


def delete(paths: list[str]) -> None:
    subprocess.run(["nix-store", "--delete", *paths], check=True, capture_output=True)


def nix_copy_and_run(url: str, key: str, app: str) -> None:
    _run(
        "nix",
        *NIX_FLAGS,
        "copy",
        "--from",
        url,
        "--option",
        "trusted-public-keys",
        key,
        app,
    )
    assert _run(f"{app}/bin/app") == "done"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24, help="paths with data (default 24)")
    parser.add_argument("--data-mb", type=int, default=96, help="data in all (MB, default 96)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (tvixmount run and nix-store --delete need it)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="run-closure-bench-") as scratch:
        work = Path(scratch)
        app, closure, derivations = build_closure(work, args.layers, args.data_mb)
        key_name = f"bench-{secrets.token_hex(4)}"
        _run(
            "nix-store",
            "--generate-binary-cache-key",
            key_name,
            str(work / "key.sec"),
            str(work / "key.pub"),
        )
        key = (work / "key.pub").read_text().strip()
        cache = work / "cache"
        _run(
            "nix",
            *NIX_FLAGS,
            "copy",
            "--to",
            f"file://{cache}?compression=zstd&secret-key={work / 'key.sec'}",
            app,
        )
        nar_bytes = sum(p.stat().st_size for p in (cache / "nar").iterdir())
        # The derivations refer to the inputs and would keep them alive.
        delete(sorted({*closure, *derivations}))
        print(
            f"closure: {len(closure)} paths, {nar_bytes / MB:.1f} MB of zstd NARs; "
            f"{args.repeat} cold runs each; load average {os.getloadavg()[0]:.1f}"
        )
        results: dict[str, list[tuple[float, float]]] = {}
        compile_tvixmount(work / "pycache")
        try:
            with http_server(cache) as http_url:
                sources = {"file": f"file://{cache}", "http": http_url}
                for source, url in sources.items():
                    for prefetch in (8, 0):
                        name = f"tvixmount run, {source}, prefetch {prefetch}"
                        results[name] = [
                            timed(
                                functools.partial(
                                    tvixmount_run,
                                    url,
                                    key,
                                    work / f"c-{secrets.token_hex(4)}",
                                    prefetch,
                                    app,
                                )
                            )
                            for _ in range(args.repeat)
                        ]
                    name = f"nix copy --from {source} + native run"
                    results[name] = []
                    for _ in range(args.repeat):
                        results[name].append(
                            timed(functools.partial(nix_copy_and_run, url, key, app))
                        )
                        delete(closure)
        finally:
            subprocess.run(["nix-store", "--delete", *closure], capture_output=True)
    width = max(map(len, results))
    for name, values in results.items():
        walls = [wall for wall, _ in values]
        cpus = [cpu for _, cpu in values]
        print(
            f"{name:<{width}}  wall median {statistics.median(walls):7.3f}s "
            f"(min {min(walls):6.3f}s)  cpu median {statistics.median(cpus):6.3f}s"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
