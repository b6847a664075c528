"""The embedded local store: opening, creating, crash-safe blobs, many processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.stores.local.blobs import opened, read_blob
from tvixmount.castore import B3Digest
from tvixmount.castore.blobservice import put_stream
from tvixmount.errors import StoreError
from tvixmount.stores.local import castore as local
from tvixmount.stores.local.castore import PACK_MAX, LocalBlobService
from tvixmount.stores.local.store import FORMAT, MARKER, default_store_dir, open_local


def _open(root: Path, create: bool) -> None:
    with opened(root, create):
        pass


@pytest.fixture
def blobs(tmp_path: Path) -> Iterator[LocalBlobService]:
    with opened(tmp_path / "s", create=True) as store:
        yield store.blobs


def test_missing_directory_without_create_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(StoreError, match=f"no tvixmount store at {root}"):
        open_local(root, create=False)
    assert not root.exists()


def test_empty_directory_without_create_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=f"no {MARKER} marker"):
        open_local(tmp_path, create=False)


def test_foreign_non_empty_directory_is_refused_even_with_create(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty and not a tvixmount store"):
        open_local(tmp_path, create=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_regular_file_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        open_local(path, create=True)


def test_unsupported_format_is_named(tmp_path: Path) -> None:
    _open(tmp_path / "s", create=True)
    (tmp_path / "s" / MARKER).write_text("tvixmount-store 99\n")
    with pytest.raises(StoreError, match="unsupported format 'tvixmount-store 99'"):
        open_local(tmp_path / "s", create=False)


def test_foreign_database_is_a_store_error(tmp_path: Path) -> None:
    _open(tmp_path / "s", create=True)
    (tmp_path / "s" / "store.sqlite").write_bytes(b"not a database at all" * 100)
    for extra in ("store.sqlite-wal", "store.sqlite-shm"):
        (tmp_path / "s" / extra).unlink(missing_ok=True)
    with pytest.raises(StoreError, match="cannot open store database"):
        open_local(tmp_path / "s", create=False)


def test_create_makes_marker_database_and_blob_dirs(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    _open(root, create=True)
    assert (root / MARKER).read_text() == FORMAT
    assert (root / "store.sqlite").is_file()
    assert (root / "blobs").is_dir()
    assert (root / "packs").is_dir()
    assert (root / "tmp").is_dir()


def test_created_store_reopens_without_create(tmp_path: Path) -> None:
    _open(tmp_path / "s", create=True)
    _open(tmp_path / "s", create=False)


def test_create_in_existing_empty_directory(tmp_path: Path) -> None:
    _open(tmp_path, create=True)
    assert (tmp_path / MARKER).is_file()


def test_database_uses_wal(tmp_path: Path) -> None:
    with opened(tmp_path / "s", create=True) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_store_dir_prefers_tvixmount_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TVIXMOUNT_STORE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_dir() == tmp_path / "explicit"


def test_default_store_dir_is_under_xdg_data_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TVIXMOUNT_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_dir() == tmp_path / "xdg" / "tvixmount"


async def test_unfinished_blob_lives_only_in_tmp(blobs: LocalBlobService) -> None:
    # Big enough that the writer spills to a temp file before it is finished.
    data = b"partial content" * 200_000
    writer = await blobs.open_write()
    await writer.write(data[: len(data) // 2])
    final = blobs.path_of(B3Digest.of(data))
    assert not final.exists()
    assert [p for p in blobs.blob_dir.rglob("*") if p.is_file()] == []
    assert len(list(blobs.tmp_dir.iterdir())) == 1
    await writer.write(data[len(data) // 2 :])
    assert await writer.finish() == B3Digest.of(data)
    assert final.read_bytes() == data
    assert list(blobs.tmp_dir.iterdir()) == []


async def test_finished_big_blob_is_a_read_only_content_addressed_file(
    blobs: LocalBlobService,
) -> None:
    writer = await blobs.open_write()
    await writer.write(b"abc" * PACK_MAX)
    digest = await writer.finish()
    path = blobs.path_of(digest)
    assert path == blobs.blob_dir / digest.hex()[:2] / digest.hex()
    assert path.stat().st_mode & 0o777 == 0o444


# Child processes share nothing with the test but the store directory.
_PRELUDE = """
import os
import sys
import trio
from tvixmount.castore import DirectoryNode, Directory
from tvixmount.stores.local.store import open_local
from tvixmount.pathinfo import NarInfo, PathInfo
from tvixmount.storepath import StorePath
from pathlib import Path

ROOT = Path(sys.argv[1])
COUNT = int(sys.argv[2])
EMPTY = Directory()

def path_of(i: int) -> StorePath:
    return StorePath(i.to_bytes(20, "big"), f"p{i}")

