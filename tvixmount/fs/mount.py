"""Mount lifecycle: check the mount point, mount, serve, unmount.

Background mode forks *before* anything creates threads, gRPC channels or a
trio loop (none of them survive a fork). The child starts a new session,
opens the store, mounts (``pyfuse3.init``), starts serving, tells the parent
over a pipe once its own statfs is answered (and the readahead is set), and
serves until an unmount from outside (``pyfuse3.main`` returns by itself) or
SIGINT/SIGTERM (``fuse_loop.terminate``). The serving process never stats its
own mount point once the loop has stopped (that deadlocks): whether it is
still mounted is read from ``/proc/self/mountinfo``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from ..command_line import mount_arguments
from ..errors import MountError, TvixmountError
from ..pathinfo.root_nodes import PathInfoRootNodes
from ..stores import Store
from . import fuse_loop
from .operations import DEFAULT_TIMEOUT, TvixmountFS

log = logging.getLogger(__name__)

FSNAME = "tvixmount"
_ANSWER_TIMEOUT = 30.0
# Kernel readahead of the mount, in KiB. With the kernel's default (128) a
# sequential reader mostly waits for one small READ after another; with 1 MiB
# more READs are in flight ahead of it: a cold 256 MiB read went from ~490-690
# to ~760-900 MiB/s on the bench machine. Readahead stops at the end of a file,
# so small files cost nothing more. Not a command-line option: DESIGN.md fixes
# the mount flags.
READ_AHEAD_KB = 1024
_STALE_PROBE_TIMEOUT = 2.0
_EXIT_WAIT = 10.0

StoreOpener = Callable[[], Store]


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


# -- /proc/self/mountinfo -------------------------------------------------


def _unescape(field: str) -> str:
    # The kernel octal-escapes space, tab, newline and backslash in mount fields.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _mount_table() -> list[tuple[str, str, str, tuple[int, int]]]:
    """(source, mount point, fs type, (major, minor)) of every mount this process sees.

    Read from /proc/self/mountinfo, which sends no FUSE server a request, so
    a server may read it about its own mount before its loop runs.
    """
    table = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.rstrip("\n").split(" ")
            try:
                # Optional fields end with a lone "-"; fs type and source follow it.
                end = fields.index("-", 6)
                major, _, minor = fields[2].partition(":")
                table.append(
                    (
                        _unescape(fields[end + 2]),
                        _unescape(fields[4]),
                        fields[end + 1],
                        (int(major), int(minor)),
                    )
                )
            except (ValueError, IndexError):
                continue
    return table


def mounts() -> list[tuple[str, str, str]]:
    """(source, mount point, fs type) of every mount this process sees."""
    return [(source, point, fstype) for source, point, fstype, _ in _mount_table()]


def is_mounted(mountpoint: str) -> bool:
    return any(point == mountpoint for _, point, _ in mounts())


def mount_device(mountpoint: str) -> tuple[int, int] | None:
    """(major, minor) of the filesystem mounted at ``mountpoint`` (the one on top)."""
    device = None
    for _, point, _, number in _mount_table():
        if point == mountpoint:
            device = number
    return device


def set_read_ahead(mountpoint: str, kb: int) -> bool:
    """Best effort: set the kernel readahead of the mount's backing device to ``kb`` KiB.

    Only root may write the sysfs knob; anything that fails (not root, no
    sysfs, no such device) is logged at debug level and leaves the kernel's
    default in place. Returns whether it was set.
    """
    if os.geteuid() != 0:
        log.debug("readahead of %s left at the kernel default: not root", mountpoint)
        return False
    try:
        device = mount_device(mountpoint)
        if device is None:
            log.debug("readahead of %s not set: not in /proc/self/mountinfo", mountpoint)
            return False
        knob = f"/sys/class/bdi/{device[0]}:{device[1]}/read_ahead_kb"
        with open(knob, "w", encoding="ascii") as f:
            f.write(f"{kb}\n")
    except (OSError, ValueError) as exc:
        log.debug("readahead of %s not set: %s", mountpoint, exc)
        return False
    log.debug("readahead of %s set to %d KiB (%s)", mountpoint, kb, knob)
    return True


def tvixmount_mounts() -> list[str]:
    """Mount points of every tvixmount filesystem."""
    return [point for source, point, _ in mounts() if source == FSNAME]


def _canonical_without_touching(path: str | Path) -> str:
    """The absolute path with the parent's symlinks resolved, never stat-ing ``path`` itself.

    A stat of a mount point whose daemon hangs would hang too.
    """
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def _statvfs_with_timeout(path: str, timeout: float) -> os.statvfs_result | OSError | None:
    """``os.statvfs`` in a helper thread: the result, the error, or ``None`` on timeout.

    statfs always reaches the daemon (attributes are cached in the kernel for
    a long time, so a stat would not notice a dead server).
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


