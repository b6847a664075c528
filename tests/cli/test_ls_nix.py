"""``tvixmount ls --json`` against real Nix 2.8 (``nix store ls --json``) as the oracle.

The same trees go into Nix (``nix-store --add``, then ``nix copy`` into a
file:// binary cache) and into a tvixmount store (``import_path``); the
listings are compared as parsed JSON. Nix's binary-cache listing carries
``narOffset`` for regular files and must match exactly; Nix's local store has
no NAR to point into, so its listing is compared with ``narOffset`` removed.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mounting import import_trees, requires_nix
from tvixmount.cli.main import main

pytestmark = requires_nix

NIX = ["nix", "--extra-experimental-features", "nix-command"]


def make_tree(root: Path) -> None:
    """Nested dirs, an empty dir, an empty file, executables, symlinks, a multi-MB file."""
    (root / "sub" / "deeper" / "deepest").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "a.txt").write_text("hello\n")
    (root / "empty").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "sub" / "tool").write_bytes(b"\x7fELF" + bytes(1000))
    (root / "sub" / "tool").chmod(0o755)
    (root / "sub" / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "sub" / "deeper" / "x").write_bytes(b"x")
    (root / "sub" / "deeper" / "deepest" / "name with spaces").write_text("spaces")
    (root / "sub" / "deeper" / "deepest" / "ünïcödé").write_text("utf-8 name")
    (root / "link").symlink_to("a.txt")
    (root / "abs-link").symlink_to("/nix/store/somewhere/else")
    (root / "dangling").symlink_to("no/such/file")
    (root / "sub" / "up").symlink_to("../a.txt")


@dataclass
class Oracle:
    cache: str  # file:// URL of the binary cache Nix wrote
    store: str  # the tvixmount store holding the same paths
    paths: dict[str, str]  # label -> absolute store path


def _nix(*args: str) -> str:
    result = subprocess.run([*NIX, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"nix {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    base = tmp_path_factory.mktemp("ls-nix")
    tree = base / "tree"
    tree.mkdir()
    make_tree(tree)
    single = base / "single"
    single.mkdir()
    (single / "hello.sh").write_text("#!/bin/sh\necho hello\n")
    (single / "hello.sh").chmod(0o755)
    (single / "plain.txt").write_text("plain\n")
    (single / "lnk").symlink_to("/nix/store/elsewhere")
    sources = {
        "tree": tree,
        "exe": single / "hello.sh",
        "file": single / "plain.txt",
        "symlink": single / "lnk",
    }
    nix_paths = {}
    for label, source in sources.items():
        added = subprocess.run(
            ["nix-store", "--add", str(source)], capture_output=True, text=True, check=True
        )
        nix_paths[label] = added.stdout.strip()
    cache = f"file://{base / 'cache'}"
    _nix("copy", "--to", cache, *nix_paths.values())
    infos = import_trees(base / "tvix-store", *sources.values())
    ours = {label: info.store_path.absolute for label, info in zip(sources, infos, strict=True)}
    assert ours == nix_paths, "import_path must give the store paths nix-store --add gives"
    return Oracle(cache, str(base / "tvix-store"), nix_paths)


def nix_ls(*args: str, store: str | None = None) -> object:
    extra = ["--store", store] if store else []
    return json.loads(_nix("store", "ls", "--json", *extra, *args))


def tvix_ls(oracle: Oracle, capsys: pytest.CaptureFixture[str], *args: str) -> object:
    code = main(["ls", "--store", oracle.store, "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def without_nar_offsets(listing: object) -> object:
    if isinstance(listing, dict):
        return {k: without_nar_offsets(v) for k, v in listing.items() if k != "narOffset"}
    return listing


@pytest.mark.parametrize("label", ["tree", "exe", "file", "symlink"])
def test_recursive_json_equals_nix_binary_cache_listing(
    oracle: Oracle, capsys: pytest.CaptureFixture[str], label: str
) -> None:
    path = oracle.paths[label]
    assert tvix_ls(oracle, capsys, "-R", path) == nix_ls("-R", path, store=oracle.cache)


@pytest.mark.parametrize("label", ["tree", "exe", "file", "symlink"])
def test_recursive_json_equals_nix_local_store_listing_without_offsets(
    oracle: Oracle, capsys: pytest.CaptureFixture[str], label: str
) -> None:
    path = oracle.paths[label]
    assert without_nar_offsets(tvix_ls(oracle, capsys, "-R", path)) == nix_ls("-R", path)


@pytest.mark.parametrize(
    "subpath",
    ["", "/sub", "/sub/deeper/deepest", "/sub/big.bin", "/sub/deeper/x", "/link", "/empty-dir"],
)
@pytest.mark.parametrize("recursive", [True, False], ids=["recursive", "one-level"])
def test_subpath_json_equals_nix_binary_cache_listing(
    oracle: Oracle, capsys: pytest.CaptureFixture[str], subpath: str, recursive: bool
) -> None:
    target = oracle.paths["tree"] + subpath
    flags = ["-R"] if recursive else []
    assert tvix_ls(oracle, capsys, *flags, target) == nix_ls(*flags, target, store=oracle.cache)


def test_unicode_and_space_names_survive_the_round_trip(
    oracle: Oracle, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tvix_ls(oracle, capsys, oracle.paths["tree"] + "/sub/deeper/deepest")
    assert listing == {
        "type": "directory",
        "entries": {"name with spaces": {}, "ünïcödé": {}},
    }


@pytest.mark.parametrize("subpath", ["", "/sub", "/sub/deeper/x"])
def test_listing_straight_from_the_nix_binary_cache_equals_nix(
    oracle: Oracle, capsys: pytest.CaptureFixture[str], tmp_path: Path, subpath: str
) -> None:
    # tvixmount reads the cache Nix wrote (fetch, verify, ingest), not its own import.
    target = oracle.paths["tree"] + subpath
    code = main(
        ["ls", "--store", oracle.cache, "--cache-dir", str(tmp_path), "--json", "-R", target]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out) == nix_ls("-R", target, store=oracle.cache)


# --- -l: the text of `nix store ls -l` ---------------------------------------------------


def tvix_ls_long(oracle: Oracle, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["ls", "--store", oracle.store, "-l", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize(
    ("label", "subpath"),
    [
        ("tree", ""),
        ("tree", "/sub"),
        ("tree", "/sub/deeper/deepest"),
        ("tree", "/sub/tool"),
        ("tree", "/link"),
        ("tree", "/empty-dir"),
        ("exe", ""),
        ("file", ""),
        ("symlink", ""),
    ],
)
@pytest.mark.parametrize("recursive", [True, False], ids=["recursive", "one-level"])
@pytest.mark.parametrize("nix_store", ["local", "binary-cache"])
def test_long_listing_is_the_text_nix_prints(
    oracle: Oracle,
    capsys: pytest.CaptureFixture[str],
    label: str,
    subpath: str,
    recursive: bool,
    nix_store: str,
) -> None:
    target = oracle.paths[label] + subpath
    flags = ["-R"] if recursive else []
    extra = ["--store", oracle.cache] if nix_store == "binary-cache" else []
    expected = _nix("store", "ls", "-l", *extra, *flags, target)
    assert tvix_ls_long(oracle, capsys, *flags, target) == expected
