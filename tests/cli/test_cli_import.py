"""``tvixmount import``, ``nar`` and ``path-info`` as subprocesses, against real Nix."""

from __future__ import annotations

import base64
import json
import os
import pty
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.local_tree import make_tree, nix, nix_add, nix_dump, requires_nix
from tests.mounting import tvixmount_command
from tvixmount import nixbase32
from tvixmount.castore import SymlinkNode
from tvixmount.cli.import_ import PROGRESS_MIN_BYTES
from tvixmount.cli.path_info import to_json
from tvixmount.pathinfo import NarInfo, PathInfo, Signature
from tvixmount.storepath import StorePath

UNKNOWN = "/nix/store/00000000000000000000000000000000-unknown"


def tvixmount(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(tvixmount_command(*args), capture_output=True, check=False, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def imported(store: str, *paths: Path) -> list[str]:
    result = tvixmount("import", *map(str, paths), "--store", store)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


def one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@requires_nix
def test_import_prints_the_store_path_nix_store_add_prints(tree: Path, store: str) -> None:
    assert imported(store, tree) == [nix_add(tree)]


@requires_nix
def test_import_prints_one_path_per_argument_in_order(tree: Path, store: str) -> None:
    paths = [tree / "nested" / "run.sh", tree, tree / "absolute-link"]
    assert imported(store, *paths) == [nix_add(p) for p in paths]


def test_import_creates_the_store(tree: Path, store: str) -> None:
    imported(store, tree)
    assert (Path(store) / "tvixmount-store").is_file()


@requires_nix
def test_nar_is_byte_identical_to_nix_store_dump(tree: Path, store: str) -> None:
    [path] = imported(store, tree)
    result = tvixmount("nar", path, "--store", store)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == nix_dump(tree)


@requires_nix
def test_nar_accepts_a_basename(tree: Path, store: str) -> None:
    [path] = imported(store, tree / "hello.txt")
    result = tvixmount("nar", os.path.basename(path), "--store", store)
    assert result.stdout == nix_dump(tree / "hello.txt")


@requires_nix
def test_path_info_json_matches_nix_path_info(tree: Path, store: str) -> None:
    [path] = imported(store, tree)
    nix_add(tree)
    theirs = json.loads(
        nix("nix", "path-info", "--json", "--extra-experimental-features", "nix-command", path)
    )
    result = tvixmount("path-info", "--json", path, "--store", store)
    assert result.returncode == 0, result.stderr.decode()
    ours = json.loads(result.stdout)
    keys = ("path", "narHash", "narSize", "references", "ca")
    assert [{k: o[k] for k in keys} for o in ours] == [{k: t[k] for k in keys} for t in theirs]


def test_path_info_json_has_no_signatures_or_deriver_when_absent(tree: Path, store: str) -> None:
    [path] = imported(store, tree)
    [obj] = json.loads(tvixmount("path-info", "--json", path, "--store", store).stdout)
    assert "signatures" not in obj
    assert "deriver" not in obj


def test_path_info_prints_each_path_once_sorted(tree: Path, store: str) -> None:
    paths = imported(store, tree / "hello.txt", tree / "nested")
    result = tvixmount("path-info", *paths, paths[0], "--store", store)
    assert result.stdout.decode().splitlines() == sorted(paths)


@pytest.mark.parametrize("command", ["nar", "path-info"])
def test_unknown_store_path_is_one_line_and_exit_1(tree: Path, store: str, command: str) -> None:
    imported(store, tree)
    result = tvixmount(command, UNKNOWN, "--store", store)
    assert result.returncode == 1
    assert "is not in the store" in one_error_line(result)
    assert result.stdout == b""


@pytest.mark.parametrize("command", ["nar", "path-info"])
def test_same_digest_with_another_name_is_unknown(tree: Path, store: str, command: str) -> None:
    [path] = imported(store, tree)
    result = tvixmount(command, path + "-other", "--store", store)
    assert result.returncode == 1
    assert "is not in the store" in one_error_line(result)


@pytest.mark.parametrize("command", ["nar", "path-info"])
def test_invalid_store_path_is_one_line_and_exit_1(store: str, command: str) -> None:
    result = tvixmount(command, "not-a-store-path", "--store", store)
    assert result.returncode == 1
    assert "invalid store path" in one_error_line(result)


def test_reading_a_missing_store_is_one_line_and_exit_1(store: str) -> None:
    result = tvixmount("path-info", UNKNOWN, "--store", store)
    assert result.returncode == 1
    assert "no tvixmount store" in one_error_line(result)
    assert not Path(store).exists()


def test_import_of_a_missing_path_fails_before_importing_anything(
    tree: Path, store: str, tmp_path: Path
) -> None:
    result = tvixmount("import", str(tree), str(tmp_path / "absent"), "--store", store)
    assert result.returncode == 1
    assert "absent: no such file or directory" in one_error_line(result)
    assert result.stdout == b""


def test_import_of_a_socket_is_one_line_and_records_nothing(tree: Path, store: str) -> None:
    imported(store, tree / "hello.txt")  # creates the store; the blob stays, the rest must not
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tree / "nested" / "sock"))
        result = tvixmount("import", str(tree), "--store", store)
    assert result.returncode == 1
    assert "nested/sock: cannot import a socket" in one_error_line(result)
    [hello] = imported(store, tree / "hello.txt")
    listing = tvixmount("path-info", hello, "--store", store)
    assert listing.stdout.decode().split() == [hello]


