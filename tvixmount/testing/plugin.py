"""pytest plugin (entry point ``pytest11``): fixtures for testing against Nix stores.

Installed with tvixmount, so any project's tests can use these fixtures:

- ``tvixmount_store_dir``: the path of a fresh, not yet created embedded store;
- ``tvixmount_fixture_store(spec)``: build a fixture spec into a fresh
  embedded store; returns a :class:`FixtureStore` (its ``url`` and the store
  path of every spec path by id);
- ``tvixmount_mounted_store(spec_or_store)``: that store mounted read-only in
  a temporary directory; returns a :class:`MountedStore`. Skips without
  /dev/fuse;
- ``tvixmount_nix_store_run(spec_or_store, argv)``: run a command with
  ``tvixmount run``: the store at ``/nix/store`` in a private mount
  namespace, so absolute store paths resolve while the host's /nix/store
  stays as it is. Skips unless root with /dev/fuse.

``spec`` is a path to a TOML spec (``pathlib.Path``, or a ``str`` ending in
``.toml``) or the TOML text itself. Every mount is unmounted in teardown,
whatever the test did.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from ..fs.mounttable import is_mounted
from .build import BuiltFixture, build_into
from .mounts import tvixmount_command
from .spec import FixtureSpec, load_spec, parse_spec

SpecSource = str | os.PathLike[str]
_MOUNT_TIMEOUT = 60.0
# What cli/main.py starts the one line of a failure of tvixmount itself with.
_ERROR_PREFIX = "tvixmount: error:"


@dataclass(frozen=True)
class FixtureStore:
    """A spec built into an embedded store; ``url`` is its ``--store`` argument."""

    url: str
    fixture: BuiltFixture

    def __getitem__(self, path_id: str) -> str:
        """The absolute store path (``/nix/store/...``) of the spec path with this id."""
        return self.fixture.absolute(path_id)

    def basename(self, path_id: str) -> str:
        return str(self.fixture[path_id])


@dataclass(frozen=True)
class MountedStore:
    """A :class:`FixtureStore` mounted read-only at ``mountpoint``."""

    mountpoint: Path
    store: FixtureStore

    def path(self, path_id: str) -> Path:
        """Where the spec path with this id appears in the mount."""
        return self.mountpoint / self.store.basename(path_id)


def read_spec(spec: SpecSource, base_dir: Path | None = None) -> FixtureSpec:
    """A spec from a file (a path, or a ``str`` ending in ``.toml``) or from TOML text."""
    if isinstance(spec, str) and ("\n" in spec or not spec.endswith(".toml")):
        return parse_spec(spec, "<spec text>", base_dir)
    return load_spec(Path(spec))


def _run_trio(spec: FixtureSpec, url: str) -> BuiltFixture:
    # A fresh thread has no trio loop, so this works from sync and async tests alike.
    outcome: list[BuiltFixture | BaseException] = []

    def target() -> None:
        try:
            outcome.append(trio.run(build_into, spec, url))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, name="tvixmount-fixture-build")
    thread.start()
    thread.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def _require_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("tvixmount: mounting needs /dev/fuse")


@pytest.fixture
def tvixmount_store_dir(tmp_path: Path) -> Path:
    """The path of a fresh, not yet created embedded store (``--store`` for the CLI)."""
    return tmp_path / "tvixmount-store"


@pytest.fixture
def tvixmount_fixture_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., FixtureStore]:
    """Factory: ``(spec, base_dir=None) -> FixtureStore``, each call a new embedded store.

    ``base_dir`` is where ``source`` files of a spec given as text are found
    (default: the current directory); a spec file finds them beside itself.
    """

    def build(spec: SpecSource, base_dir: Path | None = None) -> FixtureStore:
        parsed = read_spec(spec, base_dir)
        url = str(tmp_path_factory.mktemp("tvixmount-fixture") / "store")
        return FixtureStore(url, _run_trio(parsed, url))

    return build


def _as_store(
    spec_or_store: SpecSource | FixtureStore, build: Callable[..., FixtureStore]
) -> FixtureStore:
    return spec_or_store if isinstance(spec_or_store, FixtureStore) else build(spec_or_store)


@pytest.fixture
def tvixmount_mounted_store(
    tvixmount_fixture_store: Callable[..., FixtureStore],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., MountedStore]]:
    """Factory: ``(spec_or_store, list_root=True) -> MountedStore``; unmounted in teardown."""
    mounted: list[Path] = []

    def mount(spec_or_store: SpecSource | FixtureStore, list_root: bool = True) -> MountedStore:
        _require_fuse()
        store = _as_store(spec_or_store, tvixmount_fixture_store)
        mountpoint = tmp_path_factory.mktemp("tvixmount-mnt")
        argv = tvixmount_command("mount", mountpoint, "--store", store.url)
        if list_root:
            argv.append("--list-root")
        # Registered before mounting: a mount that half-succeeds is still torn down.
        mounted.append(mountpoint)
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=_MOUNT_TIMEOUT, check=False
        )
        if result.returncode != 0:
            pytest.fail(f"tvixmount: cannot mount {store.url}: {_last_line(result)}")
        return MountedStore(mountpoint, store)

    try:
        yield mount
    finally:
        failures = [_unmount(mountpoint) for mountpoint in reversed(mounted)]
        errors = [f for f in failures if f]
        if errors:
            pytest.fail("; ".join(errors))


def _unmount(mountpoint: Path) -> str | None:
    """Unmount and wait for the server; a lazy unmount if that fails. Returns an error."""
    if not is_mounted(str(mountpoint)):
        return None
    result = subprocess.run(
        tvixmount_command("umount", mountpoint),
        capture_output=True,
        text=True,
        timeout=_MOUNT_TIMEOUT,
        check=False,
    )
    if result.returncode == 0:
        return None
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
    return f"tvixmount: unmounting {mountpoint} failed: {_last_line(result)}"


@pytest.fixture
def tvixmount_nix_store_run(
    tvixmount_fixture_store: Callable[..., FixtureStore],
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Factory: ``(spec_or_store, argv, **run_kwargs) -> CompletedProcess``.

    Runs ``argv`` with the store at ``/nix/store`` in a private mount
    namespace; output is captured as text unless ``run_kwargs`` say
    otherwise. The mount ends with the command; the host's /nix/store is
    never touched.
    """

    def run(
        spec_or_store: SpecSource | FixtureStore, argv: Sequence[str], **run_kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        if os.geteuid() != 0:
            pytest.skip("tvixmount: a private /nix/store mount needs root")
        _require_fuse()
        store = _as_store(spec_or_store, tvixmount_fixture_store)
        options: dict[str, Any] = {"capture_output": True, "text": True, "check": False}
        options.update(run_kwargs)
        result: subprocess.CompletedProcess[str] = subprocess.run(
            tvixmount_command("run", "--store", store.url, "--", *argv), **options
        )
        stderr = result.stderr if isinstance(result.stderr, str) else ""
        last = (stderr.strip().splitlines() or [""])[-1]
        if result.returncode == 1 and last.startswith(_ERROR_PREFIX):
            pytest.fail(last)
        return result

    return run
