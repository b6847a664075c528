"""``tvixmount run``: a real derivation's builder over a cache Nix wrote, and the run contract.

Nix builds a derivation (busybox as the builder, its inputs store paths) for
the reference output; its inputs then go into a signed binary cache written
by ``nix copy``, and the same builder runs under ``tvixmount run`` over that
cache, with the host's /nix/store hidden: its output must have the same NAR
hash. The rest checks what a caller relies on: absolute references, exit
statuses, signals, the upper directory, and a host left as it was.
"""

from __future__ import annotations

import fcntl
import os
import pty
import secrets
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mounting import read_until, tvixmount_command
from tests.nixcache import BUSYBOX, NIX_FLAGS, SigningKey, generate_key, nix_add, nix_hash
from tvixmount.storepath import StorePath

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
        reason="tvixmount run needs root and /dev/fuse",
    ),
    pytest.mark.skipif(shutil.which("nix-build") is None, reason="needs Nix as the oracle"),
]

# The builder reads contents, a symlink, modes and timestamps of its inputs, and
# runs a closure's executable that finds busybox and the tree by absolute paths.
BUILDER = r"""
set -e
bb=$busybox/bin/busybox
$bb mkdir $out
$bb cat $tree/hello.txt > $out/contents
$bb readlink $tree/link > $out/link-target
$bb stat -c '%a %s %Y %n' $tree/hello.txt $tree/bin/run > $out/files
$bb stat -c '%a %Y %n' $tree $tree/bin > $out/dirs
$bb ls -R $tree > $out/listing
$tool/bin/greet > $out/greeting
$tree/bin/run > $out/ran
$bb cp -r $tree/share $out/share
$bb ln -s $tree $out/tree
if $bb test -x $tree/bin/run; then echo executable > $out/mode; fi
"""

DERIVATIONS = """
let
  busybox = builtins.storePath "@busybox@";
  tree = builtins.storePath "@tree@";
  system = builtins.currentSystem;
  tool = derivation {
    name = "tool-@salt@";
    inherit system;
    builder = "${busybox}/bin/sh";
    args = [ "-c" ''
      ${busybox}/bin/busybox mkdir -p $out/bin
      echo '#!${busybox}/bin/sh' > $out/bin/greet
      echo 'exec ${busybox}/bin/busybox cat ${tree}/hello.txt' >> $out/bin/greet
      ${busybox}/bin/busybox chmod 555 $out/bin/greet
    '' ];
  };
in {
  inherit tool;
  result = derivation {
    name = "result-@salt@";
    inherit system busybox tree tool;
    builder = "${busybox}/bin/sh";
    args = [ "-c" (builtins.readFile ./builder.sh) ];
  };
}
"""


@dataclass(frozen=True)
class Build:
    busybox: str
    tree: str
    tool: str
    out: str  # nix-build's output: the reference
    cache_url: str
    key: SigningKey
    workdir: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "busybox": self.busybox,
            "tree": self.tree,
            "tool": self.tool,
            "out": self.out,
        }

    def run(self, *argv: str, upper: Path | None = None, **kwargs: object) -> list[str]:
        """The ``tvixmount run`` command line over this build's cache."""
        options = [
            "--store",
            self.cache_url,
            "--trusted-public-key",
            self.key.public,
            "--cache-dir",
            str(self.workdir / f"castore-{secrets.token_hex(4)}"),
        ]
        if upper is not None:
            options += ["--upper", str(upper)]
        return tvixmount_command("run", *options, "--", *argv)


def _out(*argv: str, cwd: Path | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, cwd=cwd).stdout.strip()


