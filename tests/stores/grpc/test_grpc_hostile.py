"""A hostile tvix gRPC server on loopback, and what a mount of it must still do (issue 18).

The server (tests/grpc_serving.fake_server) serves whatever the test puts in
its backend: streams that never end, calls that never answer, blobs and
Directories that lie. Mounted with the real CLI, the daemon must answer EIO
without serving a wrong byte, stay within a memory ceiling (its peak RSS,
VmHWM), and keep serving what it already verified.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.grpc_serving import FakeBackend, serve_directory, serve_file, store_basename
from tests.mounting import Mount, mounted, requires_fuse, run_tvixmount
from tvixmount.castore import B3Digest, Directory, FileNode
from tvixmount.nar.narinfo import fingerprint
from tvixmount.nar.signing import SecretKey
from tvixmount.pathinfo.model import NarInfo, PathInfo
from tvixmount.storepath import StorePath
from tvixmount.stores.grpc.blobs import DIRECT_READ_MAX
from tvixmount.stores.grpc.transport import REMOTE_THREADS

pytestmark = requires_fuse

MEMORY_CEILING_KIB = 512 << 10
_HUNG_CALLS = 50


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def read_errno(path: Path) -> int | None:
    try:
        path.read_bytes()
    except OSError as exc:
        return exc.errno
    return None


def test_an_endless_blob_stream_is_cut_off_within_the_memory_ceiling(
    backend: FakeBackend, url: str, tmp_path: Path
) -> None:
    endless = serve_file(backend, "endless", b"x" * 1000)
    backend.endless_blobs.add(bytes(B3Digest.of(b"x" * 1000)))
    with mounted(url, tmp_path / "mnt", "--timeout", "20") as mnt:
        assert read_errno(mnt / endless) == errno.EIO
        time.sleep(2)  # an abandoned call that kept reading would grow meanwhile
        (pid,) = mnt.pids
        assert peak_rss_kib(pid) < MEMORY_CEILING_KIB


def test_an_endless_recursive_directory_stream_is_cut_off_within_the_memory_ceiling(
    backend: FakeBackend, url: str, tmp_path: Path
) -> None:
    # A Directory of 20,000 entries: about 1.5 MB a message, sent again and again.
    big = Directory.from_nodes([FileNode(b"f%06d" % i, fx.EMPTY_DIGEST, 0) for i in range(20_000)])
    endless = serve_directory(backend, "endless-dir", big)
    backend.endless_directories.add(bytes(big.digest()))
    with mounted(url, tmp_path / "mnt", "--timeout", "20") as mnt:
        # The first message is the Directory asked for (its digest checks out), so
        # it is listed as soon as it arrived; the repeat after it ends the reply.
        assert sorted(os.listdir(mnt / endless)) == [node.name.decode() for node in big.files]
        time.sleep(2)
        (pid,) = mnt.pids
        assert peak_rss_kib(pid) < MEMORY_CEILING_KIB
    assert "sent twice" in mnt.log()


def test_a_file_node_smaller_than_its_blob_serves_no_prefix(
    backend: FakeBackend, url: str, tmp_path: Path
) -> None:
    script = b'#!/bin/sh\necho safe\nrm -rf "$HOME/important"\n'
    short = serve_file(backend, "short", script, size=20)
    with mounted(url, tmp_path / "mnt") as mnt:
        assert read_errno(mnt / short) == errno.EIO


def test_a_chunk_list_that_is_not_the_blob_is_never_served_through_a_mount(
    backend: FakeBackend, url: str, tmp_path: Path
) -> None:
    # Big enough that a client asks for its chunks rather than reading it whole.
    data = bytes(range(256)) * ((DIRECT_READ_MAX + (1 << 20)) // 256)
    other = bytearray(data)
    other[1_700_000] ^= 0xFF
    name = serve_file(backend, "chunked", data)
    chunks = []
    for offset in range(0, len(other), 256 << 10):
        piece = bytes(other[offset : offset + (256 << 10)])
        backend.blobs[bytes(B3Digest.of(piece))] = piece
        chunks.append((bytes(B3Digest.of(piece)), len(piece)))
    backend.chunks[bytes(B3Digest.of(data))] = chunks
    with mounted(url, tmp_path / "mnt") as mnt:
        # Even the first bytes, whose chunk is genuine, are not served.
        with pytest.raises(OSError) as caught, (mnt / name).open("rb") as f:
            f.read(100)
        assert caught.value.errno == errno.EIO


def _drop_pages(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_a_cached_file_still_reads_while_50_remote_calls_hang(
    backend: FakeBackend, url: str, tmp_path: Path
) -> None:
    good_data = b"verified once, served from the cache\n" * 100
    good = serve_file(backend, "good", good_data)
    later_data = b"fetched after the hung calls gave up\n" * 10
    later = serve_file(backend, "later", later_data)
    hung = []
    for i in range(_HUNG_CALLS):
        name = serve_file(backend, f"hung-{i}", f"hangs {i}".encode())
        hung.append(name)
        backend.hung_blobs.add(bytes(B3Digest.of(f"hangs {i}".encode())))
    with mounted(url, tmp_path / "mnt", "--timeout", "8") as mnt:
        assert (mnt / good).read_bytes() == good_data
        for name in hung:
            (mnt / name).stat()  # looked up now: only their blobs hang
        results: dict[str, int | None] = {}
        readers = [
            threading.Thread(target=lambda n=name: results.__setitem__(n, read_errno(mnt / n)))
            for name in hung
        ]
        for reader in readers:
            reader.start()
        # The blob client runs REMOTE_THREADS calls at once; the rest queue.
        _wait_for_hung_calls(backend, min(_HUNG_CALLS, REMOTE_THREADS), mnt)
        _drop_pages(mnt / good)
        assert (mnt / good).read_bytes() == good_data
        for reader in readers:
            reader.join(60)
        assert set(results.values()) == {errno.EIO}, results
        # The server still hangs those calls: their threads must be back anyway.
        assert (mnt / later).read_bytes() == later_data


def _wait_for_hung_calls(backend: FakeBackend, count: int, mnt: Mount) -> None:
    deadline = time.monotonic() + 30
    while backend.hung_calls < count:
        assert time.monotonic() < deadline, f"only {backend.hung_calls} calls hang: {mnt.log()}"
        time.sleep(0.05)


def _signed(backend: FakeBackend, name: str, data: bytes, key: SecretKey | None) -> str:
    basename = serve_file(backend, name, data)
    store_path = StorePath.parse(basename)
    info = PathInfo.from_proto(backend.pathinfos[store_path.digest])
    if key is not None:
        signature = key.sign(fingerprint(store_path, bytes(32), 0, []))
        info = PathInfo(info.node, (), NarInfo(0, bytes(32), signatures=(signature,)))
    backend.pathinfos[store_path.digest] = info.to_proto()
    return basename


def test_with_a_trusted_key_only_signed_pathinfos_are_served(
    backend: FakeBackend, url: str, tmp_path: Path
) -> None:
    key = SecretKey.generate("test-1")
    stranger = SecretKey.generate("stranger-1")
    signed = _signed(backend, "signed", b"signed\n", key)
    unsigned = _signed(backend, "unsigned", b"unsigned\n", None)
    forged = _signed(backend, "forged", b"forged\n", stranger)
    trusted = str(key.public_key())
    ok = run_tvixmount("path-info", signed, "--store", url, "--trusted-public-key", trusted)
    assert ok.returncode == 0, ok.stderr
    for name in (unsigned, forged):
        refused = run_tvixmount("path-info", name, "--store", url, "--trusted-public-key", trusted)
        assert refused.returncode == 1
        assert refused.stderr.strip().endswith("has no valid signature by a trusted key")
        assert len(refused.stderr.strip().splitlines()) == 1
    with mounted(url, tmp_path / "mnt", "--trusted-public-key", trusted) as mnt:
        assert (mnt / signed).read_bytes() == b"signed\n"
        assert read_errno(mnt / unsigned) == errno.EIO
        assert read_errno(mnt / forged) == errno.EIO
    # Without keys, the same server's paths are all served (the flag is what asks).
    assert run_tvixmount("path-info", unsigned, "--store", url).returncode == 0


@pytest.mark.parametrize("kind", ["memory", "embedded"])
def test_a_trusted_key_for_a_store_without_signatures_is_refused_in_one_line(
    kind: str, tmp_path: Path
) -> None:
    store = "memory://" if kind == "memory" else str(tmp_path / "store")
    if kind == "embedded":
        assert run_tvixmount("import", fx_file(tmp_path), "--store", store).returncode == 0
    key = str(SecretKey.generate("test-1").public_key())
    result = run_tvixmount(
        "path-info", store_basename("x"), "--store", store, "--trusted-public-key", key
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"tvixmount: error: --trusted-public-key does not apply to {store!r}: only binary "
        "caches and gRPC stores have signatures to check"
    ]


def fx_file(tmp_path: Path) -> Path:
    path = tmp_path / "hello.txt"
    path.write_bytes(fx.HELLOWORLD_BLOB)
    return path
