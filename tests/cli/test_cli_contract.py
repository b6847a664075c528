"""DESIGN.md's "Command line" block, line by line: the parser takes every documented
form (flags before or after positionals, global flags on either side of the command,
repeatable flags), and the real CLI answers bad input with one line and exit 1."""

from __future__ import annotations

import argparse
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from tests.housekeeping import one_error_line
from tests.mounting import run_tvixmount, tvixmount_command
from tests.nixcache import requires_nix
from tvixmount.cli.main import COMMANDS, build_parser

BASENAME = "0" * 32 + "-hello"
ABSOLUTE = f"/nix/store/{BASENAME}"
KEY = "cache-1:" + "A" * 43 + "="
OTHER_KEY = "cache-2:" + "B" * 43 + "="
S3 = "s3://bucket?region=eu-west-1&endpoint=127.0.0.1:9000&scheme=http&profile=ci"


def parse(command_line: str) -> argparse.Namespace:
    return build_parser().parse_args(shlex.split(command_line))


# (command line, values the parse must give); one or more per line of the block.
CONTRACT: list[tuple[str, dict[str, object]]] = [
    (
        f"mount /mnt --store {S3!r} --list-root --no-xattr --allow-other --foreground"
        f" --cache-dir /c --timeout 5 --trusted-public-key {KEY}"
        f" --trusted-public-key {OTHER_KEY} --no-require-sigs",
        {
            "command": "mount",
            "mountpoint": "/mnt",
            "store": S3,
            "list_root": True,
            "no_xattr": True,
            "allow_other": True,
            "foreground": True,
            "cache_dir": Path("/c"),
            "timeout": 5.0,
            "trusted_public_key": [KEY, OTHER_KEY],
            "require_sigs": False,
        },
    ),
    (
        "mount --store grpc+unix:///run/s.sock /nix/store",
        {"mountpoint": "/nix/store", "foreground": False, "list_root": False},
    ),
    ("umount /mnt", {"command": "umount", "mountpoint": "/mnt"}),
    (
        f"run --store file:///c --trusted-public-key {KEY} --upper /u -- ls -l /nix/store",
        {"command": "run", "store": "file:///c", "trusted_public_key": [KEY], "upper": Path("/u")},
    ),
    ("run --store /s ls -l", {"argv": ["ls", "-l"]}),
    ("run --no-require-sigs -- true", {"require_sigs": False}),
    (
        f"ls {ABSOLUTE}/bin --store /s -R -l --json",
        {"command": "ls", "path": f"{ABSOLUTE}/bin", "recursive": True, "long": True, "json": True},
    ),
    (f"ls --store /s {BASENAME}", {"path": BASENAME, "recursive": False, "json": False}),
    ("ls", {"path": None, "store": None}),
    ("import /a /b --store /s", {"command": "import", "paths": ["/a", "/b"], "store": "/s"}),
    ("import --store /s /a", {"paths": ["/a"]}),
    (
        f"path-info {ABSOLUTE} {BASENAME} --store /s --json",
        {"command": "path-info", "store_paths": [ABSOLUTE, BASENAME], "json": True},
    ),
    (f"nar {BASENAME} --store /s", {"command": "nar", "store_path": BASENAME, "store": "/s"}),
    (f"nar --store http://127.0.0.1:8080 {ABSOLUTE}", {"store_path": ABSOLUTE}),
    (
        f"copy --to file:///d --from /s --secret-key /k --secret-key /k2 --no-recursive"
        f" {ABSOLUTE} {BASENAME}",
        {
            "command": "copy",
            "to": "file:///d",
            "source": "/s",
            "secret_key": [Path("/k"), Path("/k2")],
            "no_recursive": True,
            "store_paths": [ABSOLUTE, BASENAME],
        },
    ),
    (f"copy {ABSOLUTE} --to {S3!r}", {"to": S3, "source": None, "no_recursive": False}),
    (
        "serve --listen 127.0.0.1:5000 --http 127.0.0.1:8080 --store /s"
        " --secret-key /k --secret-key /k2 --writable",
        {
            "command": "serve",
            "listen": "127.0.0.1:5000",
            "http": "127.0.0.1:8080",
            "store": "/s",
            "secret_key": [Path("/k"), Path("/k2")],
            "writable": True,
        },
    ),
    ("serve", {"listen": None, "http": None, "writable": False}),
    ("gc --store /s --dry-run", {"command": "gc", "store": "/s", "dry_run": True}),
    ("gc --dry-run --store /s", {"store": "/s", "dry_run": True}),
    ("gc", {"store": None, "dry_run": False}),
    (
        f"delete {ABSOLUTE} {BASENAME} --store /s",
        {"command": "delete", "store_paths": [ABSOLUTE, BASENAME], "store": "/s"},
    ),
    (f"delete --store /s {BASENAME}", {"store_paths": [BASENAME]}),
    (
        f"verify --store file:///c {ABSOLUTE} {BASENAME}",
        {"command": "verify", "store": "file:///c", "store_paths": [ABSOLUTE, BASENAME]},
    ),
    (f"verify {BASENAME} --store /s", {"store_paths": [BASENAME]}),
    ("verify", {"store_paths": []}),
    ("info --store /s --json", {"command": "info", "store": "/s", "json": True}),
    ("info", {"store": None, "json": False}),
    (
        "fixture build spec.toml --store /s --nix-cache /n",
        {"command": "fixture", "spec": Path("spec.toml"), "store": "/s", "nix_cache": Path("/n")},
    ),
    ("fixture build --nix-cache /n --store /s spec.toml", {"spec": Path("spec.toml")}),
]


