"""``mount.tvixmount``: mount(8)'s helper, for ``mount -t tvixmount`` and /etc/fstab.

mount(8) runs ``mount.tvixmount SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]``
(docs/fstab.md). SOURCE is a store URL or an embedded store directory. The
options become the arguments of ``tvixmount mount``, which then runs as
usual: in the background, exiting 0 once the mount answers.

Options of our own: ``trusted-public-key=KEY`` (repeatable), ``list-root``,
``allow_other``, ``no-xattr``, ``timeout=S``, ``cache-dir=DIR``,
``no-require-sigs``, ``log-file=FILE``. The generic options mount(8) passes
along (``ro``, ``rw``, ``nofail``, ``_netdev``, ``nosuid``, ``x-*``, ...) are
accepted and mean nothing here: the mount is read-only, and the kernel sees
no device, suid bit or special file through it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from ..errors import TvixmountError
from .main import EXIT_ERROR, EXIT_OK, build_parser, run_command_line, serve_with_the_c_allocator

PROG = "mount.tvixmount"

# Accepted, and without effect on a read-only FUSE mount of immutable content.
# ``rw`` too: mount(8) passes it whenever ``ro`` is not given (``defaults``,
# ``mount -t tvixmount SOURCE DIR``), and the mount is read-only regardless,
# as mount(8) mounts a write-protected device.
_GENERIC = frozenset(
    {
        "ro",
        "rw",
        "defaults",
        "auto",
        "noauto",
        "nofail",
        "_netdev",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "async",
        "sync",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "lazytime",
        "nolazytime",
        "diratime",
        "nodiratime",
        "silent",
        "loud",
    }
)
# Options with a value: option name -> ``tvixmount mount`` flag.
_VALUED = {
    "trusted-public-key": "--trusted-public-key",
    "timeout": "--timeout",
    "cache-dir": "--cache-dir",
    "log-file": "--log-file",
}
_FLAGS = {
    "list-root": "--list-root",
    "allow_other": "--allow-other",
    "allow-other": "--allow-other",
    "no-xattr": "--no-xattr",
    "no-require-sigs": "--no-require-sigs",
}
_TYPES = frozenset({"tvixmount", "fuse.tvixmount"})


class MountOptionError(TvixmountError):
    """An option mount.tvixmount cannot honour."""


@dataclass(frozen=True, slots=True)
class HelperCall:
    """What mount(8) asked for, as ``tvixmount`` arguments; ``fake``: check, do not mount."""

    arguments: list[str]
    fake: bool


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise MountOptionError(message)


def _command_line_parser() -> _Parser:
    parser = _Parser(prog=PROG, add_help=False)
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("-o", dest="options", action="append", default=[])
    parser.add_argument("-s", dest="sloppy", action="store_true")
    parser.add_argument("-f", dest="fake", action="store_true")
    parser.add_argument("-n", dest="no_mtab", action="store_true")
    parser.add_argument("-v", dest="verbose", action="store_true")
    parser.add_argument("-t", dest="type", default="tvixmount")
    parser.add_argument("-N", dest="namespace")
    return parser


def _option_flags(option: str, sloppy: bool) -> list[str]:
    """The ``tvixmount mount`` arguments for one ``-o`` option."""
    name, has_value, value = option.partition("=")
    if option in _GENERIC or name == "comment" or name.startswith(("x-", "X-")):
        return []
    if name in _VALUED:
        if not has_value or not value:
            raise MountOptionError(f"mount option {name} needs a value: {name}=...")
        return [_VALUED[name], value]
    if option in _FLAGS:
        return [_FLAGS[option]]
    if sloppy:
        return []
    raise MountOptionError(f"unknown mount option {option!r}")


def helper_call(argv: Sequence[str]) -> HelperCall:
    """Translate mount(8)'s helper arguments; :class:`MountOptionError` for what cannot be."""
    args = _command_line_parser().parse_args(argv)
    if args.namespace is not None:
        raise MountOptionError("-N (mount in another namespace) is not supported")
    if args.type not in _TYPES:
        raise MountOptionError(f"file system type {args.type!r} is not tvixmount")
    arguments = ["-v"] if args.verbose else []
    arguments += ["mount", args.mountpoint, "--store", args.source]
    for group in args.options:
        for option in filter(None, group.split(",")):
            arguments += _option_flags(option, args.sloppy)
    return HelperCall(arguments, args.fake)


def main(argv: Sequence[str] | None = None) -> int:
    """``mount.tvixmount``; ``argv=None`` (the process's own arguments) marks the process entry."""
    if argv is None:
        serve_with_the_c_allocator()
    try:
        call = helper_call(sys.argv[1:] if argv is None else argv)
    except TvixmountError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if call.fake:
        build_parser().parse_args(call.arguments)
        return EXIT_OK
    return run_command_line(call.arguments, process_entry=argv is None)


if __name__ == "__main__":
    sys.exit(main())
