"""ReadMany: a directory's small files in one call, and a client that trusts none of it.

``tvixmount serve`` answers ReadMany (protos/tvixmount_blobs.proto); the client
asks it for the window of files after one opened, and checks every blob
against its digest and size. A server lying in a ReadMany answer gets those
blobs read again one by one (and refused if they lie there too); a server
without ReadMany (tvix-store) is read blob by blob.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio

from tests.grpc_serving import FakeBackend, fake_server, serving
from tvixmount._proto import tvixmount_blobs_pb2 as batch_pb
from tvixmount._proto import tvixmount_blobs_pb2_grpc as batch_grpc
from tvixmount.castore import B3Digest, Directory, DirectoryNode, FileNode
from tvixmount.castore.blobservice import put_stream
from tvixmount.stores import StoreOptions, open_store
from tvixmount.stores.grpc.blobs import BATCH_FILES, GrpcBlobService
from tvixmount.stores.grpc.directories import GrpcDirectoryService
from tvixmount.stores.grpc.server import READ_MANY_DIGESTS, READ_MESSAGE_BYTES

FILES = [bytes([i]) * (100 + 37 * i) for i in range(12)]
BIG = bytes(range(251)) * (5 * READ_MESSAGE_BYTES // (2 * 251))  # 2.5 messages


def _directory(files: list[bytes]) -> Directory:
    return Directory.from_nodes(
        FileNode(f"f{i:02d}".encode(), B3Digest.of(data), len(data)) for i, data in enumerate(files)
    )


def _tree() -> Directory:
    """FILES at the top, and the first and last few in a subdirectory each."""
    return Directory.from_nodes(
        [
            *_directory(FILES).files,
            DirectoryNode(b"sub1", _directory(FILES[:5]).digest(), _directory(FILES[:5]).size()),
            DirectoryNode(b"sub2", _directory(FILES[7:]).digest(), _directory(FILES[7:]).size()),
        ]
    )


async def _store_of(path: Path, blobs: list[bytes], directories: list[Directory]) -> str:
    """A local store at ``path`` holding ``blobs`` and ``directories`` (leaves first)."""
    local = open_store(str(path), StoreOptions(create=True))
    try:
        for data in blobs:
            await put_stream(local.blobs, [data])
        await local.directories.put_many(directories)
    finally:
        await local.aclose()
    return str(path)


async def _local_store(path: Path) -> str:
    return await _store_of(
        path,
        [*FILES, BIG],
        [_directory(FILES), _directory(FILES[:5]), _directory(FILES[7:]), _tree()],
    )


def _read_many(url: str, digests: list[bytes]) -> list[Any]:
    with grpc.insecure_channel(url.removeprefix("grpc+http://")) as channel:
        stub = batch_grpc.BatchBlobServiceStub(channel)
        messages = stub.ReadMany(batch_pb.ReadManyRequest(digests=digests))
        return [part for message in messages for part in message.parts]


async def test_serve_answers_each_blob_in_order_in_parts_and_names_the_missing(
    tmp_path: Path,
) -> None:
    store = await _local_store(tmp_path / "store")
    absent = B3Digest.of(b"not in the store")
    asked = [B3Digest.of(FILES[3]), absent, B3Digest.of(BIG), B3Digest.of(FILES[0])]
    with serving(store, tmp_path / "serve.log") as served:
        parts = _read_many(served.url, [bytes(d) for d in asked])
    blobs: list[bytes | None] = []
    current = b""
    for part in parts:
        if part.missing:
            assert part.end and not part.data and not current
            blobs.append(None)
            continue
        current += part.data
        if part.end:
            blobs.append(current)
            current = b""
    assert blobs == [FILES[3], None, BIG, FILES[0]]
    assert len(parts) == 1 + 1 + 3 + 1  # the big blob in parts of READ_MESSAGE_BYTES


async def test_serve_refuses_a_bad_digest_and_too_many_digests(tmp_path: Path) -> None:
    store = await _local_store(tmp_path / "store")
    with serving(store, tmp_path / "serve.log") as served:
        with pytest.raises(grpc.RpcError) as bad:
            _read_many(served.url, [b"short"])
        with pytest.raises(grpc.RpcError) as many:
            _read_many(served.url, [bytes(B3Digest.of(FILES[0]))] * (READ_MANY_DIGESTS + 1))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert many.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _blobs(client: Any) -> GrpcBlobService:
    assert isinstance(client.blobs, GrpcBlobService)
    return client.blobs


async def test_a_walk_through_a_big_directory_costs_a_call_per_window_not_per_file(
    tmp_path: Path,
) -> None:
    many = [i.to_bytes(2, "big") * (50 + i) for i in range(5 * BATCH_FILES // 2)]
    store = await _store_of(tmp_path / "store", many, [_directory(many)])
    with serving(store, tmp_path / "serve.log") as served:
        client = open_store(served.url)
        try:
            await client.directories.get(_directory(many).digest())
            for data in many:
                reader = await client.blobs.open_read(B3Digest.of(data))
                assert reader is not None and bytes(await reader.pread(0, len(data))) == data
            stats = _blobs(client).stats
            assert stats.stat_calls == 0
            assert stats.read_calls <= 5  # a window at a time (64 files), topped up at half
            assert stats.bytes_received == sum(map(len, many))
        finally:
            await client.aclose()


async def test_looking_into_a_directory_fetches_the_first_files_below_it_in_one_call(
    tmp_path: Path,
) -> None:
    store = await _local_store(tmp_path / "store")
    with serving(store, tmp_path / "serve.log") as served:
        client = open_store(served.url)
        try:
            await client.directories.get(_tree().digest())  # what a mount's first lookup does
            # A walk going into sub2 opens its files: fetched with the tree's already.
            for data in FILES[7:]:
                reader = await client.blobs.open_read(B3Digest.of(data))
                assert reader is not None and bytes(await reader.pread(0, len(data))) == data
            stats = _blobs(client).stats
            assert (stats.read_calls, stats.stat_calls) == (1, 0)
            assert stats.bytes_received == sum(map(len, FILES))
        finally:
            await client.aclose()


async def test_opening_a_file_reads_the_big_files_of_its_window_beside_it(
    tmp_path: Path,
) -> None:
    files = [*FILES[:3], BIG]  # BIG: too big for a ReadMany window
    store = await _store_of(tmp_path / "store", files, [_directory(files)])
    with serving(store, tmp_path / "serve.log") as served:
        client = open_store(served.url)
        try:
            await client.directories.get(_directory(files).digest())
            blobs = _blobs(client)
            reader = await blobs.open_read(B3Digest.of(FILES[0]))
            assert reader is not None
            with trio.fail_after(20):
                while blobs.stats.bytes_received < sum(map(len, files)):
                    await trio.sleep(0.01)
            calls = blobs.stats.read_calls
            for data in files:
                reader = await blobs.open_read(B3Digest.of(data))
                assert reader is not None and bytes(await reader.pread(0, len(data))) == data
            assert (blobs.stats.read_calls, blobs.stats.stat_calls) == (calls, 0)
            assert blobs.stats.bytes_received == sum(map(len, files))
        finally:
            await client.aclose()


async def test_a_directory_looked_into_before_those_below_it_arrived_reads_ahead_in_them_after(
    tmp_path: Path,
) -> None:
    backend = _backend()
    below = _directory(FILES[7:])
    top = Directory.from_nodes(
        [*_directory(FILES[:3]).files, DirectoryNode(b"sub", below.digest(), below.size())]
    )
    backend.put_directories([below, top])
    backend.rest_of_closure = threading.Event()
    batch = _LyingBatch(backend, {}, "honest")
    with fake_server(backend, batch) as url:
        client = open_store(url)
        try:
            # Answered with the root alone: its own files are read ahead at once.
            assert await client.directories.get(top.digest()) == top
            backend.rest_of_closure.set()
            with trio.fail_after(20):  # then the files below, once `sub` arrived
                while batch.calls < 2:
                    await trio.sleep(0.01)
            assert await client.directories.get(below.digest()) == below
            for data in FILES[7:]:
                reader = await client.blobs.open_read(B3Digest.of(data))
                assert reader is not None and bytes(await reader.pread(0, len(data))) == data
            assert (batch.calls, backend.read_calls) == (2, [])
            assert isinstance(client.directories, GrpcDirectoryService)
            assert client.directories.get_calls == 1
        finally:
            await client.aclose()


class _LyingBatch(batch_grpc.BatchBlobServiceServicer):  # type: ignore[misc]
    """ReadMany answered from ``lies`` (digest -> bytes sent) before the backend's blobs."""

    def __init__(self, backend: FakeBackend, lies: dict[bytes, bytes], how: str) -> None:
        self.backend = backend
        self.lies = lies
        self.how = how
        self.calls = 0

    def ReadMany(self, request: Any, context: Any) -> Iterator[Any]:
        self.calls += 1
        digests = list(request.digests)
        if self.how == "cut short":
            digests = digests[:1]
        parts = [
            batch_pb.BlobPart(data=self.lies.get(digest, self.backend.blobs[digest]), end=True)
            for digest in digests
        ]
        if self.how == "extra blob":
            parts.append(batch_pb.BlobPart(data=b"more", end=True))
        yield batch_pb.BlobParts(parts=parts[:1])
        yield batch_pb.BlobParts(parts=parts[1:])