@pytest.mark.parametrize(("command_line", "expected"), CONTRACT, ids=[c for c, _ in CONTRACT])
def test_every_documented_command_line_parses(
    command_line: str, expected: dict[str, object]
) -> None:
    values = vars(parse(command_line))
    assert {name: values.get(name) for name in expected} == expected


def test_every_command_of_the_block_is_covered() -> None:
    covered = {shlex.split(command_line)[0] for command_line, _ in CONTRACT}
    assert covered == {name.rstrip("_").replace("_", "-") for name in COMMANDS}


# Every command with one realistic invocation, for the flags every command shares.
INVOCATIONS = [
    "mount /mnt",
    "umount /mnt",
    "run -- true",
    "ls",
    "import /a",
    f"path-info {BASENAME}",
    f"nar {BASENAME}",
    f"copy --to file:///d {BASENAME}",
    "serve",
    "gc",
    f"delete {BASENAME}",
    "verify",
    "info",
    "fixture build spec.toml",
]


@pytest.mark.parametrize("invocation", [i for i in INVOCATIONS if not i.startswith("run")])
def test_global_flags_go_before_or_after_every_command(invocation: str) -> None:
    before = vars(parse(f"-v --log-file /before {invocation}"))
    after = vars(parse(f"{invocation} -v --log-file /after"))
    assert (before["verbose"], before["log_file"]) == (True, "/before")
    assert (after["verbose"], after["log_file"]) == (True, "/after")


def test_run_takes_global_flags_before_its_command() -> None:
    args = parse("run --log-file /l -v -- sh -c 'echo -v'")
    assert (args.verbose, args.log_file, args.argv) == (True, "/l", ["--", "sh", "-c", "echo -v"])


# The commands that may read a binary cache (everything but the embedded-store-only ones).
READERS = [
    i for i in INVOCATIONS if i.split()[0] not in {"umount", "import", "gc", "delete", "info"}
]


@pytest.mark.parametrize("invocation", READERS)
def test_every_binary_cache_reader_takes_the_trust_flags(invocation: str) -> None:
    # After the positionals, so that run's COMMAND stays last.
    words = shlex.split(invocation)
    command, rest = (words[:1], words[1:]) if words[0] != "fixture" else (words[:2], words[2:])
    trust = ["--trusted-public-key", KEY, "--trusted-public-key", OTHER_KEY, "--no-require-sigs"]
    if words[0] == "run":
        args = build_parser().parse_args([*command, *trust, *rest])
    else:
        args = build_parser().parse_args([*command, *rest, *trust])
    assert (args.trusted_public_key, args.require_sigs) == ([KEY, OTHER_KEY], False)


def test_version_is_a_global_flag() -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--version")
    assert exited.value.code == 0


# -- the real CLI: STORE_PATH forms and one-line errors ---------------------------


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """An embedded store made by ``tvixmount import``; (store, absolute store path)."""
    workdir = tmp_path_factory.mktemp("contract")
    tree = workdir / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (tree / "bin" / "hello").chmod(0o755)
    (tree / "README").write_text("contract\n")
    store = str(workdir / "store")
    result = run_tvixmount("import", tree, "--store", store)
    assert result.returncode == 0, result.stderr
    return store, result.stdout.strip()


@requires_nix
def test_import_prints_the_store_path_nix_store_add_gives(imported: tuple[str, str]) -> None:
    store, path = imported
    tree = Path(store).parent / "tree"
    added = subprocess.run(["nix-store", "--add", tree], capture_output=True, text=True, check=True)
    assert added.stdout.strip() == path


@pytest.mark.parametrize("command", ["ls", "path-info", "nar", "verify"])
def test_a_store_path_is_taken_as_basename_or_absolute(
    imported: tuple[str, str], command: str
) -> None:
    store, path = imported
    absolute = run_tvixmount(command, path, "--store", store)
    assert (absolute.returncode, absolute.stderr) == (0, "")
    # A shell completes a directory with a slash; Nix takes it as the store path.
    for form in (Path(path).name, f"{path}/"):
        other = run_tvixmount(command, form, "--store", store)
        assert (other.returncode, other.stdout, other.stderr) == (0, absolute.stdout, "")


def test_ls_takes_a_subpath_in_either_form(imported: tuple[str, str]) -> None:
    store, path = imported
    absolute = run_tvixmount("ls", f"{path}/bin", "--store", store)
    basename = run_tvixmount("ls", f"{Path(path).name}/bin", "--store", store)
    assert absolute.returncode == 0 and "hello" in absolute.stdout
    assert basename.stdout == absolute.stdout


