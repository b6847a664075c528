"""``--cache-dir`` for a gRPC store: verified content kept on disk, a second mount starts warm."""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio

from tests.fixtures import castore as fx
from tests.grpc_serving import FakeBackend, fake_server, serve_directory, serve_file
from tests.mounting import mounted, requires_fuse
from tvixmount.castore import B3Digest
from tvixmount.stores import open_store
from tvixmount.stores.local.store import MARKER

pytestmark = requires_fuse

DATA = b"kept on disk after the first mount\n" * 50


def _serve_tree(backend: FakeBackend) -> str:
    root = fx.DIRECTORY_COMPLICATED
    basename = serve_directory(backend, "tree", root)
    backend.directories[bytes(root.digest())].append(fx.DIRECTORY_WITH_KEEP.to_proto())
    backend.blobs[bytes(fx.EMPTY_DIGEST)] = b""
    return basename


def _cached(cache: Path, blob: B3Digest, directory: B3Digest | None = None) -> bool:
    """Whether the cache (an embedded store) holds the blob (and Directory) yet."""

    async def check() -> bool:
        store = open_store(str(cache))
        try:
            if not await store.blobs.has(blob):
                return False
            return directory is None or await store.directories.get(directory) is not None
        finally:
            await store.aclose()

    return trio.run(check)


def _wait_cached(cache: Path, blob: B3Digest, directory: B3Digest | None = None) -> None:
    deadline = time.monotonic() + 30
    while not (cache / MARKER).exists() or not _cached(cache, blob, directory):
        assert time.monotonic() < deadline, "the cache was not written"
        time.sleep(0.1)


def test_a_second_mount_reads_from_the_cache_without_the_server(tmp_path: Path) -> None:
    backend = FakeBackend()
    cache = tmp_path / "cache"
    with fake_server(backend) as url:
        name = serve_file(backend, "cached", DATA)
        tree = _serve_tree(backend)
        with mounted(url, tmp_path / "mnt", "--cache-dir", str(cache)) as mnt:
            assert (mnt / name).read_bytes() == DATA
            assert sorted(os.listdir(mnt / tree / "keep")) == [".keep"]
            assert (mnt / tree / ".keep").read_bytes() == b""
            _wait_cached(cache, B3Digest.of(DATA), fx.DIRECTORY_WITH_KEEP.digest())
        # The server forgets the content: only the cache can have it now.
        reads = len(backend.read_calls)
        backend.blobs.clear()
        backend.directories.clear()
        with mounted(url, tmp_path / "mnt2", "--cache-dir", str(cache)) as mnt:
            assert (mnt / name).read_bytes() == DATA
            assert sorted(os.listdir(mnt / tree)) == [".keep", "aa", "keep"]
            assert sorted(os.listdir(mnt / tree / "keep")) == [".keep"]
        assert len(backend.read_calls) == reads


def test_a_corrupt_cached_blob_is_fetched_again(tmp_path: Path) -> None:
    backend = FakeBackend()
    cache = tmp_path / "cache"
    with fake_server(backend) as url:
        name = serve_file(backend, "healed", DATA)
        with mounted(url, tmp_path / "mnt", "--cache-dir", str(cache)) as mnt:
            assert (mnt / name).read_bytes() == DATA
            _wait_cached(cache, B3Digest.of(DATA))
        packs = list((cache / "packs").iterdir())
        assert packs
        for pack in packs:
            raw = bytearray(pack.read_bytes())
            raw[raw.find(DATA[:20])] ^= 1
            pack.chmod(0o644)
            pack.write_bytes(bytes(raw))
        with mounted(url, tmp_path / "mnt2", "--cache-dir", str(cache)) as mnt:
            assert (mnt / name).read_bytes() == DATA
