"""``tvixmount copy`` into ``file://`` caches and castore stores; real Nix reads what it wrote."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.measured import run_measured
from tests.grpc_serving import serving
from tests.mounting import run_tvixmount, tvixmount_command
from tests.nixcache import (
    NIX_FLAGS,
    NixCache,
    SigningKey,
    build_cache,
    copy_from_args,
    generate_key,
    narinfo_name,
    nix_copy,
    nix_hash,
    requires_nix,
)
from tvixmount.nar.narinfo import Narinfo

pytestmark = requires_nix

WRITTEN = ("none", "xz", "zstd", "bzip2")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("copy")


@pytest.fixture(scope="module")
def source(workdir: Path) -> NixCache:
    """A Nix-written, signed cache: two trees and a text path referring to the first."""
    return build_cache(workdir / "source", "zstd", key=generate_key(workdir, "source-1"), trees=2)


@pytest.fixture(scope="module")
def our_key(workdir: Path) -> SigningKey:
    return generate_key(workdir, "copy-1")


def copy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    done = run_tvixmount("copy", *args, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def nix_reads(
    cache_url: str, chroot: Path, paths: list[str], public_key: str
) -> subprocess.CompletedProcess[str]:
    """``nix copy --from CACHE --to CHROOT`` with signatures required under ``public_key``."""
    return subprocess.run(
        [
            "nix",
            *NIX_FLAGS,
            "copy",
            "--from",
            cache_url,
            "--to",
            str(chroot),
            *paths,
            "--option",
            "trusted-public-keys",
            public_key,
            "--option",
            "require-sigs",
            "true",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def in_chroot(chroot: Path, store_path: str) -> Path:
    return chroot / store_path.lstrip("/")


@pytest.mark.parametrize("compression", WRITTEN)
def test_copied_cache_is_read_back_by_nix_with_signatures_required(
    source: NixCache, our_key: SigningKey, tmp_path: Path, compression: str
):
    tree = next(iter(source.trees))
    dest = tmp_path / "dest"
    copy(
        *copy_from_args(source, tmp_path / "local"),
        "--to",
        f"file://{dest}?compression={compression}",
        "--secret-key",
        our_key.secret_file,
        tree,
    )
    read = nix_reads(f"file://{dest}", tmp_path / "chroot", [tree], our_key.public)
    assert read.returncode == 0, read.stderr
    assert nix_hash(in_chroot(tmp_path / "chroot", tree)) == nix_hash(source.trees[tree])
    ours = Narinfo.parse((dest / narinfo_name(tree)).read_text())
    assert ours.compression == compression
    assert (dest / ours.url).name.endswith({"none": ".nar", "xz": ".nar.xz"}.get(compression, ""))
    # The source's signature is kept, ours added.
    assert [sig.name for sig in ours.signatures] == ["source-1", "copy-1"]
    assert (dest / "nix-cache-info").read_text() == "StoreDir: /nix/store\n"
    assert not list(dest.rglob(".tmp-*"))


def test_uncompressed_narinfo_is_the_one_nix_writes(source: NixCache, tmp_path: Path):
    nix_dir = tmp_path / "nix"
    nix_copy(source.paths, nix_dir, "none")
    dest = tmp_path / "dest"
    copy(
        *copy_from_args(source, tmp_path / "local"),
        "--to",
        f"file://{dest}?compression=none",
        *source.paths,
    )
    for path in source.paths:
        name = narinfo_name(path)
        assert (dest / name).read_text() == (nix_dir / name).read_text()
    assert sorted(p.name for p in (dest / "nar").iterdir()) == sorted(
        p.name for p in (nix_dir / "nar").iterdir()
    )


def build_input_addressed(workdir: Path) -> str:
    """A derivation output: input-addressed (no CA), with a Deriver."""
    salt = secrets.token_hex(8)
    expression = (
        f'derivation {{ name = "ia-{salt}"; system = builtins.currentSystem; '
        f'builder = "/bin/sh"; args = [ "-c" "echo {salt} > $out" ]; }}'
    )
    done = subprocess.run(
        ["nix-build", "--option", "sandbox", "false", "--no-out-link", "-E", expression],
        capture_output=True,
        text=True,
        check=True,
        cwd=workdir,
    )
    return done.stdout.strip()


def test_input_addressed_path_signed_by_copy_is_refused_under_another_key(
    our_key: SigningKey, tmp_path: Path
):
    path = build_input_addressed(tmp_path)
    nix_cache = tmp_path / "nix"
    nix_copy([path], nix_cache, "xz")
    dest = tmp_path / "dest"
    unsigned = run_tvixmount(
        "copy", "--from", f"file://{nix_cache}", "--cache-dir", tmp_path / "local",
        "--to", f"file://{dest}", path,
    )  # fmt: skip
    assert unsigned.returncode == 1  # Nix's require-sigs: the source's path is not signed
    assert not list(dest.glob("*.narinfo"))
    copy(
        "--from",
        f"file://{nix_cache}",
        "--no-require-sigs",
        "--cache-dir",
        tmp_path / "local",
        "--to",
        f"file://{dest}?secret-key={our_key.secret_file}",
        path,
    )
    narinfo = Narinfo.parse((dest / narinfo_name(path)).read_text())
    assert narinfo.ca is None and narinfo.deriver is not None
    other = generate_key(tmp_path, "other-1")
    refused = nix_reads(f"file://{dest}", tmp_path / "refused", [path], other.public)
    assert refused.returncode != 0
    assert "signature" in refused.stderr
    accepted = nix_reads(f"file://{dest}", tmp_path / "accepted", [path], our_key.public)
    assert accepted.returncode == 0, accepted.stderr
    assert (tmp_path / "accepted" / path.lstrip("/")).read_text() == (Path(path)).read_text()


def test_closure_copied_from_a_nix_cache_is_listed_whole_by_nix(source: NixCache, tmp_path: Path):
    referrer = source.paths[-1]  # refers to the first tree
    dest = tmp_path / "dest"
    first = json.loads(
        copy(
            *copy_from_args(source, tmp_path / "local"),
            "--to",
            f"file://{dest}?compression=zstd",
            "--json",
            referrer,
        ).stdout
    )
    closure = {referrer, source.paths[0]}
    assert {entry["path"] for entry in first} == closure
    assert all(entry["copied"] for entry in first)
    assert first[-1]["path"] == referrer  # references first
    listed = subprocess.run(
        ["nix", *NIX_FLAGS, "path-info", "-r", "--store", f"file://{dest}", referrer],
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(listed.stdout.split()) == closure
    again = json.loads(
        copy(
            *copy_from_args(source, tmp_path / "local"),
            "--to",
            f"file://{dest}",
            "--json",
            referrer,
        ).stdout
    )
    assert not any(entry["copied"] for entry in again)


def test_no_recursive_copies_only_the_named_path(source: NixCache, tmp_path: Path):
    referrer = source.paths[-1]
    dest = tmp_path / "dest"
    copy(
        *copy_from_args(source, tmp_path / "local"),
        "--to",
        f"file://{dest}",
        "--no-recursive",
        referrer,
    )
    assert sorted(p.name for p in dest.glob("*.narinfo")) == [narinfo_name(referrer)]


def test_copy_into_an_embedded_store_serves_the_same_nar(source: NixCache, tmp_path: Path):
    store = tmp_path / "store"
    referrer = source.paths[-1]
    copy(*copy_from_args(source, tmp_path / "local"), "--to", store, referrer)
    for path in (referrer, source.paths[0]):
        ours = subprocess.run(
            tvixmount_command("nar", path, "--store", store), capture_output=True, check=True
        ).stdout
        theirs = subprocess.run(["nix-store", "--dump", path], capture_output=True, check=True)
        assert ours == theirs.stdout
    # And from the embedded store on to a cache Nix reads.
    dest = tmp_path / "dest"
    copy("--from", store, "--to", f"file://{dest}?compression=xz", referrer)
    assert source.key is not None
    read = nix_reads(f"file://{dest}", tmp_path / "chroot", [referrer], source.key.public)
    assert read.returncode == 0, read.stderr


def random_path(tmp_path: Path, size: int) -> tuple[Path, str]:
    """An embedded store holding one path: a file of ``size`` random bytes; the path."""
    tree = tmp_path / "big"
    tree.mkdir()
    with (tree / "random").open("wb") as handle:
        for start in range(0, size, 1 << 24):
            handle.write(secrets.token_bytes(min(1 << 24, size - start)))
    store = tmp_path / "store"
    imported = run_tvixmount("import", tree, "--store", store, timeout=300)
    assert imported.returncode == 0, imported.stderr
    (tree / "random").unlink()
    return store, imported.stdout.strip()


def test_interrupted_copy_leaves_no_narinfo_without_its_nar(tmp_path: Path):
    store, path = random_path(tmp_path, 48 << 20)  # xz takes seconds on it
    dest = tmp_path / "dest"
    process = subprocess.Popen(
        tvixmount_command("copy", "--from", store, "--to", f"file://{dest}", path),
        stderr=subprocess.PIPE,
        text=True,
    )
    while process.poll() is None and not list(dest.glob("nar/.tmp-*")):
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (0, 130), stderr
    assert not list(dest.rglob(".tmp-*"))
    for narinfo in dest.glob("*.narinfo"):
        assert (dest / Narinfo.parse(narinfo.read_text()).url).is_file()
    if process.returncode == 130:
        assert not list(dest.glob("*.narinfo"))


def test_bad_input_is_one_line(source: NixCache, tmp_path: Path):
    missing = "/nix/store/" + "0" * 32 + "-absent"
    cases: list[list[str | Path]] = [
        [*copy_from_args(source, tmp_path / "local"), "--to", f"file://{tmp_path}/d", missing],
        ["--from", source.url, "--to", "http://127.0.0.1:9/cache", source.paths[0]],
        ["--to", f"file://{tmp_path}/d?compression=lz4", source.paths[0]],
        ["--to", f"file://{tmp_path}/d", "--secret-key", tmp_path / "nokey", source.paths[0]],
    ]
    for args in cases:
        done = run_tvixmount("copy", *args)
        assert done.returncode == 1, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("tvixmount: error: ")


def test_copy_into_a_grpc_store_and_from_it_to_a_cache(source: NixCache, tmp_path: Path):
    referrer = source.paths[-1]
    with serving(str(tmp_path / "served"), tmp_path / "serve.log", writable=True) as served:
        copy(*copy_from_args(source, tmp_path / "local"), "--to", served.url, referrer)
        ours = subprocess.run(
            tvixmount_command("nar", referrer, "--store", served.url),
            capture_output=True,
            check=True,
        ).stdout
        assert ours == subprocess.run(["nix-store", "--dump", referrer], capture_output=True).stdout
        dest = tmp_path / "dest"
        copy("--from", served.url, "--to", f"file://{dest}?compression=bzip2", referrer)
    assert source.key is not None
    read = nix_reads(f"file://{dest}", tmp_path / "chroot", [referrer], source.key.public)
    assert read.returncode == 0, read.stderr


def test_memory_stays_flat_whatever_the_nar_size(tmp_path: Path):
    size = 512 << 20
    store, path = random_path(tmp_path, size)
    code, lines, peak_kb = run_measured(
        "copy", "--from", store, "--to", f"file://{tmp_path}/dest?compression=zstd", path,
    )  # fmt: skip
    assert code == 0, lines
    peak = peak_kb << 10
    assert peak < size // 2, f"peak RSS {peak >> 20} MiB for a {size >> 20} MiB NAR"
