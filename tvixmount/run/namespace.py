"""The Linux calls ``tvixmount run`` needs that Python 3.11's ``os`` lacks: unshare, mount, prctl.

Called through libc (ctypes); each failure is an :class:`OSError` with the errno.
"""

from __future__ import annotations

import ctypes
import os
import signal

from ..libc import libc

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
libc.unshare.argtypes = (ctypes.c_int,)
libc.prctl.argtypes = (
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), what)


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def enter_private_mount_namespace() -> None:
    """Move this process into a new mount namespace whose mounts never propagate to the host.

    A fresh namespace copies the host's mounts with their propagation, and a
    shared mount (systemd makes / shared) would carry new mounts back out, so
    everything is made private first.
    """
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "/")


def mount(source: str, target: str, fstype: str, data: str | None = None) -> None:
    _check(libc.mount(_bytes(source), _bytes(target), _bytes(fstype), 0, _bytes(data)), target)


def detach(target: str) -> None:
    """Lazily unmount ``target``: gone from the tree now, freed once nothing uses it."""
    _check(libc.umount2(_bytes(target), MNT_DETACH), target)


def die_with_parent(signum: signal.Signals) -> None:
    """Have the kernel send ``signum`` to this process when the one that forked it dies.

    The signal follows the forking *thread*; callers fork from a process that
    runs no other threads. A parent that died before this call is caught by
    the caller comparing :func:`os.getppid` with the pid it expects.
    """
    _check(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def adopt_orphans() -> None:
    """Become the parent of every descendant orphaned below this process (a subreaper)."""
    _check(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def children() -> list[int]:
    """The pids of this process's children (its main thread's: it runs no other)."""
    pid = os.getpid()
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
        return [int(child) for child in f.read().split()]
