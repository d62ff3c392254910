"""`wrpo run RECIPE`: every stage of the pipeline (wrpo.pipeline.plan), in order, each skipped when its outputs
are complete and its inputs and settings unchanged (wrpo.pipeline.state), run or submitted by an executor;
`wrpo run --plan` and `wrpo status`. EXECUTORS is the registry of executors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wrpo.errors import InputError
from wrpo.locks import output_lock
from wrpo.pipeline.executor import Executor
from wrpo.pipeline.kinds import KINDS, Stage
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.local import LocalExecutor
from wrpo.pipeline.plan import plan
from wrpo.pipeline.preflight import check_recipe_inputs
from wrpo.pipeline.recipe import load_recipe
from wrpo.pipeline.slurm import SlurmExecutor
from wrpo.pipeline.state import Decision, StageState, decide, read_manifest

EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "slurm": SlurmExecutor}


def executor_named(name: str) -> Executor:
    if name not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    return EXECUTORS[name]()


def run_recipe(recipe_path: str | Path, executor: Executor | None = None) -> dict[str, str]:
    """Runs (local) or submits (slurm) the stages that are not done; returns each stage's status:
    ran, resumed, redone, skipped (slurm: submitted as job ...)."""
    recipe = load_recipe(recipe_path)
    with output_lock(recipe.workdir):  # one `wrpo run` per workdir at a time
        check_recipe_inputs(recipe)
        return run_stages(plan(recipe), recipe.layout, executor or LocalExecutor(), recipe_path)


def run_stages(stages: list[Stage], layout: Workdir, executor: Executor, recipe_path: str | Path) -> dict[str, str]:
    """The stages run or submitted by `executor`, once no executor has work of the workdir in flight (it
    would write the same outputs) and the executor has checked it can run them all."""
    in_flight = [work for other in EXECUTORS.values() for work in other().in_flight(layout)]
    if in_flight:
        raise InputError(f"jobs of an earlier submission are still queued or running ({', '.join(in_flight)}); "
                         f"wait for them (wrpo status {recipe_path}) or cancel them", layout.root)
    executor.check(stages)
    return executor.run(stages)


@dataclass
class PlannedStage:
    stage: Stage
    decision: Decision          # skip, run, resume, redo or unknown, and why
    scripts: list[str]          # what the executor would start: command lines or job scripts


def plan_recipe(recipe_path: str | Path, executor: Executor | None = None) -> list[PlannedStage]:
    """What `wrpo run` would do, without running or writing anything."""
    executor = executor or LocalExecutor()
    stages = plan(load_recipe(recipe_path))
    decisions = decide(stages)
    return [PlannedStage(stage, decisions[stage.name], executor.scripts(stage)) for stage in stages]


def recipe_status(recipe_path: str | Path, executors: Sequence[Executor] | None = None) -> list[StageState]:
    """Each stage (and each other stage the executors know of, such as an ablation's): done, changed (recorded
    complete, and what changed since), unchecked (recorded complete, and why it cannot be checked here), running
    (where), queued, failed (with its log) or pending."""
    recipe = load_recipe(recipe_path)
    layout = recipe.layout
    stages = plan(recipe)
    planned = {stage.name: stage for stage in stages}
    decisions = decide(stages)
    done = {name: decision.action == "skip" for name, decision in decisions.items()}
    known: dict[str, StageState] = {}
    for executor in executors if executors is not None else [each() for each in EXECUTORS.values()]:
        known.update(executor.states(layout, list(done)))
    # Stages the executors ran that the pipeline does not plan (`wrpo ablate`'s): listed after the pipeline's,
    # done once their manifest says finished.
    done.update({name: bool((read_manifest(layout, name) or {}).get("complete")) for name in known if name not in done})
    states = []
    for name, finished in done.items():
        manifest = read_manifest(layout, name) or {}
        state = known.get(name)
        decision = decisions.get(name)
        if state is not None and state.state in ("running", "queued"):  # a finished stage's job may still be ending
            states.append(state)
        elif finished:  # with what the executor knows of how it ran, and what the stage made
            said = [state.detail if state is not None and state.state == "done" else "",
                    stage_outcome(planned[name]) if name in planned else None]
            states.append(StageState(name, "done", "; ".join(filter(None, said))))
        elif manifest.get("complete") and decision is not None and decision.action == "unknown":
            states.append(StageState(name, "unchecked", decision.why))
        elif manifest.get("complete") and decision is not None and decision.action == "redo":
            states.append(StageState(name, "changed", f"would be redone: {decision.why}"))
        elif "failed" in manifest:
            failed = manifest["failed"]
            cause = f"exit status {failed['exit_status']}" if "exit_status" in failed else failed.get("error", "")
            states.append(StageState(name, "failed", f"{cause}; log: {failed['log']}"))
        else:
            states.append(state or StageState(name, "pending"))
    return states


def stage_outcome(stage: Stage) -> str | None:
    """What a finished stage made, in words, where its kind says (the checkpoint a choice took)."""
    outcome = KINDS[stage.kind].outcome
    return outcome(stage.spec) if outcome is not None else None
