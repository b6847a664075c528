"""``tvixmount serve``: the tvix-compatible gRPC services in front of a store."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import TYPE_CHECKING, Any

from .common import add_store_argument, open_store_from_args

if TYPE_CHECKING:
    from ..stores import Store

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8000"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve a store over gRPC (tvix-store compatible)",
        description="Serve the BlobService, DirectoryService and PathInfoService of a store "
        "over gRPC, so tvix-store or another tvixmount can use it. Stops on SIGINT/SIGTERM.",
    )
    parser.add_argument(
        "--listen",
        metavar="ADDR",
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT or unix:///PATH (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    add_store_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import trio  # here: the parser for every command imports this module

    # A server receives Puts, so like `import` it creates the embedded store.
    store = open_store_from_args(args, create=True)
    return trio.run(_serve, store, args.listen)


async def _serve(store: Store, listen: str) -> int:
    # Imported here: every command imports this module, and grpc must not be
    # loaded before `mount` forks.
    import trio

    from ..stores.grpc.server import GrpcServer

    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            server = GrpcServer.start(store, listen)
            try:
                # One stdout line, once the port is bound: scripts wait for it.
                print(f"tvixmount: serving {store.url} at {server.url}", flush=True)
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    break
            finally:
                await server.stop()
    finally:
        await store.aclose()
    return 0
