"""Building fixture specs: exact tvix fixtures, reproducible paths, and real Nix as the oracle."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tvixmount import nixbase32
from tvixmount.castore import B3Digest
from tvixmount.castore.blobservice import read_all
from tvixmount.nar.narinfo import Narinfo
from tvixmount.pathinfo.model import CAHash
from tvixmount.storepath import StorePath
from tvixmount.stores import Store, open_store
from tvixmount.testing.build import BuiltFixture, build_fixture, write_nix_cache
from tvixmount.testing.mounts import tvixmount_command
from tvixmount.testing.spec import load_spec, parse_spec

FIXTURES = Path(__file__).parent.parent / "fixtures"
TVIX_SPEC = FIXTURES / "tvix.toml"
DEMO_SPEC = FIXTURES / "demo.toml"
NIX_FLAGS = ("--extra-experimental-features", "nix-command")

requires_nix = pytest.mark.skipif(
    shutil.which("nix-store") is None or shutil.which("nix") is None,
    reason="needs Nix (nix, nix-store) as the oracle",
)


def tvixmount(
    *args: str | os.PathLike[str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        tvixmount_command(*args),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def nix(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nix", *NIX_FLAGS, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def sri(digest: bytes) -> str:
    return "sha256-" + base64.b64encode(digest).decode()


@pytest.fixture
async def memory_store() -> AsyncIterator[Store]:
    store = open_store("memory://")
    try:
        yield store
    finally:
        await store.aclose()


# -- the tvix fixture set ---------------------------------------------------


async def test_tvix_spec_builds_exactly_the_tvix_root_nodes(memory_store: Store) -> None:
    built = await build_fixture(load_spec(TVIX_SPEC), memory_store)
    assert {p.path_info.node for p in built.paths} == set(fx.ROOT_NODES)
    assert len(built.paths) == len(fx.ROOT_NODES)


async def test_tvix_spec_builds_exactly_the_tvix_directories(memory_store: Store) -> None:
    await build_fixture(load_spec(TVIX_SPEC), memory_store)
    for directory in fx.DIRECTORIES:
        assert await memory_store.directories.get(directory.digest()) == directory


async def test_tvix_spec_builds_exactly_the_tvix_blobs(memory_store: Store) -> None:
    await build_fixture(load_spec(TVIX_SPEC), memory_store)
    for blob in fx.BLOBS:
        reader = await memory_store.blobs.open_read(B3Digest.of(blob))
        assert reader is not None
        try:
            assert await read_all(reader) == blob
        finally:
            await reader.aclose()


async def test_pinned_paths_claim_no_content_address(memory_store: Store) -> None:
    built = await build_fixture(load_spec(TVIX_SPEC), memory_store)
    assert {p.path_info.narinfo.ca for p in built.paths} == {None}


# -- path infos of computed paths --------------------------------------------


async def build_demo(store: Store) -> BuiltFixture:
    return await build_fixture(load_spec(DEMO_SPEC), store)


async def test_references_and_reference_names_point_at_the_referenced_path(
    memory_store: Store,
) -> None:
    built = await build_demo(memory_store)
    info = built.paths[-1].path_info
    assert info.references == (built["lib"].digest,)
    assert info.narinfo.reference_names == (str(built["lib"]),)


async def test_unpinned_path_is_content_addressed_by_its_nar_hash(memory_store: Store) -> None:
    built = await build_demo(memory_store)
    narinfo = built.paths[-1].path_info.narinfo
    assert narinfo.ca is not None
    assert narinfo.ca.hash_type == CAHash.NAR_SHA256
    assert narinfo.ca.digest == narinfo.nar_sha256


async def test_placeholders_become_the_referenced_absolute_store_path(memory_store: Store) -> None:
    built = await build_fixture(
        parse_spec(
            '[[path]]\nname = "lib"\ntext = "l"\n[[path]]\nname = "app"\nsymlink = "@{lib}/bin"\n'
        ),
        memory_store,
    )
    node = built.paths[-1].path_info.node
    assert node.target == f"{built.absolute('lib')}/bin".encode()  # type: ignore[union-attr]


async def test_stored_path_info_is_the_built_one(memory_store: Store) -> None:
    built = await build_demo(memory_store)
    for item in built.paths:
        assert await memory_store.pathinfos.get(item.store_path.digest) == item.path_info


async def test_bad_spec_puts_no_path_info(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[[path]]\nname = "a"\ntext = "@{missing}"\n')
    result = tvixmount("fixture", "build", tmp_path / "bad.toml", "--store", tmp_path / "store")
    assert result.returncode == 1
    assert not (tmp_path / "store").exists()


def test_bad_spec_is_one_error_line_with_file_and_line(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[[path]]\nname = "a"\nfiles."x" = { symlink = "" }\n')
    result = tvixmount("fixture", "build", spec, "--store", "memory://")
    assert result.stderr.splitlines() == [
        f"tvixmount: error: {spec}:3: symlink with an empty target"
    ]


def test_bad_spec_writes_no_binary_cache(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[[path]]\nname = "a b"\ntext = ""\n')
    tvixmount(
        "fixture",
        "build",
        tmp_path / "bad.toml",
        "--store",
        "memory://",
        "--nix-cache",
        tmp_path / "cache",
    )
    assert not (tmp_path / "cache").exists()


# -- the same spec, the same paths --------------------------------------------

SOURCE_SPEC = """
[[path]]
name = "data"
files."blob.bin" = { source = "blob.bin" }
files."big" = { generate = { size = 3000000, pattern = "random", seed = 7 } }

