"""`wrpo run RECIPE`: every stage of the pipeline (wrpo.pipeline.stages), in order, each skipped when its
outputs are complete and its inputs and settings unchanged; `wrpo run --plan` and `wrpo status`.

A stage's fingerprint hashes its settings and the content of its inputs (files by content, model
folders by file names, sizes and times). The stage's manifest (Workdir.manifest) records the
fingerprint it started and finished with: a finished stage with the same fingerprint is skipped; an
unfinished one resumes (its own outputs are resumable); one whose fingerprint changed is redone from
scratch, its stale outputs removed first. Where the stages run (resources) does not enter the
fingerprint: sharded sampling and scoring give the rows of one process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from wrpo.errors import InputError
from wrpo.files import path_fingerprint, write_text_atomically
from wrpo.locks import live_holder, output_lock
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.preflight import check_recipe_inputs
from wrpo.pipeline.recipe import load_recipe
from wrpo.pipeline.stages import Stage, plan

EXECUTORS = ("local", "slurm")


class StageFailed(Exception):
    """A stage's process ended with an error: its name, exit status and the end of its log."""

    def __init__(self, stage: str, exit_status: int, log: Path, tail: list[str]):
        self.stage, self.exit_status, self.log = stage, exit_status, log
        lines = "".join(f"\n  {line}" for line in tail)
        super().__init__(f"stage {stage} failed with exit status {exit_status}; the end of {log}:{lines}\n"
                         "fix the cause and run again: finished stages are skipped, this one resumes")


def stage_fingerprint(stage: Stage) -> str:
    parts = [json.dumps(stage.settings, sort_keys=True, default=str)] + [path_fingerprint(i) for i in stage.inputs]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def read_manifest(layout: Workdir, name: str) -> dict | None:
    path = layout.manifest(name)
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(layout: Workdir, stage: Stage, **fields) -> None:
    write_text_atomically(layout.manifest(stage.name), json.dumps(fields) + "\n")


def decide(stages: list[Stage], layout: Workdir) -> dict[str, str]:
    """What a run would do with each stage now: skip, run, resume or redo. A stage whose inputs an
    earlier stage will (re)write is redone, or run if it never started."""
    changing: set[str] = set()
    decisions = {}
    for stage in stages:
        if any(str(Path(i)) in changing for i in stage.inputs):
            decision = "redo" if read_manifest(layout, stage.name) else "run"
        else:
            decision = decision_now(stage, layout)
        decisions[stage.name] = decision
        if decision != "skip":
            changing |= {str(output) for output in stage.outputs}
    return decisions


def decision_now(stage: Stage, layout: Workdir, fingerprint: str | None = None) -> str:
    """skip, run, resume or redo for a stage whose inputs are as they will be when it runs; `fingerprint`
    (its inputs' fingerprint, if the caller has it already) is computed only when a manifest needs it."""
    manifest = read_manifest(layout, stage.name)
    if manifest is None:
        return "run"
    if manifest.get("fingerprint") != (fingerprint or stage_fingerprint(stage)):  # None: submitted, never started
        return "redo"
    if manifest.get("complete") and all(output.exists() for output in stage.outputs):
        return "skip"
    return "resume"


def remove_outputs(stage: Stage) -> None:
    """A stage's outputs, their unfinished .partial files and its shards' outputs."""
    for output in stage.outputs:
        own_part = re.compile(re.escape(output.stem) + r"\.\d+-of-\d+" + re.escape(output.suffix) + r"(\.partial)?")
        parts = [p for p in output.parent.glob(".shards/*") if own_part.fullmatch(p.name)]
        for stale in (output, output.with_name(output.name + ".partial"), *parts):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()


def run_recipe(recipe_path: str | Path, executor: str = "local") -> dict[str, str]:
    """Runs (local) or submits (slurm) the stages that are not done; returns each stage's status:
    ran, resumed, redone, skipped (slurm: submitted as job ...)."""
    recipe = load_recipe(recipe_path)
    with output_lock(recipe.workdir):  # one `wrpo run` per workdir at a time
        check_recipe_inputs(recipe)
        stages = plan(recipe)
        if executor == "slurm":
            from wrpo.pipeline.slurm import pipeline_marker, submit

            return submit(Path(recipe_path), recipe, stages, decide(stages, recipe.layout),
                          pipeline_marker(Path(recipe_path)))
        from wrpo.pipeline.local import LocalExecutor
        from wrpo.pipeline.slurm import refuse_while_jobs_run

        refuse_while_jobs_run(Path(recipe_path), recipe.layout)
        executor = LocalExecutor(recipe.resources.device_type)
        executor.check(stages)
        return run_stages(stages, recipe.layout, executor)


