"""tvixmount.listing: resolving STORE_PATH[/SUBPATH], listing trees and the store, Nix JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures import castore as fx
from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode, SymlinkNode
from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.nodes import Node
from tvixmount.errors import NotFoundError, StoreError, StorePathError
from tvixmount.listing import (
    EntryType,
    Listing,
    Summary,
    list_path,
    list_store,
    store_to_json,
    summarize_store,
    to_nix_json,
)
from tvixmount.nar.writer import calculate_nar, write_nar
from tvixmount.pathinfo import NarInfo, PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores import Store, open_store
from tvixmount.stores.memory.castore import MemoryDirectoryService
from tvixmount.stores.memory.pathinfo import MemoryPathInfoService

COMPLICATED = fx.ROOT_DIRECTORY_COMPLICATED.decode()
WITH_KEEP = fx.ROOT_DIRECTORY_WITH_KEEP.decode()


async def put_root(store: Store, node: Node) -> PathInfo:
    nar_size, nar_sha256 = await calculate_nar(node, store.blobs, store.directories)
    return await store.pathinfos.put(PathInfo(node, (), NarInfo(nar_size, nar_sha256)))


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    """memory:// with every tvix fixture blob, directory and root."""
    opened = open_store("memory://")
    for blob in fx.BLOBS:
        await put_stream(opened.blobs, [blob])
    await opened.directories.put_many(fx.DIRECTORIES)
    for node in fx.ROOT_NODES:
        await put_root(opened, node)
    try:
        yield opened
    finally:
        await opened.aclose()


def names(listing: Listing) -> list[tuple[str, EntryType]]:
    return [("/".join(p.decode() for p in path), e.type) for path, e in listing.root.walk()]


# --- the store-wide listing -------------------------------------------------------------


async def test_store_listing_has_every_store_path_sorted_by_name(store: Store) -> None:
    entries = await list_store(store)
    assert [e.name for e in entries] == sorted(n.name.decode() for n in fx.ROOT_NODES)


async def test_store_listing_reports_root_type_nar_size_and_digest(store: Store) -> None:
    entries = {e.name: e for e in await list_store(store)}
    complicated = entries[COMPLICATED]
    info = await store.pathinfos.get(StorePath.from_basename(complicated.name).digest)
    assert info is not None
    assert complicated.type is EntryType.DIRECTORY
    assert complicated.nar_size == info.narinfo.nar_size
    assert complicated.digest == fx.DIRECTORY_COMPLICATED.digest()
    hello = entries[fx.ROOT_HELLOWORLD_EXECUTABLE.decode()]
    assert (hello.type, hello.executable, hello.digest) == (
        EntryType.REGULAR,
        True,
        fx.HELLOWORLD_DIGEST,
    )
    link = entries[fx.ROOT_SYMLINK_ABSOLUTE.decode()]
    assert (link.type, link.digest, link.target) == (
        EntryType.SYMLINK,
        None,
        b"/nix/store/somewhereelse",
    )


async def test_store_listing_of_an_empty_store_is_empty() -> None:
    assert await list_store(open_store("memory://")) == []


async def test_store_summary_counts_root_kinds_and_total_nar_size(store: Store) -> None:
    entries = await list_store(store)
    assert summarize_store(entries) == Summary(
        files=3, directories=2, symlinks=2, total_bytes=sum(e.nar_size for e in entries)
    )


async def test_store_json_is_a_list_of_paths_with_type_and_nar_size(store: Store) -> None:
    items = store_to_json(await list_store(store))
    first = items[0]
    assert first == {
        "path": "/nix/store/" + fx.ROOT_BLOB_A.decode(),
        "type": "regular",
        "narSize": first["narSize"],
        "digest": str(fx.BLOB_A_DIGEST),
    }


# --- resolving and listing a path -------------------------------------------------------


async def test_recursive_listing_walks_nested_directories_in_name_order(store: Store) -> None:
    listing = await list_path(store, COMPLICATED, depth=None)
    assert names(listing) == [
        (".keep", EntryType.REGULAR),
        ("aa", EntryType.SYMLINK),
        ("keep", EntryType.DIRECTORY),
        ("keep/.keep", EntryType.REGULAR),
    ]


async def test_one_level_listing_does_not_expand_child_directories(store: Store) -> None:
    listing = await list_path(store, COMPLICATED)
    keep = listing.root.children[-1] if listing.root.children else None
    assert keep is not None and keep.name == b"keep"
    assert keep.type is EntryType.DIRECTORY and keep.children is None


async def test_depth_limits_how_many_levels_are_listed(store: Store) -> None:
    assert len(names(await list_path(store, COMPLICATED, depth=1))) == 3
    assert len(names(await list_path(store, COMPLICATED, depth=2))) == 4


