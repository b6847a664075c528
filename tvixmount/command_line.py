"""What a process's command line runs: whether it is ``tvixmount mount``, and with what.

Kept apart from the CLI and the fs layer, and light, because both read
command lines: ``umount`` finds serving processes by theirs, and the entry
point reads its own before anything heavy is imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# mount(8)'s helper: ``mount.tvixmount SOURCE MOUNTPOINT [-o OPTIONS]``.
MOUNT_HELPER = "mount.tvixmount"


def mount_arguments(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``mount`` if ``argv`` runs ``tvixmount [global options] mount``.

    For mount(8)'s helper, every argument (it only mounts).
    """
    argv = list(argv)
    names = [os.path.basename(arg) for arg in argv[:2]]
    if MOUNT_HELPER in names:
        return argv[names.index(MOUNT_HELPER) + 1 :]
    if os.path.basename(argv[0]) == "tvixmount":
        rest = argv[1:]
    elif len(argv) > 1 and os.path.basename(argv[1]) == "tvixmount":  # script via its #!
        rest = argv[2:]
    elif argv[1:3] == ["-m", "tvixmount"]:
        rest = argv[3:]
    else:
        return None
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] == "--log-file" else rest[1:]
    return rest[1:] if rest[:1] == ["mount"] else None