[[path]]
name = "app"
files."bin/app" = { text = "#!/bin/sh\\ncat @{data}/blob.bin\\n", executable = true }
"""


def copy_spec_to(directory: Path) -> Path:
    directory.mkdir()
    (directory / "blob.bin").write_bytes(bytes(range(256)))
    spec = directory / "spec.toml"
    spec.write_text(SOURCE_SPEC)
    return spec


def test_cli_prints_store_paths_dependencies_first(tmp_path: Path) -> None:
    result = tvixmount("fixture", "build", DEMO_SPEC, "--store", tmp_path / "store")
    assert result.returncode == 0, result.stderr
    names = [StorePath.parse(line).name for line in result.stdout.splitlines()]
    assert names == ["hello-lib-1.0", "hello-2.12"]


def test_same_spec_builds_same_paths_in_two_directories(tmp_path: Path) -> None:
    outputs = []
    for run in ("one", "two"):
        spec = copy_spec_to(tmp_path / run)
        # Each run in its own process, working directory and store.
        result = tvixmount(
            "fixture", "build", spec.name, "--store", tmp_path / f"store-{run}", cwd=spec.parent
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 2


# -- real Nix as the oracle -----------------------------------------------------


@requires_nix
def test_unreferenced_path_is_where_nix_store_add_puts_it(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "run").write_text("#!/bin/sh\n")
    (tree / "bin" / "run").chmod(0o755)
    (tree / "README").write_text("readme\n")
    (tree / "link").symlink_to("README")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[[path]]\nname = "tree"\n'
        'files."bin/run" = { text = "#!/bin/sh\\n", executable = true }\n'
        'files."README" = { text = "readme\\n" }\n'
        'files."link" = { symlink = "README" }\n'
    )
    built = tvixmount("fixture", "build", spec, "--store", "memory://")
    added = subprocess.run(
        ["nix-store", "--store", tmp_path / "nix", "--add", tree],
        capture_output=True,
        text=True,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    assert built.stdout == added.stdout


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The demo spec written as an xz binary cache, and its store paths."""
    base = tmp_path_factory.mktemp("demo-cache")
    result = tvixmount(
        "fixture", "build", DEMO_SPEC, "--store", "memory://", "--nix-cache", base / "cache"
    )
    assert result.returncode == 0, result.stderr
    return base / "cache", result.stdout.split()


@requires_nix
def test_nix_accepts_the_content_addressed_paths_without_signatures(
    demo_cache: tuple[Path, list[str]], tmp_path: Path
) -> None:
    # Nix only trusts unsigned paths whose CA recomputes to their store path,
    # so this checks the path computation, references included.
    cache, paths = demo_cache
    result = nix("copy", "--from", f"file://{cache}", "--to", tmp_path / "scratch", *paths)
    assert result.returncode == 0, result.stderr


