"""Global options: ``-v`` and ``--log-file`` before or after the command, ``--version``,
and no per-request lines from the HTTP stack at the default level."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import force_unmount, make_fixture_store, requires_fuse, run_tvixmount
from tests.nixcache import NixCache, build_cache, generate_key, requires_nix, serve_directory
from tvixmount.cli.main import build_parser
from tvixmount.command_line import mount_arguments


@pytest.mark.parametrize(
    ("argv", "verbose", "log_file"),
    [
        (["ls"], False, None),
        (["-v", "ls"], True, None),
        (["ls", "-v"], True, None),
        (["--log-file", "F", "ls"], False, "F"),
        (["ls", "--log-file", "F"], False, "F"),
        (["--log-file", "A", "ls", "--log-file=B"], False, "B"),
        (["mount", "/m", "--verbose", "--log-file", "F"], True, "F"),
        (["fixture", "build", "spec.toml", "-v"], True, None),
    ],
)
def test_global_options_parse_before_and_after_the_command(
    argv: list[str], verbose: bool, log_file: str | None
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.log_file) == (verbose, log_file)


def test_mount_command_lines_with_options_after_mount_are_still_mounts() -> None:
    argv = ["tvixmount", "mount", "/m", "-v", "--log-file", "/log"]
    assert mount_arguments(argv) == ["/m", "-v", "--log-file", "/log"]


@requires_fuse
def test_a_background_mount_takes_its_log_options_after_the_command(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store")
    mountpoint, log = tmp_path / "mnt", tmp_path / "mount.log"
    mountpoint.mkdir()
    try:
        result = run_tvixmount("mount", mountpoint, "--store", store, "--log-file", log, "-v")
        assert (result.returncode, result.stderr) == (0, "")
        name = fx.ROOT_HELLOWORLD_EXECUTABLE.decode()
        assert (mountpoint / name).read_bytes() == fx.HELLOWORLD_BLOB
        assert " DEBUG " in log.read_text()  # -v after the command, into --log-file's file
    finally:
        force_unmount(mountpoint)


def test_version_prints_the_package_metadata_version() -> None:
    result = run_tvixmount("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"tvixmount {version('tvixmount')}\n",
        "",
    )


def test_an_unwritable_log_file_is_one_error_line(tmp_path: Path) -> None:
    result = run_tvixmount("ls", "--log-file", tmp_path / "no" / "such" / "log")
    assert result.returncode == 1
    assert result.stderr.startswith("tvixmount: error: cannot open log file")
    assert result.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def signed_cache(tmp_path_factory: pytest.TempPathFactory) -> NixCache:
    workdir = tmp_path_factory.mktemp("global-cache")
    return build_cache(workdir, key=generate_key(workdir, "global-1"), with_reference=False)


def _ls_over_http(cache: NixCache, cache_dir: Path, *flags: str | Path) -> tuple[str, str]:
    """``tvixmount ls`` of the cache's tree over loopback HTTP; returns (stdout, stderr)."""
    assert cache.key is not None
    with serve_directory(cache.dir) as served:
        result = run_tvixmount(
            "ls",
            "--store",
            served.url,
            "--cache-dir",
            cache_dir,
            "--trusted-public-key",
            cache.key.public,
            cache.paths[0],
            *flags,
        )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


@requires_nix
def test_http_requests_are_not_logged_at_the_default_level(
    signed_cache: NixCache, tmp_path: Path
) -> None:
    out, err = _ls_over_http(signed_cache, tmp_path / "cache")
    assert out and "HTTP Request" not in err and "httpx" not in err


@requires_nix
def test_verbose_after_the_command_shows_the_requests(
    signed_cache: NixCache, tmp_path: Path
) -> None:
    _, err = _ls_over_http(signed_cache, tmp_path / "cache", "-v")
    assert "HTTP Request: GET" in err


@requires_nix
def test_log_file_after_the_command_takes_the_log(signed_cache: NixCache, tmp_path: Path) -> None:
    log = tmp_path / "log"
    _, err = _ls_over_http(signed_cache, tmp_path / "cache", "--log-file", log, "-v")
    assert err == ""
    assert "HTTP Request: GET" in log.read_text()
