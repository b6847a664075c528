"""Names a module hands out from its submodules, imported on first use (PEP 562).

A package or command module that must stay cheap to import (``tvixmount
--help`` must not load pyfuse3 or rich) lists which submodule defines each
name; the module's ``__getattr__`` then calls the function made here.
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