def _backend() -> FakeBackend:
    backend = FakeBackend()
    for data in FILES:
        backend.blobs[bytes(B3Digest.of(data))] = data
    backend.put_directories([_directory(FILES)])
    return backend


async def _open_all(url: str) -> list[bytes]:
    client = open_store(url)
    try:
        await client.directories.get(_directory(FILES).digest())
        read = []
        for data in FILES:
            reader = await client.blobs.open_read(B3Digest.of(data))
            assert reader is not None
            read.append(bytes(await reader.pread(0, reader.size)))
        return read
    finally:
        await client.aclose()


@pytest.mark.parametrize("how", ["other bytes", "too many bytes", "cut short", "extra blob"])
async def test_a_lying_read_many_answer_is_refused_and_its_blobs_read_one_by_one(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = _backend()
    target = bytes(B3Digest.of(FILES[4]))
    lies = {
        "other bytes": {target: FILES[5][: len(FILES[4])]},
        "too many bytes": {target: FILES[4] + b"!"},
    }.get(how, {})
    batch = _LyingBatch(backend, lies, how)
    caplog.set_level(logging.DEBUG, logger="tvixmount.stores.grpc.blobs")
    with fake_server(backend, batch) as url:
        assert await _open_all(url) == FILES
    assert batch.calls >= 1
    if how != "extra blob":  # there every blob asked for came, and verified
        assert backend.read_calls, "the refused blobs were read again one by one"
    if how != "cut short":
        assert any(r.levelno == logging.WARNING for r in caplog.records), caplog.text


async def test_a_server_without_read_many_is_read_blob_by_blob() -> None:
    backend = _backend()
    with fake_server(backend) as url:
        assert await _open_all(url) == FILES
    assert sorted(backend.read_calls) == sorted(bytes(B3Digest.of(d)) for d in set(FILES))
