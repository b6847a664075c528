"""The read-only FUSE filesystem: inode/handle core, root-node providers, pyfuse3 operations.

The names below load on first use (PEP 562): importing one submodule, such
as ``fs.root_nodes`` for ``tvixmount ls``, must not import pyfuse3 and the
whole FUSE layer through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .inode_tracker import InodeTracker
    from .mount import MountOptions, check_mountpoint, mount_background, mount_foreground, unmount
    from .operations import TvixmountFS
    from .root_nodes import DirectoryRootNodes, PathInfoRootNodes, RootNodes

_SUBMODULE = {
    "DirectoryRootNodes": "root_nodes",
    "InodeTracker": "inode_tracker",
    "MountOptions": "mount",
    "PathInfoRootNodes": "root_nodes",
    "RootNodes": "root_nodes",
    "TvixmountFS": "operations",
    "check_mountpoint": "mount",
    "mount_background": "mount",
    "mount_foreground": "mount",
    "unmount": "mount",
}


_load = lazy_names(__name__, _SUBMODULE, globals())


def __getattr__(name: str) -> Any:
    return _load(name)


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
