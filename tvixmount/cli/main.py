"""``tvixmount`` entry point: dispatch to the command modules, map errors to exit codes.

Exit codes: 0 success, 1 a tvixmount error (one line on stderr), 2 usage
errors (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
import threading
from collections.abc import Sequence

from ..command_line import mount_arguments
from ..errors import TvixmountError

# Each module defines ``register(subparsers)`` and sets ``func`` (args -> exit code).
COMMANDS: tuple[str, ...] = (
    "mount",
    "umount",
    "import_",
    "nar",
    "path_info",
    "serve",
    "ls",
    "fixture",
    "run",
    "copy",
    "gc",
    "delete",
    "verify",
    "info",
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

# Commands that leave no file of their own half-written when the process ends:
# they may skip the interpreter's teardown (see _exit_without_teardown).
_QUICK_EXIT_COMMANDS = frozenset({"mount", "umount", "ls", "path-info", "nar", "run"})


# Libraries that log one line per request or per protocol event: quiet unless -v.
# Under -v, httpx shows each request; httpcore's and hpack's DEBUG lines trace
# every connection event and header, which drowns the rest, so they stop at
# INFO. Each logger's level under -v; WARNING without it.
_CHATTY_LOGGERS = {
    "httpx": logging.DEBUG,
    "httpcore": logging.INFO,
    "hpack": logging.INFO,
}


class _VersionAction(argparse.Action):
    """``--version``: read from the installed package's metadata only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="print the version and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("tvixmount")
        except PackageNotFoundError:
            parser.exit(EXIT_ERROR, "tvixmount: error: no package metadata (not installed)\n")
        print(f"tvixmount {text}")
        parser.exit()


def add_global_options(parser: argparse.ArgumentParser, *, in_command: bool) -> None:
    """``-v`` and ``--log-file``, before the command and (``in_command``) after it.

    A command's copy has no default of its own, so it only overrides the
    value given before the command when it is given itself.
    """
    unset = argparse.SUPPRESS
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=unset if in_command else False,
        help="debug logging",
    )
    parser.add_argument(
        "--log-file",
        metavar="FILE",
        default=unset if in_command else None,
        help="log to FILE instead of stderr",
    )


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every (sub)command parser below ``parser``, nested ones (``fixture build``) included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                found += [command, *_commands(command)]
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvixmount", description="Mount a Nix store read-only over FUSE."
    )
    parser.add_argument("--version", action=_VersionAction)
    add_global_options(parser, in_command=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    for command in _commands(parser):
        add_global_options(command, in_command=True)
    return parser


def setup_logging(verbose: bool, log_file: str | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name, level in _CHATTY_LOGGERS.items():
        logging.getLogger(name).setLevel(level if verbose else logging.WARNING)


def _exit_without_teardown(code: int) -> None:
    """End the process now, skipping the interpreter's teardown, when that is safe.

    Freeing trio, pyfuse3, protobuf and the rest module by module takes 60-90 ms,
    a sixth of a whole ``tvixmount mount`` start-up, for nothing: the process is
    over. Output is flushed and atexit handlers (log handlers) run first. Any
    other non-daemon thread still running would have been waited for: then the
    normal exit path is taken.
    """
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        return  # e.g. a closed pipe: the normal exit path reports it as usual
    atexit._run_exitfuncs()
    os._exit(code)


def serve_with_the_c_allocator() -> None:
    """Re-execute a ``tvixmount mount`` process with ``PYTHONMALLOC=malloc``.

    A mount's memory should follow what the kernel holds: after the kernel
    forgets a million inodes, the daemon's live objects are back near their
    start-up size. pymalloc, though, hands memory back only in whole 1 MiB
    arenas, and an arena stays while one object in it lives, so a few
    survivors scattered over a million freed inodes kept 64 MiB resident
    against 29 at start (44 arenas against 13). The C library's malloc, with
    the ``malloc_trim`` the inode tracker calls after a mass forget, returns
    every free page instead, and costs lookups nothing measurable (bench/ and
    docs/reliability.md have the figures). The allocator is fixed when the
    interpreter starts, so the process re-executes itself, before anything
    heavy is imported; the pid and command line stay the same. A
    ``PYTHONMALLOC`` the user set is left alone.
    """
    if "PYTHONMALLOC" in os.environ or mount_arguments(sys.orig_argv) is None:
        return
    environment = {**os.environ, "PYTHONMALLOC": "malloc"}
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
    except OSError:
        return  # serve with pymalloc: only memory is at stake


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; ``argv=None`` (the process's own arguments) marks the process entry."""
    if argv is None:
        serve_with_the_c_allocator()
    return run_command_line(sys.argv[1:] if argv is None else argv, process_entry=argv is None)


def run_command_line(argv: Sequence[str], *, process_entry: bool) -> int:
    """Parse and run ``tvixmount ARGV``; ``process_entry``: the process ends with it."""
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args.verbose, args.log_file)
    except OSError as exc:
        print(
            f"tvixmount: error: cannot open log file {args.log_file}: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    code = _run(args)
    if process_entry and args.command in _QUICK_EXIT_COMMANDS:
        _exit_without_teardown(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.func(args)
    except TvixmountError as exc:
        print(f"tvixmount: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
