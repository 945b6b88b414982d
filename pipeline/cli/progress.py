"""Progress bars for long CLI work (backfills, ``rules hunt``, ``verify``).

A bar is drawn on stderr only when stderr is a terminal and the command is not in ``--json``
mode; in a pipe, a log file or ``--json`` it stays silent, so output that is parsed never
carries control sequences. Bars are transient: once done they leave the screen clean for the
command's own summary line.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)


def bar(what: str, *, quiet: bool = False, console: Console | None = None) -> Progress:
    """A counting bar (``what``, bar, done/total, time left); disabled when ``quiet`` or off a terminal."""
    console = console or Console(stderr=True)
    return Progress(SpinnerColumn(), TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, disable=quiet or not console.is_terminal, transient=True)


class CountingEngine:
    """A rules engine that advances a bar per evaluated record (``rules hunt``), else unchanged."""

    def __init__(self, engine: Any, progress: Progress, task: Any) -> None:
        self.engine = engine
        self.progress = progress
        self.task = task

    def step(self, *args: Any) -> Any:
        """The engine's ``step``, counted."""
        self.progress.advance(self.task)
        return self.engine.step(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)
