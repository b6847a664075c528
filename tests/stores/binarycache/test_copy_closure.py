"""The closure walk and castore-to-castore copies of tvixmount.copy, on memory stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tvixmount.castore.digest import B3Digest
from tvixmount.castore.nodes import FileNode, SymlinkNode
from tvixmount.copy import CacheDestination, StoreDestination, closure, copy_paths
from tvixmount.errors import NotFoundError
from tvixmount.importer import import_path
from tvixmount.nar.signing import SecretKey, pathinfo_signers
from tvixmount.nar.writer import calculate_nar
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores import Store, open_store
from tvixmount.stores.binarycache.writer import BinaryCacheWriter, FileSink


def store_path(name: str) -> StorePath:
    return StorePath(os.urandom(20), name)


async def put(store: Store, path: StorePath, references: list[StorePath]) -> None:
    node = SymlinkNode(str(path).encode(), b"/nix/store/elsewhere")
    await store.pathinfos.put(
        PathInfo(
            node=node,
            references=tuple(ref.digest for ref in references),
            narinfo=NarInfo(
                nar_size=1, nar_sha256=bytes(32), reference_names=tuple(map(str, references))
            ),
        )
    )


async def test_every_reference_comes_before_its_referrers():
    store = open_store("memory://")
    libc, ssl, curl, app = (store_path(n) for n in ("libc", "ssl", "curl", "app"))
    await put(store, libc, [libc])  # self-reference
    await put(store, ssl, [libc])
    await put(store, curl, [ssl, libc])
    await put(store, app, [curl, ssl, app])
    order = [info.store_path for info in await closure(store, [app])]
    assert sorted(order) == sorted([libc, ssl, curl, app])
    for info in await closure(store, [app]):
        for ref in info.reference_paths:
            assert order.index(ref) <= order.index(info.store_path)
    assert [i.store_path for i in await closure(store, [app], recursive=False)] == [app]


async def test_a_reference_cycle_ends():
    store = open_store("memory://")
    a, b = store_path("a"), store_path("b")
    await put(store, a, [b])
    await put(store, b, [a])
    assert sorted(info.store_path for info in await closure(store, [a])) == sorted([a, b])


async def test_a_directory_shared_at_two_depths_copies_between_castore_stores(tmp_path: Path):
    tree = tmp_path / "tree"
    for shared in (tree / "x", tree / "a" / "b" / "x"):
        shared.mkdir(parents=True)
        (shared / "file").write_text("the same directory twice\n")
    (tree / "a" / "top").write_bytes(os.urandom(3 << 20))  # more than one blob chunk
    source, dest = open_store("memory://"), open_store("memory://")
    info = await import_path(source, tree)
    key = SecretKey.generate("copy-test-1")
    copied = await copy_paths(source, StoreDestination(dest, [key]), [info.store_path])
    assert [entry.copied for entry in copied] == [True]
    got = await dest.pathinfos.get(info.store_path.digest)
    assert got is not None
    assert await calculate_nar(got.node, dest.blobs, dest.directories) == (
        info.narinfo.nar_size,
        info.narinfo.nar_sha256,
    )
    assert pathinfo_signers(got, [key.public_key()]) == ["copy-test-1"]
    again = await copy_paths(source, StoreDestination(dest, [key]), [info.store_path])
    assert [entry.copied for entry in again] == [False]


async def test_a_failing_path_stops_the_copy_with_its_own_error_and_no_referrer(tmp_path: Path):
    source = open_store("memory://")
    lost, user = store_path("lost"), store_path("user")
    node = FileNode(str(lost).encode(), B3Digest(os.urandom(32)), 5, False)
    await source.pathinfos.put(
        PathInfo(node=node, references=(), narinfo=NarInfo(nar_size=1, nar_sha256=bytes(32)))
    )
    await put(source, user, [lost])
    cache = tmp_path / "cache"
    destination = CacheDestination(BinaryCacheWriter(FileSink(cache), "zstd", []))
    with pytest.raises(NotFoundError, match="blob"):
        await copy_paths(source, destination, [user])
    assert not list(cache.glob("*.narinfo"))
    assert not list(cache.rglob(".tmp-*"))
