"""Nix's trust model and configuration for binary caches, through the real CLI (issue 19).

require-sigs (default on): a narinfo needs a valid signature by a trusted key,
or a content address that checks out; else the path is absent. Keys come from
``--trusted-public-key`` or, without it, from Nix's configuration. A cache is
checked (``nix-cache-info``) when it is opened.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.mounting import requires_fuse, run_tvixmount
from tests.nixcache import NixCache, build_cache, generate_key, requires_nix
from tvixmount.fs.mounttable import tvixmount_at

pytestmark = requires_nix


@pytest.fixture(autouse=True)
def nix_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every place Nix reads configuration from points into tmp_path (empty at first)."""
    conf_dir = tmp_path / "etc-nix"
    conf_dir.mkdir()
    monkeypatch.setenv("NIX_CONF_DIR", str(conf_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-home"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg-dirs"))
    monkeypatch.delenv("NIX_USER_CONF_FILES", raising=False)
    monkeypatch.delenv("NIX_CONFIG", raising=False)
    return conf_dir / "nix.conf"


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> NixCache:
    """Paths that nothing vouches for: no signature, no content address."""
    workdir = tmp_path_factory.mktemp("unsigned")
    return build_cache(workdir, "zstd", trees=2, with_reference=False, content_addressed=False)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> NixCache:
    workdir = tmp_path_factory.mktemp("signed")
    key = generate_key(workdir, "trust-test-1")
    return build_cache(workdir, "xz", key=key, content_addressed=False)


def path_info(cache: NixCache, tmp_path: Path, *args: str) -> tuple[int, list[str], list[str]]:
    """``path-info --json`` of every path: exit code, paths printed, stderr lines but INFO."""
    done = run_tvixmount(
        "path-info",
        "--json",
        "--store",
        cache.url,
        "--cache-dir",
        tmp_path / "local",
        *args,
        *cache.paths,
    )
    printed = [entry["path"] for entry in json.loads(done.stdout)] if done.returncode == 0 else []
    lines = [line for line in done.stderr.splitlines() if " INFO " not in line]
    return done.returncode, printed, lines


def test_unsigned_cache_serves_nothing_by_default(unsigned: NixCache, tmp_path: Path):
    code, printed, stderr = path_info(unsigned, tmp_path)
    assert code == 1 and printed == []
    assert "is not signed" in stderr[0] and "not serving it" in stderr[0]
    assert stderr[-1] in {
        f"tvixmount: error: path '{p}' is not in the store" for p in unsigned.paths
    }
    listing = run_tvixmount(
        "ls", "--store", unsigned.url, "--cache-dir", tmp_path / "l", unsigned.paths[0]
    )
    assert listing.returncode == 1


def test_unsigned_cache_serves_everything_without_require_sigs(unsigned: NixCache, tmp_path: Path):
    code, printed, stderr = path_info(unsigned, tmp_path, "--no-require-sigs")
    assert code == 0 and sorted(printed) == sorted(unsigned.paths)
    assert len(stderr) == 1 and "signatures are not required (--no-require-sigs)" in stderr[0]


def test_require_sigs_false_in_nix_conf_turns_it_off(
    unsigned: NixCache, tmp_path: Path, nix_config: Path
):
    nix_config.write_text("require-sigs = false\n")
    code, printed, stderr = path_info(unsigned, tmp_path)
    assert code == 0 and sorted(printed) == sorted(unsigned.paths)
    assert len(stderr) == 1 and f"require-sigs = false in {nix_config}:1" in stderr[0]


def test_keys_from_nix_conf_are_used(signed: NixCache, tmp_path: Path, nix_config: Path):
    assert signed.key is not None
    assert path_info(signed, tmp_path / "before")[0] == 1
    nix_config.write_text(f"extra-trusted-public-keys = {signed.key.public}\n")
    code, printed, stderr = path_info(signed, tmp_path / "after")
    assert code == 0 and sorted(printed) == sorted(signed.paths), stderr


