"""Mount a Nix store: where the store layer meets the castore-only FUSE core.

A store's PathInfo service becomes the mount root's provider
(:class:`~tvixmount.pathinfo.root_nodes.PathInfoRootNodes`: store path
basenames -> root nodes); its blob and directory services serve everything
below. ``cli/mount.py`` runs this in the foreground or in a forked serving
process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import trio

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
from .stores import Store


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
) -> None:
    """Open the store, mount it, serve until unmounted or signalled, close the store.

    A remote store gets closure prefetch in front of its PathInfos, ``prefetch``
    paths at a time (0: none), shown by ``progress`` if given; the prefetches
    live as long as the mount. Errors before ``ready()`` is called mean nothing
    was mounted.
    """
    store = open_store()
    prefetcher = None
    if prefetch and not store.inline:
        prefetcher = ClosurePrefetcher(store.pathinfos, prefetch)
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
