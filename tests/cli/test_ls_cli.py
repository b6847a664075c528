"""``tvixmount ls`` on the tvix fixture store: plain-text snapshots, rich only on a
terminal, --json, --depth, -l, and one-line errors."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from tests.fixtures import castore as fx
from tests.mounting import make_fixture_store, tvixmount_command
from tvixmount.cli.main import main

COMPLICATED = fx.ROOT_DIRECTORY_COMPLICATED.decode()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return make_fixture_store(tmp_path / "store")


def ls(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = main(["ls", "--store", url, *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- plain-text snapshots (stdout is not a terminal under capsys) ------------------------

STORE_LISTING = "".join(
    line + "\n"
    for line in [
        "regular             120 00000000000000000000000000000000-test",
        "symlink             152 11111111111111111111111111111111-test"
        " -> 00000000000000000000000000000000-test",
        "directory           280 22222222222222222222222222222222-test",
        "directory           840 33333333333333333333333333333333-test",
        "symlink             136 44444444444444444444444444444444-test -> /nix/store/somewhereelse",
        "regular         1044592 55555555555555555555555555555555-test",
        "executable          160 66666666666666666666666666666666-test",
    ]
)

COMPLICATED_RECURSIVE = """\
regular               0 .keep
symlink               - aa -> /nix/store/somewhereelse
directory             - keep
regular               0 keep/.keep
"""


def test_plain_store_listing_shows_type_nar_size_and_name(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    assert ls(capsys, store_url) == (0, STORE_LISTING, "")


def test_plain_store_listing_with_digests_adds_castore_digests(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = ls(capsys, store_url, "--digests")
    assert code == 0
    assert out.splitlines()[:2] == [
        "regular             120 b3:e3AVu5LPCzGAN3AqbN2B3uQSJPc0aEwsEizWNZyx7mM= "
        "00000000000000000000000000000000-test",
        "symlink             152 -                                               "
        "11111111111111111111111111111111-test -> 00000000000000000000000000000000-test",
    ]
    assert out.splitlines()[3] == (
        "directory           840 b3:P5UaFa/VhvsxIe9NE9WC6BHODlp/IcBJf9h0kOniNVo= "
        "33333333333333333333333333333333-test"
    )


def test_plain_recursive_listing_shows_relative_paths(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    assert ls(capsys, store_url, "-R", COMPLICATED) == (0, COMPLICATED_RECURSIVE, "")


def test_plain_listing_without_recursion_shows_one_level(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = ls(capsys, store_url, "/nix/store/" + COMPLICATED)
    assert (code, out) == (0, "".join(COMPLICATED_RECURSIVE.splitlines(True)[:3]))


def test_plain_listing_with_digests_adds_them_to_entries(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = ls(capsys, store_url, "--digests", f"{COMPLICATED}/keep")
    assert (code, out) == (
        0,
        "regular               0 b3:rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI= .keep\n",
    )


def test_plain_listing_of_a_file_is_one_line(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    name = fx.ROOT_HELLOWORLD_EXECUTABLE.decode()
    assert ls(capsys, store_url, name) == (0, f"executable           12 {name}\n", "")


def test_plain_listing_of_a_symlink_shows_its_target(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = ls(capsys, store_url, f"{COMPLICATED}/aa")
    assert (code, out) == (0, "symlink               - aa -> /nix/store/somewhereelse\n")


# --- --depth ----------------------------------------------------------------------------


def test_depth_one_equals_the_non_recursive_listing(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    assert ls(capsys, store_url, "--depth", "1", COMPLICATED) == ls(capsys, store_url, COMPLICATED)


def test_depth_two_reaches_into_child_directories(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    assert ls(capsys, store_url, "--depth", "2", COMPLICATED) == (0, COMPLICATED_RECURSIVE, "")


def test_depth_zero_is_a_usage_error(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    with pytest.raises(SystemExit) as exited:
        ls(capsys, store_url, "--depth", "0", COMPLICATED)
    assert exited.value.code == 2


def test_recursive_without_a_store_path_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, err = ls(capsys, store_url, "-R")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "need a STORE_PATH" in err


# --- --json -----------------------------------------------------------------------------


def test_json_recursive_listing_has_nix_shape_with_nar_offsets(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = ls(capsys, store_url, "--json", "-R", COMPLICATED)
    assert code == 0
    listing = json.loads(out)
    assert listing["type"] == "directory"
    assert listing["entries"]["aa"] == {"type": "symlink", "target": "/nix/store/somewhereelse"}
    keep = listing["entries"]["keep"]["entries"][".keep"]
    assert keep["type"] == "regular" and keep["size"] == 0 and keep["narOffset"] > 0


def test_json_store_listing_is_a_list_of_paths(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = ls(capsys, store_url, "--json")
    items = json.loads(out)
    assert code == 0
    assert [item["path"] for item in items] == [
        "/nix/store/" + line.split()[2] for line in STORE_LISTING.splitlines()
    ]
    assert all(set(item) >= {"path", "type", "narSize"} for item in items)


def test_json_is_printed_even_on_a_terminal(store_url: str) -> None:
    code, out = run_in_pty("ls", "--store", store_url, "--json", COMPLICATED)
    assert code == 0
    assert json.loads(out) == {"type": "directory", "entries": {".keep": {}, "aa": {}, "keep": {}}}


# --- errors: one line on stderr, exit 1 -------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("not-a-store-path", "invalid store path 'not-a-store-path'"),
        ("7" * 32 + "-test", "is not in the store"),
        (f"{COMPLICATED}/keep/nope", f"'/nix/store/{COMPLICATED}/keep/nope' does not exist"),
        (f"{COMPLICATED}/aa/x", "is a symlink, not a directory"),
    ],
    ids=["bad-path", "unknown-path", "unknown-subpath", "through-symlink"],
)
def test_bad_input_is_one_error_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], store_url: str, path: str, message: str
) -> None:
    code, out, err = ls(capsys, store_url, path)
    assert (code, out) == (1, "")
    assert err.startswith("tvixmount: error: ") and err.count("\n") == 1
    assert message in err


def test_missing_directory_metadata_is_one_error_line_with_its_digest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = make_fixture_store(tmp_path / "store", with_directories=False)
    code, out, err = ls(capsys, url, "-R", COMPLICATED)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert str(fx.DIRECTORY_COMPLICATED.digest()) in err and "missing" in err


def test_missing_store_is_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = ls(capsys, str(tmp_path / "absent"))
    assert (code, out) == (1, "")
    assert err.startswith("tvixmount: error: no tvixmount store") and err.count("\n") == 1


def test_error_from_a_subprocess_exits_non_zero_with_one_line(store_url: str) -> None:
    result = subprocess.run(
        [*tvixmount_command("ls", "--store", store_url, "7" * 32 + "-test")],
        capture_output=True,
        text=True,
        check=False,
        env=_terminal_env(),
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.count("\n") == 1 and "is not in the store" in result.stderr


# --- rich on a terminal only -------------------------------------------------------------


def _terminal_env() -> dict[str, str]:
    """A colour terminal's environment, without the variables that force rich either way."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"}
    }
    env["TERM"] = "xterm-256color"
    return env


