"""NAR, the Nix archive format: writer, strict streaming reader, castore ingestion."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ingest import ingest_nar
    from .reader import NarVisitor, read_nar
    from .writer import calculate_nar, write_nar

# Loaded on first use: ingest brings trio (90 ms), which a loop-less copy does without.
_HOMES = {
    "ingest_nar": "ingest",
    "NarVisitor": "reader",
    "read_nar": "reader",
    "calculate_nar": "writer",
    "write_nar": "writer",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)


__all__ = ["NarVisitor", "calculate_nar", "ingest_nar", "read_nar", "write_nar"]
