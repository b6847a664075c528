"""Through the mount, real Nix paths stat as they do in the real /nix/store (times 1).

The oracle is Nix itself: a tree is added with ``nix-store --add`` and
imported with ``tvixmount import`` into an embedded store (the same store
path), and every entry's ``lstat`` is compared.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.mounting import mounted, requires_fuse, requires_nix, run_tvixmount

pytestmark = [requires_fuse, requires_nix]


def _tree(root: Path) -> Path:
    """Every kind of entry Nix keeps: plain, executable and empty files, symlinks, nesting."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\nexit 0\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "share" / "doc" / "deep").mkdir(parents=True)
    (root / "share" / "doc" / "README").write_text("read me\n" * 1000)
    (root / "share" / "doc" / "deep" / "empty").write_bytes(b"")
    (root / "share" / "empty-dir").mkdir()
    (root / "lib").mkdir()
    (root / "lib" / "libx.so.1").write_bytes(bytes(range(256)) * 1200)
    (root / "lib" / "libx.so").symlink_to("libx.so.1")
    (root / "dangling").symlink_to("/nonexistent/target")
    (root / "share" / "up").symlink_to("../bin/tool")
    return root


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(store URL, store path) of the same tree in the real Nix store and an embedded store."""
    base = tmp_path_factory.mktemp("nixmeta")
    tree = _tree(base / "tvixmount-metadata-test")
    real = subprocess.run(
        ["nix-store", "--add", str(tree)], capture_output=True, text=True, check=True
    ).stdout.strip()
    url = str(base / "store")
    imported = run_tvixmount("import", tree, "--store", url)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == real
    return url, real


def _entries(root: Path) -> list[Path]:
    found = [Path(".")]
    for dirpath, dirnames, filenames in os.walk(root):
        relative = Path(dirpath).relative_to(root)
        found.extend(relative / name for name in sorted(dirnames + filenames))
    return sorted(found)


def test_every_entry_stats_as_in_the_real_nix_store(paths: tuple[str, str], tmp_path: Path) -> None:
    url, store_path = paths
    real_root = Path(store_path)
    entries = _entries(real_root)
    assert len(entries) == 14
    with mounted(url, tmp_path / "mnt") as mnt:
        mounted_root = mnt / real_root.name
        assert _entries(mounted_root) == entries
        for relative in entries:
            real = os.lstat(real_root / relative)
            ours = os.lstat(mounted_root / relative)
            what = f"{relative}: real {real}, mounted {ours}"
            assert stat.S_IFMT(ours.st_mode) == stat.S_IFMT(real.st_mode), what
            assert ours.st_mtime == real.st_mtime == 1, what
            assert ours.st_atime == ours.st_ctime == 1, what
            assert (ours.st_uid, ours.st_gid) == (0, 0), what
            if stat.S_ISLNK(real.st_mode):
                # DESIGN.md fixes symlinks at 0444 (Linux ignores a symlink's mode).
                assert os.readlink(mounted_root / relative) == os.readlink(real_root / relative)
                assert ours.st_size == real.st_size, what
                continue
            assert stat.S_IMODE(ours.st_mode) == stat.S_IMODE(real.st_mode), what
            if stat.S_ISREG(real.st_mode):
                assert ours.st_size == real.st_size, what
                if real.st_nlink == 1:  # not hard-linked by store optimisation
                    assert ours.st_nlink == 1, what
