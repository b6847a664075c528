"""``import``: put a local path into a store the way ``nix-store --add`` does.

The store path is the recursive (NAR) SHA-256 content address of the tree
with no references, so it equals what ``nix-store --add PATH`` prints.
"""

from __future__ import annotations

import os
from pathlib import Path

from .castore.ingest import Progress, ingest_path
from .castore.nodes import rename
from .pathinfo.model import CAHash, ContentAddress, NarInfo, PathInfo
from .storepath import DIGEST_LEN, StorePath, from_nar_hash
from .stores import Store


def default_name(path: Path | str) -> str:
    """Nix's name for an added path: the last component of the path as given.

    Like Nix's ``baseNameOf``, trailing slashes are ignored and nothing is
    resolved, so ``nix-store --add .`` and ``tvixmount import .`` both name
    the path ``.``.
    """
    return os.fspath(path).rstrip("/").rpartition("/")[2]


async def import_path(
    store: Store,
    path: Path | str,
    name: str | None = None,
    progress: Progress | None = None,
) -> PathInfo:
    """Ingest ``path`` into ``store`` and record its PathInfo; returns it.

    ``name`` defaults to the path's basename. The PathInfo is only written
    after every blob and directory of the tree is stored.
    """
    name = default_name(path) if name is None else name
    # Fail on a name Nix would reject before reading a possibly huge tree.
    StorePath(bytes(DIGEST_LEN), name)
    tree = await ingest_path(
        path, store.blobs, store.directories, name=name.encode(), progress=progress
    )
    store_path = from_nar_hash(tree.nar_sha256, name)
    info = PathInfo(
        node=rename(tree.node, str(store_path).encode()),
        references=(),
        narinfo=NarInfo(
            nar_size=tree.nar_size,
            nar_sha256=tree.nar_sha256,
            ca=ContentAddress(CAHash.NAR_SHA256, tree.nar_sha256),
        ),
    )
    return await store.pathinfos.put(info)
