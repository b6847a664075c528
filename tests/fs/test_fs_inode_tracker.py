"""InodeTracker: content deduplication, lookup counts and freeing on forget."""

from __future__ import annotations

import gc
import sys

from tests.fixtures import castore as fx
from tvixmount.castore.digest import B3Digest
from tvixmount.castore.nodes import DirectoryNode, FileNode, Node, SymlinkNode
from tvixmount.fs.inode_tracker import ROOT_INODE, InodeTracker
from tvixmount.fs.inodes import DirectoryInode, FileInode, Listing, RootInode

FILE_A = FileNode(b"a", fx.BLOB_A_DIGEST, len(fx.BLOB_A))
KEEP_DIR = DirectoryNode(b"d", fx.DIRECTORY_WITH_KEEP.digest(), fx.DIRECTORY_WITH_KEEP.size())


def test_root_exists_from_the_start() -> None:
    tracker = InodeTracker()
    assert isinstance(tracker.get(ROOT_INODE), RootInode)
    assert len(tracker) == 1


def test_same_file_content_under_other_names_shares_an_inode() -> None:
    tracker = InodeTracker()
    a, _ = tracker.remember(FILE_A)
    b, _ = tracker.remember(FileNode(b"other", fx.BLOB_A_DIGEST, len(fx.BLOB_A)))
    assert a == b


def test_executable_bit_separates_file_inodes() -> None:
    tracker = InodeTracker()
    a, _ = tracker.remember(FILE_A)
    b, _ = tracker.remember(FileNode(b"a", fx.BLOB_A_DIGEST, len(fx.BLOB_A), True))
    assert a != b


def test_same_symlink_target_shares_an_inode() -> None:
    tracker = InodeTracker()
    a, _ = tracker.remember(SymlinkNode(b"x", b"/target"))
    b, _ = tracker.remember(SymlinkNode(b"y", b"/target"))
    c, _ = tracker.remember(SymlinkNode(b"z", b"/elsewhere"))
    assert a == b != c


def test_same_directory_digest_shares_an_inode() -> None:
    tracker = InodeTracker()
    a, data = tracker.remember(KEEP_DIR)
    b, _ = tracker.remember(DirectoryNode(b"e", KEEP_DIR.digest, KEEP_DIR.size))
    assert a == b
    assert isinstance(data, DirectoryInode)
    assert data.listing is None


def test_the_same_bytes_as_content_of_different_kinds_are_different_inodes() -> None:
    tracker = InodeTracker()
    digest = fx.BLOB_A_DIGEST
    nodes: list[Node] = [
        FileNode(b"f", digest, 1),
        FileNode(b"x", digest, 1, executable=True),
        DirectoryNode(b"d", digest, 1),
        SymlinkNode(b"s", bytes(digest)),
    ]
    inodes = [tracker.remember(node)[0] for node in nodes]
    assert len(set(inodes)) == 4
    for inode in inodes:
        tracker.forget(inode, 1)
    assert len(tracker) == 1


def test_each_remember_adds_one_lookup() -> None:
    tracker = InodeTracker()
    inode, _ = tracker.remember(FILE_A)
    tracker.remember(FILE_A)
    assert tracker.lookup_count(inode) == 2


def test_partial_forget_keeps_the_inode() -> None:
    tracker = InodeTracker()
    inode, _ = tracker.remember(FILE_A)
    tracker.remember(FILE_A)
    tracker.forget(inode, 1)
    assert isinstance(tracker.get(inode), FileInode)
    assert tracker.lookup_count(inode) == 1


def test_full_forget_frees_the_inode() -> None:
    tracker = InodeTracker()
    inode, _ = tracker.remember(FILE_A)
    tracker.forget(inode, 1)
    assert tracker.get(inode) is None
    assert len(tracker) == 1


def test_forgotten_content_gets_a_fresh_valid_inode() -> None:
    tracker = InodeTracker()
    old, _ = tracker.remember(KEEP_DIR)
    tracker.forget(old, 1)
    new, data = tracker.remember(KEEP_DIR)
    assert new != old
    assert isinstance(data, DirectoryInode)
    assert tracker.get(new) is data
    again, _ = tracker.remember(KEEP_DIR)
    assert again == new


def test_populated_directory_is_dropped_with_its_inode() -> None:
    tracker = InodeTracker()
    inode, data = tracker.remember(KEEP_DIR)
    assert isinstance(data, DirectoryInode)
    data.listing = Listing.of(fx.DIRECTORY_WITH_KEEP)
    tracker.forget(inode, 1)
    _, fresh = tracker.remember(KEEP_DIR)
    assert isinstance(fresh, DirectoryInode)
    assert fresh.listing is None


def test_forget_many_frees_all_inodes_down_to_the_root() -> None:
    tracker = InodeTracker()
    inodes = [tracker.remember(node)[0] for node in fx.ROOT_NODES]
    tracker.forget_many((inode, 1) for inode in inodes)
    assert len(tracker) == 1


def test_root_is_never_freed() -> None:
    tracker = InodeTracker()
    tracker.forget(ROOT_INODE, 5)
    assert isinstance(tracker.get(ROOT_INODE), RootInode)


def test_forgetting_an_unknown_inode_is_harmless() -> None:
    tracker = InodeTracker()
    inode, _ = tracker.remember(FILE_A)
    tracker.forget(inode + 100, 1)
    assert tracker.lookup_count(inode) == 1


def test_inode_numbers_are_not_reused() -> None:
    tracker = InodeTracker()
    first, _ = tracker.remember(FILE_A)
    tracker.forget(first, 1)
    second, _ = tracker.remember(SymlinkNode(b"s", b"t"))
    assert second != first


def test_maps_are_compacted_once_most_inodes_are_forgotten() -> None:
    tracker = InodeTracker()
    nodes = [FileNode(b"f", B3Digest.of(str(i).encode()), 1) for i in range(50_000)]
    inodes = [tracker.remember(node)[0] for node in nodes]
    peak_table = sys.getsizeof(tracker._data)
    tracker.forget_many((inode, 1) for inode in inodes[:-10])
    assert len(tracker) == 11
    assert sys.getsizeof(tracker._data) < peak_table / 100
    # What is still held stays valid after the compaction.
    assert tracker.remember(nodes[-1])[0] == inodes[-1]
    assert tracker.lookup_count(inodes[-1]) == 2


def test_compaction_runs_a_full_collection_to_empty_the_free_lists() -> None:
    tracker = InodeTracker()
    inodes = [
        tracker.remember(FileNode(b"f", B3Digest.of(str(i).encode()), 1))[0] for i in range(20_000)
    ]
    full_collections = gc.get_stats()[2]["collections"]
    tracker.forget_many((inode, 1) for inode in inodes)
    assert gc.get_stats()[2]["collections"] > full_collections