def run_in_pty(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI with stdout on a pseudo-terminal (120 columns); returns code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        proc = subprocess.Popen(
            tvixmount_command(*args),
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.DEVNULL,
            env=env or _terminal_env(),
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=60)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    # The terminal's line discipline turns "\n" into "\r\n".
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


def test_terminal_output_is_a_coloured_tree_with_a_summary(store_url: str) -> None:
    code, out = run_in_pty("ls", "--store", store_url, "-R", COMPLICATED)
    assert code == 0
    assert "\x1b[" in out
    assert "├── " in out and "└── " in out
    assert "2 files, 1 symlink, 0 bytes" in out and "1 directory" in out


def test_terminal_without_colour_keeps_the_tree_but_no_escapes(store_url: str) -> None:
    env = {**_terminal_env(), "NO_COLOR": "1"}
    code, out = run_in_pty("ls", "--store", store_url, "-R", COMPLICATED, env=env)
    assert code == 0
    assert "\x1b" not in out
    assert out.splitlines()[:3] == [
        f"/nix/store/{COMPLICATED}",
        "├── .keep  0 bytes",
        "├── aa -> /nix/store/somewhereelse",
    ]


def test_terminal_store_listing_is_a_table_with_human_sizes(store_url: str) -> None:
    code, out = run_in_pty("ls", "--store", store_url)
    assert code == 0
    assert "\x1b[" in out
    assert "1.0 MB" in out  # BLOB_B's NAR
    assert "7 store paths: 2 directories, 3 files, 2 symlinks" in out


def test_piped_output_has_no_escapes_and_matches_the_snapshot(store_url: str) -> None:
    result = subprocess.run(
        tvixmount_command("ls", "--store", store_url, "-R", COMPLICATED),
        capture_output=True,
        text=True,
        check=False,
        env=_terminal_env(),
    )
    assert (result.returncode, result.stdout) == (0, COMPLICATED_RECURSIVE)
    assert "\x1b" not in result.stdout


# --- -l: mode bits, as `nix store ls -l` (tests/cli/test_ls_nix.py compares with Nix) -----


def test_long_store_listing_shows_mode_bits_and_nar_sizes(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = ls(capsys, store_url, "-l")
    assert code == 0
    assert out.splitlines()[:2] == [
        "-r--r--r--                  120 00000000000000000000000000000000-test",
        "lrwxrwxrwx                  152 11111111111111111111111111111111-test"
        " -> 00000000000000000000000000000000-test",
    ]
    assert out.splitlines()[6] == (
        "-r-xr-xr-x                  160 66666666666666666666666666666666-test"
    )


def test_long_listing_with_digests_puts_them_before_the_path(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, out, _ = ls(capsys, store_url, "-l", "--digests", "-R", COMPLICATED)
    empty, keep, none = fx.EMPTY_DIGEST, fx.DIRECTORY_WITH_KEEP.digest(), "-" + " " * 46
    assert (code, out.splitlines()) == (
        0,
        [
            f"-r--r--r--                    0 {empty} ./.keep",
            f"lrwxrwxrwx                    0 {none} ./aa -> /nix/store/somewhereelse",
            f"dr-xr-xr-x                    0 {keep} ./keep",
            f"-r--r--r--                    0 {empty} ./keep/.keep",
        ],
    )


def test_long_terminal_tree_shows_mode_bits(store_url: str) -> None:
    env = {**_terminal_env(), "NO_COLOR": "1"}
    code, out = run_in_pty("ls", "--store", store_url, "-l", "-R", COMPLICATED, env=env)
    assert code == 0
    assert out.splitlines()[:5] == [
        f"dr-xr-xr-x /nix/store/{COMPLICATED}",
        "-r--r--r-- ├── .keep  0 bytes",
        "lrwxrwxrwx ├── aa -> /nix/store/somewhereelse",
        "dr-xr-xr-x └── keep",
        "-r--r--r--     └── .keep  0 bytes",
    ]


@pytest.mark.parametrize("flags", [["-R"], ["--json", "-R"]], ids=["plain", "json"])
def test_a_full_disk_on_stdout_is_one_error_line(store_url: str, flags: list[str]) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            tvixmount_command("ls", "--store", store_url, *flags, COMPLICATED),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr == "tvixmount: error: cannot write the listing: No space left on device\n"
