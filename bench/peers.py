"""The filesystems compared: tvixmount, squashfuse and the native directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TVIXMOUNT = [sys.executable, "-m", "tvixmount"]


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _is_mounted(mountpoint: Path) -> bool:
    target = str(mountpoint.resolve())
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def unmount(mountpoint: Path) -> None:
    if _is_mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
    deadline = time.monotonic() + 10
    while _is_mounted(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)


def serving_pid(mountpoint: Path) -> int | None:
    """The tvixmount process serving ``mountpoint`` (its command line names it)."""
    target = str(mountpoint)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tvixmount" in b" ".join(argv) and any(
            a.decode(errors="replace").rstrip("/") == target.rstrip("/") for a in argv
        ):
            return int(entry.name)
    return None


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextmanager
def tvixmount_mounted(store: Path, mountpoint: Path) -> Iterator[float]:
    """Mount (background mode); yields the start-up time in seconds."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(
        [*TVIXMOUNT, "mount", str(mountpoint), "--store", str(store), "--list-root"],
        check=True,
    )
    elapsed = time.perf_counter() - start
    try:
        yield elapsed
    finally:
        unmount(mountpoint)


@contextmanager
def squashfuse_mounted(image: Path, mountpoint: Path) -> Iterator[float]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(["squashfuse", str(image), str(mountpoint)], check=True)
    while not _is_mounted(mountpoint):
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    try:
        yield elapsed
    finally:
        unmount(mountpoint)


def make_squashfs(source: Path, image: Path) -> None:
    if not image.exists():
        subprocess.run(
            ["mksquashfs", str(source), str(image), "-noappend", "-quiet", "-no-progress"],
            check=True,
        )