def test_keys_from_nix_config_variable_are_used(
    signed: NixCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert signed.key is not None
    monkeypatch.setenv("NIX_CONFIG", f"trusted-public-keys = {signed.key.public}")
    code, printed, stderr = path_info(signed, tmp_path)
    assert code == 0 and sorted(printed) == sorted(signed.paths), stderr


def test_nix_conf_is_not_read_when_keys_are_given(
    signed: NixCache, tmp_path: Path, nix_config: Path
):
    assert signed.key is not None
    nix_config.write_text("this is not a nix.conf line\n")
    code, _, stderr = path_info(signed, tmp_path, "--trusted-public-key", signed.key.public)
    assert code == 0, stderr
    code, _, stderr = path_info(signed, tmp_path / "conf")
    assert code == 1 and stderr == [
        f"tvixmount: error: {nix_config}:1: illegal configuration line "
        "'this is not a nix.conf line'"
    ]


def test_content_addressed_paths_are_served_unsigned(tmp_path: Path):
    cache = build_cache(tmp_path / "nix", "xz")  # nix-store --add and builtins.toFile: CA
    assert all(narinfo.ca is not None for narinfo in cache.narinfos.values())
    code, printed, stderr = path_info(cache, tmp_path)
    assert code == 0 and sorted(printed) == sorted(cache.paths), stderr
    assert stderr == []


def test_content_address_that_does_not_check_out_is_refused(tmp_path: Path):
    cache = build_cache(tmp_path / "nix", "xz", trees=2, with_reference=False)
    liar, other = cache.paths
    # The CA of another path: a real CA, but not of this content or this store path.
    own_ca, other_ca = (f"CA: {cache.narinfos[p].ca}" for p in (liar, other))
    cache.rewrite_narinfo(liar, cache.narinfo_file(liar).read_text().replace(own_ca, other_ca))
    code, _, stderr = path_info(cache, tmp_path)
    assert code == 1
    assert "content does not match its CA" in stderr[0] and liar in stderr[0]
    assert stderr[-1] == f"tvixmount: error: path '{liar}' is not in the store"


def assert_fails_with_one_line(cache_url: str, tmp_path: Path, reason: str, path: str) -> None:
    for args in (("path-info", path), ("ls", path)):
        done = run_tvixmount(
            args[0], "--store", cache_url, "--cache-dir", tmp_path / "local", *args[1:]
        )
        assert done.returncode == 1
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert reason in done.stderr and "Traceback" not in done.stderr


def test_unreachable_cache_is_one_line_and_exit_1(unsigned: NixCache, tmp_path: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}?retries=0"
    assert_fails_with_one_line(url, tmp_path, "cannot connect", unsigned.paths[0])


def test_cache_of_another_store_dir_is_one_line_and_exit_1(tmp_path: Path):
    cache = build_cache(tmp_path / "nix", "none", with_reference=False)
    (cache.dir / "nix-cache-info").write_text("StoreDir: /other/store\n")
    assert_fails_with_one_line(
        cache.url, tmp_path, "'/other/store', not /nix/store", cache.paths[0]
    )


def test_directory_that_is_no_cache_is_one_line_and_exit_1(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    path = "/nix/store/00000000000000000000000000000000-absent"
    assert_fails_with_one_line(f"file://{tmp_path}/empty", tmp_path, "not a Nix binary cache", path)


@requires_fuse
def test_mount_of_an_unusable_cache_mounts_nothing(tmp_path: Path):
    (tmp_path / "mnt").mkdir()
    (tmp_path / "empty").mkdir()
    done = run_tvixmount(
        "mount",
        tmp_path / "mnt",
        "--store",
        f"file://{tmp_path}/empty",
        "--cache-dir",
        tmp_path / "local",
    )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "not a Nix binary cache" in done.stderr
    assert not tvixmount_at(str(tmp_path / "mnt"))
