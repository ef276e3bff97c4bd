"""A progress bar with live figures for long work (rich), quiet when asked."""

from __future__ import annotations

import contextlib

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True):
    """Yields ``advance(n, **figures)``: moves the bar by n and shows the latest figures after it."""
    if not enabled:
        yield lambda n=1, **figures: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[figures]}"),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total, figures="")

        def advance(n: int = 1, **figures) -> None:
            text = " ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
            )
            bar.update(task, advance=n, **({"figures": text} if figures else {}))

        yield advance
