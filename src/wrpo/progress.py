"""What the user sees: one console for every stage (live progress where stderr is a terminal, a few
plain lines where it is not), the libraries' own output only with --verbose, and each stage's log file."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

# Where stderr is no terminal (CI logs, files) rich assumes 80 columns: lines are not cut there
# (soft_wrap) and tables get room for their columns.
console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
# wrpo's own records (messages, training steps) for log files; the console is written to directly.
log = logging.getLogger("wrpo")
log.setLevel(logging.INFO)
log.propagate = False

VERBOSE_VARIABLE = "WRPO_VERBOSE"
# Loggers that keep their own console handler instead of passing records to the root logger's.
_SELF_HANDLED = ("transformers", "datasets", "DeepSpeed")


def is_main_process() -> bool:
    """False in all but one process of a multi-process launch (torchrun, accelerate), so that each
    message is printed once."""
    return int(os.environ.get("RANK", "0")) == 0


def is_verbose() -> bool:
    """--verbose was given to this command or to the one that started this process."""
    return os.environ.get(VERBOSE_VARIABLE) == "1"


def configure_console(verbose: bool) -> None:
    """Leaves the terminal to wrpo's own display: the libraries' warnings and info lines go only to a
    stage's log file, their progress bars nowhere; with `verbose`, all of it is shown as the libraries
    print it. Set through the environment too, so that processes this one starts behave the same.
    Run before a command is built (train and sft import their libraries to build their flags)."""
    if verbose and os.environ.get(VERBOSE_VARIABLE) == "0":  # quieted by an earlier call, not by the user
        os.environ.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)
    elif not verbose:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ[VERBOSE_VARIABLE] = "1" if verbose else "0"
    logging.captureWarnings(True)  # Python warnings become log records: shown or filed like the rest
    shown = logging.WARNING if verbose else logging.ERROR
    from transformers.utils import logging as transformers_logging

    transformers_logging.get_logger()  # creates the library's console handler, to set its level below
    (transformers_logging.enable_progress_bar if verbose else transformers_logging.disable_progress_bar)()
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    if not any(isinstance(handler, _StderrHandler) for handler in root.handlers):
        root.addHandler(_StderrHandler())
    for logger in (root, *map(logging.getLogger, _SELF_HANDLED)):
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler):
                handler.setLevel(shown)
    # DeepSpeed makes its logger's console handler when it is imported, later than this: its records
    # below the shown level are dropped at the logger instead (older releases log at INFO on import).
    _DEEPSPEED_SHOWN.level = shown
    logging.getLogger("DeepSpeed").addFilter(_DEEPSPEED_SHOWN)  # once: a filter already there is not added again
    # peft imports bitsandbytes whenever it is installed, which on a CPU then warns at every command
    # that an optional kernel package is missing: not even --verbose makes that useful.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


class _AtLeast(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


_DEEPSPEED_SHOWN = _AtLeast(logging.WARNING)


class _StderrHandler(logging.StreamHandler):
    """The root logger's console handler: writes to whatever sys.stderr is at the time (a test's
    captured stream, say), not to the stream it was created with."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def say(message) -> None:
    """Prints a line or a rich renderable (a table) for the user, once per launch, and files it in
    the stage's log as plain text."""
    if not is_main_process():
        return
    console.print(message, highlight=False)
    log.info(plain_text(message))


def warn(message: str) -> None:
    """A one-line warning for the user, once per launch."""
    say(f"[yellow]warning: {message}")


def plain_text(renderable) -> str:
    """What `renderable` prints as, without colours or markup (for log files)."""
    buffer = Console(file=io.StringIO(), width=120, soft_wrap=True, no_color=True, color_system=None)
    buffer.print(renderable, highlight=False)
    return buffer.file.getvalue().rstrip("\n")


@contextlib.contextmanager
def stage_log(path: str | Path):
    """Files everything logged while the block runs into `path` (appended: a resumed stage keeps its
    earlier attempts' lines): wrpo's messages and training steps, and the libraries' warnings and
    info lines that the console shows only with --verbose."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    loggers = [log, logging.getLogger(), *map(logging.getLogger, _SELF_HANDLED)]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield path
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


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
