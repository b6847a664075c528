"""``tvixmount copy`` from the embedded store into a ``file://`` cache.

That copy runs without an event loop (:mod:`tvixmount.loopless`) and begins
each path before it finishes the one before; real Nix reads what it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.housekeeping import import_paths, one_error_line
from tests.mounting import run_tvixmount, tvixmount_command
from tests.nixcache import (
    NIX_FLAGS,
    NixCache,
    build_cache,
    copy_from_args,
    generate_key,
    narinfo_name,
    nix_hash,
    requires_nix,
)
from tests.stores.binarycache.test_copy import in_chroot, nix_reads
from tests.stores.local.blobs import opened
from tvixmount.castore import B3Digest
from tvixmount.nar.narinfo import Narinfo

pytestmark = requires_nix


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("copy-loopless")


@pytest.fixture(scope="module")
def source(workdir: Path) -> NixCache:
    """A Nix-written, signed cache: two trees and a text path referring to the first."""
    return build_cache(workdir / "source", "zstd", key=generate_key(workdir, "source-1"), trees=2)


@pytest.fixture(scope="module")
def embedded(source: NixCache, workdir: Path) -> Path:
    """An embedded store holding every path of ``source``."""
    store = workdir / "store"
    done = run_tvixmount(
        "copy", *copy_from_args(source, workdir / "local"), "--to", store, *source.paths
    )
    assert done.returncode == 0, done.stderr
    return store


@pytest.mark.parametrize("compression", ["none", "zstd", "bzip2"])  # xz: test_copy
def test_a_closure_from_the_embedded_store_is_read_back_by_nix(
    source: NixCache, embedded: Path, tmp_path: Path, compression: str
):
    our_key = generate_key(tmp_path, "copy-1")
    dest = tmp_path / "dest"
    done = run_tvixmount(
        "copy",
        "--from",
        embedded,
        "--to",
        f"file://{dest}?compression={compression}",
        "--secret-key",
        our_key.secret_file,
        "--json",
        *source.paths,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    copied = json.loads(done.stdout)
    assert {entry["path"] for entry in copied} == set(source.paths)
    assert all(entry["copied"] for entry in copied)
    order = [entry["path"] for entry in copied]
    assert order.index(source.paths[0]) < order.index(source.paths[-1])  # references first
    read = nix_reads(f"file://{dest}", tmp_path / "chroot", source.paths, our_key.public)
    assert read.returncode == 0, read.stderr
    for tree, original in source.trees.items():
        assert nix_hash(in_chroot(tmp_path / "chroot", tree)) == nix_hash(original)
    listed = subprocess.run(
        ["nix", *NIX_FLAGS, "path-info", "-r", "--store", f"file://{dest}", source.paths[-1]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(listed.stdout.split()) == {source.paths[0], source.paths[-1]}
    for entry in copied:
        ours = Narinfo.parse((dest / narinfo_name(entry["path"])).read_text())
        assert ours.compression == compression
        assert [sig.name for sig in ours.signatures] == ["source-1", "copy-1"]
    assert not list(dest.rglob(".tmp-*"))


def test_a_store_out_of_the_page_cache_copies_the_same(
    source: NixCache, embedded: Path, tmp_path: Path
):
    """Reads that miss the page cache (no RWF_NOWAIT answer) are done inline too."""

    def copy_to(dest: Path) -> list[str]:
        done = run_tvixmount(
            "copy", "--from", embedded, "--to", f"file://{dest}?compression=none", *source.paths
        )
        assert done.returncode == 0, done.stderr
        # Uncompressed, a NAR is named by its SHA-256: the names say the bytes.
        return sorted(str(p.relative_to(dest)) for p in dest.rglob("*.nar*"))

    warm = copy_to(tmp_path / "warm")
    for stored in [*embedded.glob("blobs/*/*"), *embedded.glob("packs/*")]:
        fd = os.open(stored, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    assert copy_to(tmp_path / "cold") == warm


def test_the_copy_never_imports_trio(source: NixCache, embedded: Path, tmp_path: Path):
    argv = tvixmount_command(
        "copy", "--from", embedded, "--to", f"file://{tmp_path}/dest", *source.paths
    )
    assert argv[0] == sys.executable
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "tvixmount.stores.local.castore" in imported
    assert "trio" not in imported


def test_a_corrupt_blob_stops_the_copy_with_one_line_and_no_narinfo(tmp_path: Path):
    fine, damaged = tmp_path / "fine", tmp_path / "damaged"
    for tree in (fine, damaged):
        tree.mkdir()
        (tree / "small").write_bytes(os.urandom(1000))
    big = os.urandom(3 << 20)  # a blob file of its own, bigger than a pack's blobs
    (damaged / "big").write_bytes(big)
    store = tmp_path / "store"
    paths = import_paths(store, fine, damaged)
    with opened(store) as services:
        location = services.blobs.location_of(B3Digest.of(big))
        assert location is not None and location.offset == 0
        location.path.chmod(0o644)
        with location.path.open("r+b") as handle:
            handle.seek(len(big) - 1)
            handle.write(bytes([big[-1] ^ 1]))
    dest = tmp_path / "dest"
    line = one_error_line(
        run_tvixmount("copy", "--from", store, "--to", f"file://{dest}?compression=zstd", *paths)
    )
    assert f"blob {B3Digest.of(big)} is corrupt" in line, line
    assert not (dest / narinfo_name(paths[1])).exists()
    for narinfo in dest.glob("*.narinfo"):
        assert (dest / Narinfo.parse(narinfo.read_text()).url).is_file()
    assert not list(dest.rglob(".tmp-*"))
