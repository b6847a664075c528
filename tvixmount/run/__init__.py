"""Run a command over a store mounted at /nix/store, in a private mount namespace.

This process (``tvixmount run``) moves itself into a new mount namespace with
every mount private, so nothing below is ever seen by the host:

1. a tmpfs over ``/nix/store`` holds the scratch directories: the FUSE mount
   point, and the overlay's upper and work directories unless ``--upper DIR``
   keeps the upper on disk (its work directory then sits next to it);
2. a forked server (:mod:`.daemon`) mounts the store there with tvixmount's
   FUSE layer and serves it, closure prefetch in front of a remote store;
3. an overlayfs goes over ``/nix/store``: the store below, the upper
   directory on top, so what the command writes under /nix/store lands there;
4. the command runs as a child (:mod:`.supervise`), signals passed on;
   what it leaves running when it exits is killed;
5. the overlay, the server and the tmpfs go, in that order.

The command's exit status is returned (128+N for signal N). If this process
dies, even by SIGKILL, the kernel kills the command and stops the server,
and with its last process the namespace and its mounts are gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import MountError, StorePathError, TvixmountError
from ..fs.mount import MountOptions
from ..pathinfo.prefetch import DEFAULT_PARALLEL
from ..storepath import ENCODED_DIGEST_LEN, NAME_CHARS, STORE_DIR, StorePath
from ..stores import Store
from . import daemon, namespace
from .supervise import exit_status, supervise

log = logging.getLogger(__name__)

__all__ = ["RunOptions", "check_can_run", "exit_status", "named_store_paths", "run"]


@dataclass(frozen=True)
class RunOptions:
    upper: Path | None = None  # None: a temporary upper directory, gone afterwards
    prefetch: int = DEFAULT_PARALLEL  # closure prefetches at a time; 0: none
    progress: bool = True  # a progress bar when stderr is a terminal


_MENTION = re.compile(rf"{STORE_DIR}/([0-9a-z]{{{ENCODED_DIGEST_LEN}}}-{NAME_CHARS}+)")


def named_store_paths(argv: Sequence[str], environment: Mapping[str, str]) -> list[StorePath]:
    """The store paths a command's arguments and environment name (a builder's inputs).

    The server prefetches their closures from the start instead of waiting
    for the command to look each one up.
    """
    found: dict[StorePath, None] = {}
    for text in (*argv, *environment.values()):
        for match in _MENTION.finditer(text):
            try:
                found[StorePath.from_basename(match.group(1))] = None
            except StorePathError:
                continue
    return list(found)


def check_can_run() -> None:
    """One clear line about what is missing to run anything (root, /dev/fuse)."""
    if os.geteuid() != 0:
        raise TvixmountError(
            "run needs root: it makes a private mount namespace and mounts FUSE and an "
            "overlayfs at /nix/store in it (try sudo)"
        )
    if not os.path.exists("/dev/fuse"):
        raise TvixmountError("run needs /dev/fuse (load the fuse module: modprobe fuse)")


def _layer_path(path: Path) -> str:
    text = str(path)
    # overlayfs separates its options with commas and lower layers with colons.
    if any(c in text for c in ",:\\"):
        raise TvixmountError(f"{text}: an overlay directory cannot contain ',', ':' or '\\'")
    return text


def _upper_on_disk(upper: Path) -> tuple[str, str]:
    """``upper`` (created if need be) and a fresh work directory beside it, on its file system."""
    upper = upper.absolute()
    try:
        upper.mkdir(parents=True, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f".{upper.name}.work-", dir=upper.parent)
    except OSError as exc:
        raise TvixmountError(f"cannot use {upper} as the upper directory: {exc.strerror}") from None
    return _layer_path(upper), _layer_path(Path(work))


def run(argv: Sequence[str], open_store: Callable[[], Store], options: RunOptions) -> int:
    """Run ``argv`` over the store at /nix/store; returns its exit status (see the module doc)."""
    check_can_run()
    if not os.path.isdir(STORE_DIR):
        # The overlay needs a directory to go over; an empty one changes nothing else.
        os.makedirs(STORE_DIR, mode=0o755)
        log.info("created %s to mount over", STORE_DIR)
    upper = work = None
    if options.upper is not None:
        upper, work = _upper_on_disk(options.upper)
    try:
        try:
            namespace.enter_private_mount_namespace()
        except OSError as exc:
            raise TvixmountError(f"cannot make a private mount namespace: {exc.strerror}") from None
        return _in_namespace(argv, open_store, options, upper, work)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _mount(source: str, target: str, fstype: str, data: str) -> None:
    try:
        namespace.mount(source, target, fstype, data)
    except OSError as exc:
        raise MountError(f"cannot mount {fstype} at {target} ({data}): {exc.strerror}") from None


def _in_namespace(
    argv: Sequence[str],
    open_store: Callable[[], Store],
    options: RunOptions,
    upper: str | None,
    work: str | None,
) -> int:
    _mount("tmpfs", STORE_DIR, "tmpfs", "mode=0755")
    try:
        lower = f"{STORE_DIR}/lower"
        os.mkdir(lower)
        if upper is None or work is None:
            upper, work = f"{STORE_DIR}/upper", f"{STORE_DIR}/work"
            os.mkdir(upper, 0o755)
            os.mkdir(work)
        server = daemon.start(
            lower,
            open_store,
            MountOptions(list_root=True),
            options.prefetch,
            options.progress,
            named_store_paths(argv, os.environ),
        )

        reported = False

        def check_server() -> None:
            nonlocal reported
            if not reported and server.exited():
                log.error("the store's server exited: the command now gets I/O errors")
                reported = True

        try:
            _mount(
                "overlay", STORE_DIR, "overlay", f"lowerdir={lower},upperdir={upper},workdir={work}"
            )
            try:
                return supervise(argv, frozenset({server.pid}), check_server)
            finally:
                namespace.detach(STORE_DIR)
        finally:
            server.stop()
    finally:
        namespace.detach(STORE_DIR)