def run_stages(stages: list[Stage], layout: Workdir, executor) -> dict[str, str]:
    """Runs each stage in this order with `executor` (local) unless it is done; what a stage prints
    and logs goes to its log (Workdir.log)."""
    from wrpo.progress import say

    statuses = {}
    for number, stage in enumerate(stages, start=1):
        # Its inputs are final now (the stages before it ran): fingerprinted once, for the decision and manifest.
        fingerprint = stage_fingerprint(stage)
        decision = decision_now(stage, layout, fingerprint)
        header = f"[{number}/{len(stages)}] {stage.name}"
        if decision == "skip":
            say(f"{header}: up to date, skipped")
            statuses[stage.name] = "skipped"
            continue
        if decision == "redo":
            remove_outputs(stage)
        say(f"[bold]{header}[/]: {dict(run='running', resume='resuming', redo='redoing')[decision]} "
            f"({stage.launch}; log: {layout.log(stage.name)})")
        write_manifest(layout, stage, fingerprint=fingerprint, complete=False, host=socket.gethostname(),
                       pid=os.getpid(), started=time.strftime("%Y-%m-%d %H:%M:%S"))
        try:
            executor.run(stage, layout)
        except BaseException as error:
            failed = ({"exit_status": error.exit_status, "log": str(error.log)} if isinstance(error, StageFailed)
                      else {"error": str(error) or type(error).__name__, "log": str(layout.log(stage.name))})
            write_manifest(layout, stage, fingerprint=fingerprint, complete=False, failed=failed)
            raise
        write_manifest(layout, stage, fingerprint=fingerprint, complete=True)
        statuses[stage.name] = {"run": "ran", "resume": "resumed", "redo": "redone"}[decision]
    return statuses


def mark_stage(stage: Stage, layout: Workdir, event: str) -> None:
    """A Slurm job's bookkeeping, its inputs being final by then. start (the stage's first job): records
    the fingerprint it starts with, its outputs removed first if they were made from other inputs;
    finish (its last job): records it as finished."""
    fingerprint = stage_fingerprint(stage)
    if event == "start" and (read_manifest(layout, stage.name) or {}).get("fingerprint") not in (None, fingerprint):
        remove_outputs(stage)
    write_manifest(layout, stage, fingerprint=fingerprint, complete=event == "finish")


def stage_named(stages: list[Stage], name: str, recipe_path: str | Path) -> Stage:
    """The stage of that name among those a command plans (a job script names its stage)."""
    stage = next((s for s in stages if s.name == name), None)
    if stage is None:
        raise InputError(f"the recipe has no stage {name!r}", recipe_path)
    return stage


def mark_recipe_stage(recipe_path: str | Path, name: str, event: str) -> None:
    """`wrpo run --start-stage/--finish-stage NAME`: mark_stage for a stage of the pipeline."""
    recipe = load_recipe(recipe_path)
    mark_stage(stage_named(plan(recipe), name, recipe_path), recipe.layout, event)


@dataclass
class PlannedStage:
    stage: Stage
    decision: str               # skip, run, resume, redo
    scripts: dict[str, str]     # slurm: job script per step


def plan_recipe(recipe_path: str | Path, executor: str = "local") -> list[PlannedStage]:
    """What `wrpo run` would do, without running or writing anything."""
    recipe = load_recipe(recipe_path)
    stages = plan(recipe)
    decisions = decide(stages, recipe.layout)
    if executor == "slurm":
        from wrpo.pipeline.slurm import job_scripts, pipeline_marker

        marker = pipeline_marker(Path(recipe_path))
        return [PlannedStage(stage, decisions[stage.name], job_scripts(recipe, stage, marker))
                for stage in stages]
    return [PlannedStage(stage, decisions[stage.name], {}) for stage in stages]


@dataclass
class StageState:
    name: str
    state: str                  # done, running, queued, failed, pending
    detail: str = ""


def recipe_status(recipe_path: str | Path) -> list[StageState]:
    """Each stage (and each of the last Slurm submission's): done, running (where), queued (slurm), failed
    (with its log) or pending."""
    recipe = load_recipe(recipe_path)
    layout = recipe.layout
    stages = plan(recipe)
    decisions = decide(stages, layout)
    from wrpo.pipeline.slurm import ACTIVE, job_states

    jobs = job_states(layout)
    done = {name: decision == "skip" for name, decision in decisions.items()}
    # The record of jobs may hold stages the pipeline does not plan (`wrpo ablate --executor slurm` records
    # its jobs there too): listed after the pipeline's, done once their manifest says finished.
    done.update({name: bool((read_manifest(layout, name) or {}).get("complete")) for name in jobs if name not in done})
    runner = live_holder(recipe.workdir)
    states = []
    for name, finished in done.items():
        manifest = read_manifest(layout, name) or {}
        job = jobs.get(name)
        if job is not None and job.state in ACTIVE:  # a finished stage's job may still be ending
            where = f" on {job.nodes}" if job.nodes else ""
            states.append(StageState(name, "queued" if job.state == "PENDING" else "running",
                                     f"Slurm job {job.id}{where}; log: {layout.log(name)}"))
        elif finished:
            states.append(StageState(name, "done"))
        elif "failed" in manifest:
            failed = manifest["failed"]
            cause = f"exit status {failed['exit_status']}" if "exit_status" in failed else failed.get("error", "")
            states.append(StageState(name, "failed", f"{cause}; log: {failed['log']}"))
        elif job is not None:
            states.append(StageState(name, "failed", f"Slurm job {job.id} {job.state.lower()}"
                                     f"{f' (exit code {job.exit_code})' if job.exit_code else ''}; "
                                     f"log: {layout.log(name)}"))
        elif manifest and not manifest.get("complete") and runner and runner.get("pid") == manifest.get("pid"):
            states.append(StageState(name, "running", f"pid {manifest['pid']} on {manifest['host']}; "
                                                      f"log: {layout.log(name)}"))
        else:
            states.append(StageState(name, "pending"))
    return states
