"""Hostile binary caches (issue 18): never unbounded, never starved, one line per failure.

Each hostile server is written here and runs on loopback; memory ceilings are
read from the process that did the work (its peak RSS, VmHWM), not timed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import pytest
import trio
import zstandard

from tests.fixtures.measured import run_measured
from tests.nixcache import (
    NixCache,
    build_cache,
    digest_of,
    opened,
    requires_nix,
    serve_directory,
)
from tvixmount import nixbase32
from tvixmount.castore.blobservice import read_all
from tvixmount.castore.nodes import DirectoryNode
from tvixmount.nar import wire
from tvixmount.nar.reader import MAX_DIRECTORY_ENTRIES
from tvixmount.storepath import StorePath

CEILING_KB = 512 << 10
GIB = 1 << 30
MIB = 1 << 20
BOMB_PATH = StorePath(bytes(range(20)), "bomb")
CACHE_INFO = b"StoreDir: /nix/store\n"


def assert_one_line(lines: list[str], reason: str) -> None:
    assert len(lines) == 1, lines
    assert lines[0].startswith("tvixmount: error: ") and reason in lines[0], lines


# -- a hostile HTTP cache -------------------------------------------------------------------

Reply = Callable[[http.server.BaseHTTPRequestHandler], None]


def body(data: bytes, headers: dict[str, str] | None = None) -> Reply:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        for name, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    return reply


def trickle(stop: threading.Event) -> Reply:
    """Headers promising a kilobyte, then one byte every 0.2 s until told to stop."""

    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1024")
        handler.end_headers()
        for _ in range(1024):
            if stop.wait(0.2):
                return
            handler.wfile.write(b"x")
            handler.wfile.flush()

    return reply


@contextlib.contextmanager
def hostile_cache(routes: dict[str, Reply]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering ``routes`` (path -> reply); 404 otherwise."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reply = routes.get(self.path.lstrip("/"))
            if reply is None:
                self.send_error(404)
                return
            with contextlib.suppress(ConnectionError):
                reply(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def narinfo_key(store_path: StorePath) -> str:
    return f"{store_path.encoded_digest}.narinfo"


def narinfo_text(nar: bytes, url: str = "nar/bomb.nar", compression: str = "none") -> bytes:
    return (
        f"StorePath: {BOMB_PATH.absolute}\nURL: {url}\nCompression: {compression}\n"
        f"NarHash: sha256:{nixbase32.encode(hashlib.sha256(nar).digest())}\n"
        f"NarSize: {len(nar)}\nReferences: \n"
    ).encode()


# -- Content-Encoding bombs -----------------------------------------------------------------


def _zeros(total: int) -> Iterator[bytes]:
    block = bytes(MIB)
    for _ in range(total // MIB):
        yield block


def _zstd_bomb() -> bytes:
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    return b"".join(compressor.compress(b) for b in _zeros(2 * GIB)) + compressor.flush()


def _br_bomb() -> bytes:
    compressor = brotli.Compressor(quality=1)
    compressed = b"".join(compressor.process(b) for b in _zeros(2 * GIB))
    tail: bytes = compressor.finish()
    return compressed + tail


def _gzip_bomb() -> bytes:
    """1 GiB of zeros as one gzip member, made in a second rather than compressed in 15.

    After a full flush deflate starts afresh, so the flushed block of 1 MiB of
    zeros is the same every time and can be repeated.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(bytes(MIB)) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(bytes(MIB)) + deflate.flush(zlib.Z_FULL_FLUSH) == block
    crc = 0
    for zeros in _zeros(GIB):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", crc, GIB & 0xFFFFFFFF)
    return header + block * (GIB // MIB) + deflate.flush() + trailer


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """Content-Encoding -> a small body that decodes to GiBs of zeros."""
    return {"zstd": _zstd_bomb(), "br": _br_bomb(), "gzip": _gzip_bomb()}


@pytest.mark.parametrize("encoding", ["zstd", "br", "gzip"])
def test_content_encoded_narinfo_bomb_is_bounded(
    bombs: dict[str, bytes], encoding: str, tmp_path: Path
):
    routes = {
        "nix-cache-info": body(CACHE_INFO),
        narinfo_key(BOMB_PATH): body(bombs[encoding], {"Content-Encoding": encoding}),
    }
    with hostile_cache(routes) as url:
        code, lines, peak_kb = run_measured(
            "path-info", "--store", url, "--cache-dir", tmp_path / "local", BOMB_PATH.absolute
        )
    assert code == 1
    assert_one_line(lines, f"larger than {MIB} bytes")
    assert peak_kb < CEILING_KB


@pytest.mark.parametrize("encoding", ["zstd", "br", "gzip"])
def test_content_encoded_nar_bomb_is_bounded(
    bombs: dict[str, bytes], encoding: str, tmp_path: Path
):
    nar = wire.HEADER + wire.regular_header(False, 5) + b"hello" + wire.regular_trailer(5)
    routes = {
        "nix-cache-info": body(CACHE_INFO),
        narinfo_key(BOMB_PATH): body(narinfo_text(nar)),
        "nar/bomb.nar": body(bombs[encoding], {"Content-Encoding": encoding}),
    }
    with hostile_cache(routes) as url:
        code, lines, peak_kb = run_measured(
            "path-info",
            "--store",
            url,
            "--cache-dir",
            tmp_path / "local",
            "--no-require-sigs",
            BOMB_PATH.absolute,
        )
    assert code == 1
    assert_one_line(lines[1:], "longer than its NarSize")  # lines[0]: the require-sigs warning
    assert peak_kb < CEILING_KB


def test_unknown_content_encoding_is_one_line(tmp_path: Path):
    routes = {
        "nix-cache-info": body(CACHE_INFO),
        narinfo_key(BOMB_PATH): body(b"whatever", {"Content-Encoding": "compress"}),
    }
    with hostile_cache(routes) as url:
        code, lines, _ = run_measured(
            "path-info", "--store", url, "--cache-dir", tmp_path / "local", BOMB_PATH.absolute
        )
    assert code == 1
    assert_one_line(lines, "unsupported Content-Encoding 'compress'")


# -- slow loris -----------------------------------------------------------------------------


def test_slow_loris_narinfo_hits_the_fetch_deadline(tmp_path: Path):
    stop = threading.Event()
    routes = {"nix-cache-info": body(CACHE_INFO), narinfo_key(BOMB_PATH): trickle(stop)}
    try:
        with hostile_cache(routes) as url:
            code, lines, _ = run_measured(
                "path-info",
                "--store",
                f"{url}?timeout=1&retries=0",
                "--cache-dir",
                tmp_path / "local",
                BOMB_PATH.absolute,
            )
    finally:
        stop.set()
    assert code == 1
    assert_one_line(lines, "not received in full within 2s")


def test_slow_loris_cache_info_fails_the_open(tmp_path: Path):
    stop = threading.Event()
    try:
        with hostile_cache({"nix-cache-info": trickle(stop)}) as url:
            code, lines, _ = run_measured(
                "ls", "--store", f"{url}?timeout=1&retries=0", BOMB_PATH.absolute
            )
    finally:
        stop.set()
    assert code == 1
    assert_one_line(lines, "nix-cache-info: not received in full within 2s")


# -- a NUL byte in a narinfo's URL ----------------------------------------------------------


@requires_nix
def test_nul_byte_in_narinfo_url_is_one_line(tmp_path: Path):
    cache = build_cache(tmp_path / "nix", "none", with_reference=False)
    (path,) = cache.paths
    text = cache.narinfo_file(path).read_text()
    url = cache.narinfos[path].url
    cache.rewrite_narinfo(path, text.replace(f"URL: {url}", f"URL: {url[:8]}\0{url[8:]}"))
    with serve_directory(cache.dir) as served:
        for store in (cache.url, served.url):
            code, lines, _ = run_measured(
                "path-info", "--store", store, "--cache-dir", tmp_path / store[:4], path
            )
            assert code == 1
            assert_one_line(lines, "control characters")


# -- a NAR of a million empty files ---------------------------------------------------------


def million_empty_files_nar() -> Iterator[bytes]:
    empty = wire.regular_header(False, 0) + wire.regular_trailer(0) + wire.ENTRY_CLOSE
    yield wire.HEADER + wire.DIRECTORY_PREFIX
    for start in range(0, 1_000_000, 10_000):
        yield b"".join(wire.entry_header(b"%07d" % i) + empty for i in range(start, start + 10_000))
    yield wire.CLOSE


def test_nar_of_a_million_empty_files_is_bounded(tmp_path: Path):
    cache = tmp_path / "cache"
    (cache / "nar").mkdir(parents=True)
    (cache / "nix-cache-info").write_bytes(CACHE_INFO)
    hasher, size = hashlib.sha256(), 0
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    with (cache / "nar/bomb.nar.zst").open("wb") as out:
        for chunk in million_empty_files_nar():
            hasher.update(chunk)
            size += len(chunk)
            out.write(compressor.compress(chunk))
        out.write(compressor.flush())
    narinfo = (
        f"StorePath: {BOMB_PATH.absolute}\nURL: nar/bomb.nar.zst\nCompression: zstd\n"
        f"NarHash: sha256:{nixbase32.encode(hasher.digest())}\nNarSize: {size}\n"
    )
    (cache / narinfo_key(BOMB_PATH)).write_text(narinfo)
    assert (cache / "nar/bomb.nar.zst").stat().st_size < size // 100
    code, lines, peak_kb = run_measured(
        "path-info",
        "--store",
        f"file://{cache}",
        "--cache-dir",
        tmp_path / "local",
        "--no-require-sigs",
        BOMB_PATH.absolute,
    )
    assert code == 1
    assert_one_line(lines[1:], f"has more than {MAX_DIRECTORY_ENTRIES} entries")
    assert peak_kb < CEILING_KB


# -- remote fetches never take the threads local reads need ---------------------------------


@requires_nix
async def test_hung_fetches_leave_the_default_thread_limiter_to_local_reads(tmp_path: Path):
    cache: NixCache = build_cache(tmp_path / "nix", "none", with_reference=False)
    (path,) = cache.paths
    hung = [StorePath(hashlib.sha1(b"%d" % i).digest(), "hung") for i in range(50)]
    with serve_directory(cache.dir) as served:
        gate = threading.Event()
        for store_path in hung:
            served.hold[narinfo_key(store_path)] = gate
        try:
            async with opened(served.url, tmp_path / "local", require_sigs=False) as store:
                info = await store.pathinfos.get(digest_of(path))  # cached now
                assert info is not None and isinstance(info.node, DirectoryNode)
                async with trio.open_nursery() as nursery:
                    for store_path in hung:
                        nursery.start_soon(store.pathinfos.get, store_path.digest)
                    while sum(served.requests[narinfo_key(p)] for p in hung) < len(hung):
                        await trio.sleep(0.05)
                    default = trio.to_thread.current_default_thread_limiter()
                    assert default.borrowed_tokens == 0
                    # A cached path's file reads with all 50 fetches still hanging.
                    directory = await store.directories.get(info.node.digest)
                    assert directory is not None
                    (hello,) = (f for f in directory.files if f.name == b"hello.txt")
                    reader = await store.blobs.open_read(hello.digest)
                    assert reader is not None
                    assert await read_all(reader) == b"Hello World!\n"
                    await reader.aclose()
                    gate.set()
        finally:
            gate.set()
