"""systemd's readiness datagrams (sd_notify) on a socket bound here."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from tvixmount.sdnotify import notify


def test_nothing_is_sent_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_the_state_arrives_as_one_datagram(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, abstract: bool
) -> None:
    name = f"tvixmount-sdnotify-{os.getpid()}"
    address = "\0" + name if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name if abstract else address)
        assert notify("READY=1") is True
        assert notify("STOPPING=1") is True
        assert sock.recv(64) == b"READY=1"
        assert sock.recv(64) == b"STOPPING=1"


def test_an_unreachable_socket_is_a_warning_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    with caplog.at_level(logging.WARNING, logger="tvixmount.sdnotify"):
        assert notify("READY=1") is False
    (record,) = caplog.records
    assert record.getMessage().startswith(
        f"cannot notify systemd ({tmp_path / 'nobody'}) of READY=1"
    )
