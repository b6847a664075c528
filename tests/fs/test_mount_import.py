"""Imported real trees served from the mount: programs run, Nix agrees on the bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounting import Mount, import_trees, mounted, requires_fuse, requires_nix
from tvixmount.demo import write_demo_tree
from tvixmount.pathinfo.model import PathInfo

pytestmark = requires_fuse

BUSYBOX = Path("/bin/busybox")


def _build_tree(root: Path) -> Path:
    """A tree with a script, a static binary, nesting, symlinks and an empty dir."""
    tree = root / "tree"
    shutil.copytree(write_demo_tree(root / "demo") / "hello", tree, symlinks=True)
    if BUSYBOX.exists():
        shutil.copy(BUSYBOX, tree / "bin" / "busybox")
    (tree / "empty").mkdir()
    (tree / "share" / "big").write_bytes(os.urandom(3 << 20))
    (tree / "dangling").symlink_to("/nix/store/does-not-exist")
    return tree


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, PathInfo]:
    base = tmp_path_factory.mktemp("import")
    tree = _build_tree(base)
    (info,) = import_trees(base / "store", tree)
    return tree, str(base / "store"), info


@pytest.fixture(scope="module")
def mnt(
    imported: tuple[Path, str, PathInfo], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    _, store, _ = imported
    with mounted(store, tmp_path_factory.mktemp("import-mnt") / "mnt") as mount:
        yield mount


def _served(mnt: Mount, info: PathInfo) -> Path:
    return mnt / str(info.store_path)


def test_shell_script_runs_from_the_mount(mnt: Mount, imported: tuple[Path, str, PathInfo]) -> None:
    _, _, info = imported
    result = subprocess.run(
        [_served(mnt, info) / "bin" / "hello"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("Hello from tvixmount")


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)")
def test_static_binary_runs_from_the_mount(
    mnt: Mount, imported: tuple[Path, str, PathInfo]
) -> None:
    _, _, info = imported
    result = subprocess.run(
        [_served(mnt, info) / "bin" / "busybox", "echo", "served"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "served\n"


def test_diff_between_source_and_mount_is_empty(
    mnt: Mount, imported: tuple[Path, str, PathInfo]
) -> None:
    tree, _, info = imported
    result = subprocess.run(
        ["diff", "-r", "--no-dereference", str(tree), str(_served(mnt, info))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@requires_nix
def test_nix_hash_of_the_mounted_path_equals_its_nar_hash(
    mnt: Mount, imported: tuple[Path, str, PathInfo]
) -> None:
    _, _, info = imported
    result = subprocess.run(
        ["nix-hash", "--type", "sha256", str(_served(mnt, info))],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == info.narinfo.nar_sha256.hex()


@requires_nix
def test_nix_dump_of_the_mount_equals_dump_of_the_source(
    mnt: Mount, imported: tuple[Path, str, PathInfo]
) -> None:
    tree, _, info = imported
    served = subprocess.run(
        ["nix-store", "--dump", str(_served(mnt, info))], capture_output=True, check=True
    ).stdout
    source = subprocess.run(["nix-store", "--dump", str(tree)], capture_output=True, check=True)
    assert served == source.stdout
