"""``tvixmount verify``: names each damaged path and only those, exit 1; any store URL."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from tests.fixtures.local_tree import make_tree
from tests.grpc_serving import serving
from tests.housekeeping import import_paths, one_error_line, put_with_references
from tests.mounting import run_tvixmount
from tests.reliability import flip_blob_bit
from tvixmount.castore.nodes import DirectoryNode, FileNode
from tvixmount.pathinfo.model import PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores import open_store
from tvixmount.stores.local.store import open_local


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _unique_files(root: Path, tag: str) -> Path:
    root.mkdir(parents=True)
    (root / "small").write_bytes(f"small file only {tag} has\n".encode())
    (root / "big").write_bytes(tag.encode() + os.urandom(300_000))
    (root / "sub").mkdir()
    (root / "sub" / "x").write_bytes(f"x of {tag}\n".encode())
    return root


def _info(store: Path, path: str) -> PathInfo:
    async def get() -> PathInfo:
        opened = open_store(str(store))
        try:
            info = await opened.pathinfos.get(StorePath.parse(path).digest)
            assert info is not None
            return info
        finally:
            await opened.aclose()

    return trio.run(get)


def _file_digest(store: Path, path: str, name: bytes) -> bytes:
    node = _info(store, path).node
    assert isinstance(node, DirectoryNode)

    async def find() -> bytes:
        opened = open_store(str(store))
        try:
            directory = await opened.directories.get(node.digest)
            assert directory is not None
            child = directory.lookup(name)
            assert isinstance(child, FileNode)
            return bytes(child.digest)
        finally:
            await opened.aclose()

    return trio.run(find)


@pytest.fixture
def three(tmp_path: Path, store: Path) -> list[str]:
    return import_paths(
        store, *(_unique_files(tmp_path / name, name) for name in ("one", "two", "three"))
    )


def test_an_intact_store_verifies(store: Path, three: list[str]) -> None:
    result = run_tvixmount("verify", "--store", store)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("name", [b"small", b"big"])
def test_a_flipped_byte_names_that_path_and_only_it(
    store: Path, three: list[str], name: bytes
) -> None:
    flip_blob_bit(store, _file_digest(store, three[1], name), 7)
    result = run_tvixmount("verify", "--store", store)
    assert result.returncode == 1
    damaged = [line for line in result.stderr.splitlines() if line.startswith("path ")]
    assert len(damaged) == 1 and three[1] in damaged[0], result.stderr
    assert three[0] not in result.stderr and three[2] not in result.stderr


def test_json_has_one_result_per_path(store: Path, three: list[str]) -> None:
    flip_blob_bit(store, _file_digest(store, three[2], b"small"), 0)
    result = run_tvixmount("verify", "--store", store, "--json")
    assert result.returncode == 1
    results = {r["path"]: r for r in json.loads(result.stdout)}
    assert set(results) == set(three)
    assert [p for p, r in results.items() if not r["ok"]] == [three[2]]
    assert "corrupt" in results[three[2]]["error"]


def test_only_the_paths_given_are_checked(store: Path, three: list[str]) -> None:
    flip_blob_bit(store, _file_digest(store, three[0], b"big"), 100)
    assert run_tvixmount("verify", three[1], three[2], "--store", store).returncode == 0
    assert run_tvixmount("verify", three[0], "--store", store).returncode == 1


def test_a_missing_blob_is_damage(store: Path, three: list[str]) -> None:
    blobs, _, _, db = open_local(store, create=False)
    try:
        from tvixmount.castore.digest import B3Digest

        path = blobs.path_of(B3Digest(_file_digest(store, three[0], b"big")))
    finally:
        blobs.close()
        db.close()
    path.unlink()
    result = run_tvixmount("verify", "--store", store)
    assert result.returncode == 1
    assert three[0] in result.stderr and "not found" in result.stderr


def test_a_missing_directory_is_damage(store: Path, three: list[str]) -> None:
    node = _info(store, three[1]).node
    assert isinstance(node, DirectoryNode)
    blobs, directories, _, db = open_local(store, create=False)
    try:
        root = trio.run(directories.get, node.digest)
        assert root is not None
        sub = root.lookup(b"sub")
        assert isinstance(sub, DirectoryNode)
        with db:
            db.execute("DELETE FROM directories WHERE digest = ?", (bytes(sub.digest),))
    finally:
        blobs.close()
        db.close()
    result = run_tvixmount("verify", "--store", store, "--json")
    assert [r["path"] for r in json.loads(result.stdout) if not r["ok"]] == [three[1]]


def test_a_wrong_nar_hash_is_damage(store: Path) -> None:
    good = put_with_references(store, "good", b"content\n", [])
    info = _info(store, good)
    forged = PathInfo(info.node, (), type(info.narinfo)(info.narinfo.nar_size, bytes(32)))
    _, _, pathinfos, db = open_local(store, create=False)
    try:
        trio.run(pathinfos.put, forged)
    finally:
        db.close()
    result = run_tvixmount("verify", good, "--store", store)
    assert result.returncode == 1
    assert "was modified" in result.stderr


def test_an_unknown_path_is_one_line(store: Path, three: list[str]) -> None:
    unknown = "/nix/store/00000000000000000000000000000000-unknown"
    assert "not in the store" in one_error_line(run_tvixmount("verify", unknown, "--store", store))


def test_verify_over_grpc_names_the_damaged_path_and_changes_nothing(
    tmp_path: Path, store: Path, three: list[str]
) -> None:
    flip_blob_bit(store, _file_digest(store, three[1], b"big"), 5)
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    with serving(str(store), tmp_path / "serve.log") as served:
        result = run_tvixmount("verify", "--store", served.url, "--json")
    assert result.returncode == 1, result.stderr
    results = json.loads(result.stdout)
    assert [r["path"] for r in results if not r["ok"]] == [three[1]]
    assert len(results) == 3
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if "sqlite" not in p.name} == {
        p: t for p, t in before.items() if "sqlite" not in p.name
    }


def test_verify_over_grpc_of_an_intact_tree(tmp_path: Path, store: Path) -> None:
    (path,) = import_paths(store, make_tree(tmp_path / "tree"))
    with serving(str(store), tmp_path / "serve.log") as served:
        result = run_tvixmount("verify", path, "--store", served.url)
    assert result.returncode == 0, result.stderr
