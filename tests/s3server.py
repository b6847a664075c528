"""An S3-compatible server on loopback for tests: moto's standalone server, a real HTTP S3 API.

The server runs as its own process (``moto_server``, from the ``dev``
extras) on a free port; :func:`s3_server` waits until it answers and kills
it at the end, leaving nothing behind. Clients reach it with a fixed test
key pair from an AWS credentials file, as users configure them, so the
code under test resolves credentials through boto3's standard chain.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
ACCESS_KEY = "tvixmount-test"
SECRET_KEY = "tvixmount-test-secret"
_START_TIMEOUT = 60.0


def _moto_server() -> str | None:
    beside = Path(sys.executable).with_name("moto_server")
    if beside.exists():
        return str(beside)
    return shutil.which("moto_server")


requires_moto = pytest.mark.skipif(
    _moto_server() is None, reason="moto_server (pip install 'moto[server]') is not installed"
)


@dataclass
class S3Server:
    endpoint: str  # HOST:PORT

    def url(self, bucket: str, **params: str) -> str:
        """An ``s3://`` store URL for ``bucket`` on this server (Nix's grammar)."""
        query = {"endpoint": self.endpoint, "scheme": "http", "region": REGION, **params}
        return f"s3://{bucket}?" + "&".join(f"{k}={v}" for k, v in query.items())

    def client(self) -> S3Client:
        """A plain boto3 client (the test's own, not tvixmount's)."""
        return boto3.client(
            "s3",
            endpoint_url=f"http://{self.endpoint}",
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def upload_dir(self, directory: Path, bucket: str) -> None:
        """Every file below ``directory`` as an object keyed by its relative path."""
        client = self.client()
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket, path.relative_to(directory).as_posix())

    def download_bucket(self, bucket: str, directory: Path) -> list[str]:
        """Every object of ``bucket`` into ``directory``; the keys."""
        client = self.client()
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", []):
                key = entry["Key"]
                target = directory / key
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(target))
                keys.append(key)
        return keys


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_answering(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer on {url}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    server = _moto_server()
    assert server is not None
    port = _free_port()
    process = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_until_answering(f"http://127.0.0.1:{port}/moto-api/", process)
        yield S3Server(f"127.0.0.1:{port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def aws_credentials(home: Path, profile: str = "default") -> Iterator[Path]:
    """Point boto3's standard chain (here and in child processes) at a credentials file."""
    home.mkdir(parents=True, exist_ok=True)
    credentials = home / "credentials"
    credentials.write_text(
        f"[{profile}]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    config = home / "config"
    config.write_text("")
    saved = {
        name: os.environ.get(name)
        for name in (
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_CONFIG_FILE",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_EC2_METADATA_DISABLED",
        )
    }
    for name in saved:
        os.environ.pop(name, None)
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials)
    os.environ["AWS_CONFIG_FILE"] = str(config)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # no 1 s probe of 169.254.169.254
    try:
        yield credentials
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