def info_of(i: int) -> PathInfo:
    node = DirectoryNode(str(path_of(i)).encode(), EMPTY.digest(), 0)
    return PathInfo(node, (), NarInfo(nar_size=i, nar_sha256=bytes(32)))
"""

_WRITER = """
OFFSET = int(sys.argv[3])
READERS = int(sys.argv[4])

async def main() -> None:
    _, directories, pathinfos, db = open_local(ROOT, create=False)
    # Start writing only once every reader is polling, so reads overlap writes.
    while len(list(ROOT.parent.glob("ready-*"))) < READERS:
        await trio.sleep(0.01)
    await directories.put_many([EMPTY])
    for i in range(OFFSET, OFFSET + COUNT):
        await pathinfos.put(info_of(i))
    db.close()

trio.run(main)
"""

_READER = """
async def main() -> None:
    _, _, pathinfos, db = open_local(ROOT, create=False)
    (ROOT.parent / f"ready-{os.getpid()}").touch()
    for _ in range(100000):
        found = 0
        for i in range(COUNT):
            info = await pathinfos.get(path_of(i).digest)
            if info is not None:
                assert info == info_of(i), (info, i)
                found += 1
        listed = [info async for info in pathinfos.list()]
        assert all(info == info_of(info.narinfo.nar_size) for info in listed)
        if found == COUNT:
            break
        await trio.sleep(0.005)
    else:
        raise SystemExit(f"reader saw only {found} of {COUNT}")
    db.close()
    print(found)

trio.run(main)
"""


def _spawn(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_PRELUDE + script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_all(procs: list[subprocess.Popen[str]]) -> list[str]:
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


def test_readers_in_other_processes_see_a_writer_progress(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _open(root, create=True)
    count = 300
    readers = [_spawn(_READER, root, count) for _ in range(3)]
    writer = _spawn(_WRITER, root, count, 0, len(readers))
    outputs = _wait_all([writer, *readers])
    assert [o.strip() for o in outputs[1:]] == [str(count)] * 3


def test_two_writer_processes_both_land(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _open(root, create=True)
    writers = [_spawn(_WRITER, root, 150, offset, 0) for offset in (0, 150)]
    _wait_all(writers)
    check = _spawn(_READER, root, 300)
    assert _wait_all([check]) == ["300\n"]


@pytest.mark.parametrize("size", [14, PACK_MAX + 1], ids=["packed", "file"])
async def test_putting_a_blob_again_heals_a_corrupted_copy(
    blobs: LocalBlobService, size: int
) -> None:
    data = (b"precious bytes" * (size // 14 + 1))[:size]
    digest = await put_stream(blobs, [data])
    location = blobs.location_of(digest)
    assert location is not None
    location.path.chmod(0o644)
    with location.path.open("r+b") as f:
        os.pwrite(f.fileno(), b"rotten", location.offset)
    assert await put_stream(blobs, [data]) == digest
    assert await read_blob(blobs, digest) == data


async def test_reads_of_one_reader_reach_the_disk_one_at_a_time_in_order(
    blobs: LocalBlobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent reads of one open blob must not race on its fd (readahead sees order)."""
    writer = await blobs.open_write()
    await writer.write(bytes(range(256)) * PACK_MAX)
    digest = await writer.finish()
    reader = await blobs.open_read(digest)
    assert reader is not None
    events: list[tuple[str, int]] = []
    real = local._read_ahead_and_pread

    def slow_disk_read(fd: int, length: int, offset: int, ahead: int) -> bytes:
        events.append(("start", offset))
        time.sleep(0.01 if offset == 0 else 0)  # the first read waits on the "disk"
        data = real(fd, length, offset, ahead)
        events.append(("end", offset))
        return data

    def not_cached(*_: object) -> int:
        raise BlockingIOError  # what RWF_NOWAIT says when the disk would be read

    monkeypatch.setattr(local, "_read_ahead_and_pread", slow_disk_read)
    monkeypatch.setattr(os, "preadv", not_cached)
    results: dict[int, bytes] = {}

    async def read(offset: int) -> None:
        results[offset] = bytes(await reader.pread(offset, 4096))

    async with trio.open_nursery() as nursery:
        for offset in (0, 4096, 8192):
            nursery.start_soon(read, offset)
            await trio.sleep(0)  # arrive in this order
    assert events == [
        ("start", 0),
        ("end", 0),
        ("start", 4096),
        ("end", 4096),
        ("start", 8192),
        ("end", 8192),
    ]
    assert sorted(results) == [0, 4096, 8192]
    assert all(data == bytes(range(256)) * 16 for data in results.values())
    await reader.aclose()
