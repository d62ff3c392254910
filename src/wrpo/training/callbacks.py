"""What a training run reports as it goes: metrics.jsonl (one JSON object per logged step, kept exact
across resumes) and the console's live display."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback

from wrpo.progress import StageProgress, console, log
from wrpo.stop_request import stop_requested

METRICS_FILE = "metrics.jsonl"


class MetricsFileCallback(TrainerCallback):
    """Appends each training log (the ones carrying "loss") to OUTPUT/metrics.jsonl.

    On a resumed run, lines logged after the checkpoint it resumes from are dropped first, so the
    file holds each step once, as an uninterrupted run would have written it.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if state.global_step > 0 and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step(line) <= state.global_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class StopOnRequest(TrainerCallback):
    """Ends training at the end of the optimizer step where a stop is asked for (wrpo.stop_request), saving a
    checkpoint there. Every process looks, and they agree through one all-reduce per step: they may see the
    request at different steps, and a save is collective (ZeRO, FSDP), so they must all stop at the same one.
    Added only where a request can come (a Slurm job), so other runs pay nothing."""

    def __init__(self):
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        asked = torch.tensor([float(stop_requested())], device=args.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(asked, op=torch.distributed.ReduceOp.MAX)
        if asked.item() and state.global_step < state.max_steps:  # at the last step it is done anyway
            control.should_save = control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


def _step(line: str) -> float:
    """The step of a metrics line; infinite for a blank or torn one (a crash mid-write), so it is dropped."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


class TrainingDisplay(TrainerCallback):
    """The console's view of a training run, in place of transformers' tqdm bar and printed log
    dicts: a live line with the step, the time left and the latest loss, reward margin, accuracy and
    alpha where stderr is a terminal; elsewhere (CI logs, files) a plain line at each quarter of the
    run. Every logged step also goes to the stage's log file (wrpo.progress.log)."""

    SHOWN = {"loss": "loss", "rewards/margins": "margin", "rewards/accuracies": "accuracy", "alpha": "alpha"}
    PLAIN_LINES = 4

    def __init__(self, title: str):
        self.title = title
        self.progress = None
        self.next_plain_step = 0
        self.printed_step = None
        self.metrics = ""

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = StageProgress(TextColumn(f"[bold]{self.title}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("steps"), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
                                 console=console, disable=not console.is_terminal)
        self.task = self.progress.add_task(self.title, total=state.max_steps, completed=state.global_step, metrics="")
        self.progress.start()
        self.next_plain_step = state.global_step + self._plain_interval(state)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        log.info(json.dumps({"step": state.global_step, **logs}))
        if "loss" not in logs:
            return
        self.metrics = "  ".join(f"{label} {logs[key]:.4g}" for key, label in self.SHOWN.items() if key in logs)
        self.progress.update(self.task, metrics=self.metrics)
        if not console.is_terminal and state.global_step >= self.next_plain_step:
            self._plain_line(state)
            self.next_plain_step = state.global_step + self._plain_interval(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is None:
            return
        self.progress.stop()
        self.progress = None
        if not console.is_terminal and self.printed_step != state.global_step:
            self._plain_line(state)  # the run's last metrics, where the last quarter's line came earlier

    def _plain_line(self, state) -> None:
        console.print(f"{self.title}: step {state.global_step}/{state.max_steps}  {self.metrics}", highlight=False)
        self.printed_step = state.global_step

    def _plain_interval(self, state) -> int:
        return max(1, state.max_steps // self.PLAIN_LINES)
