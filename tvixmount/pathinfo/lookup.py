"""The one identity rule of the Nix seam: a PathInfo found by digest belongs to the path asked for.

A PathInfo service is keyed by the 20-byte store path digest alone, so an
answer must be checked against the whole store path: its root node's name is
the looked-up basename, and its digest is the one asked for. Every lookup of a
store path (the mount root, ``ls``, ``path-info``, ``nar``, serving) goes
through :func:`find_path_info`; backends only store and fetch.
"""

from __future__ import annotations

import logging

from ..storepath import StorePath
from .model import PathInfo
from .service import PathInfoService

log = logging.getLogger(__name__)


async def find_path_info(pathinfos: PathInfoService, store_path: StorePath) -> PathInfo | None:
    """The PathInfo of ``store_path``, or ``None`` when the service has no such path.

    An answer naming another store path (another digest, or the same digest
    under another name) means ``store_path`` is absent: serving it under a
    name it does not carry would make two different paths share content.
    """
    info = await pathinfos.get(store_path.digest)
    if info is None:
        return None
    found = info.store_path
    if found != store_path:
        log.debug(
            "the store answered the lookup of %s with %s; treating it as absent", store_path, found
        )
        return None
    return info
