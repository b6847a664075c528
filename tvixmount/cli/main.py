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
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

# Commands that leave no file of their own half-written when the process ends:
# they may skip the interpreter's teardown (see _exit_without_teardown).
_QUICK_EXIT_COMMANDS = frozenset({"mount", "umount", "ls", "path-info", "nar"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvixmount", description="Mount a Nix store read-only over FUSE."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-file", metavar="FILE", help="log to FILE instead of stderr")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    return parser


def setup_logging(verbose: bool, log_file: str | None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; ``argv=None`` (the process's own arguments) marks the process entry."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.log_file)
    code = _run(args)
    if argv is None and args.command in _QUICK_EXIT_COMMANDS:
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
