"""Damaged and unusual embedded stores (issue 18): one line each, never a hang or a traceback."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fixtures.local_tree import make_tree, nix_dump, requires_nix
from tests.housekeeping import import_paths, nar_of, one_error_line
from tests.mounting import run_tvixmount, tvixmount_command

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def small_tree(root: Path) -> Path:
    root.mkdir()
    for i in range(20):
        (root / f"f{i}").write_bytes(f"small file {i}\n".encode())
    return root


@contextmanager
def mount(*args: str | Path) -> Iterator[None]:
    """A mount for the length of the block; unmounted whatever happened."""
    target = Path(args[-1])
    target.mkdir(exist_ok=True)
    subprocess.run(["mount", *map(str, args)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def packed_location(store: Path) -> tuple[Path, int, int]:
    """(pack, offset, size) of one packed blob."""
    db = sqlite3.connect(store / "store.sqlite")
    try:
        name, offset, size = db.execute(
            "SELECT packs.name, offset, size FROM packed_blobs JOIN packs ON packs.id = pack"
        ).fetchone()
    finally:
        db.close()
    return store / "packs" / name, offset, size


def the_blob_file(store: Path) -> Path:
    (path,) = [p for p in (store / "blobs").rglob("*") if p.is_file()]
    return path


@requires_root
@requires_nix
def test_packed_blobs_of_a_store_on_tmpfs_read_back(tmp_path: Path) -> None:
    # tmpfs refuses RWF_NOWAIT reads (EOPNOTSUPP): the store reads the plain way.
    with mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", tmp_path / "tmpfs"):
        store = tmp_path / "tmpfs" / "store"
        tree = small_tree(tmp_path / "tree")
        (path,) = import_paths(store, tree)
        assert nar_of(store, path) == nix_dump(tree)


@requires_root
@requires_nix
def test_read_only_commands_work_on_a_read_only_bind_mount(tmp_path: Path, store: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (path,) = import_paths(store, tree)
    view = tmp_path / "ro"
    with mount("--bind", "-o", "ro", store, view):
        assert nar_of(view, path) == nix_dump(tree)
        for command in (["path-info", path], ["verify"], ["info"], ["ls", path]):
            result = run_tvixmount(*command, "--store", view)
            assert result.returncode == 0, (command, result.stderr)
        (tmp_path / "new").write_bytes(b"new\n")
        for writer in (["import", str(tmp_path / "new")], ["gc"], ["delete", path]):
            one_error_line(run_tvixmount(*writer, "--store", view))


@requires_root
@pytest.mark.skipif(shutil.which("capsh") is None, reason="needs capsh")
def test_read_only_commands_work_on_a_store_of_another_owner(tmp_path: Path, store: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (path,) = import_paths(store, tree)
    for entry in [store, *store.rglob("*")]:
        os.chown(entry, 1000, 1000, follow_symlinks=False)
    # Root without the capabilities that override file permissions: like any other user.
    drop = "--drop=cap_dac_override,cap_dac_read_search,cap_fowner,cap_chown"
    for command in (["path-info", path], ["verify"], ["info"], ["nar", path]):
        argv = shlex.join([*tvixmount_command(*command, "--store", store)])
        result = subprocess.run(
            ["capsh", drop, "--", "-c", f"{argv} > /dev/null"], capture_output=True, text=True
        )
        assert result.returncode == 0, (command, result.stderr)


def test_a_fifo_where_a_pack_should_be_is_one_line(tmp_path: Path, store: Path) -> None:
    (path,) = import_paths(store, small_tree(tmp_path / "tree"))
    pack, _, _ = packed_location(store)
    pack.unlink()
    os.mkfifo(pack)
    line = one_error_line(run_tvixmount("nar", path, "--store", store, timeout=60))
    assert "not a regular file" in line, line
    damage = run_tvixmount("verify", "--store", store, timeout=60)
    assert damage.returncode == 1
    assert f"path '{path}' is damaged" in damage.stderr and "not a regular file" in damage.stderr


def test_a_fifo_where_a_blob_file_should_be_is_one_line(tmp_path: Path, store: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(300_000))
    (path,) = import_paths(store, tmp_path / "big")
    blob = the_blob_file(store)
    blob.unlink()
    os.mkfifo(blob)
    line = one_error_line(run_tvixmount("nar", path, "--store", store, timeout=60))
    assert "not a regular file" in line, line


def test_a_blob_file_replaced_by_a_directory_is_one_line(tmp_path: Path, store: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(300_000))
    (path,) = import_paths(store, tmp_path / "big")
    blob = the_blob_file(store)
    blob.unlink()
    blob.mkdir()
    line = one_error_line(run_tvixmount("nar", path, "--store", store))
    assert "is a directory" in line, line


def test_a_file_that_became_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    # What the walker meets when a file it saw is swapped for a FIFO before it opens it.
    fifo = tmp_path / "was-a-file"
    os.mkfifo(fifo)
    script = textwrap.dedent(
        """
        import sys
        from tvixmount.castore.ingest import _read_file
        from tvixmount.errors import IngestError
        try:
            list(_read_file(sys.argv[1].encode(), 10))
        except IngestError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(fifo)], capture_output=True, text=True, timeout=60
    )
    assert "changed into a FIFO" in result.stdout, result.stderr


