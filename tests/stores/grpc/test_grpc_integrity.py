"""The clients refuse what a lying server sends (an in-process, dict-backed server)."""

from __future__ import annotations

import logging

import pytest

from tests.fixtures import castore as fx
from tests.grpc_serving import FakeBackend
from tvixmount._proto import castore_pb2
from tvixmount.castore import B3Digest, Directory, DirectoryNode
from tvixmount.errors import IntegrityError, StoreError, ValidationError
from tvixmount.pathinfo.lookup import find_path_info
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores import Store
from tvixmount.stores.grpc.directories import GrpcDirectoryService

COMPLICATED = bytes(fx.DIRECTORY_COMPLICATED.digest())
WITH_KEEP = bytes(fx.DIRECTORY_WITH_KEEP.digest())


def _msg(directory: Directory) -> castore_pb2.Directory:
    return directory.to_proto()


async def _recursive(client: Store, digest: bytes) -> list[Directory]:
    return [d async for d in client.directories.get_recursive(B3Digest(digest))]


async def test_directory_whose_digest_does_not_match_is_refused(
    client: Store, backend: FakeBackend
) -> None:
    backend.directories[COMPLICATED] = [_msg(fx.DIRECTORY_WITH_KEEP)]
    with pytest.raises(IntegrityError, match="has digest"):
        await client.directories.get(B3Digest(COMPLICATED))


async def test_recursive_get_whose_first_directory_is_not_the_root_is_refused(
    client: Store, backend: FakeBackend
) -> None:
    backend.directories[COMPLICATED] = [_msg(fx.DIRECTORY_WITH_KEEP)]
    with pytest.raises(IntegrityError, match="first Directory"):
        await _recursive(client, COMPLICATED)


async def test_recursive_get_with_a_child_before_its_parent_is_refused(
    client: Store, backend: FakeBackend
) -> None:
    parent = Directory.from_nodes(
        [DirectoryNode(b"sub", fx.DIRECTORY_COMPLICATED.digest(), fx.DIRECTORY_COMPLICATED.size())]
    )
    # WITH_KEEP is referred to only by COMPLICATED, which comes after it.
    backend.directories[bytes(parent.digest())] = [
        _msg(parent),
        _msg(fx.DIRECTORY_WITH_KEEP),
        _msg(fx.DIRECTORY_COMPLICATED),
    ]
    with pytest.raises(ValidationError, match="child before its parent"):
        await _recursive(client, bytes(parent.digest()))


async def test_recursive_get_missing_a_referred_directory_is_refused(
    client: Store, backend: FakeBackend
) -> None:
    backend.directories[COMPLICATED] = [_msg(fx.DIRECTORY_COMPLICATED)]
    with pytest.raises(StoreError, match="did not send referred"):
        await _recursive(client, COMPLICATED)


async def test_recursive_get_in_tvix_order_is_accepted(client: Store, backend: FakeBackend) -> None:
    backend.directories[COMPLICATED] = [
        _msg(fx.DIRECTORY_COMPLICATED),
        _msg(fx.DIRECTORY_WITH_KEEP),
    ]
    assert await _recursive(client, COMPLICATED) == [
        fx.DIRECTORY_COMPLICATED,
        fx.DIRECTORY_WITH_KEEP,
    ]


async def test_directory_breaking_the_data_model_is_refused(
    client: Store, backend: FakeBackend
) -> None:
    broken = castore_pb2.Directory(
        symlinks=[
            castore_pb2.SymlinkNode(name=b"b", target=b"x"),
            castore_pb2.SymlinkNode(name=b"a", target=b"x"),
        ]
    )
    digest = B3Digest.of(broken.SerializeToString(deterministic=True))
    backend.directories[bytes(digest)] = [broken]
    with pytest.raises(ValidationError, match="invalid Directory"):
        await client.directories.get(digest)


async def test_blob_whose_bytes_do_not_hash_to_its_digest_is_refused(
    client: Store, backend: FakeBackend
) -> None:
    backend.blobs[bytes(fx.BLOB_B_DIGEST)] = fx.BLOB_B[:-1] + b"\xff"
    with pytest.raises(IntegrityError, match="hash to"):
        await client.blobs.open_read(fx.BLOB_B_DIGEST)


async def test_refused_blob_is_logged_with_the_reason(
    client: Store, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "tvixmount.pathinfo.lookup")
    backend.blobs[bytes(fx.HELLOWORLD_DIGEST)] = b"Hello World?"
    with caplog.at_level(logging.WARNING), pytest.raises(IntegrityError):
        await client.blobs.open_read(fx.HELLOWORLD_DIGEST)
    assert f"blob {fx.HELLOWORLD_DIGEST}" in caplog.text and "hash to" in caplog.text


