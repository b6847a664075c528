"""The tree keeps its seams: fs/ knows castore only; each transport library lives in one home."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tvixmount"


def _imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _sources(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "_proto" not in p.parts)


NIX_MODULES = (
    "tvixmount.storepath",
    "tvixmount.nixbase32",
    "tvixmount.pathinfo",
    "tvixmount.nar",
    "tvixmount.stores",
)


@pytest.mark.parametrize("path", _sources(PACKAGE / "fs"), ids=lambda p: p.name)
def test_fs_imports_nothing_that_knows_nix(path: Path) -> None:
    offending = {
        module
        for module in _imported_modules(path)
        if any(module == nix or module.startswith(nix + ".") for nix in NIX_MODULES)
    }
    assert not offending, f"{path.name} imports {sorted(offending)}"


@pytest.mark.parametrize(
    ("library", "home"),
    [("grpc", "stores/grpc"), ("httpx", "stores/binarycache"), ("sqlite3", "stores/local")],
)
def test_a_transport_library_is_used_from_one_directory(library: str, home: str) -> None:
    users = {
        str(path.relative_to(PACKAGE))
        for path in _sources(PACKAGE)
        if any(m == library or m.startswith(library + ".") for m in _imported_modules(path))
    }
    outside = sorted(u for u in users if not u.startswith(home + "/"))
    assert users, f"nothing imports {library}"
    assert not outside, f"{library} is used outside {home}/: {outside}"
