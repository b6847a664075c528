"""The byte-transfer bar that ``import`` and ``copy`` show on a terminal.

Imported only when a bar is shown: rich costs the other commands nothing.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def transfer_bar() -> Progress:
    """A transient bar on stderr: description, bar, bytes done of total, speed, time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
