"""The filesystems compared: tvixmount, squashfuse and the native directory.

tvixmount is mounted through the product's one mount harness
(:mod:`tvixmount.testing.mounts`), as the tests mount it.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tvixmount.fs.mounttable import is_mounted
from tvixmount.fs.processes import serving_pids
from tvixmount.testing.mounts import mounted, tvixmount_command

TVIXMOUNT = tvixmount_command()


def use_bytecode_cache(pycache: Path) -> None:
    """Every tvixmount started from here on runs from bytecode kept in ``pycache``.

    As an installed tvixmount does (pip compiles it): from a source checkout under
    ``PYTHONDONTWRITEBYTECODE`` (a development shell) every start would compile each
    module again. ``pycache`` is a cache of the bench's own, because the shared
    checkout's modules change under other benches. The first start writes it: time
    a later one, or compile beforehand.
    """
    os.environ["PYTHONPYCACHEPREFIX"] = str(pycache)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def serving_pid(mountpoint: Path) -> int | None:
    """The tvixmount process serving ``mountpoint``."""
    pids = serving_pids(mountpoint)
    return pids[0] if pids else None


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextmanager
def tvixmount_mounted(store: Path | str, mountpoint: Path, *extra: str) -> Iterator[float]:
    """Mount (background mode, root listable); yields the start-up time in seconds."""
    with mounted(str(store), mountpoint, "--list-root", *extra) as mount:
        yield mount.startup_s


def _unmount(mountpoint: Path) -> None:
    point = str(mountpoint.resolve())
    if is_mounted(point):
        subprocess.run(["fusermount3", "-u", point], check=False)
    deadline = time.monotonic() + 10
    while is_mounted(point) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def squashfuse_mounted(image: Path, mountpoint: Path) -> Iterator[float]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(["squashfuse", str(image), str(mountpoint)], check=True)
    while not is_mounted(str(mountpoint.resolve())):
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    try:
        yield elapsed
    finally:
        _unmount(mountpoint)


def make_squashfs(source: Path, image: Path) -> None:
    if not image.exists():
        subprocess.run(
            ["mksquashfs", str(source), str(image), "-noappend", "-quiet", "-no-progress"],
            check=True,
        )
