"""pytest plugin (entry point ``pytest11``): fixtures for testing against Nix stores."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tvixmount_store_dir(tmp_path: Path) -> Path:
    """The path of a fresh, not yet created embedded store (``--store`` for the CLI)."""
    return tmp_path / "tvixmount-store"