@requires_nix
def test_nix_refuses_an_unsigned_pinned_path(tmp_path: Path) -> None:
    # The converse of the test above: a pin is not content-addressed.
    result = tvixmount(
        "fixture", "build", TVIX_SPEC, "--store", "memory://", "--nix-cache", tmp_path / "cache"
    )
    copied = nix(
        "copy",
        "--from",
        f"file://{tmp_path / 'cache'}",
        "--to",
        tmp_path / "scratch",
        result.stdout.split()[0],
    )
    assert copied.returncode != 0
    assert "signature" in copied.stderr


@requires_nix
@pytest.mark.parametrize("spec", [DEMO_SPEC, TVIX_SPEC], ids=["demo", "tvix"])
@pytest.mark.parametrize("compression", ["none", "xz"])
def test_nix_path_info_agrees_with_the_narinfo_nar_hash(
    spec: Path, compression: str, tmp_path: Path
) -> None:
    cache, scratch = tmp_path / "cache", tmp_path / "scratch"
    result = tvixmount(
        "fixture",
        "build",
        spec,
        "--store",
        "memory://",
        "--nix-cache",
        cache,
        "--compression",
        compression,
    )
    paths = result.stdout.split()
    copied = nix("copy", "--no-check-sigs", "--from", f"file://{cache}", "--to", scratch, *paths)
    assert copied.returncode == 0, copied.stderr
    infos = json.loads(nix("path-info", "--store", scratch, "--json", *paths).stdout)
    narinfos = {
        n.store_path.absolute: n
        for n in (Narinfo.parse(f.read_text()) for f in cache.glob("*.narinfo"))
    }
    assert {i["path"]: (i["narHash"], i["narSize"]) for i in infos} == {
        path: (sri(n.nar_hash), n.nar_size) for path, n in narinfos.items()
    }


@requires_nix
def test_nix_verifies_the_copied_contents_against_their_nar_hashes(
    demo_cache: tuple[Path, list[str]], tmp_path: Path
) -> None:
    cache, paths = demo_cache
    scratch = tmp_path / "scratch"
    nix("copy", "--from", f"file://{cache}", "--to", scratch, *paths)
    # Both re-hash the store paths on disk and compare with the recorded NarHash.
    verified = nix("store", "verify", "--store", scratch, "--no-trust", *paths)
    assert verified.returncode == 0, verified.stderr
    for path in paths:
        checked = subprocess.run(
            ["nix-store", "--store", scratch, "--verify-path", path],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr


@requires_nix
def test_nix_sees_the_spec_contents(demo_cache: tuple[Path, list[str]], tmp_path: Path) -> None:
    cache, paths = demo_cache
    scratch = tmp_path / "scratch"
    nix("copy", "--from", f"file://{cache}", "--to", scratch, *paths)
    lib, hello = paths
    root = scratch / hello.lstrip("/")
    assert (root / "bin" / "hello").read_text().splitlines()[1] == f". {lib}/lib/greeting.sh"
    assert os.access(root / "bin" / "hello", os.X_OK)
    assert os.readlink(root / "lib" / "hello-lib") == f"{lib}/lib"
    assert (root / "share" / "man").is_dir()


async def test_write_nix_cache_names_nar_files_by_their_file_hash(
    memory_store: Store, tmp_path: Path
) -> None:
    built = await build_demo(memory_store)
    await write_nix_cache(built, memory_store, tmp_path, "none")
    for file in tmp_path.glob("*.narinfo"):
        narinfo = Narinfo.parse(file.read_text())
        assert narinfo.file_hash is not None
        nar = (tmp_path / narinfo.url).read_bytes()
        assert narinfo.url == f"nar/{nixbase32.encode(hashlib.sha256(nar).digest())}.nar"
        assert narinfo.file_hash.digest == narinfo.nar_hash == hashlib.sha256(nar).digest()
