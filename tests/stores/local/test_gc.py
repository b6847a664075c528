"""``tvixmount gc``: what no PathInfo reaches goes, what one reaches stays, beside imports too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.fixtures.local_tree import make_tree, nix_dump, requires_nix
from tests.housekeeping import disk_bytes, import_paths, json_of, nar_of, one_error_line
from tests.mounting import mounted, requires_fuse, run_tvixmount
from tvixmount.castore.blobservice import put_stream, read_all
from tvixmount.castore.digest import B3Digest
from tvixmount.castore.ingest import ingest_path
from tvixmount.castore.nodes import rename
from tvixmount.importer import import_path
from tvixmount.pathinfo.model import CAHash, ContentAddress, NarInfo, PathInfo
from tvixmount.storepath import from_nar_hash
from tvixmount.stores import StoreOptions, open_store
from tvixmount.stores.local.gc import collect


def small_files(root: Path, count: int, tag: str) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"f{i}").write_bytes(f"{tag} {i} ".encode() * 50)
    return root


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def verify_ok(store: Path) -> None:
    result = run_tvixmount("verify", "--store", store)
    assert result.returncode == 0, result.stderr


def test_gc_of_a_store_without_garbage_frees_nothing(tmp_path: Path, store: Path) -> None:
    import_paths(store, make_tree(tmp_path / "tree"))
    report = json_of("gc", "--store", store)
    assert report["freedBytes"] == 0
    assert report["blobs"] == report["directories"] == 0
    verify_ok(store)


def test_delete_then_gc_gives_the_space_back(tmp_path: Path, store: Path) -> None:
    import_paths(store, small_files(tmp_path / "keep", 20, "keep"))
    before = disk_bytes(store)
    (doomed,) = import_paths(store, make_tree(tmp_path / "tree"))
    assert disk_bytes(store) > before + (4 << 20)
    assert run_tvixmount("delete", doomed, "--store", store).returncode == 0
    report = json_of("gc", "--store", store)
    assert report["blobs"] > 0 and report["directories"] > 0
    assert disk_bytes(store) <= before * 1.05
    verify_ok(store)


def test_dry_run_changes_nothing_and_predicts_the_real_run(tmp_path: Path, store: Path) -> None:
    import_paths(store, small_files(tmp_path / "keep", 30, "keep"))
    (doomed,) = import_paths(store, make_tree(tmp_path / "tree"))
    run_tvixmount("delete", doomed, "--store", store)
    usage = disk_bytes(store)
    dry = json_of("gc", "--store", store, "--dry-run")
    assert disk_bytes(store) == usage
    assert dry["dryRun"] is True
    real = json_of("gc", "--store", store)
    for key in ("blobs", "blobBytes", "directories", "packsRemoved", "packsRewritten"):
        assert dry[key] == real[key], key
    assert dry["freedBytes"] == pytest.approx(real["freedBytes"], rel=0.05)


@requires_nix
def test_mostly_dead_pack_is_rewritten_and_its_live_blobs_still_read(
    tmp_path: Path, store: Path
) -> None:
    tree = tmp_path / "mixed"
    tree.mkdir()
    (tree / "live").write_bytes(b"the one live blob\n")
    (kept,) = import_paths(store, tree)
    (doomed,) = import_paths(store, small_files(tmp_path / "dead", 200, "dead"))
    run_tvixmount("delete", doomed, "--store", store)
    report = json_of("gc", "--store", store)
    assert report["packsRemoved"] + report["packsRewritten"] >= 1
    packs = list((store / "packs").iterdir())
    assert sum(p.stat().st_size for p in packs) < 4096
    assert nar_of(store, kept) == nix_dump(tree)
    verify_ok(store)


@requires_nix
def test_a_pack_shared_by_live_and_dead_blobs_is_rewritten(tmp_path: Path, store: Path) -> None:
    # One import, one pack: three quarters of its blobs die with the path that alone used them.
    tree = small_files(tmp_path / "both", 100, "shared")
    (first,) = import_paths(store, tree)
    for i in range(100):
        if i % 4:
            (tree / f"f{i}").unlink()
    (second,) = import_paths(store, tree)
    run_tvixmount("delete", first, "--store", store)
    report = json_of("gc", "--store", store)
    assert report["blobs"] == 75
    assert report["packsRewritten"] == 1
    verify_ok(store)
    assert nar_of(store, second) == nix_dump(tree)


def test_max_freed_stops_early(tmp_path: Path, store: Path) -> None:
    tree = tmp_path / "big"
    tree.mkdir()
    for i in range(4):
        (tree / f"b{i}").write_bytes(os.urandom(1 << 20))
    (doomed,) = import_paths(store, tree)
    run_tvixmount("delete", doomed, "--store", store)
    first = json_of("gc", "--store", store, "--max-freed", "1M")
    assert 1 <= first["blobs"] < 4
    rest = json_of("gc", "--store", store)
    assert first["blobs"] + rest["blobs"] == 4


def test_temp_files_of_dead_processes_go_those_of_live_ones_stay(
    tmp_path: Path, store: Path
) -> None:
    import_paths(store, small_files(tmp_path / "keep", 3, "keep"))
    gone = _a_dead_pid()
    (store / "tmp" / f"blob-{gone}-7f00-0").write_bytes(b"x" * 100_000)
    live = store / "tmp" / f"blob-{os.getpid()}-7f00-0"
    live.write_bytes(b"y" * 100_000)
    report = json_of("gc", "--store", store)
    assert report["tempFileBytes"] >= 100_000
    assert [p.name for p in (store / "tmp").iterdir()] == [live.name]


def _a_dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_second_gc_at_once_is_refused_with_one_line(tmp_path: Path, store: Path) -> None:
    import fcntl

    import_paths(store, small_files(tmp_path / "keep", 3, "keep"))
    with open(store / "gc.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        line = one_error_line(run_tvixmount("gc", "--store", store))
    assert "another gc is running" in line


def test_gc_on_a_store_url_of_another_kind_is_refused() -> None:
    line = one_error_line(run_tvixmount("gc", "--store", "memory://"))
    assert "embedded store" in line


# --- beside a running import: the lease --------------------------------------


async def _put_info(store_dir: Path, info: PathInfo) -> None:
    store = open_store(str(store_dir))
    try:
        await store.pathinfos.put(info)
    finally:
        await store.aclose()


async def test_objects_of_an_import_without_its_path_info_yet_survive_gc(
    tmp_path: Path, store: Path
) -> None:
    import_paths(store, small_files(tmp_path / "keep", 3, "keep"))
    tree = make_tree(tmp_path / "tree")
    writer = open_store(str(store))
    try:
        # The import's blobs and Directories are stored; its PathInfo is not yet.
        ingested = await ingest_path(tree, writer.blobs, writer.directories, name=b"tree")
        report = await trio.to_thread.run_sync(collect, store)
        assert report.blobs == report.directories == 0
        path = from_nar_hash(ingested.nar_sha256, "tree")
        await writer.pathinfos.put(
            PathInfo(
                rename(ingested.node, str(path).encode()),
                (),
                NarInfo(
                    ingested.nar_size,
                    ingested.nar_sha256,
                    ca=ContentAddress(CAHash.NAR_SHA256, ingested.nar_sha256),
                ),
            )
        )
    finally:
        await writer.aclose()
    verify_ok(store)


async def test_garbage_an_import_reuses_before_gc_runs_is_kept(tmp_path: Path, store: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (doomed,) = import_paths(store, tree)
    run_tvixmount("delete", doomed, "--store", store)
    # Every blob and Directory of the tree is garbage now; a new import of the
    # same tree finds them stored and reuses them, then gc runs before its PathInfo.
    writer = open_store(str(store))
    try:
        ingested = await ingest_path(tree, writer.blobs, writer.directories, name=b"tree")
        report = await trio.to_thread.run_sync(collect, store)
        assert report.blobs == report.directories == 0
    finally:
        await writer.aclose()
    assert ingested.nar_size > 0


async def test_gc_after_the_importer_died_takes_its_objects(tmp_path: Path, store: Path) -> None:
    import_paths(store, small_files(tmp_path / "keep", 3, "keep"))
    before = disk_bytes(store)
    tree = make_tree(tmp_path / "tree")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, trio\n"
            "from tvixmount.stores import open_store\n"
            "from tvixmount.castore.ingest import ingest_path\n"
            "async def main():\n"
            "    s = open_store(sys.argv[1])\n"
            "    await ingest_path(sys.argv[2], s.blobs, s.directories)\n"
            "    import os; os._exit(0)  # dies holding its lease, no PathInfo\n"
            "trio.run(main)\n",
            str(store),
            str(tree),
        ],
        check=False,
    )
    assert child.returncode == 0
    report = json_of("gc", "--store", store)
    assert report["blobs"] > 0 and report["directories"] > 0
    assert disk_bytes(store) <= before * 1.05


@requires_fuse
def test_gc_while_mounted_keeps_serving_the_live_paths(tmp_path: Path, store: Path) -> None:
    keep_tree = small_files(tmp_path / "keep", 50, "keep")
    (keep,) = import_paths(store, keep_tree)
    (doomed,) = import_paths(store, small_files(tmp_path / "dead", 200, "dead"))
    with mounted(str(store), tmp_path / "mnt") as mnt:
        name = Path(keep).name
        assert (mnt / name / "f1").read_bytes() == (keep_tree / "f1").read_bytes()
        run_tvixmount("delete", doomed, "--store", store)
        report = json_of("gc", "--store", store)
        assert report["blobs"] == 200
        for i in range(50):
            assert (mnt / name / f"f{i}").read_bytes() == (keep_tree / f"f{i}").read_bytes()
        assert not (mnt / Path(doomed).name).exists()


async def test_a_blob_written_again_after_gc_removed_it_reads_back(store: Path) -> None:
    opened = open_store(str(store), StoreOptions(create=True))
    try:
        digest = await put_stream(opened.blobs, [b"comes and goes"])
        await trio.to_thread.run_sync(_release_and_collect, opened.blobs, store)
        again = await put_stream(opened.blobs, [b"comes and goes"])
        assert again == digest
        reader = await opened.blobs.open_read(B3Digest(digest))
        assert reader is not None
        assert await read_all(reader) == b"comes and goes"
        await reader.aclose()
    finally:
        await opened.aclose()


def _release_and_collect(blobs: object, store: Path) -> None:
    # As if the writer had exited without a PathInfo: its lease ends, its blob is garbage.
    blobs._lease.release()  # type: ignore[attr-defined]
    assert collect(store).blobs == 1


async def test_import_path_records_a_path_gc_keeps(tmp_path: Path, store: Path) -> None:
    opened = open_store(str(store), StoreOptions(create=True))
    try:
        info = await import_path(opened, make_tree(tmp_path / "tree"))
    finally:
        await opened.aclose()
    report = await trio.to_thread.run_sync(collect, store)
    assert report.blobs == 0
    assert info.narinfo.nar_size > 0


def test_a_corrupt_directory_stops_gc_before_it_removes_anything(
    tmp_path: Path, store: Path
) -> None:
    import sqlite3

    (kept,) = import_paths(store, make_tree(tmp_path / "tree"))
    (doomed,) = import_paths(store, small_files(tmp_path / "dead", 5, "dead"))
    run_tvixmount("delete", doomed, "--store", store)
    db = sqlite3.connect(store / "store.sqlite")
    with db:
        # Flip a bit inside one digest a Directory names: it still decodes, but
        # no longer says what it really refers to.
        rowid, data = db.execute(
            "SELECT rowid, data FROM directories ORDER BY length(data) DESC LIMIT 1"
        ).fetchone()
        damaged = bytearray(data)
        damaged[-3] ^= 0x01
        db.execute("UPDATE directories SET data = ? WHERE rowid = ?", (bytes(damaged), rowid))
    db.close()
    usage = disk_bytes(store)
    assert "is corrupt" in one_error_line(run_tvixmount("gc", "--store", store))
    assert disk_bytes(store) == usage
    assert run_tvixmount("verify", "--store", store).returncode == 1
    assert kept
