"""systemd and terminals: READY=1 once the mount answers, STOPPING=1 at shutdown, and a
background mount that never writes into the terminal it was started from."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import (
    force_unmount,
    foreground_server,
    make_fixture_store,
    requires_fuse,
    run_tvixmount,
    tvixmount_command,
)
from tvixmount.fs.mounttable import tvixmount_at
from tvixmount.fs.processes import serving_pids, wait_gone

pytestmark = requires_fuse

_WAIT = 30.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_fixture_store(tmp_path_factory.mktemp("systemd") / "store")


@contextmanager
def _notify_socket(address: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
        sock.settimeout(_WAIT)
        yield sock
    finally:
        sock.close()


def _receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_arrives_once_the_mount_answers_and_stopping_at_shutdown(
    store: str, tmp_path: Path, abstract: bool
) -> None:
    name = f"tvixmount-test-{os.getpid()}-{tmp_path.name}"
    address, announced = ("\0" + name, "@" + name) if abstract else (str(tmp_path / "notify"), "")
    announced = announced or address
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with (
        _notify_socket(address) as sock,
        foreground_server(
            store,
            mountpoint,
            env={**os.environ, "NOTIFY_SOCKET": announced},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc,
    ):
        assert _receive(sock) == "READY=1"
        # On READY the mount already answers, and its root lookups work.
        assert tvixmount_at(str(mountpoint))
        os.statvfs(mountpoint)
        assert (mountpoint / os.fsdecode(fx.ROOT_BLOB_A)).read_bytes() == fx.BLOB_A
        proc.send_signal(signal.SIGTERM)
        assert _receive(sock) == "STOPPING=1"
        assert proc.wait(timeout=_WAIT) == 0


def test_a_foreground_mount_without_notify_socket_sends_nothing(store: str, tmp_path: Path) -> None:
    """No $NOTIFY_SOCKET: nothing is sent anywhere, and the mount serves as usual."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    with foreground_server(store, mountpoint, env=env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        # The foreground mount logs to stderr: "serving" comes once it answers.
        line = proc.stderr.readline()
        assert f"serving {mountpoint}" in line, line
        assert (mountpoint / os.fsdecode(fx.ROOT_BLOB_A)).read_bytes() == fx.BLOB_A
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=_WAIT) == 0


def _drain(fd: int) -> bytes:
    """Whatever the terminal has received so far (EIO: every writer closed it)."""
    data = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError as exc:
            if exc.errno == errno.EIO:
                break
            raise
        if not chunk:
            break
        data += chunk
    return data


def test_a_background_mount_never_writes_into_its_terminal_after_returning(
    tmp_path: Path,
) -> None:
    # Missing content makes the server log errors while it serves.
    store = make_fixture_store(tmp_path / "store", blobs=[], with_directories=False)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    controller, terminal = os.openpty()
    try:
        result = subprocess.run(
            tvixmount_command("-v", "mount", mountpoint, "--store", store),
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            timeout=_WAIT,
            check=False,
        )
        assert result.returncode == 0
        before = _drain(controller)
        pids = serving_pids(mountpoint)
        try:
            with pytest.raises(OSError):
                (mountpoint / os.fsdecode(fx.ROOT_BLOB_A)).read_bytes()
            os.kill(pids[0], signal.SIGTERM)
            assert not wait_gone(pids, _WAIT)
        finally:
            force_unmount(mountpoint)
        assert _drain(controller) == b"", f"written after the mount returned (before: {before!r})"
    finally:
        os.close(controller)
        os.close(terminal)


def test_a_background_mount_logs_to_its_log_file(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store", blobs=[], with_directories=False)
    mountpoint, log_file = tmp_path / "mnt", tmp_path / "mount.log"
    mountpoint.mkdir()
    try:
        result = run_tvixmount("--log-file", log_file, "mount", mountpoint, "--store", store)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        with pytest.raises(OSError):
            (mountpoint / os.fsdecode(fx.ROOT_BLOB_A)).read_bytes()
    finally:
        force_unmount(mountpoint)
    log = log_file.read_text()
    assert f"serving {mountpoint}" in log
    assert "is missing from the store" in log
