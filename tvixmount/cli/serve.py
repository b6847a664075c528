"""``tvixmount serve``: a store over gRPC (tvix-store compatible), as a Nix binary cache, or both.

``--listen`` serves the tvix gRPC services, ``--http`` a binary cache stock
Nix substitutes from; given together they share one store in one process.
Without either, gRPC on the default address. One stdout line per listener
once it is bound (scripts wait for them).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from ..errors import TvixmountError
from .common import add_secret_key_argument, add_store_argument, open_store_from_args

if TYPE_CHECKING:
    import socket

    from ..nar.signing import SecretKey
    from ..stores import Store
    from ..stores.binarycache.server.workers import Workers

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8000"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve a store over gRPC (tvix-store compatible) or as a Nix binary cache",
        description="Serve the BlobService, DirectoryService and PathInfoService of a store "
        "over gRPC, so tvix-store or another tvixmount can use it (--listen), and/or serve it "
        "as a Nix binary cache over HTTP (--http). Stops on SIGINT/SIGTERM.",
    )
    parser.add_argument(
        "--listen",
        metavar="ADDR",
        default=None,
        help=f"gRPC on HOST:PORT or unix:///PATH (default {DEFAULT_LISTEN} when --http is not "
        "given; port 0 picks a free one)",
    )
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        default=None,
        help="serve a Nix binary cache on HOST:PORT (port 0 picks a free one)",
    )
    add_secret_key_argument(parser, "the narinfos served over --http")
    parser.add_argument(
        "--priority",
        metavar="N",
        type=int,
        default=None,
        help="the Priority the binary cache advertises (default 30; lower is preferred)",
    )
    parser.add_argument(
        "--writable",
        action="store_true",
        help="accept Puts over gRPC (default: read-only)",
    )
    add_store_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import trio  # here: the parser for every command imports this module

    if args.http is None and (args.secret_key or args.priority is not None):
        raise TvixmountError("--secret-key and --priority apply to --http only")
    if args.writable and args.http is not None and args.listen is None:
        raise TvixmountError(
            "--writable applies to --listen (gRPC) only; the HTTP cache is read-only"
        )
    from ..nar.signing import read_secret_key

    keys = [read_secret_key(path) for path in args.secret_key]
    # A server may receive Puts, so like `import` it creates the embedded store.
    store = open_store_from_args(args, create=True)
    return trio.run(_serve, store, args, keys)


async def _serve(store: Store, args: argparse.Namespace, keys: list[SecretKey]) -> int:
    # Imported here: every command imports this module, and grpc must not be
    # loaded before `mount` forks.
    import trio

    listen = args.listen or (None if args.http else DEFAULT_LISTEN)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            http = worker = workers = None
            if args.http is not None:
                from ..stores.binarycache import server
                from ..stores.binarycache.server.workers import inherited_socket

                worker = inherited_socket()
                sock = worker or server.listen(args.http)
                http = server.HttpServer(
                    store,
                    sock,
                    secret_keys=keys,
                    priority=_priority(args),
                    log_requests=args.verbose,
                )
            grpc_server = None
            if listen is not None:
                from ..stores.grpc.server import GrpcServer

                grpc_server = GrpcServer.start(store, listen, writable=args.writable)
            try:
                async with trio.open_nursery() as nursery:
                    if worker is None:
                        for url in (grpc_server and grpc_server.url, http and http.url):
                            if url:
                                # One stdout line per listener, once bound: scripts wait for it.
                                print(f"tvixmount: serving {store.url} at {url}", flush=True)
                    if http is not None:
                        nursery.start_soon(http.serve)
                        if worker is None and (workers := _workers(store, args, sock)):
                            nursery.start_soon(workers.run)
                    async for signum in signals:
                        log.info("received %s, shutting down", signal.Signals(signum).name)
                        break
                    if http is not None:
                        http.stop()
                    if workers is not None:
                        workers.stop()
            finally:
                if grpc_server is not None:
                    await grpc_server.stop()
    finally:
        await store.aclose()
    return 0


def _priority(args: argparse.Namespace) -> int:
    from ..stores.binarycache.server import DEFAULT_PRIORITY

    return DEFAULT_PRIORITY if args.priority is None else int(args.priority)


def _workers(store: Store, args: argparse.Namespace, sock: socket.socket) -> Workers | None:
    """More processes serving the embedded store's cache on ``sock`` (see server.workers)."""
    from ..stores import scheme_of
    from ..stores.binarycache.server.workers import Workers, worker_count

    count = worker_count()
    if scheme_of(store.url) or count < 1:
        return None
    argv = [sys.executable, "-m", "tvixmount"]
    if args.verbose:
        argv.append("--verbose")
    if args.log_file:
        argv += ["--log-file", args.log_file]
    argv += ["serve", "--http", args.http, "--store", store.url, "--priority", str(_priority(args))]
    for key in args.secret_key:
        argv += ["--secret-key", str(key)]
    return Workers(argv, sock, count)
