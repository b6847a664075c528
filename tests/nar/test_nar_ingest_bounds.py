"""NAR ingestion stays bounded: entries per directory, finished subtrees put along the way."""

from __future__ import annotations

import pytest

from tests.nar.test_nar_reader import Services, directory, nar, regular, symlink
from tvixmount.errors import NarError
from tvixmount.nar import ingest, reader

# Nested and repeated subtrees, many empty files (one blob for all), a symlink.
TREE = nar(
    directory(
        [
            (b"a", directory([(b"x", regular(b"")), (b"y", regular(b"one"))])),
            (b"b", directory([(b"x", regular(b"")), (b"y", regular(b"one"))])),
            (
                b"c",
                directory([(b"deep", directory([(b"e%d" % i, regular(b"")) for i in range(9)]))]),
            ),
            (b"d", symlink(b"a/y")),
            (b"e", regular(b"", executable=True)),
        ]
    )
)


@pytest.mark.parametrize("pending", [1, 4, 1 << 16])
async def test_finished_subtrees_put_along_the_way_round_trip(
    pending: int, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(ingest, "_PENDING_ENTRIES", pending)
    services = Services()
    node = await services.ingest(TREE)
    assert await services.nar(node) == TREE


async def test_directory_over_the_entry_limit_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(reader, "MAX_DIRECTORY_ENTRIES", 8)
    services = Services()
    with pytest.raises(NarError, match="b'deep' has more than 8 entries"):
        await services.ingest(TREE)


async def test_directory_at_the_entry_limit_is_accepted(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(reader, "MAX_DIRECTORY_ENTRIES", 9)
    services = Services()
    assert await services.nar(await services.ingest(TREE)) == TREE
