"""How `wrpo run --plan` and `wrpo status` print what the pipeline functions return."""

from __future__ import annotations

import shlex

from rich.markup import escape
from rich.table import Table

from wrpo.pipeline.run import PlannedStage, StageState
from wrpo.progress import console

DECISIONS = {"skip": "up to date: would be skipped", "run": "would run", "resume": "would resume",
             "redo": "changed: would be redone"}


def command_line(task) -> str:
    """The task as a shell line, with the devices it is pinned to (GPUs; CPU layouts ignore them)."""
    devices = f"CUDA_VISIBLE_DEVICES={','.join(map(str, task.devices))} " if task.devices else ""
    return devices + shlex.join(task.command)


def show_plan(planned: list[PlannedStage], executor: str) -> None:
    for number, item in enumerate(planned, start=1):
        stage = item.stage
        console.print(f"[bold][{number}/{len(planned)}] {escape(stage.name)}[/]: {DECISIONS[item.decision]}",
                      highlight=False)
        console.print(f"  launch: {escape(stage.launch)}", highlight=False)
        console.print(f"  inputs: {escape(', '.join(stage.inputs))}", highlight=False)
        console.print(f"  outputs: {escape(', '.join(map(str, stage.outputs)))}", highlight=False)
        if executor == "slurm":
            for name, script in item.scripts.items():
                console.print(f"  job {escape(name)}:", highlight=False)
                console.print("\n".join(f"    {escape(line)}" for line in script.splitlines()), highlight=False,
                              soft_wrap=True)
            continue
        for step in stage.steps:
            for task in step.tasks:
                console.print(f"  $ {escape(command_line(task))}", highlight=False, soft_wrap=True)


def show_status(states: list[StageState]) -> None:
    colours = {"done": "green", "running": "cyan", "queued": "cyan", "failed": "red", "pending": "dim"}
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for column in ("stage", "state", ""):
        table.add_column(column)
    for state in states:
        table.add_row(state.name, f"[{colours[state.state]}]{state.state}[/]", escape(state.detail))
    console.print(table)
