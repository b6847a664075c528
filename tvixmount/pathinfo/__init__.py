"""PathInfo model and PathInfoService implementations."""

from .model import CAHash, ContentAddress, NarInfo, PathInfo, Signature
from .service import PathInfoService

__all__ = ["CAHash", "ContentAddress", "NarInfo", "PathInfo", "PathInfoService", "Signature"]