def _chunked(backend: FakeBackend, data: bytes, size: int, corrupt: int | None) -> B3Digest:
    """Serve ``data`` as chunks of ``size`` bytes, chunk ``corrupt`` with wrong bytes."""
    chunks = []
    for index, offset in enumerate(range(0, len(data), size)):
        piece = data[offset : offset + size]
        digest = bytes(B3Digest.of(piece))
        backend.blobs[digest] = piece if index != corrupt else bytes(len(piece))
        chunks.append((digest, len(piece)))
    blob = B3Digest.of(data)
    backend.chunks[bytes(blob)] = chunks
    return blob


async def test_a_blob_with_a_corrupt_chunk_is_refused_before_any_byte_is_served(
    client: Store, backend: FakeBackend
) -> None:
    blob = _chunked(backend, fx.BLOB_B, 100_000, corrupt=3)
    with pytest.raises(IntegrityError, match="hash to"):
        await client.blobs.open_read(blob)


async def test_a_chunk_list_whose_chunks_do_not_make_the_blob_is_refused(
    client: Store, backend: FakeBackend
) -> None:
    """Each chunk matches its own digest, but together they are other bytes (issue 18)."""
    blob = B3Digest.of(fx.BLOB_B)
    other = bytearray(fx.BLOB_B)
    other[250_000] ^= 1
    _chunked(backend, bytes(other), 100_000, corrupt=None)
    backend.chunks[bytes(blob)] = backend.chunks.pop(bytes(B3Digest.of(bytes(other))))
    with pytest.raises(IntegrityError, match="chunk list makes a blob hashing to"):
        await client.blobs.open_read(blob)


async def test_a_chunked_blob_is_fetched_once_and_a_reopen_asks_nothing(
    client: Store, backend: FakeBackend
) -> None:
    blob = _chunked(backend, fx.BLOB_B, 100_000, corrupt=None)
    reader = await client.blobs.open_read(blob)
    assert reader is not None
    assert bytes(await reader.pread(550_000, 100_000)) == fx.BLOB_B[550_000:650_000]
    chunks = len(backend.chunks[bytes(blob)])
    assert sorted(backend.read_calls) == sorted(d for d, _ in backend.chunks[bytes(blob)])
    stats = backend.stat_calls
    again = await client.blobs.open_read(blob)
    assert again is not None
    assert bytes(await again.pread(0, len(fx.BLOB_B))) == fx.BLOB_B
    assert (len(backend.read_calls), backend.stat_calls) == (chunks, stats)


async def test_pathinfo_for_another_store_path_is_refused(
    client: Store, backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "tvixmount.pathinfo.lookup")
    info = PathInfo(fx.ROOT_NODES[0], (), NarInfo(0, bytes(32)))
    asked = PathInfo(fx.ROOT_NODES[1], (), NarInfo(0, bytes(32))).store_path.digest
    backend.pathinfos[asked] = info.to_proto()
    assert await find_path_info(client.pathinfos, StorePath(asked, "test")) is None
    assert "answered the lookup" in caplog.text


async def test_invalid_pathinfo_is_refused(client: Store, backend: FakeBackend) -> None:
    msg = PathInfo(fx.ROOT_NODES[0], (), NarInfo(0, bytes(32))).to_proto()
    msg.narinfo.nar_sha256 = b"short"
    digest = PathInfo(fx.ROOT_NODES[0], (), NarInfo(0, bytes(32))).store_path.digest
    backend.pathinfos[digest] = msg
    with pytest.raises(ValidationError, match="invalid PathInfo"):
        await client.pathinfos.get(digest)


async def test_a_directory_miss_fetches_its_closure_in_one_get(
    client: Store, backend: FakeBackend
) -> None:
    backend.directories[COMPLICATED] = [
        _msg(fx.DIRECTORY_COMPLICATED),
        _msg(fx.DIRECTORY_WITH_KEEP),
    ]
    directories = client.directories
    assert isinstance(directories, GrpcDirectoryService)
    assert await directories.get(B3Digest(COMPLICATED)) == fx.DIRECTORY_COMPLICATED
    assert await directories.get(B3Digest(WITH_KEEP)) == fx.DIRECTORY_WITH_KEEP
    assert directories.get_calls == 1


async def test_a_reply_broken_after_the_root_still_answers_it_and_never_what_broke(
    client: Store, backend: FakeBackend
) -> None:
    # The root arrives first and is checked; the Directory after it is not the
    # one it refers to, which ends the reply: that child is then asked for alone.
    stray = Directory.from_nodes(
        [DirectoryNode(b"sub", fx.DIRECTORY_WITH_KEEP.digest(), fx.DIRECTORY_WITH_KEEP.size())]
    )
    backend.directories[COMPLICATED] = [_msg(fx.DIRECTORY_COMPLICATED), _msg(stray)]
    backend.directories[WITH_KEEP] = [_msg(fx.DIRECTORY_WITH_KEEP)]
    directories = client.directories
    assert isinstance(directories, GrpcDirectoryService)
    assert await directories.get(B3Digest(COMPLICATED)) == fx.DIRECTORY_COMPLICATED
    assert await directories.get(B3Digest(WITH_KEEP)) == fx.DIRECTORY_WITH_KEEP
    assert await directories.get(stray.digest()) is None
    assert directories.get_calls == 3
