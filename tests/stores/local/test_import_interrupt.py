"""Interrupted imports: signals stop them cleanly; SIGKILL at any point leaves a sound store.

After a kill the store opens, verifies, shows no half-imported path, keeps
every earlier path intact, and gc brings its disk usage back to within a few
percent of what it was before the import. A gc running during an import
never takes what the import is writing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.local_tree import make_tree, nix_dump, requires_nix
from tests.housekeeping import disk_bytes, import_paths, json_of, nar_of
from tests.mounting import run_tvixmount, tvixmount_command

pytestmark = requires_nix

BIG_FILES = 4
BIG_FILE = 16 << 20
DIRS = 40
FILES_PER_DIR = 200


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big") / "tree"
    for d in range(DIRS):
        (root / f"d{d:02}").mkdir(parents=True)
        for f in range(FILES_PER_DIR):
            (root / f"d{d:02}" / f"f{f}").write_bytes(os.urandom(700) + f"{d}/{f}".encode())
    for b in range(BIG_FILES):
        (root / f"big{b}").write_bytes(os.urandom(BIG_FILE))
    return root


@pytest.fixture(scope="module")
def many_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mostly Directories: its import spends much of its time storing them."""
    root = tmp_path_factory.mktemp("dirs") / "tree"
    for a in range(60):
        for b in range(60):
            leaf = root / f"a{a}" / f"b{b}"
            leaf.mkdir(parents=True)
            (leaf / "x").write_bytes(f"{a}.{b}\n".encode())
    return root


class Store:
    """A store holding one earlier path, and what it took on disk before the import."""

    def __init__(self, root: Path, earlier_tree: Path) -> None:
        self.root = root
        self.earlier_tree = earlier_tree
        (self.earlier,) = import_paths(root, earlier_tree)
        self.before = disk_bytes(root)

    def start_import(self, tree: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            tvixmount_command("import", tree, "--store", self.root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def check_sound(self, tree: Path) -> None:
        """Opens, verifies, earlier path intact, no half path; gc frees what the import left."""
        infos = json_of("info", "--store", self.root)
        verified = run_tvixmount("verify", "--store", self.root, timeout=600)
        assert verified.returncode == 0, verified.stderr
        assert nar_of(self.root, self.earlier) == nix_dump(self.earlier_tree)
        listed = run_tvixmount("path-info", self.earlier, "--store", self.root)
        assert listed.returncode == 0
        if infos["paths"] == 2:
            # The kill came after the PathInfo: the path is whole (verify said so); drop it.
            (new,) = [p for p in _all_paths(self.root) if p != self.earlier]
            assert run_tvixmount("delete", new, "--store", self.root).returncode == 0
        else:
            assert infos["paths"] == 1
        json_of("gc", "--store", self.root)
        assert disk_bytes(self.root) <= self.before * 1.05 + 64 * 1024
        assert list((self.root / "tmp").iterdir()) == []


def _all_paths(store: Path) -> list[str]:
    return [r["path"] for r in json_of("verify", "--store", store)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", make_tree(tmp_path / "earlier"))


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    """Until ``condition`` holds; fails if the import ended first."""
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, "the import finished before the point to kill it at"
        assert time.monotonic() < deadline
        time.sleep(0.002)


def files_in(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file())


def bytes_in(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> int:
    process.send_signal(sig)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- SIGKILL -------------------------------------------------------------------

KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    "while a big blob is being written": lambda root: files_in(root / "tmp") > 0,
    "once the packs took some small blobs": lambda root: bytes_in(root / "packs") > 200_000,
    "after some big blobs were committed": lambda root: files_in(root / "blobs") >= 3,
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_during_blob_writes_leaves_a_sound_store(
    store: Store, big_tree: Path, point: str
) -> None:
    process = store.start_import(big_tree)
    wait_for(lambda: KILL_POINTS[point](store.root), process)
    assert kill(process) == -signal.SIGKILL
    store.check_sound(big_tree)


def _clean_import_seconds(tree: Path, root: Path) -> float:
    started = time.monotonic()
    import_paths(root, tree)
    return time.monotonic() - started


@pytest.mark.parametrize("fraction", [0.6, 0.8, 0.9, 0.97])
def test_sigkill_late_in_an_import_of_many_directories_leaves_a_sound_store(
    tmp_path: Path, store: Store, many_dirs: Path, fraction: float
) -> None:
    # Late in this import the Directories and then the PathInfo are committed.
    seconds = _clean_import_seconds(many_dirs, tmp_path / "timing")
    process = store.start_import(many_dirs)
    time.sleep(seconds * fraction)
    kill(process)
    store.check_sound(many_dirs)


# --- SIGINT, SIGTERM -------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_an_import_and_leaves_no_temp_file(
    store: Store, big_tree: Path, sig: int
) -> None:
    process = store.start_import(big_tree)
    wait_for(lambda: files_in(store.root / "tmp") > 0, process)
    code = kill(process, sig)
    assert code == (130 if sig == signal.SIGINT else -signal.SIGTERM)
    assert process.stdout is not None and process.stdout.read() == b""
    assert list((store.root / "tmp").iterdir()) == []
    store.check_sound(big_tree)


# --- beside other commands ---------------------------------------------------------


def test_two_imports_into_one_store_at_once_both_succeed(
    tmp_path: Path, big_tree: Path, many_dirs: Path
) -> None:
    root = tmp_path / "fresh"
    processes = [
        subprocess.Popen(
            tvixmount_command("import", tree, "--store", root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tree in (big_tree, many_dirs)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in outputs]
    assert sorted(_all_paths(root)) == sorted(out.decode().strip() for out, _ in outputs)
    assert nar_of(root, outputs[0][0].decode().strip()) == nix_dump(big_tree)


def test_gc_while_an_import_runs_takes_nothing_it_writes(store: Store, big_tree: Path) -> None:
    process = store.start_import(big_tree)
    collections = 0
    while process.poll() is None:
        result = run_tvixmount("gc", "--store", store.root, timeout=600)
        assert result.returncode == 0, result.stderr
        collections += 1
    out, err = process.communicate()
    assert process.returncode == 0, err
    assert collections >= 1
    (path,) = out.decode().split()
    assert run_tvixmount("verify", "--store", store.root, timeout=600).returncode == 0
    assert nar_of(store.root, path) == nix_dump(big_tree)
