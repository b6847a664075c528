"""Run the command as a child, pass signals on, and return its exit status as a shell would."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence

from ..errors import TvixmountError
from .namespace import adopt_orphans, children, die_with_parent

log = logging.getLogger(__name__)

FORWARDED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})
# si_code of a signal the kernel sent itself; a terminal's Ctrl-C or Ctrl-\ reaches
# the whole foreground process group, the command included, and is not sent twice.
_SI_KERNEL = 0x80
_FROM_TERMINAL = frozenset({signal.SIGINT, signal.SIGQUIT})


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: its exit code, or 128+N for signal N."""
    return 128 - returncode if returncode < 0 else returncode


def supervise(
    argv: Sequence[str], others: frozenset[int], on_child_exit: Callable[[], None]
) -> int:
    """Run ``argv`` (PATH searched), forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT, until it exits.

    The command is killed if this process dies, even by SIGKILL. Processes it
    leaves behind (a daemon it started) are killed once it exits: they would
    hold the namespace with its store gone. ``others`` are this process's
    own children, left alone; ``on_child_exit`` is called on every SIGCHLD
    that is not the command's exit.
    """
    adopt_orphans()
    waited = FORWARDED | {signal.SIGCHLD}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, waited)

    def in_child() -> None:
        # This process runs no other thread, so the death signal follows it.
        die_with_parent(signal.SIGKILL)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    try:
        try:
            child = subprocess.Popen(list(argv), preexec_fn=in_child)
        except OSError as exc:
            reason = "not found" if exc.errno == errno.ENOENT else exc.strerror
            raise TvixmountError(f"cannot run {argv[0]!r}: {reason}") from None
        while True:
            info = signal.sigwaitinfo(waited)
            signum = signal.Signals(info.si_signo)
            if signum == signal.SIGCHLD:
                if child.poll() is not None:
                    _kill_leftovers(others)
                    return exit_status(child.returncode)
                on_child_exit()
            elif info.si_code == _SI_KERNEL and signum in _FROM_TERMINAL:
                log.debug("%s from the terminal: the command has it too", signum.name)
            else:
                log.debug("passing %s on to the command (pid %d)", signum.name, child.pid)
                child.send_signal(signum)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _kill_leftovers(others: frozenset[int]) -> None:
    # Orphans are adopted by this process as they lose their parents, so repeat
    # until none is left.
    while leftovers := [pid for pid in children() if pid not in others]:
        log.debug("killing %d processes the command left behind", len(leftovers))
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        for pid in leftovers:
            os.waitpid(pid, 0)
