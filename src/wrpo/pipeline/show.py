"""How `wrpo run --plan` and `wrpo status` print what the pipeline functions return."""

from __future__ import annotations

import json

from rich.markup import escape
from rich.table import Table

from wrpo.pipeline.run import PlannedStage
from wrpo.pipeline.state import StageState
from wrpo.progress import console

DECISIONS = {"skip": "up to date: would be skipped", "run": "would run", "resume": "would resume",
             "redo": "changed: would be redone", "unknown": "cannot be checked here"}


def show_plan(planned: list[PlannedStage]) -> None:
    """Each stage: what would be done with it, how it is placed, its spec (the settings that are not files it
    reads or writes, one line each), inputs, outputs, and what the executor would start."""
    for number, item in enumerate(planned, start=1):
        stage = item.stage
        why = f" ({escape(item.decision.why)})" if item.decision.why else ""
        lines = [f"[bold][{number}/{len(planned)}] {escape(stage.name)}[/]: {DECISIONS[item.decision.action]}{why}",
                 f"  launch: {escape(stage.placement.description)}"]
        files = {str(path) for path in [*stage.inputs, *stage.outputs]}
        for key, value in stage.spec.model_dump(mode="json").items():
            if value is None:  # a setting left unset is left out
                continue
            if isinstance(value, dict):
                value = {name: each for name, each in value.items() if each is not None}
            if not (str(value) in files or (isinstance(value, list) and value and str(value[0]) in files)):
                lines.append(f"  {key}: {escape(json.dumps(value) if isinstance(value, (dict, list)) else str(value))}")
        lines += [f"  inputs: {escape(', '.join(stage.inputs))}",
                  f"  outputs: {escape(', '.join(map(str, stage.outputs)))}"]
        for script in item.scripts:
            lines += [f"  {'$ ' if len(script.splitlines()) == 1 else ''}{escape(line)}" if index == 0
                      else f"    {escape(line)}" for index, line in enumerate(script.splitlines())]
        console.print("\n".join(lines), highlight=False, soft_wrap=True)


def show_status(states: list[StageState]) -> None:
    colours = {"done": "green", "changed": "yellow", "unchecked": "yellow", "running": "cyan", "queued": "cyan",
               "failed": "red", "pending": "dim"}
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for column in ("stage", "state", ""):
        table.add_column(column)
    for state in states:
        table.add_row(state.name, f"[{colours[state.state]}]{state.state}[/]", escape(state.detail))
    console.print(table)