def _input_tree(root: Path, salt: str) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "hello.txt").write_text(f"Hello from the store ({salt})\n")
    (root / "link").symlink_to("hello.txt")
    run = root / "bin" / "run"
    run.write_text("#!/bin/sh\necho ran\n")  # runs with the shebang's sh: the host's
    run.chmod(0o755)
    (root / "share" / "doc").mkdir(parents=True)
    (root / "share" / "doc" / "README").write_text("nested\n")
    return root


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    workdir = tmp_path_factory.mktemp("run-build")
    salt = secrets.token_hex(6)
    busybox_dir = workdir / f"busybox-{salt}"
    (busybox_dir / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, busybox_dir / "bin" / "busybox")
    (busybox_dir / "bin" / "sh").symlink_to("busybox")
    busybox = nix_add(busybox_dir)
    tree = nix_add(_input_tree(workdir / f"tree-{salt}", salt))
    expression = DERIVATIONS.replace("@busybox@", busybox).replace("@tree@", tree)
    (workdir / "default.nix").write_text(expression.replace("@salt@", salt))
    (workdir / "builder.sh").write_text(BUILDER)
    tool = _out("nix-build", "--no-out-link", "-A", "tool", cwd=workdir)
    out = _out("nix-build", "--no-out-link", "-A", "result", cwd=workdir)
    key = generate_key(workdir, f"run-test-{salt}")
    cache = workdir / "cache"
    _out(
        "nix",
        *NIX_FLAGS,
        "copy",
        "--to",
        f"file://{cache}?compression=zstd&secret-key={key.secret_file}",
        tool,
        tree,
        busybox,
    )
    return Build(busybox, tree, tool, out, f"file://{cache}", key, workdir)


def _mounts_at_nix() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return sorted(line for line in f if line.split()[4].startswith("/nix"))


