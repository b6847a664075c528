"""Mount points: which may be mounted on, and unmounting tvixmount's own mounts.

A mount point is any existing directory, empty or not, mounted on or not: a
populated /nix/store, or the read-only bind mount NixOS makes of it, is the
normal case (a mount namespace or a builder covers it on purpose). Refused
are only a directory where a tvixmount already serves (busy) and a stale FUSE
mount (every access fails with ENOTCONN until it is cleared).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import threading

from ..errors import MountError
from .mounttable import MountEntry, canonical_without_touching, mount_at
from .processes import serving_pids, wait_gone

log = logging.getLogger(__name__)

_STALE_PROBE_TIMEOUT = 2.0
_EXIT_WAIT = 10.0


def statvfs_with_timeout(path: str, timeout: float) -> os.statvfs_result | OSError | None:
    """``os.statvfs`` in a helper thread: the result, the error, or ``None`` on timeout.

    statfs always reaches a FUSE daemon (attributes are cached in the kernel
    for a long time, so a stat would not notice a dead server), and a daemon
    that hangs must not hang the caller.
    """
    outcome: list[os.statvfs_result | OSError] = []

    def probe() -> None:
        try:
            outcome.append(os.statvfs(path))
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else None


def _stale_message(path: str | os.PathLike[str], entry: MountEntry) -> str:
    clear = "tvixmount umount" if entry.is_tvixmount else "fusermount3 -u"
    return (
        f"{path} is a stale FUSE mount (its serving process is gone); "
        f"clear it with `{clear} {path}`"
    )


def _check_mounted_fuse(path: str | os.PathLike[str], candidate: str, entry: MountEntry) -> None:
    """A FUSE mount on top: refuse a stale one, and any tvixmount still serving."""
    probe = statvfs_with_timeout(candidate, _STALE_PROBE_TIMEOUT)
    if isinstance(probe, OSError) and probe.errno == errno.ENOTCONN:
        raise MountError(_stale_message(path, entry))
    if entry.is_tvixmount:
        raise MountError(f"mount point {path} is busy: a tvixmount already serves it")


def check_mountpoint(path: str | os.PathLike[str]) -> str:
    """Validate a mount point (see the module docstring); returns it canonicalised.

    Logs once (info) what the mount will hide.
    """
    candidate = canonical_without_touching(path)
    below = mount_at(candidate)
    if below is None:
        candidate = os.path.realpath(candidate)
        below = mount_at(candidate)
    if below is not None and below.is_fuse:
        _check_mounted_fuse(path, candidate, below)
    try:
        st = os.stat(candidate)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(f"{path} lies under a stale FUSE mount: {exc.strerror}") from None
        raise MountError(f"cannot use mount point {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {path} is not a directory")
    _log_hidden(candidate, below)
    return candidate


def _log_hidden(mountpoint: str, below: MountEntry | None) -> None:
    try:
        with os.scandir(mountpoint) as entries:
            hidden = sum(1 for _ in entries)
    except OSError as exc:
        raise MountError(f"cannot read mount point {mountpoint}: {exc.strerror}") from None
    if below is not None:
        log.info(
            "mounting over the %s mount at %s (%d entries hidden)",
            below.fstype,
            mountpoint,
            hidden,
        )
    elif hidden:
        log.info("mounting over a non-empty directory %s (%d entries hidden)", mountpoint, hidden)


def unmount(path: str | os.PathLike[str]) -> None:
    """Unmount a tvixmount (also a stale one) and wait for its server to exit.

    Only a tvixmount on top at ``path`` is unmounted: anything else there (a
    tmpfs, another FUSE filesystem, a bind mount) is refused, never touched.
    """
    mountpoint = canonical_without_touching(path)
    entry = mount_at(mountpoint)
    if entry is None:
        raise MountError(f"{path} is not mounted")
    if not entry.is_tvixmount:
        raise MountError(f"{path} is not a tvixmount mount (it is {entry.fstype}); not unmounting")
    servers = serving_pids(mountpoint)
    try:
        result = subprocess.run(
            ["fusermount3", "-u", mountpoint], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise MountError("cannot unmount: fusermount3 is not installed") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise MountError(f"cannot unmount {path}: {reason}")
    left = wait_gone(servers, _EXIT_WAIT)
    if left:
        raise MountError(f"unmounted {path}, but serving process {left[0]} did not exit")
