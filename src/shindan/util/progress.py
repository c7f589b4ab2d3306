"""Rich progress bars on stderr; ``--quiet`` (or a non-terminal CI log) keeps them short."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich loads with the first bar, not at start-up (`set_quiet` is imported early)
    from rich.console import Console

_quiet = False


@cache
def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def set_quiet(quiet: bool) -> None:
    """Silence every progress bar (the CLI's ``--quiet``)."""
    global _quiet
    _quiet = quiet


@contextmanager
def progress_bar(
    description: str, total: int | None, *, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows a bar on stderr unless disabled or quiet."""
    if not enabled or _quiet:
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    _console = _stderr_console()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_console,
        transient=not _console.is_terminal,
    ) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(task, n)
