"""The slurm executor: every step of every stage that is not done becomes a Slurm job, chained to the
jobs of the stages it reads by `afterok` dependencies, so `wrpo run --executor slurm` submits the
whole pipeline and returns. Shards are a job array; training is one job of `nodes` nodes where srun
starts one `accelerate launch` per node, the rendezvous taken from Slurm's environment. A stage's last
job records it as finished (`wrpo run --finish-stage`, or the hidden option of whichever command planned
the stage, `wrpo ablate`; its first, `--start-stage`, the fingerprint it starts from), and a failed job
cancels the jobs after it (--kill-on-invalid-dep) instead of leaving them pending forever.

Plain sbatch scripts rather than submitit: the scripts are what `wrpo run --plan --executor slurm`
prints and what a user reads when a job fails, and job states come from squeue/scontrol, where
submitit needs accounting (sacct) and waits forever on a cancelled job's result without it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from wrpo.errors import InputError
from wrpo.files import write_text_atomically
from wrpo.pipeline.layout import Workdir, file_name
from wrpo.pipeline.local import executable
from wrpo.pipeline.recipe import Recipe
from wrpo.pipeline.run import remove_outputs, stage_fingerprint, write_manifest
from wrpo.pipeline.stages import Stage, Step, Task

ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")
FAILED = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE")
# Port of a job's rendezvous, spread by job id so that jobs sharing a node do not meet on one port.
PORT = "$((20000 + SLURM_JOB_ID % 20000))"


def pipeline_marker(recipe_path: Path) -> tuple[str, ...]:
    """The `wrpo` command (less `wrpo`) whose --start-stage / --finish-stage mark a stage of the pipeline."""
    return ("run", str(recipe_path.resolve()))


def job_scripts(recipe: Recipe, stage: Stage, marker: tuple[str, ...]) -> dict[str, str]:
    """The sbatch script of each step of `stage`, by job name: the first records the stage as started
    (its fingerprint, once its inputs exist), the last as finished, by `wrpo MARKER --start-stage NAME`
    and `--finish-stage NAME` (the command that plans the stage: `wrpo run RECIPE`, `wrpo ablate ...`)."""
    layout = recipe.layout
    scripts = {}
    for number, step in enumerate(stage.steps, start=1):
        name = f"wrpo:{file_name(stage.name)}" + (f":{number}" if len(stage.steps) > 1 else "")
        before = [_mark(marker, "start", stage)] if number == 1 else []
        after = [_mark(marker, "finish", stage)] if number == len(stage.steps) else []
        scripts[name] = _script(name, stage, step, layout, recipe, before, after)
    return scripts


def _mark(marker: tuple[str, ...], event: str, stage: Stage) -> str:
    return shlex.join(executable(("wrpo", *marker, f"--{event}-stage", stage.name)))


def _script(name: str, stage: Stage, step: Step, layout: Workdir, recipe: Recipe, before: list[str],
            after: list[str]) -> str:
    resources = recipe.resources
    array = len(step.tasks) > 1
    task = step.tasks[0]
    log = layout.task_log(stage.name, 0).with_name(f"{file_name(stage.name)}.%a.log") if array \
        else layout.log(stage.name)
    options = {"job-name": name, "output": str(log), "open-mode": "append", "nodes": task.nodes,
               "ntasks-per-node": 1}
    if array:
        options["array"] = f"0-{len(step.tasks) - 1}"
    width = len(task.devices)
    if width and resources.device_type == "gpu":
        options["gres"] = f"gpu:{width}"
    elif width:
        options["cpus-per-task"] = width
    options.update({key.replace("_", "-"): value for key, value in stage.resources.slurm.items()})
    # A true option is a bare flag (--exclusive), a false one is left out.
    lines = ["#!/bin/bash", *(f"#SBATCH --{key}" + ("" if value is True else f"={value}")
                              for key, value in options.items() if value is not False),
             "set -euo pipefail", "export PYTHONUNBUFFERED=1"]
    if resources.device_type == "cpu":
        lines.append('export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"')
    lines += before
    if array:
        lines.append('case "$SLURM_ARRAY_TASK_ID" in')
        lines += [f"  {index}) {_command(each)} ;;" for index, each in enumerate(step.tasks)]
        lines.append("esac")
    else:
        lines.append(_command(task))
    return "\n".join(lines + after) + "\n"


def _command(task: Task) -> str:
    argv = executable(task.command)
    if task.command[:2] != ("accelerate", "launch"):
        return shlex.join(argv)
    # One launcher per node, each told its rank and the first node's address.
    position = argv.index("wrpo.cli") - 1  # the -m of the launched module
    rendezvous = ' --machine_rank "$SLURM_NODEID" --main_process_ip "$WRPO_HEAD" --main_process_port ' + PORT + " "
    inner = shlex.join(argv[:position]) + rendezvous + shlex.join(argv[position:])
    return ('WRPO_HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); export WRPO_HEAD; '
            "srun --ntasks-per-node=1 --kill-on-bad-exit=1 "
            "${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} "  # steps do not inherit it (22.05-23.02)
            f"bash -c {shlex.quote(inner)}")


def submit(recipe_path: Path, recipe: Recipe, stages: list[Stage], decisions: dict[str, str],
           marker: tuple[str, ...]) -> dict[str, str]:
    """Submits the stages that are not done, their jobs marking them with `marker` (job_scripts); returns
    each stage's status (submitted as job ..., skipped)."""
    from wrpo.progress import say

    if shutil.which("sbatch") is None:
        raise InputError("--executor slurm needs Slurm's sbatch on PATH")
    layout = recipe.layout
    refuse_while_jobs_run(recipe_path, layout)
    layout.log("any").parent.mkdir(parents=True, exist_ok=True)  # Slurm opens the jobs' logs, not creates folders
    submitted: dict[str, list[str]] = {}
    writers: dict[str, str] = {}  # output -> the job that writes it
    statuses = {}
    for number, stage in enumerate(stages, start=1):
        header = f"[{number}/{len(stages)}] {stage.name}"
        if decisions[stage.name] == "skip":
            say(f"{header}: up to date, skipped")
            statuses[stage.name] = "skipped"
            continue
        if decisions[stage.name] == "redo":
            remove_outputs(stage)
        ready = not any(i in writers for i in map(str, stage.inputs))
        write_manifest(layout, stage, fingerprint=stage_fingerprint(stage) if ready else None, complete=False,
                       submitted=time.strftime("%Y-%m-%d %H:%M:%S"))
        for path, text in stage.files.items():
            write_text_atomically(path, text)
        after = sorted({writers[i] for i in map(str, stage.inputs) if i in writers})
        jobs = []
        for name, script in job_scripts(recipe, stage, marker).items():
            path = write_text_atomically(layout.slurm / f"{name.removeprefix('wrpo:').replace(':', '.')}.sh", script)
            jobs.append(_sbatch(path, after))
            after = [jobs[-1]]
        submitted[stage.name] = jobs
        # Recorded as they go: if sbatch refuses a later stage, the jobs already queued are still known.
        write_text_atomically(layout.slurm / "jobs.json", json.dumps(submitted, indent=1) + "\n")
        writers.update({str(output): jobs[-1] for output in stage.outputs})
        statuses[stage.name] = f"submitted as job{'s' if len(jobs) > 1 else ''} {', '.join(jobs)}"
        say(f"[bold]{header}[/]: {statuses[stage.name]} ({stage.launch}; log: {layout.log(stage.name)})")
    return statuses


