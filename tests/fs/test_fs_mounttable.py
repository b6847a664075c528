"""The mount table as /proc/self/mountinfo has it, and which entries are tvixmounts."""

from __future__ import annotations

import os
from pathlib import Path

from tvixmount.fs.mounttable import (
    MountEntry,
    canonical_without_touching,
    mount_at,
    mounts,
    tvixmount_at,
)


def test_the_root_file_system_is_in_the_table() -> None:
    root = mount_at("/")
    assert root is not None
    st = os.stat("/")
    assert root.device == (os.major(st.st_dev), os.minor(st.st_dev))
    assert any(entry.point == "/proc" and entry.fstype == "proc" for entry in mounts())


def test_only_a_fuse_mount_named_tvixmount_is_a_tvixmount() -> None:
    def entry(source: str, fstype: str) -> MountEntry:
        return MountEntry(source, "/m", fstype, (0, 42))

    assert entry("tvixmount", "fuse.tvixmount").is_tvixmount
    assert entry("tvixmount", "fuse").is_tvixmount  # fsname without a subtype
    assert not entry("tvixmount", "tmpfs").is_tvixmount  # a tmpfs whose source says tvixmount
    assert not entry("image.squashfs", "fuse.squashfuse").is_tvixmount
    assert entry("image.squashfs", "fuse.squashfuse").is_fuse
    assert entry("/dev/sda1", "fuseblk").is_fuse
    assert not entry("/dev/vda", "ext4").is_fuse


def test_a_plain_directory_has_no_mount_and_no_tvixmount(tmp_path: Path) -> None:
    assert mount_at(str(tmp_path)) is None
    assert not tvixmount_at(str(tmp_path))


def test_canonicalising_resolves_the_parent_but_never_the_path_itself(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "leaf").symlink_to("/nonexistent")
    canonical = canonical_without_touching(tmp_path / "link" / "leaf")
    assert canonical == str(tmp_path.resolve() / "real" / "leaf")
