"""The read-only FUSE filesystem: inode/handle core, root-node providers, pyfuse3 operations."""

from .inode_tracker import InodeTracker
from .mount import MountOptions, check_mountpoint, mount_background, mount_foreground, unmount
from .operations import TvixmountFS
from .root_nodes import DirectoryRootNodes, PathInfoRootNodes, RootNodes

__all__ = [
    "DirectoryRootNodes",
    "InodeTracker",
    "MountOptions",
    "PathInfoRootNodes",
    "RootNodes",
    "TvixmountFS",
    "check_mountpoint",
    "mount_background",
    "mount_foreground",
    "unmount",
]
