"""Run a command with a store mounted at ``/nix/store``, inside a private mount namespace.

Meant to run as the child of ``unshare --mount --propagation private``
(:func:`command` builds that line), so nothing it mounts is seen outside:

1. an empty ``/nix/store`` (a tmpfs over ``/nix``, with the host's other
   ``/nix`` entries bound back), since a mount point must be an empty directory;
2. ``tvixmount mount /nix/store --store URL --list-root`` over that;
3. the command, with absolute ``/nix/store/...`` paths resolving into the store;
4. ``tvixmount umount /nix/store``, which waits for the serving process, so
   the namespace ends with the command.

The command's exit status is passed through. A failure of this wrapper itself
exits :data:`SETUP_FAILED` with one line starting with :data:`ERROR_PREFIX`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

STORE_DIR = "/nix/store"
SETUP_FAILED = 125  # as env(1) and chroot(1) do for their own failures
ERROR_PREFIX = "tvixmount-nsrun: error:"


class SetupError(Exception):
    """The namespace could not be prepared; the command did not run."""


def command(store_url: str, argv: Sequence[str]) -> list[str]:
    """The full command line: a private mount namespace running this module."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-m",
        __name__,
        "--store",
        store_url,
        "--",
        *argv,
    ]


def tvixmount(*args: str) -> list[str]:
    return [sys.executable, "-m", "tvixmount", *args]


def _run_quietly(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise SetupError(f"{what}: {reason}")


def _empty_store_dir() -> None:
    """Give the namespace an empty /nix/store, keeping the rest of /nix visible.

    A mount point must be an empty directory that is not a mount itself, so
    /nix is covered by a tmpfs holding an empty ``store`` and the other
    entries of the original /nix bind-mounted back (reached through a file
    descriptor opened before the tmpfs hid them).
    """
    nix = os.path.dirname(STORE_DIR)
    if not os.path.isdir(nix):
        raise SetupError(f"{nix} does not exist to mount over")
    original = os.open(nix, os.O_PATH | os.O_DIRECTORY)
    try:
        entries = [entry for entry in os.scandir(nix) if entry.name != "store"]
        _run_quietly(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", nix], nix)
        os.mkdir(STORE_DIR, 0o755)
        for entry in entries:
            target = os.path.join(nix, entry.name)
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
                continue
            if entry.is_dir():
                os.mkdir(target)
            else:
                open(target, "x").close()
            source = f"/proc/{os.getpid()}/fd/{original}/{entry.name}"
            _run_quietly(["mount", "--no-canonicalize", "--rbind", source, target], target)
    finally:
        os.close(original)


def _check_private_namespace() -> None:
    # unshare(1) execs this module in the namespace it made, so the parent
    # (the caller) is still in the original one. Same namespace means the
    # mounts below would land on the host: refuse.
    try:
        ours = os.readlink("/proc/self/ns/mnt")
        callers = os.readlink(f"/proc/{os.getppid()}/ns/mnt")
    except OSError as exc:
        raise SetupError(f"cannot read mount namespaces: {exc.strerror}") from None
    if ours == callers:
        raise SetupError(
            "not inside a private mount namespace (run under `unshare --mount "
            "--propagation private`); refusing to mount over the host's /nix/store"
        )


def run(store_url: str, argv: Sequence[str]) -> int:
    """Steps 1-4 above; refuses to run outside a private mount namespace."""
    _check_private_namespace()
    _empty_store_dir()
    _run_quietly(
        tvixmount("mount", STORE_DIR, "--store", store_url, "--list-root"),
        f"mounting {store_url} at {STORE_DIR}",
    )
    try:
        try:
            return subprocess.run(list(argv), check=False).returncode
        except OSError as exc:
            raise SetupError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    finally:
        _run_quietly(tvixmount("umount", STORE_DIR), f"unmounting {STORE_DIR}")


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tvixmount.testing.nsrun",
        description="Inside a private mount namespace: mount STORE at /nix/store, run COMMAND.",
    )
    parser.add_argument("--store", required=True, metavar="URL")
    parser.add_argument("argv", nargs="+", metavar="COMMAND")
    options = parser.parse_args(args)
    try:
        return run(options.store, options.argv)
    except SetupError as exc:
        print(f"{ERROR_PREFIX} {exc}", file=sys.stderr)
        return SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