@requires_root
def test_disk_full_during_import_is_one_line(tmp_path: Path) -> None:
    with mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", tmp_path / "small"):
        store = tmp_path / "small" / "store"
        tree = tmp_path / "tree"
        tree.mkdir()
        for i in range(6):
            (tree / f"big{i}").write_bytes(os.urandom(1 << 20))
        line = one_error_line(run_tvixmount("import", tree, "--store", store))
        assert "No space left" in line or "full" in line, line


@pytest.mark.parametrize(
    ("column", "value"), [("offset", -5), ("size", 10**9), ("offset", "garbage")]
)
def test_a_corrupt_pack_index_entry_is_one_line(
    tmp_path: Path, store: Path, column: str, value: object
) -> None:
    (path,) = import_paths(store, small_tree(tmp_path / "tree"))
    db = sqlite3.connect(store / "store.sqlite")
    with db:
        db.execute(f"UPDATE packed_blobs SET {column} = ?", (value,))
    db.close()
    line = one_error_line(run_tvixmount("nar", path, "--store", store))
    assert "corrupt" in line, line
    damage = run_tvixmount("verify", "--store", store)
    assert damage.returncode == 1
    assert f"path '{path}' is damaged" in damage.stderr and "corrupt" in damage.stderr


def test_a_database_with_garbage_pages_is_one_line(tmp_path: Path, store: Path) -> None:
    (path,) = import_paths(store, small_tree(tmp_path / "tree"))
    database = store / "store.sqlite"
    db = sqlite3.connect(database)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    size = database.stat().st_size
    with database.open("r+b") as f:
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    for command in (["nar", path], ["verify"], ["info"], ["gc"]):
        one_error_line(run_tvixmount(*command, "--store", store))


def test_temp_files_of_a_dead_import_are_removed_by_the_next_import(
    tmp_path: Path, store: Path
) -> None:
    import_paths(store, small_tree(tmp_path / "tree"))
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = store / "tmp" / f"blob-{gone.pid}-7f0000000000-3"
    leftover.write_bytes(b"half a blob" * 1000)
    (tmp_path / "next").write_bytes(b"next\n")
    import_paths(store, tmp_path / "next")
    assert not leftover.exists()


@pytest.mark.parametrize("command", ["path-info", "import"])
def test_an_empty_database_is_refused_not_recreated(
    tmp_path: Path, store: Path, command: str
) -> None:
    (path,) = import_paths(store, small_tree(tmp_path / "tree"))
    for name in ("store.sqlite-wal", "store.sqlite-shm"):
        (store / name).unlink(missing_ok=True)
    (store / "store.sqlite").write_bytes(b"")
    argument = path if command == "path-info" else str(tmp_path / "tree")
    line = one_error_line(run_tvixmount(command, argument, "--store", store))
    assert "empty" in line, line
    assert (store / "store.sqlite").stat().st_size == 0