async def test_entries_carry_size_executable_target_and_digest(store: Store) -> None:
    listing = await list_path(store, COMPLICATED, depth=None)
    by_path = {p: e for p, e in listing.root.walk()}
    assert by_path[(b"aa",)].target == b"/nix/store/somewhereelse"
    assert by_path[(b"keep",)].digest == fx.DIRECTORY_WITH_KEEP.digest()
    assert by_path[(b"keep",)].size == fx.DIRECTORY_WITH_KEEP.size()
    keep_file = by_path[(b"keep", b".keep")]
    assert (keep_file.size, keep_file.executable, keep_file.digest) == (0, False, fx.EMPTY_DIGEST)


async def test_absolute_store_path_is_accepted(store: Store) -> None:
    listing = await list_path(store, "/nix/store/" + COMPLICATED)
    assert listing.path == "/nix/store/" + COMPLICATED


async def test_subpath_lists_the_directory_below(store: Store) -> None:
    listing = await list_path(store, f"/nix/store/{COMPLICATED}/keep")
    assert listing.path == f"/nix/store/{COMPLICATED}/keep"
    assert names(listing) == [(".keep", EntryType.REGULAR)]


async def test_subpath_naming_a_file_lists_that_file(store: Store) -> None:
    listing = await list_path(store, f"{COMPLICATED}/keep/.keep")
    assert (listing.root.name, listing.root.type, listing.root.children) == (
        b".keep",
        EntryType.REGULAR,
        None,
    )


async def test_root_file_store_path_lists_itself(store: Store) -> None:
    listing = await list_path(store, fx.ROOT_HELLOWORLD_EXECUTABLE.decode())
    assert listing.root.type is EntryType.REGULAR and listing.root.executable
    assert listing.summary() == Summary(files=1, total_bytes=len(fx.HELLOWORLD_BLOB))


async def test_summary_counts_listed_entries(store: Store) -> None:
    listing = await list_path(store, COMPLICATED, depth=None)
    assert listing.summary() == Summary(files=2, directories=1, symlinks=1, total_bytes=0)


async def test_malformed_store_path_raises_store_path_error(store: Store) -> None:
    with pytest.raises(StorePathError):
        await list_path(store, "not-a-store-path")


async def test_unknown_store_path_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="is not in the store"):
        await list_path(store, "7" * 32 + "-test")


async def test_unknown_subpath_raises_not_found_naming_it(store: Store) -> None:
    with pytest.raises(NotFoundError, match=f"{COMPLICATED}/keep/nope' does not exist"):
        await list_path(store, f"{COMPLICATED}/keep/nope")


async def test_subpath_below_a_file_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="is a regular file, not a directory"):
        await list_path(store, f"{COMPLICATED}/.keep/x")


async def test_symlinks_inside_the_path_are_not_followed(store: Store) -> None:
    with pytest.raises(NotFoundError, match="is a symlink, not a directory"):
        await list_path(store, f"{COMPLICATED}/aa/x")


async def test_pathinfo_naming_another_path_is_not_found(store: Store) -> None:
    # Filed under 7…7's digest but naming 0…0: the mount refuses that too.
    impostor = StorePath.from_basename("7" * 32 + "-test")
    info = await store.pathinfos.get(StorePath.from_basename(fx.ROOT_BLOB_A).digest)
    pathinfos = store.pathinfos
    assert isinstance(pathinfos, MemoryPathInfoService) and info is not None
    pathinfos.infos[impostor.digest] = info
    with pytest.raises(NotFoundError):
        await list_path(store, str(impostor))


async def test_missing_directory_raises_store_error_with_its_digest() -> None:
    store = open_store("memory://")
    await put_stream(store.blobs, [fx.EMPTY_BLOB])
    await store.pathinfos.put(
        PathInfo(
            DirectoryNode(
                fx.ROOT_DIRECTORY_COMPLICATED,
                fx.DIRECTORY_COMPLICATED.digest(),
                fx.DIRECTORY_COMPLICATED.size(),
            ),
            (),
            NarInfo(0, bytes(32)),
        )
    )
    with pytest.raises(StoreError) as raised:
        await list_path(store, COMPLICATED)
    assert str(fx.DIRECTORY_COMPLICATED.digest()) in str(raised.value)


async def test_missing_child_directory_names_its_path(store: Store) -> None:
    # The child Directory object disappears; the parent still refers to it.
    directories = store.directories
    assert isinstance(directories, MemoryDirectoryService)
    del directories.directories[fx.DIRECTORY_WITH_KEEP.digest()]
    with pytest.raises(StoreError, match=f"of /nix/store/{COMPLICATED}/keep is missing"):
        await list_path(store, COMPLICATED, depth=None)


