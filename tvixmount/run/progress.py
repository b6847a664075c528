"""A progress bar of closure prefetches on the terminal, for ``tvixmount run``.

Shown only while prefetches are under way and wiped when they are done
(transient), since the command writes to the same terminal.
"""

from __future__ import annotations

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..pathinfo.prefetch import PrefetchStats

_REFRESH = 0.1


async def show_progress(stats: PrefetchStats) -> None:
    """A bar on stderr whenever ``stats`` says prefetches are under way; until cancelled."""
    console = Console(stderr=True)
    while True:
        while not stats.busy:
            await trio.sleep(_REFRESH)
        with Progress(
            TextColumn("[bold]fetching closure"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("paths ({task.fields[running]} in flight)"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            auto_refresh=False,  # no refresh thread: this loop redraws
        ) as bar:
            task = bar.add_task("closure", total=stats.scheduled, running=0)
            while stats.busy:
                bar.update(
                    task, completed=stats.finished, total=stats.scheduled, running=stats.running
                )
                bar.refresh()
                await trio.sleep(_REFRESH)
