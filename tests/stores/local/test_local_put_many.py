"""The embedded store's put_many: a group of whole blobs stored with one wait for their commits."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest
import trio

from tests.stores.local.blobs import opened, read_blob
from tvixmount.castore import B3Digest
from tvixmount.castore.blobservice import put_stream
from tvixmount.castore.ingest import PutsMany
from tvixmount.stores.local.castore import PACK_MAX, LocalBlobService, _Batch


@pytest.fixture
def blobs(tmp_path: Path) -> Iterator[LocalBlobService]:
    with opened(tmp_path / "s", create=True) as store:
        yield store.blobs


async def test_put_many_stores_packed_and_file_blobs_in_order(blobs: LocalBlobService) -> None:
    assert isinstance(blobs, PutsMany)
    stored_before = await put_stream(blobs, (b"stored before",))
    datas = [
        b"",
        b"stored before",
        os.urandom(1000),
        os.urandom(PACK_MAX),
        os.urandom(PACK_MAX + 1),  # a blob file, not packed
        b"twice in one call",
        b"twice in one call",
    ]
    digests = await blobs.put_many(datas)
    assert digests == [B3Digest(blake3.blake3(data).digest()) for data in datas]
    assert digests[1] == stored_before
    for digest, data in zip(digests, datas, strict=True):
        assert await read_blob(blobs, digest) == data
    location = blobs.location_of(digests[4])
    assert location is not None and location.offset == 0  # its own file
    packed = blobs.location_of(digests[3])
    assert packed is not None and packed.path.parent.name == "packs"


async def test_concurrent_put_many_share_commits(
    blobs: LocalBlobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = [[os.urandom(4096) for _ in range(16)] for _ in range(32)]
    results: list[list[B3Digest]] = []
    commits: list[int] = []
    real_commit_batch = blobs._commit_batch

    async def counting_commit_batch(batch: _Batch) -> None:
        commits.append(len(batch.rows))
        await real_commit_batch(batch)

    monkeypatch.setattr(blobs, "_commit_batch", counting_commit_batch)

    async def put(group: list[bytes]) -> None:
        results.append(await blobs.put_many(group))

    async with trio.open_nursery() as nursery:
        for group in groups:
            nursery.start_soon(put, group)
    stored = {digest for digests in results for digest in digests}
    assert len(stored) == 16 * 32
    # One blob of each group per commit would take 16 commits at least.
    assert sum(commits) == 16 * 32 and len(commits) < 16, commits
    for group in groups:
        for data in group:
            assert await read_blob(blobs, B3Digest(blake3.blake3(data).digest())) == data
