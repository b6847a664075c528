"""Mount points where Nix already lives: populated directories, bind mounts, /nix/store itself.

Whatever touches more than a temporary directory runs in a private mount
namespace (``unshare --mount --propagation private``), so the host's mounts,
its /nix/store above all, never change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.housekeeping import one_error_line
from tests.mounting import (
    make_fixture_store,
    mounted,
    requires_fuse,
    run_tvixmount,
)
from tvixmount.fs.mounttable import is_mounted

pytestmark = requires_fuse

requires_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private mount namespace",
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_fixture_store(tmp_path_factory.mktemp("points") / "store")


# Runs in the namespace: helpers for the snippets below, then the snippet.
_PRELUDE = """
import os, subprocess, sys
def sh(*argv):
    subprocess.run(argv, check=True)
def tvixmount(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "tvixmount", *args], capture_output=True, text=True
    )
    if check and result.returncode != 0:
        sys.exit(f"tvixmount {args[0]} failed: {result.stderr}")
    return result
"""


def _in_namespace(snippet: str, **values: object) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a private mount namespace; ``values`` are its globals."""
    code = _PRELUDE + "".join(f"{k} = {v!r}\n" for k, v in values.items())
    code += textwrap.dedent(snippet)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parent.parent.parent,
    )


def _passed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"


# -- over a populated directory ------------------------------------------------


def test_a_non_empty_directory_is_hidden_while_mounted_and_comes_back(
    store: str, tmp_path: Path
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    (mountpoint / "old").write_text("kept")
    with mounted(store, mountpoint) as mnt:
        assert (mnt / fx.ROOT_BLOB_A).read_bytes() == fx.BLOB_A
        assert not (mountpoint / "old").exists()
        hidden = f"mounting over a non-empty directory {mountpoint} (1 entries hidden)"
        assert mnt.log().count(hidden) == 1
    assert (mountpoint / "old").read_text() == "kept"


def test_a_second_mount_over_a_serving_tvixmount_is_busy(store: str, tmp_path: Path) -> None:
    with mounted(store, tmp_path / "mnt") as mnt:
        line = one_error_line(run_tvixmount("mount", mnt.path, "--store", store))
        assert "busy" in line


@requires_namespaces
def test_a_bind_mount_is_mounted_over_and_left_in_place_by_umount(
    store: str, tmp_path: Path
) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    (source / "file").write_text("bound")
    result = _in_namespace(
        """
        sh("mount", "--bind", source, target)
        tvixmount("mount", target, "--store", store)
        try:
            assert open(os.path.join(target, name), "rb").read().decode("latin-1") == content
            assert not os.path.exists(os.path.join(target, "file"))
        finally:
            tvixmount("umount", target)
        assert open(os.path.join(target, "file")).read() == "bound"  # the bind mount stays
        refused = tvixmount("umount", target, check=False)
        assert refused.returncode == 1 and "not a tvixmount mount" in refused.stderr, refused
        assert open(os.path.join(target, "file")).read() == "bound"
        """,
        source=str(source),
        target=str(target),
        store=store,
        name=os.fsdecode(fx.ROOT_BLOB_A),
        content=fx.BLOB_A.decode("latin-1"),
    )
    _passed(result)


# -- umount only unmounts tvixmount mounts --------------------------------------


@requires_namespaces
def test_umount_refuses_a_tmpfs_in_one_line(tmp_path: Path) -> None:
    result = _in_namespace(
        """
        sh("mount", "-t", "tmpfs", "tmpfs", target)
        refused = tvixmount("umount", target, check=False)
        print(refused.returncode)
        print(refused.stderr, end="")
        assert os.path.ismount(target)
        """,
        target=str(tmp_path),
    )
    _passed(result)
    code, line, *rest = result.stdout.splitlines()
    assert code == "1" and not rest
    assert (
        line
        == f"tvixmount: error: {tmp_path} is not a tvixmount mount (it is tmpfs); not unmounting"
    )


@pytest.mark.skipif(shutil.which("squashfuse") is None, reason="needs squashfuse")
def test_a_fuse_mount_below_is_mounted_over_and_umount_leaves_it_alone(
    store: str, tmp_path: Path
) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "file").write_text("squashed")
    image, mountpoint = tmp_path / "tree.squashfs", tmp_path / "squash"
    subprocess.run(["mksquashfs", tmp_path / "tree", image, "-quiet", "-no-progress"], check=True)
    mountpoint.mkdir()
    subprocess.run(["squashfuse", image, mountpoint], check=True)
    try:
        with mounted(store, mountpoint) as mnt:
            assert (mnt / fx.ROOT_BLOB_A).read_bytes() == fx.BLOB_A
            assert f"mounting over the fuse.squashfuse mount at {mountpoint}" in mnt.log()
            result = run_tvixmount("umount", mountpoint)
            assert result.returncode == 0, result.stderr
            assert (mountpoint / "file").read_text() == "squashed"
            line = one_error_line(run_tvixmount("umount", mountpoint))
            assert "not a tvixmount mount (it is fuse.squashfuse)" in line
            assert (mountpoint / "file").read_text() == "squashed"
    finally:
        subprocess.run(["fusermount3", "-u", mountpoint], check=False)
    assert not is_mounted(str(mountpoint))


