"""Hostile NARs: random bytes and mutated valid archives give a value or NarError.

Never another exception, a hang (hypothesis' per-example deadline) or memory
in proportion to what the archive merely declares (a string or file length
of 2**62 is a number, not an allocation).
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import AsyncIterator
from typing import TypeAlias

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvixmount.errors import NarError, TvixmountError
from tvixmount.nar import ingest_nar, read_nar, wire
from tvixmount.stores.memory.castore import MemoryBlobService, MemoryDirectoryService

# A tree as the reader reports it: ("file", executable, contents) |
# ("symlink", target) | ("dir", ((name, tree), ...)) with names sorted.
Tree: TypeAlias = (
    tuple[str, bool, bytes] | tuple[str, bytes] | tuple[str, tuple[tuple[bytes, "Tree"], ...]]
)

FUZZ = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

names = st.binary(min_size=1, max_size=12).filter(
    lambda n: n not in (b".", b"..") and b"/" not in n and b"\0" not in n
)
files = st.tuples(st.just("file"), st.booleans(), st.binary(max_size=40))
symlinks = st.tuples(
    st.just("symlink"), st.binary(min_size=1, max_size=20).filter(lambda t: b"\0" not in t)
)


def _directories(children: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
    entries = st.dictionaries(names, children, max_size=4)
    return entries.map(lambda d: ("dir", tuple(sorted(d.items()))))


trees: st.SearchStrategy[Tree] = st.recursive(files | symlinks, _directories, max_leaves=12)


def encode(tree: Tree) -> bytes:
    """The canonical NAR of ``tree`` (what ``nix-store --dump`` would write)."""
    return wire.HEADER + _node(tree)


def _node(tree: Tree) -> bytes:
    if len(tree) == 3:
        _, executable, contents = tree
        size = len(contents)
        return wire.regular_header(executable, size) + contents + wire.regular_trailer(size)
    if tree[0] == "symlink":
        target = tree[1]
        assert isinstance(target, bytes)
        return wire.symlink(target)
    entries = tree[1]
    assert isinstance(entries, tuple)
    body = b"".join(
        wire.entry_header(name) + _node(child) + wire.ENTRY_CLOSE for name, child in entries
    )
    return wire.DIRECTORY_PREFIX + body + wire.CLOSE


class TreeVisitor:
    """Rebuilds the tree from what the reader reports."""

    async def regular(
        self, name: bytes, executable: bool, size: int, contents: AsyncIterator[bytes]
    ) -> tuple[bytes, Tree]:
        data = b"".join([chunk async for chunk in contents])
        assert len(data) == size
        return name, ("file", executable, data)

    async def symlink(self, name: bytes, target: bytes) -> tuple[bytes, Tree]:
        return name, ("symlink", target)

    async def directory(
        self, name: bytes, children: list[tuple[bytes, Tree]]
    ) -> tuple[bytes, Tree]:
        return name, ("dir", tuple(children))


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def parse(data: bytes, chunk: int = 7) -> Tree | None:
    """The tree a NAR holds, or None when the reader rejected it with NarError."""

    async def run() -> Tree:
        _, tree = await read_nar(_chunks(data, chunk), TreeVisitor())
        return tree

    try:
        return trio.run(run)
    except NarError:
        return None


@FUZZ
@given(trees, st.integers(1, 64))
def test_valid_nar_parses_back_to_its_tree(tree: Tree, chunk: int) -> None:
    assert parse(encode(tree), chunk) == tree


@FUZZ
@given(st.binary(max_size=2048), st.integers(1, 64))
def test_random_bytes_give_a_tree_or_nar_error(data: bytes, chunk: int) -> None:
    parse(data, chunk)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_after_the_magic_give_a_tree_or_nar_error(data: bytes) -> None:
    parse(wire.HEADER + data)


@st.composite
def mutated_nars(draw: st.DrawFn) -> bytes:
    """A valid NAR with one mutation: a flipped byte, a cut, an insertion or a new length."""
    data = bytearray(encode(draw(trees)))
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "length"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        data[at] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        del data[at:]
    elif kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    else:
        # Every string starts at a multiple of 8 with its length: lie about one.
        at -= at % 8
        data[at : at + 8] = wire.u64(draw(st.integers(0, 2**64 - 1)))
    return bytes(data)


@FUZZ
@given(mutated_nars(), st.integers(1, 64))
def test_mutated_valid_nar_gives_a_tree_or_nar_error(data: bytes, chunk: int) -> None:
    parse(data, chunk)


@FUZZ
@given(mutated_nars())
def test_ingesting_a_mutated_nar_gives_a_node_or_a_project_error(data: bytes) -> None:
    async def run() -> None:
        with contextlib.suppress(TvixmountError):
            await ingest_nar(
                _chunks(data, 13), MemoryBlobService(), MemoryDirectoryService(), b"root"
            )

    trio.run(run)


def _peak_bytes_of_parsing(data: bytes) -> int:
    tracemalloc.start()
    try:
        assert parse(data) is None
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_declared_token_length_is_rejected_without_allocating_it() -> None:
    assert _peak_bytes_of_parsing(wire.u64(2**62) + b"\0" * 64) < 1 << 20


def test_huge_declared_file_length_is_rejected_without_allocating_it() -> None:
    header = wire.HEADER + wire.regular_header(False, 2**62)
    assert _peak_bytes_of_parsing(header + b"x" * 4096) < 1 << 20


def test_huge_declared_name_length_is_rejected_without_allocating_it() -> None:
    header = wire.HEADER + wire.DIRECTORY_PREFIX + wire.ENTRY_PREFIX + wire.u64(2**40)
    assert _peak_bytes_of_parsing(header + b"n" * 4096) < 1 << 20


def test_deeply_nested_directories_parse_without_recursion() -> None:
    depth = 5000  # far past Python's recursion limit
    leaf = wire.regular_header(False, 4) + b"leaf" + wire.regular_trailer(4)
    opening = wire.DIRECTORY_PREFIX + wire.entry_header(b"d")
    closing = wire.ENTRY_CLOSE + wire.CLOSE
    tree = parse(wire.HEADER + opening * depth + leaf + closing * depth, chunk=4096)
    levels = 0
    while tree is not None and tree[0] == "dir":
        entries = tree[1]
        assert isinstance(entries, tuple)
        ((_, tree),) = entries
        levels += 1
    assert levels == depth
    assert tree == ("file", False, b"leaf")
