"""Names a module hands out from its submodules, imported on first use (PEP 562).

A package that must stay cheap to import (``tvixmount.fs``: ``tvixmount ls``
imports ``fs.root_nodes``, which must not load pyfuse3 through the package)
lists which submodule defines each name; its ``__getattr__`` then calls the
function made here. Command modules need none of this: they import what they
use inside ``run()``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, where: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], Any]:
    """``__getattr__`` for a module: ``where[name]`` is the submodule of ``package``
    defining ``name``; a loaded name is kept in ``namespace`` (the module's globals)."""

    def load(name: str) -> Any:
        submodule = where.get(name)
        if submodule is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{submodule}", package), name)
        namespace[name] = value
        return value

    return load
