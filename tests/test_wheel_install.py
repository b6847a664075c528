"""tvixmount as a user gets it: a wheel built from the checkout, installed in a fresh venv.

Everything runs from a directory outside the checkout, so nothing can be read
from the source tree by accident (the demo once read ``tests/fixtures``). The
venv borrows the dependencies of the project's .venv through a ``.pth`` line:
a directory added that way has its own ``.pth`` files ignored, so the
checkout's editable install stays out, which the first check confirms.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.grpc_serving import _await_ready, stop
from tests.mounting import force_unmount, requires_fuse
from tvixmount.fs.mounttable import is_mounted
from tvixmount.fs.processes import serving_pids

CHECKOUT = Path(__file__).resolve().parent.parent
# The project's pip and setuptools: building and installing need no network.
PIP = [sys.executable, "-m", "pip"]


@dataclass
class Installed:
    venv: Path
    cwd: Path  # outside the checkout
    env: dict[str, str]

    def run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(a) for a in args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return result

    def tvixmount(self, *args: str | Path) -> str:
        return self.run(self.venv / "bin" / "tvixmount", *args).stdout


def _checkout_files() -> list[str]:
    """What a fresh clone holds plus what is not committed yet (deleted files left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=CHECKOUT,
        capture_output=True,
        check=True,
    ).stdout
    names = [name.decode() for name in listed.split(b"\0") if name]
    return [name for name in names if os.path.lexists(CHECKOUT / name)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    # A copy, so the build's own build/ and egg-info land outside the shared checkout.
    source = base / "source"
    for name in _checkout_files():
        original, target = CHECKOUT / name, source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if original.is_symlink():
            target.symlink_to(os.readlink(original))
        else:
            shutil.copy2(original, target)
    dist = base / "dist"
    subprocess.run(
        [*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, source],
        cwd=base,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("tvixmount-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, cwd=base)
    purelib = Path(
        subprocess.run(
            [
                venv / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (purelib / "project-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
        check=True,
        cwd=base,
        capture_output=True,
    )
    cwd = base / "elsewhere"
    cwd.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env["TVIXMOUNT_STORE"] = str(base / "default-store")
    return Installed(venv, cwd, env)


def test_the_installed_copy_is_imported_not_the_checkout(installed: Installed) -> None:
    where = installed.run(
        installed.venv / "bin" / "python", "-c", "import tvixmount; print(tvixmount.__file__)"
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.venv), where
    assert not Path(where).is_relative_to(CHECKOUT)


def test_import_ls_and_serve_work_from_the_wheel(installed: Installed, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (tree / "bin" / "tool").chmod(0o755)
    (tree / "README").write_text("readme\n")
    store = tmp_path / "store"
    path = installed.tvixmount("import", "--store", store, tree).strip()
    assert path.startswith("/nix/store/") and path.endswith("-tree")

    listing = installed.tvixmount("ls", "--store", store, "-R", path)
    assert listing.splitlines() == [
        "regular               7 README",
        "directory             - bin",
        "executable           20 bin/tool",
    ]

    served = subprocess.Popen(
        [
            installed.venv / "bin" / "tvixmount",
            "serve",
            "--store",
            store,
            "--listen",
            "127.0.0.1:0",
        ],
        cwd=installed.cwd,
        env=installed.env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "serve.log").open("w"),
        text=True,
    )
    try:
        url = _await_ready(served, tmp_path / "serve.log")
        assert installed.tvixmount("ls", "--store", url, "-R", path) == listing
    finally:
        stop(served)


@pytest.fixture
def demo_mountpoint(installed: Installed) -> Iterator[Path]:
    mountpoint = installed.cwd / "mnt"
    try:
        yield mountpoint
    finally:
        force_unmount(mountpoint)


@requires_fuse
def test_the_demo_runs_from_the_wheel(installed: Installed, demo_mountpoint: Path) -> None:
    python = installed.venv / "bin" / "python"
    up = installed.run(python, "-m", "tvixmount.demo", "up", "mnt")
    assert "hi -> hello" in up.stdout
    hello = next(demo_mountpoint.glob("*-hello"))
    assert installed.run(hello / "bin" / "hi").stdout.startswith("Hello from tvixmount")
    installed.run(python, "-m", "tvixmount.demo", "down", "mnt")
    assert not is_mounted(str(demo_mountpoint))
    assert not serving_pids(str(demo_mountpoint))


def test_the_wheel_installs_the_mount_helper(installed: Installed, tmp_path: Path) -> None:
    helper = installed.venv / "bin" / "mount.tvixmount"
    # -f: mount(8)'s fake mode checks the options and mounts nothing.
    installed.run(helper, tmp_path / "store", tmp_path, "-f", "-o", "ro,list-root,nofail")
    assert installed.tvixmount("--version") == f"tvixmount {version('tvixmount')}\n"
