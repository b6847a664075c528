"""Store format 2: small blobs packed together, verified reads, upgrades from format 1."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
import trio

from tests.fixtures.cachestat import cached_pages, page_count, require_uncached
from tests.stores.local.blobs import opened, read_blob
from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode
from tvixmount.castore.blobservice import put_stream
from tvixmount.errors import IntegrityError
from tvixmount.stores.local import castore as local_module
from tvixmount.stores.local.castore import PACK_MAX, LocalBlobService
from tvixmount.stores.local.store import FORMAT, MARKER


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "s"


@pytest.fixture
def blobs(root: Path) -> Iterator[LocalBlobService]:
    with opened(root, create=True) as store:
        yield store.blobs


def flip(blobs: LocalBlobService, digest: B3Digest, offset: int) -> None:
    location = blobs.location_of(digest)
    assert location is not None
    location.path.chmod(0o644)
    with location.path.open("r+b") as f:
        byte = os.pread(f.fileno(), 1, location.offset + offset)
        os.pwrite(f.fileno(), bytes([byte[0] ^ 0x01]), location.offset + offset)


def stored_bytes(root: Path) -> int:
    places = (root / "blobs", root / "packs")
    return sum(p.stat().st_size for place in places for p in place.rglob("*") if p.is_file())


def blob_files(root: Path) -> list[Path]:
    return [p for p in (root / "blobs").rglob("*") if p.is_file()]


def small(i: int) -> bytes:
    return f"small blob {i} ".encode() * (i % 50 + 1)


async def test_small_blob_goes_to_a_pack_and_reads_back(blobs: LocalBlobService) -> None:
    digest = await put_stream(blobs, [b"tiny"])
    location = blobs.location_of(digest)
    assert location is not None
    assert location.path.parent == blobs.pack_dir
    assert location.size == 4
    assert blob_files(blobs.pack_dir.parent) == []
    assert await read_blob(blobs, digest) == b"tiny"


async def test_blob_of_pack_max_bytes_is_still_packed(blobs: LocalBlobService) -> None:
    digest = await put_stream(blobs, [bytes(PACK_MAX)])
    location = blobs.location_of(digest)
    assert location is not None
    assert location.path.parent == blobs.pack_dir


async def test_big_blob_stays_a_file(blobs: LocalBlobService) -> None:
    data = os.urandom(PACK_MAX + 1)
    digest = await put_stream(blobs, [data])
    location = blobs.location_of(digest)
    assert location is not None
    assert (location.path, location.offset, location.size) == (blobs.path_of(digest), 0, len(data))
    assert await read_blob(blobs, digest) == data


async def test_blobs_put_together_lie_back_to_back_in_one_pack(blobs: LocalBlobService) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(put_stream, blobs, [small(i)])
    locations = [blobs.location_of(B3Digest.of(small(i))) for i in range(20)]
    assert len({loc.path for loc in locations if loc is not None}) == 1
    spans = sorted((loc.offset, loc.size) for loc in locations if loc is not None)
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(spans))


async def test_absent_blob_has_no_location_and_opens_as_none(blobs: LocalBlobService) -> None:
    digest = B3Digest.of(b"never stored")
    assert blobs.location_of(digest) is None
    assert await blobs.open_read(digest) is None
    assert not await blobs.has(digest)


async def test_flipped_byte_in_a_packed_blob_is_an_integrity_error_naming_it(
    blobs: LocalBlobService,
) -> None:
    digest = await put_stream(blobs, [b"packed and precious"])
    flip(blobs, digest, 3)
    with pytest.raises(IntegrityError, match=str(digest).replace("+", r"\+")):
        await blobs.open_read(digest)


async def test_packed_blob_corrupted_after_a_verified_open_fails_the_next_open(
    blobs: LocalBlobService,
) -> None:
    digest = await put_stream(blobs, [b"verified once"])
    assert await read_blob(blobs, digest) == b"verified once"
    # File times tick coarsely (a jiffy): let the corruption show in the pack's mtime,
    # as it does for any corruption later than the pack's last append.
    time.sleep(0.05)
    flip(blobs, digest, 0)
    with pytest.raises(IntegrityError):
        await blobs.open_read(digest)


async def test_corrupt_packed_blob_leaves_its_pack_neighbours_readable(
    blobs: LocalBlobService,
) -> None:
    first = await put_stream(blobs, [b"first neighbour"])
    second = await put_stream(blobs, [b"second neighbour"])
    flip(blobs, first, 0)
    assert await read_blob(blobs, second) == b"second neighbour"


@dataclass
class HashCount:
    calls: int = 0


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> HashCount:
    """Counts the BLAKE3 hashers made from now on (one per blob verified)."""
    count = HashCount()
    real = blake3.blake3

    def counting(*args: object, **kwargs: object) -> blake3.blake3:
        count.calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(blake3, "blake3", counting)
    return count


async def test_warm_reopen_of_a_packed_blob_does_not_rehash(
    blobs: LocalBlobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = await put_stream(blobs, [b"hash me once"])
    count = count_hashes(monkeypatch)
    assert await read_blob(blobs, digest) == b"hash me once"
    assert count.calls == 1
    assert await read_blob(blobs, digest) == b"hash me once"
    assert count.calls == 1


async def test_a_cycle_of_opens_bigger_than_the_verified_cache_still_mostly_hits(
    blobs: LocalBlobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A walk reopens every blob of a store in the same order. A plain LRU
    # smaller than that cycle would evict each blob just before its reopen
    # and hash all of them again; admitting only some newcomers keeps most.
    monkeypatch.setattr(local_module, "_VERIFIED_CACHE_SIZE", 4)
    digests = [await put_stream(blobs, [small(i)]) for i in range(12)]
    count = count_hashes(monkeypatch)
    for digest in digests:
        await read_blob(blobs, digest)
    assert count.calls == 12
    count.calls = 0
    for i, digest in enumerate(digests):
        assert await read_blob(blobs, digest) == small(i)
    assert len(blobs._verified) <= 4
    assert count.calls <= 12 - 3, "the blobs cached before the cycle were evicted by it"


async def test_putting_an_existing_blob_writes_nothing_new(
    root: Path, blobs: LocalBlobService
) -> None:
    await put_stream(blobs, [b"once is enough"])
    before = stored_bytes(root)
    await put_stream(blobs, [b"once is enough"])
    assert stored_bytes(root) == before


async def test_another_service_does_not_write_a_blob_already_packed(
    root: Path, blobs: LocalBlobService
) -> None:
    await put_stream(blobs, [b"already here"])
    before = stored_bytes(root)
    with opened(root) as other:
        await put_stream(other.blobs, [b"already here"])
    assert stored_bytes(root) == before


async def test_concurrent_puts_of_one_blob_append_it_once(
    root: Path, blobs: LocalBlobService
) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(put_stream, blobs, [b"wanted by many"])
    assert stored_bytes(root) == len(b"wanted by many")


async def test_a_put_cancelled_while_committing_still_commits_for_everyone(
    blobs: LocalBlobService,
) -> None:
    async def cancelled_put() -> None:
        with trio.move_on_after(0):
            await put_stream(blobs, [b"leader, cancelled"])

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancelled_put)
            nursery.start_soon(put_stream, blobs, [b"waiting on the leader"])
    assert await read_blob(blobs, B3Digest.of(b"leader, cancelled")) == b"leader, cancelled"
    assert await read_blob(blobs, B3Digest.of(b"waiting on the leader")) == b"waiting on the leader"


async def test_full_pack_rolls_over_to_a_new_one(
    blobs: LocalBlobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_module, "PACK_ROLLOVER", 100)
    digests = [await put_stream(blobs, [bytes([i]) * 60]) for i in range(3)]
    paths = [loc.path for d in digests if (loc := blobs.location_of(d)) is not None]
    assert len(set(paths)) == 3
    for i, digest in enumerate(digests):
        assert await read_blob(blobs, digest) == bytes([i]) * 60


async def test_two_services_on_one_store_write_separate_packs(root: Path) -> None:
    with opened(root, create=True) as one, opened(root) as two:
        services = [one.blobs, two.blobs]
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(put_stream, services[i % 2], [small(i)])
        packs = {services[i % 2].location_of(B3Digest.of(small(i))) for i in range(200)}
        assert len({loc.path for loc in packs if loc is not None}) == 2
        for i in range(200):
            for service in services:
                assert await read_blob(service, B3Digest.of(small(i))) == small(i)


def _write_tree(path: Path, seed: str, count: int) -> dict[Path, bytes]:
    files = {}
    for i in range(count):
        file = path / f"d{i // 50}" / f"f{i}"
        file.parent.mkdir(parents=True, exist_ok=True)
        data = f"{seed} {i} ".encode() * (i % 400 + 1)
        file.write_bytes(data)
        files[file] = data
    return files


async def test_two_import_processes_into_one_store_both_land_intact(
    tmp_path: Path, root: Path
) -> None:
    with opened(root, create=True):
        pass
    trees = [tmp_path / "one", tmp_path / "two"]
    files = {**_write_tree(trees[0], "one", 600), **_write_tree(trees[1], "two", 600)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tvixmount", "import", str(tree), "--store", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tree in trees
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert len(list((root / "packs").iterdir())) >= 2
    with opened(root) as store:
        for data in files.values():
            assert await read_blob(store.blobs, B3Digest.of(data)) == data


async def test_abandoned_bytes_at_a_pack_end_leave_a_consistent_store(root: Path) -> None:
    with opened(root, create=True) as store:
        kept = await put_stream(store.blobs, [b"committed before the crash"])
        location = store.blobs.location_of(kept)
    assert location is not None
    # What a crash between appending and committing leaves: bytes no row points at.
    location.path.chmod(0o644)
    with location.path.open("ab") as pack:
        pack.write(b"appended, never committed")
    (root / "packs" / "orphan.pack").write_bytes(b"a pack created, never recorded")
    with opened(root) as store:
        assert await read_blob(store.blobs, kept) == b"committed before the crash"
        assert not await store.blobs.has(B3Digest.of(b"appended, never committed"))
        fresh = await put_stream(store.blobs, [b"written after the crash"])
        assert await read_blob(store.blobs, fresh) == b"written after the crash"


async def test_aborted_small_writer_appends_nothing(root: Path, blobs: LocalBlobService) -> None:
    writer = await blobs.open_write()
    await writer.write(b"never finished")
    await writer.abort()
    assert stored_bytes(root) == 0


# --- directories and format ----------------------------------------------------------


def _directories_sql(db: sqlite3.Connection) -> str:
    row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'directories'").fetchone()
    return str(row[0])


async def test_new_store_clusters_directories_in_insertion_order(root: Path) -> None:
    with opened(root, create=True) as store:
        leaf = Directory.from_nodes([FileNode(b"f", B3Digest.of(b""), 0, False)])
        parent = Directory.from_nodes([DirectoryNode(b"d", leaf.digest(), leaf.size())])
        await store.directories.put_many([leaf, parent])
        rows = store.db.execute("SELECT digest FROM directories ORDER BY rowid").fetchall()
        assert "WITHOUT ROWID" not in _directories_sql(store.db).upper()
    assert [bytes(r[0]) for r in rows] == [bytes(leaf.digest()), bytes(parent.digest())]


_FORMAT_1_SCHEMA = """
CREATE TABLE directories (digest BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE pathinfos (digest BLOB PRIMARY KEY, name TEXT NOT NULL, data BLOB NOT NULL)
    WITHOUT ROWID;
CREATE INDEX pathinfos_by_name ON pathinfos (name);
"""


@pytest.fixture
def format_1_store(root: Path) -> tuple[Path, bytes, Directory]:
    """A store as format 1 left it: every blob a file, directories without rowid."""
    data = b"a small blob from format 1"
    digest = B3Digest.of(data)
    (root / "blobs" / digest.hex()[:2]).mkdir(parents=True)
    (root / "blobs" / digest.hex()[:2] / digest.hex()).write_bytes(data)
    (root / "tmp").mkdir()
    directory = Directory.from_nodes([FileNode(b"f", digest, len(data), False)])
    db = sqlite3.connect(root / "store.sqlite")
    db.executescript(_FORMAT_1_SCHEMA)
    with db:
        db.execute(
            "INSERT INTO directories VALUES (?, ?)",
            (bytes(directory.digest()), directory.serialize()),
        )
    db.close()
    (root / MARKER).write_text("tvixmount-store 1\n")
    return root, data, directory


def test_format_1_store_is_upgraded_to_the_current_marker(
    format_1_store: tuple[Path, bytes, Directory],
) -> None:
    root = format_1_store[0]
    with opened(root):
        pass
    assert (root / MARKER).read_text() == FORMAT
    assert (root / "packs").is_dir()


async def test_format_1_blob_files_and_directories_stay_readable(
    format_1_store: tuple[Path, bytes, Directory],
) -> None:
    root, data, directory = format_1_store
    with opened(root) as store:
        assert await read_blob(store.blobs, B3Digest.of(data)) == data
        assert await store.directories.get(directory.digest()) == directory
        assert "WITHOUT ROWID" in _directories_sql(store.db).upper()


async def test_upgraded_store_packs_new_small_blobs_and_keeps_old_files(
    format_1_store: tuple[Path, bytes, Directory],
) -> None:
    root, data, _ = format_1_store
    with opened(root) as store:
        await put_stream(store.blobs, [data])
        fresh = await put_stream(store.blobs, [b"new in format 2"])
        leaf = Directory.from_nodes([FileNode(b"g", fresh, 15, False)])
        await store.directories.put_many([leaf])
        assert await store.directories.get(leaf.digest()) == leaf
        location = store.blobs.location_of(fresh)
        assert location is not None and location.path.parent == store.blobs.pack_dir
        assert blob_files(root) == [store.blobs.path_of(B3Digest.of(data))]


def test_upgraded_store_reopens_as_current_format(
    format_1_store: tuple[Path, bytes, Directory],
) -> None:
    root = format_1_store[0]
    for _ in range(2):
        with opened(root):
            pass
    assert (root / MARKER).read_text() == FORMAT


async def test_a_packed_blob_read_from_disk_starts_reading_the_blobs_after_it(
    blobs: LocalBlobService,
) -> None:
    # Small blobs: for a one-page read the kernel itself reads ahead only a few pages.
    size = 2 << 10
    digests = [await put_stream(blobs, [i.to_bytes(2, "big") * (size // 2)]) for i in range(600)]
    locations = [blobs.location_of(d) for d in digests]
    assert all(loc is not None for loc in locations)
    pack = locations[0].path  # type: ignore[union-attr]
    fd = os.open(pack, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    target, later = locations[100], locations[400]
    assert target is not None and later is not None
    pages = page_count(later.size)
    require_uncached(pack, later.offset, later.size)
    assert await read_blob(blobs, digests[100]) == (100).to_bytes(2, "big") * (size // 2)
    deadline = time.monotonic() + 5
    while cached_pages(pack, later.offset, later.size) != pages and time.monotonic() < deadline:
        await trio.sleep(0.01)
    assert cached_pages(pack, later.offset, later.size) == pages
