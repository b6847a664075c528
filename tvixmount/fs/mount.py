"""Mount a castore tree and serve it until unmounted or signalled.

The mount is handed what it serves (a RootNodes provider, the blob and
directory services) and its options; opening a store and daemonising belong
to the caller (``tvixmount.mounting``, ``cli/mount.py``).

Serving ends on an unmount from outside (``pyfuse3.main`` returns by itself)
or SIGINT/SIGTERM (``fuse_loop.terminate``). The serving process never stats
its own mount point once the loop has stopped (that deadlocks): whether its
mount is still there is read from the mount table, by the device number the
mount got (the mount point itself may have other mounts below).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

import pyfuse3
import trio

from ..castore.blobservice import BlobService
from ..castore.directoryservice import DirectoryService
from ..errors import MountError
from . import fuse_loop
from .mounttable import (
    FSNAME,
    READ_AHEAD_KB,
    device_mounted,
    mount_at,
    set_read_ahead,
    tvixmount_at,
)
from .operations import DEFAULT_TIMEOUT, TvixmountFS
from .root_nodes import RootNodes

log = logging.getLogger(__name__)

# Linux 4.19 brought FUSE's no-open mode (a daemon answering OPEN with ENOSYS).
_NO_OPEN_KERNEL = (4, 19)
# Set to 0, mounts open files the stock way even where no-open mode is available.
NO_OPEN_ENV = "TVIXMOUNT_NO_OPEN"


def no_open_available() -> bool:
    """Whether files can be opened without the daemon (FUSE's no-open mode).

    It needs pyfuse3 with tvixmount's patch (``patches/``, installed by
    ``scripts/install-pyfuse3``), which gives ``read`` the inode of a file
    opened that way, and a kernel that has the mode. A stock pyfuse3 works
    too, sending an OPEN and a RELEASE per file opened (as does a mount
    started with ``TVIXMOUNT_NO_OPEN=0`` in its environment).
    """
    if os.environ.get(NO_OPEN_ENV) == "0":
        return False
    if not getattr(pyfuse3, "NO_OPEN_READS_BY_INODE", False):
        return False
    try:
        major, minor = (int(part) for part in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= _NO_OPEN_KERNEL


@dataclass(frozen=True)
class MountOptions:
    list_root: bool = False
    xattr: bool = True
    allow_other: bool = False
    timeout: float | None = DEFAULT_TIMEOUT  # per store call; None: no limit
    read_ahead_kb: int | None = READ_AHEAD_KB  # None: keep the kernel's default

    def fuse_options(self) -> set[str]:
        options = {"ro", f"fsname={FSNAME}", f"subtype={FSNAME}", "default_permissions"}
        if self.allow_other:
            options.add("allow_other")
        return options


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def hold_stop_signals() -> None:
    """Keep SIGINT/SIGTERM pending from mounting until ``serve`` installs its receiver.

    Delivered in that window, the default action would kill the process and
    leave a stale mount behind.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def release_stop_signals() -> None:
    """Undo :func:`hold_stop_signals` when nothing will be served after all."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


@dataclass(frozen=True)
class Mounted:
    """A mount made by :func:`mount`, not yet served."""

    mountpoint: str
    device: tuple[int, int] | None
    options: MountOptions


def mount(
    mountpoint: str,
    root_nodes: RootNodes,
    blobs: BlobService,
    directories: DirectoryService,
    options: MountOptions,
) -> Mounted:
    """Mount (``pyfuse3.init``) at a checked, canonical ``mountpoint``; serve with :func:`serve`."""
    fs = TvixmountFS(
        root_nodes,
        blobs,
        directories,
        list_root=options.list_root,
        xattr=options.xattr,
        timeout=options.timeout,
        no_open=no_open_available(),
    )
    try:
        pyfuse3.init(fs, mountpoint, options.fuse_options())
    except RuntimeError as exc:
        raise MountError(f"cannot mount at {mountpoint}: {exc}") from None
    fuse_loop.install()
    entry = mount_at(mountpoint)
    return Mounted(mountpoint, None if entry is None else entry.device, options)


async def _terminate_on_signal(stopping: Callable[[], None]) -> None:
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        release_stop_signals()
        async for signum in signals:
            log.info("received %s, unmounting", signal.Signals(signum).name)
            stopping()
            fuse_loop.terminate()
            return


async def _once_serving(mounted: Mounted, ready: Callable[[], None]) -> None:
    """Wait until the kernel has the server's INIT answer, set the readahead, report ``ready``.

    The kernel lowers the mount's readahead to what INIT negotiated when it
    processes the answer (pyfuse3 offers the kernel's default, 128 KiB), so
    the sysfs knob is written only after that. A statfs of the mount returns
    once INIT is through; it runs in a thread because this loop answers it.
    """
    try:
        await trio.to_thread.run_sync(os.statvfs, mounted.mountpoint, abandon_on_cancel=True)
    except OSError as exc:
        log.debug("statfs of %s failed right after mounting: %s", mounted.mountpoint, exc)
    else:
        if mounted.options.read_ahead_kb is not None:
            set_read_ahead(mounted.mountpoint, mounted.options.read_ahead_kb)
    ready()


def _nothing() -> None:
    pass


def _once(call: Callable[[], None]) -> Callable[[], None]:
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            call()

    return once


def _still_mounted(mounted: Mounted) -> bool:
    if mounted.device is None:
        return tvixmount_at(mounted.mountpoint)
    return device_mounted(mounted.device)


async def serve(
    mounted: Mounted,
    ready: Callable[[], None] = _nothing,
    stopping: Callable[[], None] = _nothing,
) -> None:
    """Serve until unmounted or signalled: ``ready()`` once the mount answers,
    ``stopping()`` once when shutting down begins.

    Call :func:`hold_stop_signals` before :func:`mount`: this releases them.
    """
    stop = _once(stopping)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_terminate_on_signal, stop)
            nursery.start_soon(_once_serving, mounted, ready)
            await fuse_loop.main()
            nursery.cancel_scope.cancel()
    finally:
        stop()
        pyfuse3.close(unmount=_still_mounted(mounted))
    log.info("unmounted %s", mounted.mountpoint)