def _stale_message(path: str | Path) -> str:
    return (
        f"{path} is a stale FUSE mount (its serving process is gone); "
        f"clear it with `tvixmount umount {path}`"
    )


def check_mountpoint(path: str | Path) -> str:
    """Validate a mount point (exists, empty directory, not mounted); returns it canonicalised."""
    candidate = _canonical_without_touching(path)
    if not is_mounted(candidate):
        candidate = os.path.realpath(candidate)
    if is_mounted(candidate):
        probe = _statvfs_with_timeout(candidate, _STALE_PROBE_TIMEOUT)
        if isinstance(probe, OSError) and probe.errno == errno.ENOTCONN:
            raise MountError(_stale_message(path))
        raise MountError(f"mount point {path} is busy: something is already mounted there")
    try:
        st = os.stat(candidate)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(_stale_message(path)) from None
        raise MountError(f"cannot use mount point {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {path} is not a directory")
    try:
        with os.scandir(candidate) as entries:
            if next(entries, None) is not None:
                raise MountError(f"mount point {path} is not empty")
    except OSError as exc:
        raise MountError(f"cannot read mount point {path}: {exc.strerror}") from None
    return candidate


# -- serving processes ----------------------------------------------------


def is_serving_command(argv: list[str], cwd: str, mountpoint: str | None = None) -> bool:
    """Whether a command line (run in ``cwd``) serves ``mountpoint`` (or any mount point)."""
    arguments = mount_arguments(argv)
    if arguments is None:
        return False
    return mountpoint is None or any(
        os.path.normpath(os.path.join(cwd, arg)) == mountpoint for arg in arguments
    )


def serving_pids(mountpoint: str | None = None) -> list[int]:
    """Processes running ``tvixmount mount`` (for ``mountpoint``, or any), other than this one."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if is_serving_command(argv, cwd, mountpoint):
            pids.append(int(entry.name))
    return pids


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if Path(f"/proc/{pid}/cmdline").exists() and _running(pid)]
    return alive


def _running(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z"


def unmount(path: str | Path) -> None:
    """Unmount (``fusermount3 -u``; also clears stale mounts) and wait for the server to exit."""
    mountpoint = _canonical_without_touching(path)
    if not is_mounted(mountpoint):
        raise MountError(f"{path} is not mounted")
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
    left = _wait_gone(servers, _EXIT_WAIT)
    if left:
        raise MountError(f"unmounted {path}, but serving process {left[0]} did not exit")


# -- mounting and serving -------------------------------------------------


def _mount(store: Store, mountpoint: str, options: MountOptions) -> None:
    fs = TvixmountFS(
        PathInfoRootNodes(store.pathinfos),
        store.blobs,
        store.directories,
        list_root=options.list_root,
        xattr=options.xattr,
        # A deadline cannot interrupt an inline (local) call, and setting one up costs
        # more than the call itself on the hot open/read path.
        timeout=None if store.inline else options.timeout,
    )
    try:
        pyfuse3.init(fs, mountpoint, options.fuse_options())
    except RuntimeError as exc:
        raise MountError(f"cannot mount at {mountpoint}: {exc}") from None
    fuse_loop.install()
    store.warm()


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _hold_stop_signals() -> None:
    """Keep SIGINT/SIGTERM pending from mounting until the receiver is installed.

    Delivered in that window, the default action would kill the process and
    leave a stale mount behind.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        async for signum in signals:
            log.info("received %s, unmounting", signal.Signals(signum).name)
            fuse_loop.terminate()
            return