def test_umount_of_a_plain_directory_says_it_is_not_mounted(tmp_path: Path) -> None:
    assert "is not mounted" in one_error_line(run_tvixmount("umount", tmp_path))


# -- /nix/store itself ------------------------------------------------------------


_HELLO = "#!/bin/sh\necho hello from $0\n"


@pytest.fixture(scope="module")
def hello_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """An embedded store holding a package with an executable; (store URL, its store path)."""
    base = tmp_path_factory.mktemp("hello")
    package = base / "hello"
    (package / "bin").mkdir(parents=True)
    (package / "bin" / "hello").write_text(_HELLO)
    (package / "bin" / "hello").chmod(0o755)
    url = str(base / "store")
    result = run_tvixmount("import", package, "--store", url)
    assert result.returncode == 0, result.stderr
    return url, result.stdout.strip()


@requires_namespaces
@pytest.mark.parametrize("read_only_bind", [False, True], ids=["populated", "read-only-bind"])
def test_a_store_paths_executable_runs_from_a_nix_store_mounted_over_the_hosts(
    hello_store: tuple[str, str], read_only_bind: bool
) -> None:
    if not os.path.isdir("/nix/store"):
        pytest.skip("the host has no /nix/store")
    url, store_path = hello_store
    hidden = next(iter(sorted(os.listdir("/nix/store"))), None)
    result = _in_namespace(
        """
        if read_only_bind:
            sh("mount", "--bind", "/nix/store", "/nix/store")
            sh("mount", "-o", "remount,bind,ro", "/nix/store")
        tvixmount("mount", "/nix/store", "--store", url)
        try:
            print(subprocess.run([store_path + "/bin/hello"], capture_output=True,
                                 text=True, check=True).stdout, end="")
            print(hidden is None or not os.path.exists("/nix/store/" + hidden))
        finally:
            tvixmount("umount", "/nix/store")
        print(hidden is None or os.path.exists("/nix/store/" + hidden))
        """,
        url=url,
        store_path=store_path,
        hidden=hidden,
        read_only_bind=read_only_bind,
    )
    _passed(result)
    assert result.stdout.splitlines() == [f"hello from {store_path}/bin/hello", "True", "True"]
    assert os.path.isdir("/nix/store")  # the host's store is untouched


@pytest.mark.skipif(shutil.which("squashfuse") is None, reason="needs squashfuse")
def test_a_stale_fuse_mount_of_another_kind_is_refused_with_how_to_clear_it(
    store: str, tmp_path: Path
) -> None:
    (tmp_path / "tree").mkdir()
    image, mountpoint = tmp_path / "tree.squashfs", tmp_path / "squash"
    subprocess.run(["mksquashfs", tmp_path / "tree", image, "-quiet", "-no-progress"], check=True)
    mountpoint.mkdir()
    server = subprocess.Popen(["squashfuse", "-f", image, mountpoint])
    try:
        while not is_mounted(str(mountpoint)):
            assert server.poll() is None, "squashfuse did not mount"
            time.sleep(0.01)
        server.kill()
        server.wait()
        line = one_error_line(run_tvixmount("mount", mountpoint, "--store", store))
        assert line.endswith(
            f"{mountpoint} is a stale FUSE mount (its serving process is gone); "
            f"clear it with `fusermount3 -u {mountpoint}`"
        )
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        subprocess.run(["fusermount3", "-u", mountpoint], check=False)
    assert not is_mounted(str(mountpoint))
