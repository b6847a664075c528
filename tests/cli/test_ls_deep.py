"""``tvixmount ls`` of a tree far deeper than Python's recursion limit.

A path nested 500 levels deep raised RecursionError; the mount, ``nar`` and
the NAR reader take 100,000. The tree here goes into an embedded store from a
NAR (a file system's PATH_MAX stops a tree on disk at about 2,000 levels of
one-letter names), then is listed in every rendering, in this process, whose
recursion limit is the default.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import AsyncIterator

import pytest
import trio

from tests.cli.test_ls_cli import _terminal_env, run_in_pty
from tvixmount.castore.nodes import rename
from tvixmount.cli.main import main
from tvixmount.listing import json_chunks, list_path
from tvixmount.nar import wire
from tvixmount.nar.ingest import ingest_nar
from tvixmount.pathinfo.model import CAHash, ContentAddress, NarInfo, PathInfo
from tvixmount.storepath import from_nar_hash
from tvixmount.stores import StoreOptions, open_store

DEPTH = 5000  # directories, the store path's own included; the file "d" is one below the last
LEAF = b"leaf\n"


def deep_nar(depth: int) -> bytes:
    opening = wire.DIRECTORY_PREFIX + wire.entry_header(b"d")
    file = wire.regular_header(False, len(LEAF)) + LEAF + wire.regular_trailer(len(LEAF))
    closing = wire.ENTRY_CLOSE + wire.CLOSE
    return wire.HEADER + opening * depth + file + closing * depth


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _put(url: str, nar: bytes) -> str:
    store = open_store(url, StoreOptions(create=True))
    try:
        node = await ingest_nar(_chunks(nar), store.blobs, store.directories, b"deep")
        sha256 = hashlib.sha256(nar).digest()
        store_path = from_nar_hash(sha256, "deep")
        narinfo = NarInfo(len(nar), sha256, ca=ContentAddress(CAHash.NAR_SHA256, sha256))
        await store.pathinfos.put(PathInfo(rename(node, str(store_path).encode()), (), narinfo))
        return store_path.absolute
    finally:
        await store.aclose()


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(store URL, store path) of the deep tree."""
    url = str(tmp_path_factory.mktemp("deep") / "store")
    return url, trio.run(_put, url, deep_nar(DEPTH))


def ls(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> list[str]:
    code = main(["ls", "--store", url, *args])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    return out.splitlines()


def test_the_recursion_limit_is_the_default() -> None:
    assert sys.getrecursionlimit() < DEPTH


def test_recursive_plain_listing(capsys: pytest.CaptureFixture[str], deep: tuple[str, str]) -> None:
    lines = ls(capsys, deep[0], "-R", deep[1])
    assert len(lines) == DEPTH
    assert lines[0] == "directory             - d"
    assert lines[-1] == f"regular               5 {'/'.join(['d'] * DEPTH)}"


def test_recursive_long_listing(capsys: pytest.CaptureFixture[str], deep: tuple[str, str]) -> None:
    lines = ls(capsys, deep[0], "-lR", deep[1])
    assert len(lines) == DEPTH
    assert lines[1] == f"dr-xr-xr-x {0:20d} ./d/d"
    assert lines[-1] == f"-r--r--r-- {5:20d} ./{'/'.join(['d'] * DEPTH)}"


def test_recursive_json_listing_with_its_nar_offset(
    capsys: pytest.CaptureFixture[str], deep: tuple[str, str]
) -> None:
    nar = deep_nar(DEPTH)
    offset = nar.index(LEAF)
    leaf = f'{{"type":"regular","size":5,"narOffset":{offset}}}'
    expected = '{"type":"directory","entries":{"d":' * (DEPTH - 1)
    expected += '{"type":"directory","entries":{"d":' + leaf + "}}" + "}}" * (DEPTH - 1)
    code = main(["ls", "--store", deep[0], "--json", "-R", deep[1]])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out == expected + "\n"


def test_a_deep_subpath_lists_like_any_other(
    capsys: pytest.CaptureFixture[str], deep: tuple[str, str]
) -> None:
    inner = deep[1] + "/d" * (DEPTH - 2)
    assert ls(capsys, deep[0], "-R", inner) == [
        "directory             - d",
        "regular               5 d/d",
    ]


def test_terminal_tree(deep: tuple[str, str]) -> None:
    env = {**_terminal_env(), "NO_COLOR": "1"}
    code, out = run_in_pty("ls", "--store", deep[0], "-R", deep[1], env=env)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == DEPTH + 2  # the listed path, its entries, the summary
    assert lines[-2] == " " * 4 * (DEPTH - 1) + "└── d  5 bytes"
    assert lines[-1].startswith(f"{DEPTH - 1} directories, 1 file, 0 symlinks, 5 bytes")


async def test_the_listing_layer_walks_without_recursion(deep: tuple[str, str]) -> None:
    store = open_store(deep[0])
    try:
        listing = await list_path(store, deep[1], depth=None, nar_offsets=True)
    finally:
        await store.aclose()
    assert listing.summary().directories == DEPTH - 1
    assert sum(1 for _ in listing.root.walk()) == DEPTH


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, {"b": None, "c": 'ünï"\n'}], "d": {}, "e": [], "f": 1.5, "g": True},
        [],
        "text",
        [[[]], {"x": {"y": {}}}],
    ],
)
def test_json_chunks_write_what_json_dumps_writes(value: object) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert "".join(json_chunks(value)) == expected


def test_json_chunks_go_deeper_than_json_dumps() -> None:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(RecursionError):
        json.dumps(value)
    assert "".join(json_chunks(value)) == "[" * 100_000 + "[]" + "]" * 100_000