def test_import_of_a_fifo_records_no_directory_and_no_path_info(tree: Path, store: str) -> None:
    os.mkfifo(tree / "nested" / "deeper" / "fifo")
    tvixmount("import", str(tree / "empty-file"), "--store", store)  # just creates the store
    result = tvixmount("import", str(tree), "--store", store)
    assert result.returncode == 1
    assert "cannot import a FIFO" in one_error_line(result)
    db = Path(store) / "store.sqlite"
    counts = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "print(*(c.execute(f'select count(*) from {t}').fetchone()[0] "
            "for t in ('pathinfos', 'directories')))",
            str(db),
        ],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split()
    assert counts == ["1", "0"]  # only empty-file's path info, no directory at all


def test_no_progress_bar_when_stderr_is_not_a_terminal(tree: Path, store: str) -> None:
    result = tvixmount("import", str(tree), "--store", store)
    assert result.stderr == b""


def test_progress_bar_is_drawn_on_a_terminal_for_big_imports(tmp_path: Path, store: str) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "data").write_bytes(bytes(PROGRESS_MIN_BYTES + 1))
    primary, secondary = pty.openpty()
    try:
        result = subprocess.run(
            tvixmount_command("import", big, "--store", store),
            stdout=subprocess.PIPE,
            stderr=secondary,
            check=False,
            timeout=120,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
        )
        os.close(secondary)
        secondary = -1
        drawn = b""
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            drawn += data
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert result.returncode == 0
    assert result.stdout.decode().endswith("-big\n")
    assert b"big" in drawn  # the task description
    assert b" MB" in drawn  # the transferred-bytes column


def test_path_info_json_renders_deriver_and_signatures_like_nix() -> None:
    digest = bytes(range(20))
    info = PathInfo(
        node=SymlinkNode(f"{nixbase32.encode(digest)}-x".encode(), b"target"),
        references=(digest,),
        narinfo=NarInfo(
            nar_size=120,
            nar_sha256=bytes(32),
            signatures=(Signature("cache.example.org-1", b"\x01" * 64),),
            reference_names=(f"{nixbase32.encode(digest)}-x",),
            deriver=StorePath(digest, "x"),
        ),
    )
    store_path = f"/nix/store/{nixbase32.encode(digest)}-x"
    assert to_json(info) == {
        "path": store_path,
        "narHash": "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "narSize": 120,
        "references": [store_path],
        "deriver": store_path + ".drv",
        "signatures": ["cache.example.org-1:" + base64.b64encode(b"\x01" * 64).decode()],
    }


@requires_nix
@pytest.mark.parametrize("argument", [".", "nested/", "nested/deeper/.."])
def test_import_names_the_path_as_nix_does(tree: Path, store: str, argument: str) -> None:
    ours = subprocess.run(
        tvixmount_command("import", argument, "--store", store),
        cwd=tree,
        capture_output=True,
        check=True,
    ).stdout.decode()
    theirs = subprocess.run(
        ["nix-store", "--add", argument], cwd=tree, capture_output=True, check=True
    ).stdout.decode()
    assert ours == theirs