# --- Nix JSON ---------------------------------------------------------------------------


async def test_json_one_level_lists_entries_as_empty_objects(store: Store) -> None:
    listing = await list_path(store, COMPLICATED)
    assert to_nix_json(listing) == {
        "type": "directory",
        "entries": {".keep": {}, "aa": {}, "keep": {}},
    }


async def test_json_recursive_describes_every_entry(store: Store) -> None:
    listing = await list_path(store, COMPLICATED, depth=None)
    assert to_nix_json(listing) == {
        "type": "directory",
        "entries": {
            ".keep": {"type": "regular", "size": 0},
            "aa": {"type": "symlink", "target": "/nix/store/somewhereelse"},
            "keep": {"type": "directory", "entries": {".keep": {"type": "regular", "size": 0}}},
        },
    }


async def test_json_depth_two_describes_one_level_and_names_the_next(store: Store) -> None:
    listing = await list_path(store, COMPLICATED, depth=2)
    keep = to_nix_json(listing)["entries"]
    assert isinstance(keep, dict)
    assert keep["keep"] == {"type": "directory", "entries": {".keep": {}}}


async def test_json_of_an_executable_file_marks_it_executable(store: Store) -> None:
    listing = await list_path(store, fx.ROOT_HELLOWORLD_EXECUTABLE.decode(), nar_offsets=True)
    assert to_nix_json(listing) == {
        "type": "regular",
        "size": len(fx.HELLOWORLD_BLOB),
        "executable": True,
        "narOffset": 128,  # Nix 2.8 prints this for any executable root file
    }


async def test_json_of_a_symlink_has_its_target(store: Store) -> None:
    listing = await list_path(store, fx.ROOT_SYMLINK_TO_A.decode())
    assert to_nix_json(listing) == {
        "type": "symlink",
        "target": "00000000000000000000000000000000-test",
    }


# --- NAR offsets against real NAR bytes -------------------------------------------------

_names = st.binary(min_size=1, max_size=12).filter(
    lambda n: n not in (b".", b"..") and b"/" not in n and b"\0" not in n
)
_file = st.tuples(st.binary(max_size=40), st.booleans())
_target = st.binary(min_size=1, max_size=30).filter(lambda t: b"\0" not in t)
_tree = st.recursive(
    st.one_of(_file, _target),
    lambda children: st.dictionaries(_names, children, max_size=5),
    max_leaves=20,
)


async def _put_tree(store: Store, tree: object, name: bytes) -> Node:
    if isinstance(tree, tuple):
        data, executable = tree
        digest = await put_stream(store.blobs, [data])
        return FileNode(name, digest, len(data), executable)
    if isinstance(tree, bytes):
        return SymlinkNode(name, tree)
    assert isinstance(tree, dict)
    children = [await _put_tree(store, child, child_name) for child_name, child in tree.items()]
    directory = Directory.from_nodes(children)
    await store.directories.put_many([directory])
    return DirectoryNode(name, directory.digest(), directory.size())


async def _offsets_match_nar(tree: object) -> None:
    store = open_store("memory://")
    root = await _put_tree(store, tree, b"0" * 32 + b"-tree")
    await put_root(store, root)
    nar = b"".join([chunk async for chunk in write_nar(root, store.blobs, store.directories)])
    listing = await list_path(store, root.name.decode(), depth=None, nar_offsets=True)
    files = [listing.root] if listing.root.type is EntryType.REGULAR else []
    files += [e for _, e in listing.root.walk() if e.type is EntryType.REGULAR]
    for entry in files:
        assert entry.digest is not None and entry.nar_offset is not None
        blob = await store.blobs.open_read(B3Digest(entry.digest))
        assert blob is not None
        content = bytes(await blob.pread(0, entry.size))
        assert nar[entry.nar_offset - 8 : entry.nar_offset] == entry.size.to_bytes(8, "little")
        assert nar[entry.nar_offset : entry.nar_offset + entry.size] == content


@settings(max_examples=60, deadline=None)
@given(_tree)
def test_nar_offsets_point_at_file_contents_in_the_real_nar(tree: object) -> None:
    trio.run(_offsets_match_nar, tree)


async def test_subpath_file_offset_is_relative_to_the_whole_nar(store: Store) -> None:
    whole = await list_path(store, COMPLICATED, depth=None, nar_offsets=True)
    inner = await list_path(store, f"{COMPLICATED}/keep/.keep", nar_offsets=True)
    by_path = {p: e for p, e in whole.root.walk()}
    assert inner.root.nar_offset == by_path[(b"keep", b".keep")].nar_offset
