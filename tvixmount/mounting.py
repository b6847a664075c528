"""Mount a Nix store: where the store layer meets the castore-only FUSE core.

A store's PathInfo service becomes the mount root's provider
(:class:`~tvixmount.pathinfo.root_nodes.PathInfoRootNodes`: store path
basenames -> root nodes); its blob and directory services serve everything
below. ``cli/mount.py`` runs this in the foreground or in a forked serving
process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

import trio

from .errors import MountError, TvixmountError
from .fs.mount import (
    Mounted,
    MountOptions,
    hold_stop_signals,
    mount,
    release_stop_signals,
    serve,
)
from .pathinfo.prefetch import DEFAULT_PARALLEL, ClosurePrefetcher, PrefetchStats
from .pathinfo.root_nodes import PathInfoRootNodes
from .storepath import StorePath
from .stores import Store

log = logging.getLogger(__name__)


def _nothing() -> None:
    pass


def mount_store(store: Store, mountpoint: str, options: MountOptions) -> Mounted:
    """Mount ``store``'s store paths at a checked, canonical ``mountpoint`` (not served yet)."""
    if store.inline:
        # A deadline cannot interrupt an inline (local) call, and setting one up costs
        # more than the call itself on the hot open/read path.
        options = dataclasses.replace(options, timeout=None)
    mounted = mount(
        mountpoint, PathInfoRootNodes(store.pathinfos), store.blobs, store.directories, options
    )
    store.warm()
    return mounted


def serve_store(
    open_store: Callable[[], Store],
    mountpoint: str,
    options: MountOptions,
    ready: Callable[[], None] = _nothing,
    stopping: Callable[[], None] = _nothing,
    prefetch: int = DEFAULT_PARALLEL,
    progress: Callable[[PrefetchStats], Awaitable[None]] | None = None,
    hints: Sequence[StorePath] = (),
) -> None:
    """Open the store, mount it, serve until unmounted or signalled, close the store.

    A remote store gets closure prefetch in front of its PathInfos, ``prefetch``
    paths at a time (0: none), shown by ``progress`` if given, the closures of
    ``hints`` from the start; the prefetches live as long as the mount. Errors
    before ``ready()`` is called mean nothing was mounted.
    """
    store = open_store()
    prefetcher = None
    if prefetch and not store.inline:
        prefetcher = ClosurePrefetcher(store.pathinfos, prefetch, hints)
        store = dataclasses.replace(store, pathinfos=prefetcher)
    hold_stop_signals()
    try:
        mounted = mount_store(store, mountpoint, options)
    except BaseException:
        release_stop_signals()
        trio.run(store.aclose)
        raise

    async def serve_then_close() -> None:
        try:
            async with trio.open_nursery() as nursery:
                if prefetcher is not None:
                    nursery.start_soon(prefetcher.run)
                    if progress is not None:
                        nursery.start_soon(progress, prefetcher.stats)
                await serve(mounted, ready, stopping)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()

    trio.run(serve_then_close)


def fork_server(serve: Callable[[Callable[[], None]], None], what: str) -> int:
    """Fork a process running ``serve(ready)``; its pid once it called ``ready()``.

    Fork *before* anything creates threads, gRPC channels or a trio loop (none
    of them survive a fork): ``serve`` opens the store and mounts in the
    child. The child reports over a pipe: ``ready()`` once the mount answers,
    or the one line of the error that kept it from mounting, which is raised
    here as :class:`MountError` (the child reaped). ``what`` names the
    process in messages.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 1
        try:
            code = _serve_reporting(write_fd, serve, what)
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(write_fd)
    parts = []
    try:
        while chunk := os.read(read_fd, 4096):
            parts.append(chunk)
    finally:
        os.close(read_fd)
    report = b"".join(parts)
    if report != b"ok":
        os.waitpid(pid, 0)
        raise MountError(report.decode(errors="replace") or f"{what} died before mounting")
    return pid


def _serve_reporting(report_fd: int, serve: Callable[[Callable[[], None]], None], what: str) -> int:
    reported = False

    def ready() -> None:
        nonlocal reported
        os.write(report_fd, b"ok")
        os.close(report_fd)
        reported = True

    try:
        serve(ready)
    except Exception as exc:
        if reported:
            log.exception("%s failed", what)
        else:
            message = str(exc) if isinstance(exc, TvixmountError) else f"cannot mount: {exc}"
            os.write(report_fd, message.encode())
        return 1
    return 0
