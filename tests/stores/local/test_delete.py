"""``tvixmount delete``: refuses a path another one refers to; the space returns at gc."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.local_tree import make_tree
from tests.housekeeping import (
    disk_bytes,
    import_paths,
    json_of,
    one_error_line,
    put_with_references,
)
from tests.mounting import run_tvixmount

UNKNOWN = "/nix/store/00000000000000000000000000000000-unknown"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


def listed(store: Path, *paths: str) -> bool:
    return run_tvixmount("path-info", *paths, "--store", store).returncode == 0


def test_delete_of_a_referenced_path_is_refused_with_one_line(store: Path) -> None:
    dependency = put_with_references(store, "lib", b"a library\n", [])
    user = put_with_references(store, "app", b"an app\n", [dependency])
    line = one_error_line(run_tvixmount("delete", dependency, "--store", store))
    assert dependency in line and user in line
    assert listed(store, dependency, user)


def test_a_path_and_its_only_referrer_go_together(store: Path) -> None:
    dependency = put_with_references(store, "lib", b"a library\n", [])
    user = put_with_references(store, "app", b"an app\n", [dependency])
    result = run_tvixmount("delete", dependency, user, "--store", store)
    assert result.returncode == 0, result.stderr
    assert not listed(store, dependency) and not listed(store, user)


def test_a_self_reference_does_not_keep_a_path_alive(store: Path) -> None:
    # A path may refer to itself (Nix allows it); that is no other path's reference.
    path = put_with_references(store, "lib", b"lib\n", ["self"])
    result = run_tvixmount("delete", path, "--store", store)
    assert result.returncode == 0, result.stderr


def test_refused_delete_deletes_none_of_its_arguments(store: Path) -> None:
    dependency = put_with_references(store, "lib", b"a library\n", [])
    put_with_references(store, "app", b"an app\n", [dependency])
    free = put_with_references(store, "free", b"nobody needs me\n", [])
    assert run_tvixmount("delete", free, dependency, "--store", store).returncode == 1
    assert listed(store, free, dependency)


def test_delete_of_an_unknown_path_is_one_line(store: Path) -> None:
    put_with_references(store, "lib", b"a library\n", [])
    assert "not in the store" in one_error_line(run_tvixmount("delete", UNKNOWN, "--store", store))


def test_delete_of_a_bad_store_path_is_one_line(store: Path) -> None:
    put_with_references(store, "lib", b"a library\n", [])
    one_error_line(run_tvixmount("delete", "not-a-store-path", "--store", store))


def test_delete_then_gc_frees_the_space(tmp_path: Path, store: Path) -> None:
    put_with_references(store, "base", b"base\n", [])
    before = disk_bytes(store)
    (tree,) = import_paths(store, make_tree(tmp_path / "tree"))
    grown = disk_bytes(store)
    assert run_tvixmount("delete", tree, "--store", store).returncode == 0
    assert disk_bytes(store) >= grown - 4096  # delete alone frees nothing: gc does
    freed = json_of("gc", "--store", store)["freedBytes"]
    assert freed >= (grown - before) * 0.9
    assert disk_bytes(store) <= before * 1.05