def refuse_while_jobs_run(recipe_path: Path, layout: Workdir) -> None:
    """An InputError while jobs of the workdir's last submission are queued or running: a second run
    (local or submitted) would write the same outputs."""
    active = [job for job in job_states(layout).values() if job.state in ACTIVE]
    if active:
        ids = ", ".join(job.id for job in active)
        raise InputError(f"jobs of an earlier submission are still queued or running ({ids}); "
                         f"wait for them (wrpo status {recipe_path}) or cancel them with scancel", layout.root)


def _sbatch(script: Path, after: list[str]) -> str:
    command = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes",
               *([f"--dependency=afterok:{':'.join(after)}"] if after else []), str(script)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise InputError(f"sbatch refused the job: {done.stderr.strip() or done.stdout.strip()}", script)
    return done.stdout.strip().split(";")[0]


@dataclass
class Job:
    id: str
    state: str          # Slurm's JobState: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ... or GONE
    nodes: str = ""
    exit_code: str = ""


def job_states(layout: Workdir) -> dict[str, Job]:
    """For each stage of the last submission, its job that tells the most: one still active, else one
    that failed, else its last. Read from squeue and scontrol (no accounting database needed)."""
    record = layout.slurm / "jobs.json"
    if not record.exists() or shutil.which("squeue") is None:
        return {}
    submitted = json.loads(record.read_text())
    states = {}
    for stage, ids in submitted.items():
        jobs = [_job(job_id) for job_id in ids]
        states[stage] = (next((j for j in jobs if j.state in ACTIVE), None)
                         or next((j for j in jobs if j.state in FAILED), None) or jobs[-1])
    return states


def _job(job_id: str) -> Job:
    """A job's state; an array's tasks summed up as the most telling one."""
    done = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if done.returncode or not done.stdout.strip():
        return Job(job_id, "GONE")  # forgotten by slurmctld (MinJobAge) and no accounting to ask
    # One line per job (per task of an array) of Key=Value fields; a value may hold spaces, so a key is a
    # word at the start or after a space, the first of its name counting.
    tasks = [{key: value for key, value in reversed(re.findall(r"(?:^| )(\w+)=(\S*)", line))}
             for line in done.stdout.strip().splitlines()]
    order = [*ACTIVE, *FAILED, "COMPLETED"]
    task = min(tasks, key=lambda t: order.index(t.get("JobState")) if t.get("JobState") in order else len(order))
    return Job(job_id, task.get("JobState", "UNKNOWN"), task.get("NodeList", "").replace("(null)", ""),
               task.get("ExitCode", "") if task.get("ExitCode", "0:0") != "0:0" else "")