def _processes_naming(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _wait_until_gone(marker: str, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _processes_naming(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def host_state() -> Iterator[None]:
    """Afterwards: the same mounts at /nix, and no process of the run left."""
    before = _mounts_at_nix()
    yield
    assert _mounts_at_nix() == before


def test_builder_output_equals_nix_builds(build: Build, tmp_path: Path, host_state: None) -> None:
    upper = tmp_path / "upper"
    done = subprocess.run(
        build.run(f"{build.busybox}/bin/sh", "-c", BUILDER, upper=upper),
        env=build.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output = upper / str(StorePath.parse(build.out))
    assert (output / "greeting").read_text() == Path(build.tree, "hello.txt").read_text()
    mtimes = {line.split()[1] for line in (output / "dirs").read_text().splitlines()}
    assert mtimes == {"1"}  # as Nix sets them
    assert nix_hash(output) == nix_hash(build.out)
    assert sorted(os.listdir(upper)) == [output.name]
    assert not _processes_naming(build.cache_url)


def test_a_closure_executable_runs_through_absolute_references(
    build: Build, host_state: None
) -> None:
    done = subprocess.run(
        build.run(f"{build.tool}/bin/greet"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == Path(build.tree, "hello.txt").read_text()
    assert done.stderr == ""


@pytest.mark.parametrize(("script", "status"), [("exit 0", 0), ("exit 3", 3)])
def test_exit_status_passes_through(build: Build, script: str, status: int) -> None:
    done = subprocess.run(
        build.run(f"{build.busybox}/bin/sh", "-c", script), capture_output=True, timeout=120
    )
    assert done.returncode == status


def test_a_signal_that_ends_the_command_is_128_plus_its_number(build: Build) -> None:
    done = subprocess.run(
        build.run(f"{build.busybox}/bin/sh", "-c", "kill -USR1 $$"),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 128 + signal.SIGUSR1


def test_stdin_and_stdout_pass_through(build: Build) -> None:
    done = subprocess.run(
        build.run(f"{build.busybox}/bin/busybox", "tr", "a-z", "A-Z"),
        input="shout\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (0, "SHOUT\n")


def test_writes_land_in_the_upper_directory_and_not_on_the_host(
    build: Build, tmp_path: Path, host_state: None
) -> None:
    upper = tmp_path / "upper"
    name = f"{'0' * 32}-written-{secrets.token_hex(4)}"
    script = f"echo kept > /nix/store/{name}; ls /nix/store"
    done = subprocess.run(
        build.run(f"{build.busybox}/bin/sh", "-c", script, upper=upper),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert name in done.stdout.split()
    assert (upper / name).read_text() == "kept\n"
    assert not os.path.exists(f"/nix/store/{name}")
    # The work directory beside the upper one is removed afterwards.
    assert sorted(os.listdir(tmp_path)) == ["upper"]


def test_without_upper_the_writes_are_gone_afterwards(build: Build, host_state: None) -> None:
    name = f"{'1' * 32}-scratch-{secrets.token_hex(4)}"
    done = subprocess.run(
        build.run(f"{build.busybox}/bin/sh", "-c", f"echo x > /nix/store/{name}"),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert not os.path.exists(f"/nix/store/{name}")


def _started(argv: list[str]) -> subprocess.Popen[str]:
    """``tvixmount run`` of a command that says ``started`` and then sleeps."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline() == "started\n"
    return process


def _marker() -> str:
    """A unique extra argument for ``busybox sleep 1000``: sleep adds up its arguments,
    so it must be a number (a word made sleep exit at once with status 1)."""
    return f"0.{secrets.randbelow(10**12):012d}"


def _sleeper(build: Build, marker: str) -> list[str]:
    return build.run(
        f"{build.busybox}/bin/sh",
        "-c",
        f"echo started; exec {build.busybox}/bin/busybox sleep 1000 {marker}",
    )


def test_sigterm_reaches_the_command(build: Build, host_state: None) -> None:
    marker = _marker()
    process = _started(_sleeper(build, marker))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert not _wait_until_gone(marker)


def test_sigint_reaches_the_command(build: Build) -> None:
    marker = _marker()
    process = _started(_sleeper(build, marker))
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 128 + signal.SIGINT


def test_sigkill_of_run_takes_the_command_and_the_mount_with_it(
    build: Build, host_state: None
) -> None:
    marker = _marker()
    argv = _sleeper(build, marker)
    process = _started(argv)
    process.kill()
    process.wait(timeout=60)
    # The command (its argv names the marker) and the store's server (a fork of
    # run, so its argv names the cache) both go.
    assert not _wait_until_gone(marker)
    assert not _wait_until_gone(build.cache_url)


def test_processes_the_command_leaves_behind_go_with_it(build: Build, host_state: None) -> None:
    marker = _marker()
    script = f"{build.busybox}/bin/busybox sleep 1000 {marker} > /dev/null 2>&1 & exit 0"
    done = subprocess.run(
        build.run(f"{build.busybox}/bin/sh", "-c", script), capture_output=True, timeout=120
    )
    assert done.returncode == 0
    assert not _processes_naming(marker)


def test_without_root_one_line_says_what_is_missing(build: Build) -> None:
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *build.run("true")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "run needs root" in done.stderr


def test_a_command_that_does_not_exist_is_one_line(build: Build) -> None:
    done = subprocess.run(
        build.run("/nix/store/no-such-command"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "tvixmount: error: cannot run '/nix/store/no-such-command': not found"
    ]


# Standard signals do not queue: a second SIGINT is seen only if it comes after
# the first was taken.
COUNT_SIGINTS = (
    "import signal\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
    "print('ready', flush=True)\n"
    "signal.sigwaitinfo({signal.SIGINT})\n"
    "again = signal.sigtimedwait({signal.SIGINT}, 3.0)\n"
    "print('interrupts', 1 if again is None else 2, flush=True)\n"
)


def test_ctrl_c_on_a_terminal_reaches_the_command(build: Build) -> None:
    """The terminal signals the whole foreground group, the command included; run does not
    send it a second one (though a second sent at once would mostly merge with the first)."""
    controller, terminal = pty.openpty()

    def take_the_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        build.run(sys.executable, "-c", COUNT_SIGINTS),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=take_the_terminal,
    )
    os.close(terminal)
    try:
        read_until(controller, b"ready")
        os.write(controller, b"\x03")  # ^C: the terminal sends SIGINT to its foreground group
        read_until(controller, b"interrupts 1\r\n")
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        process.wait()
        os.close(controller)
