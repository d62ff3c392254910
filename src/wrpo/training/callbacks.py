"""metrics.jsonl: one JSON object per logged training step, kept exact across resumes."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

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


def _step(line: str) -> float:
    """The step of a metrics line; infinite for a blank or torn one (a crash mid-write), so it is dropped."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")
