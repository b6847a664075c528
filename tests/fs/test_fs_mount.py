"""Mount options: read-only, named tvixmount."""

from __future__ import annotations

from tvixmount.fs.mount import MountOptions


def test_mount_options_are_read_only_and_named() -> None:
    assert MountOptions().fuse_options() == {
        "ro",
        "fsname=tvixmount",
        "subtype=tvixmount",
        "default_permissions",
    }


def test_allow_other_is_added_when_asked() -> None:
    assert "allow_other" in MountOptions(allow_other=True).fuse_options()
