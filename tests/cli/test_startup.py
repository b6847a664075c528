"""Start-up cost of the CLI: a command imports only what it uses.

Each case runs the command in a fresh interpreter and lists the heavy
third-party packages that ended up in ``sys.modules``. Every command module
is imported to build the parser, so one eager import at the top of any of
them would be paid by ``tvixmount --help`` and every other command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures import castore as fx
from tests.mounting import make_fixture_store, tvixmount_command
from tvixmount.cli import fixture as cli_fixture
from tvixmount.cli import mount as cli_mount
from tvixmount.fs import operations
from tvixmount.testing import build

HEAVY = ("trio", "pyfuse3", "grpc", "httpx", "rich", "google.protobuf", "cryptography")

# Runs CODE in a fresh interpreter, then prints which of HEAVY got imported, as
# JSON on stderr's last line (CODE's own output stays on stdout).
_PROBE = """
import json, sys
heavy = sys.argv[1].split(",")
exec(sys.argv[2])
loaded = sorted({h for h in heavy for m in sys.modules if m == h or m.startswith(h + ".")})
print(json.dumps(loaded), file=sys.stderr)
"""

# The CLI in-process (stdout piped, so not a terminal); it must exit 0.
_CLI = """
from tvixmount.cli.main import main
try:
    code = main(sys.argv[3:])
except SystemExit as exc:  # --help
    code = exc.code
assert code == 0, code
"""


def heavy_imports_of(code: str, *args: str) -> set[str]:
    """The HEAVY packages that running ``code`` (with ``sys.argv[3:] == args``) imports."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(HEAVY), code, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


def heavy_imports(*args: str) -> set[str]:
    """The HEAVY packages ``tvixmount ARGS`` imports (it must exit 0)."""
    return heavy_imports_of(_CLI, *args)


def tvixmount(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``tvixmount ARGS`` as its own process (so it exits the way a real one does)."""
    return subprocess.run(
        tvixmount_command(*args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_fixture_store(tmp_path_factory.mktemp("startup") / "store")


def test_help_imports_no_heavy_package() -> None:
    assert heavy_imports("--help") == set()


def test_version_imports_no_heavy_package() -> None:
    assert heavy_imports("--version") == set()


def test_building_the_parser_imports_no_heavy_package() -> None:
    probe = "from tvixmount.cli.main import build_parser; build_parser()"
    assert heavy_imports_of(probe) == set()


def test_ls_json_on_the_embedded_store_loads_neither_fuse_nor_network_nor_rich(
    store_url: str,
) -> None:
    loaded = heavy_imports("ls", "--store", store_url, "--json")
    assert loaded.isdisjoint({"pyfuse3", "grpc", "httpx", "rich", "cryptography"})


def test_piped_ls_does_not_load_rich(store_url: str) -> None:
    assert "rich" not in heavy_imports("ls", "--store", store_url)


def test_path_info_on_the_embedded_store_loads_neither_fuse_nor_network(store_url: str) -> None:
    name = fx.ROOT_DIRECTORY_COMPLICATED.decode()
    loaded = heavy_imports("path-info", "--store", store_url, name)
    assert loaded.isdisjoint({"pyfuse3", "grpc", "httpx", "rich", "cryptography"})


def test_fixture_command_offers_the_builders_compressions() -> None:
    assert cli_fixture.COMPRESSIONS == build.COMPRESSIONS


def test_mount_command_defaults_to_the_fs_layers_timeout() -> None:
    assert cli_mount.DEFAULT_TIMEOUT == operations.DEFAULT_TIMEOUT


def test_fs_package_does_not_load_pyfuse3_for_root_nodes() -> None:
    assert "pyfuse3" not in heavy_imports_of("import tvixmount.fs.root_nodes")


def test_ls_on_a_terminal_is_still_decided_by_rich(store_url: str) -> None:
    # FORCE_COLOR makes rich treat even a pipe as a terminal: the table, not plain lines.
    result = tvixmount("ls", "--store", store_url, FORCE_COLOR="1")
    assert result.returncode == 0, result.stderr
    assert "store path" in result.stdout  # the table's header; plain lines have none


def test_a_quick_exit_still_delivers_all_piped_output_and_the_exit_code(store_url: str) -> None:
    # ls ends without the interpreter's teardown: everything buffered must be out first.
    result = tvixmount("ls", "--store", store_url, "-l")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(fx.ROOT_NODES)
    assert result.stdout.endswith("\n")


def test_a_quick_exit_keeps_the_error_exit_code_and_message(store_url: str) -> None:
    missing = "00000000000000000000000000000000-absent"
    result = tvixmount("path-info", "--store", store_url, missing)
    assert result.returncode == 1
    assert result.stderr.startswith("tvixmount: error: ")
