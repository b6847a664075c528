"""Mounting Nix-written binary caches (file:// and loopback HTTP) with the real CLI."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.mounting import mounted, requires_fuse
from tests.nixcache import (
    COMPRESSIONS,
    NixCache,
    build_cache,
    generate_key,
    key_args,
    nix_hash,
    requires_nix,
    serve_directory,
)
from tvixmount import nixbase32

pytestmark = [requires_nix, requires_fuse]


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NixCache]:
    """A signed cache per compression; the zstd one also carries a copy of busybox."""
    workdir = tmp_path_factory.mktemp("mountcaches")
    key = generate_key(workdir, "mount-test-1")
    return {
        c: build_cache(workdir / c, c, key=key, trees=2, busybox=c == "zstd") for c in COMPRESSIONS
    }


def assert_mount_matches_nix(mount_root: Path, cache: NixCache) -> None:
    for path in cache.paths:
        mounted_path = mount_root / path.removeprefix("/nix/store/")
        assert nix_hash(mounted_path) == nixbase32.encode(cache.narinfos[path].nar_hash)
        tree = cache.trees.get(path)
        if tree is not None:
            diff = subprocess.run(
                ["diff", "-r", "--no-dereference", str(tree), str(mounted_path)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert diff.returncode == 0 and diff.stdout == "", diff.stdout + diff.stderr


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_mounted_file_cache_paths_hash_to_their_nar_hash(
    caches: dict[str, NixCache], compression: str, tmp_path: Path
):
    cache = caches[compression]
    cache_dir = str(tmp_path / "local")
    with mounted(cache.url, tmp_path / "mnt", "--cache-dir", cache_dir, *key_args(cache)) as mnt:
        assert_mount_matches_nix(mnt.path, cache)


def test_mounted_http_cache_paths_hash_to_their_nar_hash(
    caches: dict[str, NixCache], tmp_path: Path
):
    cache = caches["xz"]
    cache_dir = str(tmp_path / "local")
    with (
        serve_directory(cache.dir) as served,
        mounted(served.url, tmp_path / "mnt", "--cache-dir", cache_dir, *key_args(cache)) as mnt,
    ):
        assert_mount_matches_nix(mnt.path, cache)


def test_executables_run_from_the_mount(caches: dict[str, NixCache], tmp_path: Path):
    cache = caches["zstd"]
    tree_path = next(iter(cache.trees)).removeprefix("/nix/store/")
    cache_dir = str(tmp_path / "local")
    with mounted(cache.url, tmp_path / "mnt", "--cache-dir", cache_dir, *key_args(cache)) as mnt:
        script = subprocess.run(
            [str(mnt / tree_path / "hello.sh"), "works"], capture_output=True, text=True
        )
        assert script.stdout == "hello from the mount works\n"
        busybox = subprocess.run(
            [str(mnt / tree_path / "bin" / "busybox"), "echo", "busybox ran"],
            capture_output=True,
            text=True,
        )
        assert busybox.stdout == "busybox ran\n"


def test_cached_paths_are_served_by_a_new_mount_without_their_files(
    caches: dict[str, NixCache], tmp_path: Path
):
    original = caches["none"]
    cache = NixCache(
        tmp_path / "copy", original.paths, original.trees, original.key, "none", original.narinfos
    )
    shutil.copytree(original.dir, cache.dir)
    cache_dir = str(tmp_path / "local")
    with mounted(cache.url, tmp_path / "mnt", "--cache-dir", cache_dir, *key_args(cache)) as mnt:
        assert_mount_matches_nix(mnt.path, cache)
    for entry in cache.dir.iterdir():
        if entry.name != "nix-cache-info":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    with mounted(cache.url, tmp_path / "mnt", "--cache-dir", cache_dir, *key_args(cache)) as mnt:
        assert_mount_matches_nix(mnt.path, cache)


def test_bad_paths_are_absent_or_eio_and_the_mount_keeps_serving(tmp_path: Path):
    key = generate_key(tmp_path, "k-1")
    cache = build_cache(
        tmp_path / "nix", "xz", key=key, trees=3, with_reference=False, content_addressed=False
    )
    wrong_sig, wrong_nar, good = cache.paths
    text = cache.narinfo_file(wrong_sig).read_text()
    size = cache.narinfos[wrong_sig].nar_size
    cache.rewrite_narinfo(wrong_sig, text.replace(f"NarSize: {size}", f"NarSize: {size + 8}"))
    nar = cache.nar_file(wrong_nar)
    nar.write_bytes(nar.read_bytes()[:-64])
    cache_dir = str(tmp_path / "local")
    with mounted(cache.url, tmp_path / "mnt", "--cache-dir", cache_dir, *key_args(cache)) as mnt:
        # An untrusted narinfo is not served at all (as Nix's require-sigs); a signed
        # one whose NAR is damaged is a store error.
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / wrong_sig.removeprefix("/nix/store/"))
        with pytest.raises(OSError) as caught:
            os.stat(mnt / wrong_nar.removeprefix("/nix/store/"))
        assert caught.value.errno == errno.EIO
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "00000000000000000000000000000000-absent")
        assert nix_hash(mnt / good.removeprefix("/nix/store/")) == nixbase32.encode(
            cache.narinfos[good].nar_hash
        )
        log = mnt.log()
    assert "no valid signature" in log
    assert "FileSize" in log or "cannot decompress" in log