async def _once_serving(
    mountpoint: str, options: MountOptions, ready: Callable[[], None] | None
) -> None:
    """Wait until the kernel has the server's INIT answer, set the readahead, report ``ready``.

    The kernel lowers the mount's readahead to what INIT negotiated when it
    processes the answer (pyfuse3 offers the kernel's default, 128 KiB), so
    the sysfs knob is written only after that. A statfs of the mount returns
    once INIT is through; it runs in a thread because this loop answers it.
    """
    try:
        await trio.to_thread.run_sync(os.statvfs, mountpoint, abandon_on_cancel=True)
    except OSError as exc:
        log.debug("statfs of %s failed right after mounting: %s", mountpoint, exc)
    else:
        if options.read_ahead_kb is not None:
            set_read_ahead(mountpoint, options.read_ahead_kb)
    if ready is not None:
        ready()


async def _serve(
    store: Store,
    mountpoint: str,
    options: MountOptions,
    ready: Callable[[], None] | None = None,
) -> None:
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_terminate_on_signal)
            nursery.start_soon(_once_serving, mountpoint, options, ready)
            await fuse_loop.main()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            pyfuse3.close(unmount=is_mounted(mountpoint))
            await store.aclose()
    log.info("unmounted %s", mountpoint)


def mount_foreground(mountpoint: str, open_store: StoreOpener, options: MountOptions) -> None:
    """Mount and serve in this process until unmounted or signalled."""
    store = open_store()
    _hold_stop_signals()
    try:
        _mount(store, mountpoint, options)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        trio.run(store.aclose)
        raise
    log.info("serving %s", mountpoint)
    trio.run(_serve, store, mountpoint, options)


def _detach_stdio() -> None:
    # Holding the caller's stdout/stderr open would keep a pipe reader (a
    # shell `$(...)`, subprocess.run) waiting for the daemon's exit. A
    # terminal is no such reader, so log lines may keep going there.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != 2 or not os.isatty(2):
            os.dup2(devnull, fd)
    os.close(devnull)


def _background_child(
    report_fd: int, mountpoint: str, open_store: StoreOpener, options: MountOptions
) -> int:
    os.setsid()
    _detach_stdio()
    _hold_stop_signals()
    try:
        store = open_store()
        _mount(store, mountpoint, options)
    except TvixmountError as exc:
        os.write(report_fd, str(exc).encode())
        return 1
    except Exception as exc:
        os.write(report_fd, f"cannot mount at {mountpoint}: {exc}".encode())
        return 1

    def ready() -> None:
        os.write(report_fd, b"ok")
        os.close(report_fd)

    log.info("serving %s (pid %d)", mountpoint, os.getpid())
    try:
        trio.run(_serve, store, mountpoint, options, ready)
    except Exception:
        log.exception("serving %s failed", mountpoint)
        return 1
    return 0


def _read_report(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 4096):
        parts.append(chunk)
    return b"".join(parts)


def mount_background(mountpoint: str, open_store: StoreOpener, options: MountOptions) -> int:
    """Fork a serving process; return its pid once the mount answers."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 1
        try:
            code = _background_child(write_fd, mountpoint, open_store, options)
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(write_fd)
    try:
        report = _read_report(read_fd)
    finally:
        os.close(read_fd)
    if report != b"ok":
        os.waitpid(pid, 0)
        raise MountError(
            report.decode(errors="replace") or "the serving process died before mounting"
        )
    # The kernel holds requests until the server's loop runs; one statfs
    # answered proves the mount is live.
    probe = _statvfs_with_timeout(mountpoint, _ANSWER_TIMEOUT)
    if probe is None:
        raise MountError(f"{mountpoint} is mounted but does not answer (pid {pid})")
    if isinstance(probe, OSError):
        raise MountError(f"{mountpoint} is mounted but does not answer: {probe.strerror}")
    return pid
