"""The mount table (``/proc/self/mountinfo``) and the mount's readahead knob.

Read from /proc/self/mountinfo, which sends no FUSE server a request, so a
server may read it about its own mount before its loop runs or after it has
stopped (a stat of its own mount point then would deadlock).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

FSNAME = "tvixmount"
FSTYPE = f"fuse.{FSNAME}"  # what the kernel shows for subtype=tvixmount

# Kernel readahead of the mount, in KiB. With the kernel's default (128) a
# sequential reader mostly waits for one small READ after another; with 1 MiB
# more READs are in flight ahead of it: a cold 256 MiB read went from ~490-690
# to ~760-900 MiB/s on the bench machine. Readahead stops at the end of a file,
# so small files cost nothing more. Not a command-line option: DESIGN.md fixes
# the mount flags.
READ_AHEAD_KB = 1024


class MountEntry(NamedTuple):
    source: str
    point: str
    fstype: str
    device: tuple[int, int]  # (major, minor)

    @property
    def is_fuse(self) -> bool:
        return self.fstype == "fuse" or self.fstype.startswith(("fuse.", "fuseblk"))

    @property
    def is_tvixmount(self) -> bool:
        return self.fstype == FSTYPE or (self.is_fuse and self.source == FSNAME)


def _unescape(field: str) -> str:
    # The kernel octal-escapes space, tab, newline and backslash in mount fields.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts() -> list[MountEntry]:
    """Every mount this process sees, in mount order (a later one at a point hides earlier)."""
    table = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.rstrip("\n").split(" ")
            try:
                # Optional fields end with a lone "-"; fs type and source follow it.
                end = fields.index("-", 6)
                major, _, minor = fields[2].partition(":")
                table.append(
                    MountEntry(
                        _unescape(fields[end + 2]),
                        _unescape(fields[4]),
                        fields[end + 1],
                        (int(major), int(minor)),
                    )
                )
            except (ValueError, IndexError):
                continue
    return table


def mount_at(mountpoint: str) -> MountEntry | None:
    """The mount on top at ``mountpoint`` (the one a path lookup reaches), if any."""
    found = None
    for entry in mounts():
        if entry.point == mountpoint:
            found = entry
    return found


def is_mounted(mountpoint: str) -> bool:
    return mount_at(mountpoint) is not None


def tvixmount_at(mountpoint: str) -> bool:
    """Whether the mount on top at ``mountpoint`` is a tvixmount."""
    entry = mount_at(mountpoint)
    return entry is not None and entry.is_tvixmount


def device_mounted(device: tuple[int, int]) -> bool:
    """Whether the mount with this device number is still in the table."""
    return any(entry.device == device for entry in mounts())


def tvixmount_mounts() -> list[str]:
    """Mount points of every tvixmount filesystem."""
    return [entry.point for entry in mounts() if entry.is_tvixmount]


def canonical_without_touching(path: str | os.PathLike[str]) -> str:
    """The absolute path with the parent's symlinks resolved, never stat-ing ``path`` itself.

    A stat of a mount point whose daemon hangs would hang too.
    """
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def set_read_ahead(mountpoint: str, kb: int) -> bool:
    """Best effort: set the kernel readahead of the mount's backing device to ``kb`` KiB.

    Only root may write the sysfs knob; anything that fails (not root, no
    sysfs, no such device) is logged at debug level and leaves the kernel's
    default in place. Returns whether it was set.
    """
    if os.geteuid() != 0:
        log.debug("readahead of %s left at the kernel default: not root", mountpoint)
        return False
    entry = mount_at(mountpoint)
    if entry is None:
        log.debug("readahead of %s not set: not in /proc/self/mountinfo", mountpoint)
        return False
    major, minor = entry.device
    knob = Path(f"/sys/class/bdi/{major}:{minor}/read_ahead_kb")
    try:
        knob.write_text(f"{kb}\n", encoding="ascii")
    except OSError as exc:
        log.debug("readahead of %s not set: %s", mountpoint, exc)
        return False
    log.debug("readahead of %s set to %d KiB (%s)", mountpoint, kb, knob)
    return True