@pytest.mark.parametrize("bad", ["hello", "/nix/store/e" + "0" * 31 + "-x", "/tmp/" + BASENAME])
@pytest.mark.parametrize(
    "command",
    [["ls"], ["path-info"], ["nar"], ["verify"], ["delete"], ["copy", "--to", "file:///d"]],
)
def test_a_bad_store_path_is_one_line_and_exit_1(
    imported: tuple[str, str], command: list[str], bad: str
) -> None:
    store, _ = imported
    flag = "--from" if command[0] == "copy" else "--store"
    one_error_line(run_tvixmount(*command, bad, flag, store))


@pytest.mark.parametrize("command", [["ls"], ["path-info"], ["nar"], ["verify"], ["delete"]])
def test_a_path_the_store_lacks_is_one_line_and_exit_1(
    imported: tuple[str, str], command: list[str]
) -> None:
    store, _ = imported
    one_error_line(run_tvixmount(*command, ABSOLUTE, "--store", store))


@pytest.mark.parametrize(
    "invocation",
    [
        ["mount", "/nonexistent-mountpoint", "--store"],
        ["run", "--store", "ftp://x", "--", "true"],
        ["ls", "--store"],
        ["import", "/etc/hostname", "--store"],
        ["path-info", BASENAME, "--store"],
        ["nar", BASENAME, "--store"],
        ["copy", "--from", "/s", BASENAME, "--to"],
        ["copy", "--to", "file:///d", BASENAME, "--from"],
        ["serve", "--listen", "127.0.0.1:0", "--store"],
        ["verify", "--store"],
        ["fixture", "build", "/nonexistent.toml", "--store"],
    ],
    ids=lambda words: " ".join(words[:2]),
)
def test_an_unknown_url_scheme_is_one_line_and_exit_1(invocation: list[str]) -> None:
    if invocation[0] != "run":
        invocation = [*invocation, "ftp://x"]
    result = run_tvixmount(*invocation)
    one_error_line(result)
    if invocation[0] not in {"mount", "fixture"}:  # these check the mount point / spec first
        assert "'ftp'" in result.stderr


@pytest.mark.parametrize(
    "url", ["grpc+http://127.0.0.1:1", "http://127.0.0.1:1", "file:///nonexistent-cache"]
)
def test_an_unreachable_store_is_one_line_and_exit_1(url: str) -> None:
    one_error_line(run_tvixmount("ls", "--store", url))


@pytest.mark.parametrize(
    "invocation",
    [
        ["path-info", BASENAME, "--store"],
        ["nar", BASENAME, "--store"],
        ["verify", "--store"],
        ["import", "/etc/hostname", "--store"],
        ["serve", "--listen", "127.0.0.1:0", "--store"],
        ["copy", "--to", "file:///nonexistent-target", BASENAME, "--from"],
        ["run", "--store"],
    ],
    ids=lambda words: words[0],
)
def test_every_command_reports_an_unreachable_grpc_store_in_one_line(
    invocation: list[str],
) -> None:
    command = [*invocation, "grpc+unix:///nonexistent.sock"]
    if invocation[0] == "run":
        command += ["--", "true"]
    one_error_line(run_tvixmount(*command))


@pytest.mark.parametrize("command", [["ls"], ["info"], ["gc", "--dry-run"], ["verify"]])
def test_a_missing_or_foreign_store_directory_is_one_line(
    command: list[str], tmp_path: Path
) -> None:
    one_error_line(run_tvixmount(*command, "--store", tmp_path / "missing"))
    one_error_line(run_tvixmount(*command, "--store", tmp_path))


def test_a_missing_mount_point_is_one_line(imported: tuple[str, str], tmp_path: Path) -> None:
    store, _ = imported
    one_error_line(run_tvixmount("mount", tmp_path / "missing", "--store", store))
    one_error_line(run_tvixmount("umount", tmp_path / "missing"))


@pytest.mark.parametrize("form", ["{host}:{port}", "grpc+http://{host}:{port}"])
def test_serve_refuses_a_port_in_use_in_one_line(form: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = form.format(host="127.0.0.1", port=taken.getsockname()[1])
        busy = run_tvixmount("serve", "--listen", address, "--store", "memory://")
    one_error_line(busy)
    assert "in use" in busy.stderr


def test_serve_listens_on_a_grpc_unix_url(imported: tuple[str, str], tmp_path: Path) -> None:
    store, path = imported
    url = f"grpc+unix://{tmp_path / 'serve.sock'}"
    server = subprocess.Popen(
        tvixmount_command("serve", "--listen", url, "--store", store),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == f"tvixmount: serving {store} at {url}\n"
        listed = run_tvixmount("ls", path, "--store", url)
        assert (listed.returncode, listed.stderr) == (0, "")
        assert "README" in listed.stdout
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:65536", "http://127.0.0.1:0", "grpc+unix://relative"]
)
def test_serve_refuses_a_malformed_listen_address_in_one_line(listen: str) -> None:
    one_error_line(run_tvixmount("serve", "--listen", listen, "--store", "memory://"))
