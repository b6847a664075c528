"""``tvixmount path-info``, ``nar`` and ``ls`` against Nix binary cache URLs; Nix as the oracle."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.mounting import run_tvixmount, tvixmount_command
from tests.nixcache import NIX_FLAGS, NixCache, build_cache, generate_key, key_args, requires_nix

pytestmark = requires_nix

COMPARED = ("path", "narHash", "narSize", "references", "ca", "signatures")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> NixCache:
    workdir = tmp_path_factory.mktemp("cli")
    return build_cache(workdir, "zstd", key=generate_key(workdir, "cli-test-1"))


def store_args(cache: NixCache, tmp_path: Path) -> list[str]:
    return ["--store", cache.url, "--cache-dir", str(tmp_path / "local"), *key_args(cache)]


def test_path_info_json_matches_nix_path_info_on_the_cache(cache: NixCache, tmp_path: Path):
    ours = run_tvixmount("path-info", "--json", *store_args(cache, tmp_path), *cache.paths)
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run(
        ["nix", *NIX_FLAGS, "path-info", "--json", "--store", cache.url, *cache.paths],
        capture_output=True,
        text=True,
        check=True,
    )

    def comparable(text: str) -> list[dict[str, object]]:
        entries = sorted(json.loads(text), key=lambda e: str(e["path"]))
        return [{k: e[k] for k in COMPARED if k in e} for e in entries]

    assert comparable(ours.stdout) == comparable(theirs.stdout)


def test_nar_is_byte_identical_to_nix_store_dump(cache: NixCache, tmp_path: Path):
    for path in cache.paths:
        ours = subprocess.run(
            tvixmount_command("nar", *store_args(cache, tmp_path), path),
            capture_output=True,
            check=False,
        )
        assert ours.returncode == 0, ours.stderr
        theirs = subprocess.run(["nix-store", "--dump", path], capture_output=True, check=True)
        assert ours.stdout == theirs.stdout


def test_ls_lists_a_fetched_path(cache: NixCache, tmp_path: Path):
    tree = next(iter(cache.trees))
    listing = run_tvixmount("ls", "--json", *store_args(cache, tmp_path), tree)
    assert listing.returncode == 0, listing.stderr
    names = sorted(json.loads(listing.stdout)["entries"])
    assert names == sorted(p.name for p in cache.trees[tree].iterdir())


def test_unreachable_cache_fails_with_one_line(cache: NixCache, tmp_path: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}?retries=0"
    result = run_tvixmount(
        "path-info", "--store", url, "--cache-dir", str(tmp_path / "local"), cache.paths[0]
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "cannot connect" in result.stderr


def test_untrusted_signature_is_not_in_the_store_with_a_warning(tmp_path: Path):
    key = generate_key(tmp_path, "cli-test-1")
    cache = build_cache(tmp_path / "nix", "xz", key=key, content_addressed=False)
    other = generate_key(tmp_path, "other-1")
    result = run_tvixmount(
        "path-info",
        "--store",
        cache.url,
        "--cache-dir",
        str(tmp_path / "local"),
        "--trusted-public-key",
        other.public,
        cache.paths[0],
    )
    assert result.returncode == 1
    warning, error = result.stderr.splitlines()
    assert "no valid signature by a trusted key" in warning and "not serving it" in warning
    assert error == f"tvixmount: error: path '{cache.paths[0]}' is not in the store"


def test_malformed_trusted_key_fails_with_one_line(cache: NixCache, tmp_path: Path):
    result = run_tvixmount(
        "path-info", "--store", cache.url, "--trusted-public-key", "k:AAAA", cache.paths[0]
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "tvixmount: error: invalid ed25519 public key 'k': 3 bytes, expected 32"
    )
