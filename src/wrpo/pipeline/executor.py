"""What every executor does (wrpo.pipeline.run.EXECUTORS names them): run the stages that are not done, or
submit them and return; say what it knows of stages in flight; show what it would start (`wrpo run --plan`).
They all stand on wrpo.pipeline.state and start processes through wrpo.pipeline.worker."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from wrpo.pipeline.kinds import Stage
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.state import StageState


class StageFailed(Exception):
    """A stage's process ended with an error: its name, exit status and the end of its log."""

    def __init__(self, stage: str, exit_status: int, log: Path, tail: list[str]):
        self.stage, self.exit_status, self.log = stage, exit_status, log
        lines = "".join(f"\n  {line}" for line in tail)
        super().__init__(f"stage {stage} failed with exit status {exit_status}; the end of {log}:{lines}\n"
                         "fix the cause and run again: finished stages are skipped, this one resumes")


class Executor(Protocol):
    name: str
    description: str  # where it runs stages, for --executor's help
    waits: bool  # run() returns when the stages are done (else once they are submitted)

    def check(self, stages: list[Stage]) -> None:
        """Refuses (InputError), before anything runs, what it cannot run."""

    def run(self, stages: list[Stage]) -> dict[str, str]:
        """Runs or submits, in this order, the stages that are not done; each stage's status in words.
        Raises StageFailed when a stage it runs fails."""

    def in_flight(self, layout: Workdir) -> list[str]:
        """What of the workdir it has started and not seen end (a second run would write the same outputs)."""

    def states(self, layout: Workdir, names: list[str]) -> dict[str, StageState]:
        """What it knows of those stages in flight (running, queued, ended in failure) beyond their manifests;
        it may add stages of the workdir that it ran and `names` lacks."""

    def scripts(self, stage: Stage) -> list[str]:
        """What it would start for the stage: command lines or job scripts."""
