"""One progress bar for every long stage: done/total, rows per second and time left."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

# soft_wrap: a line is not cut at 80 columns where stderr is no terminal (CI logs, files).
console = Console(stderr=True, soft_wrap=True)


def is_main_process() -> bool:
    """False in all but one process of a multi-process launch (torchrun, accelerate), so that each
    message is printed once."""
    return int(os.environ.get("RANK", "0")) == 0


def warn(message: str) -> None:
    """A one-line warning for the user, once per launch."""
    if is_main_process():
        console.print(f"[yellow]warning: {message}", highlight=False)


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} rows/s" if task.speed else "- rows/s")


class StageProgress(Progress):
    def stop(self) -> None:
        if not self.disable:  # rich before 14.3 prints a blank line at the stop of a disabled bar too
            super().stop()


def stage_progress(description: str) -> Progress:
    # Off where stderr is no terminal (CI logs, pipes): a live bar there only leaves blank lines.
    return StageProgress(TextColumn(description), BarColumn(), MofNCompleteColumn(), RateColumn(),
                         TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
