"""The slurm executor: every step of every stage that is not done becomes a Slurm job, chained to the
jobs of the stages it reads by `afterok` dependencies, so `wrpo run --executor slurm` submits the
whole pipeline and returns. Shards are a job array, then a merge job; training is one job of `nodes` nodes
where srun starts one `accelerate launch` per node, the rendezvous taken from Slurm's environment. Every
job runs wrpo.pipeline.worker on the stage's file, which marks the stage started and finished; a failed job
cancels the jobs after it (--kill-on-invalid-dep) instead of leaving them pending forever. Around the worker
runs wrpo.pipeline.slurm_job: it records how each job ran (what `wrpo status` reads first), and turns Slurm's
warning before the time limit into a stop at a safe point and a requeue of the job.

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
import sys
from dataclasses import dataclass
from pathlib import Path

from wrpo.errors import InputError
from wrpo.files import write_text_atomically
from wrpo.pipeline.kinds import Stage
from wrpo.pipeline.layout import Workdir, file_name
from wrpo.pipeline.placement import Process, steps
from wrpo.pipeline.state import StageState, decide, mark_submitted, remove_outputs
from wrpo.pipeline.worker import write_stage_files
from wrpo.progress import say

ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")
FAILED = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE")
# How jobs ended that Slurm no longer knows of, in words (other states: Slurm's, in lower case).
ENDINGS = {"GONE": "gone: slurmctld no longer knows it and it left no record (cancelled before it started?)",
           "LOST": "ended without a last word (killed outright, or its node lost)",
           "TERMINATED": "terminated (SIGTERM: a cancel, the time limit or a preemption)"}
FINAL = ("COMPLETED", "FAILED")  # a job's record in these states is its last word: Slurm is not asked
# Port of a job's rendezvous, spread by job id so that jobs sharing a node do not meet on one port.
PORT = "$((20000 + SLURM_JOB_ID % 20000))"


WORKER = ("-m", "wrpo.pipeline.worker")
JOB = ("-m", "wrpo.pipeline.slurm_job")


class SlurmExecutor:
    name = "slurm"
    description = "Slurm jobs chained by dependencies, all submitted at once"
    waits = False

    @staticmethod
    def check(stages: list[Stage]) -> None:
        """Every placement is a job Slurm can be asked for; the cluster itself refuses what it cannot give."""

    def run(self, stages: list[Stage]) -> dict[str, str]:
        """Submits the stages that are not done; returns each stage's status (submitted as job ..., skipped)."""
        if shutil.which("sbatch") is None:
            raise InputError("--executor slurm needs Slurm's sbatch on PATH")
        decisions = decide(stages)
        submitted: dict[str, list[str]] = {}
        writers: dict[str, str] = {}  # output -> the job that writes it
        statuses = {}
        for number, stage in enumerate(stages, start=1):
            layout = stage.layout
            layout.log("any").parent.mkdir(parents=True, exist_ok=True)  # Slurm opens the logs, not their folders
            header = f"[{number}/{len(stages)}] {stage.name}"
            decision = decisions[stage.name]
            if decision.action == "skip":
                say(f"{header}: up to date, skipped")
                statuses[stage.name] = "skipped"
                continue
            if decision.action == "unknown":
                raise InputError(f"stage {stage.name}: {decision.why}")
            if decision.action == "redo":
                remove_outputs(stage)
            mark_submitted(stage, ready=not any(i in writers for i in map(str, stage.inputs)))
            write_stage_files(stage)
            after = sorted({writers[i] for i in map(str, stage.inputs) if i in writers})
            jobs = []
            for name, script in self.job_scripts(stage).items():
                path = write_text_atomically(layout.slurm / f"{name.removeprefix('wrpo:').replace(':', '.')}.sh",
                                             script)
                jobs.append(_sbatch(path, after))
                after = [jobs[-1]]
            submitted[stage.name] = jobs
            # Recorded as they go: if sbatch refuses a later stage, the jobs already queued are still known.
            write_text_atomically(layout.slurm / "jobs.json", json.dumps(submitted, indent=1) + "\n")
            writers.update({str(output): jobs[-1] for output in stage.outputs})
            statuses[stage.name] = f"submitted as job{'s' if len(jobs) > 1 else ''} {', '.join(jobs)}"
            say(f"[bold]{header}[/]: {statuses[stage.name]} ({stage.placement.description}; "
                f"log: {layout.log(stage.name)})")
        return statuses

    @staticmethod
    def in_flight(layout: Workdir) -> list[str]:
        """The jobs of the workdir's last submission still queued or running."""
        return [f"Slurm job {job.id}" for job in job_states(layout).values() if job.state in ACTIVE]

    @staticmethod
    def states(layout: Workdir, names: list[str]) -> dict[str, StageState]:
        """Each stage of the last submission by its most telling job: queued or running while one is, done,
        or failed (what its manifest does not say: a job cancelled, timed out, killed); with its requeues."""
        states = {}
        for name, job in job_states(layout).items():
            where = f" on {job.nodes}" if job.nodes else ""
            requeued = f", requeued {'once' if job.restarts == 1 else f'{job.restarts} times'}" if job.restarts else ""
            log = f"; log: {layout.log(name)}"
            if job.state in ACTIVE:
                states[name] = StageState(name, "queued" if job.state == "PENDING" else "running",
                                          f"Slurm job {job.id}{where}{requeued}{log}")
            elif job.state == "COMPLETED":
                states[name] = StageState(name, "done", f"Slurm job {job.id}{where}{requeued}")
            else:
                ending = ENDINGS.get(job.state, job.state.lower())
                states[name] = StageState(name, "failed", f"Slurm job {job.id} {ending}"
                                          f"{f' (exit code {job.exit_code})' if job.exit_code else ''}{requeued}{log}")
        return states

    def scripts(self, stage: Stage) -> list[str]:
        return [f"job {name}:\n{script}" for name, script in self.job_scripts(stage).items()]

    @staticmethod
    def job_scripts(stage: Stage) -> dict[str, str]:
        """The sbatch script of each step of the stage, by job name."""
        stage_steps = steps(stage.placement)
        names = [f"wrpo:{file_name(stage.name)}" + (f":{number}" if len(stage_steps) > 1 else "")
                 for number in range(1, len(stage_steps) + 1)]
        return {name: _script(stage, step, name) for name, step in zip(names, stage_steps, strict=True)}


def _script(stage: Stage, step: tuple[Process, ...], name: str) -> str:
    layout, placement = stage.layout, stage.placement
    array = len(step) > 1
    process = step[0]
    log = layout.task_log(stage.name, 0).with_name(f"{file_name(stage.name)}.%a.log") if array \
        else layout.log(stage.name)
    # Requeued by Slurm on a preemption or node failure, and by wrpo.pipeline.slurm_job after Slurm's warning.
    options = {"job-name": name, "output": str(log), "open-mode": "append",
               "nodes": process.nodes, "ntasks-per-node": 1, "requeue": True}
    if placement.warning_seconds:  # to the batch shell (B:), which is slurm_job: the steps would die of it
        options["signal"] = f"B:USR1@{placement.warning_seconds}"
    if array:
        options["array"] = f"0-{len(step) - 1}"
    width = len(process.devices)
    if width and placement.device_type == "gpu":
        options["gres"] = f"gpu:{width}"
    elif width:
        options["cpus-per-task"] = width
    options.update({key.replace("_", "-"): value for key, value in placement.slurm.items()})
    # A true option is a bare flag (--exclusive), a false one is left out.
    lines = ["#!/bin/bash", *(f"#SBATCH --{key}" + ("" if value is True else f"={value}")
                              for key, value in options.items() if value is not False),
             "set -euo pipefail", "export PYTHONUNBUFFERED=1",
             "trap '' USR1  # until slurm_job listens: Slurm's warning may come at once, and would end the job",
             f"job=({shlex.join([sys.executable, *JOB, str(layout.job_records), '--'])})"]
    if placement.device_type == "cpu":
        lines.append('export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"')
    stage_file = layout.stage_file(stage.name)
    if array:
        lines.append('case "$SLURM_ARRAY_TASK_ID" in')
        lines += [f'  {index}) exec "${{job[@]}}" {_command(stage_file, each)} ;;' for index, each in enumerate(step)]
        lines.append("esac")
    elif process.launch:
        # One launcher per node, each told its rank and the first node's address.
        lines += ['WRPO_HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); export WRPO_HEAD',
                  f'exec "${{job[@]}}" {_command(stage_file, process)}']
    else:
        lines.append(f'exec "${{job[@]}}" {_command(stage_file, process)}')
    return "\n".join(lines) + "\n"


def _command(stage_file: Path, process: Process) -> str:
    worker = [*WORKER, str(stage_file), *process.worker_args]
    if not process.launch:
        return shlex.join([sys.executable, *worker])
    launcher = shlex.join([sys.executable, "-m", "accelerate.commands.launch", *process.launch])
    rendezvous = ' --machine_rank "$SLURM_NODEID" --main_process_ip "$WRPO_HEAD" --main_process_port ' + PORT + " "
    return ("srun --ntasks-per-node=1 --kill-on-bad-exit=1 "
            "${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} "  # steps do not inherit it (22.05-23.02)
            f"bash -c {shlex.quote(launcher + rendezvous + shlex.join(worker))}")


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
    restarts: int = 0   # how often Slurm requeued it (its own warning, a preemption, `scontrol requeue`)


def job_states(layout: Workdir) -> dict[str, Job]:
    """For each stage of the last submission, its job that tells the most: one still active, else one
    that failed, else its last. From the jobs' own records (wrpo.pipeline.slurm_job) where they have said
    their last word, else from squeue and scontrol (no accounting database needed)."""
    record = layout.slurm / "jobs.json"
    if not record.exists():
        return {}
    submitted = json.loads(record.read_text())
    states = {}
    for stage, ids in submitted.items():
        jobs = [_job(job_id, layout.job_records) for job_id in ids]
        states[stage] = (next((j for j in jobs if j.state in ACTIVE), None)
                         or next((j for j in jobs if j.state in (*FAILED, *ENDINGS)), None) or jobs[-1])
    return states


def _job(job_id: str, records: Path) -> Job:
    recorded = _recorded(job_id, records)
    if recorded is not None and recorded.state in FINAL:
        return recorded
    asked = _asked(job_id) if shutil.which("scontrol") else Job(job_id, "GONE")
    if recorded is None:
        return asked
    if asked.state == "GONE":  # it ended without its last word (SIGKILL, a node lost) and Slurm forgot it
        return Job(job_id, "TERMINATED" if recorded.state == "TERMINATED" else "LOST", recorded.nodes,
                   restarts=recorded.restarts)
    return Job(job_id, asked.state, asked.nodes, asked.exit_code, max(asked.restarts, recorded.restarts))


def _recorded(job_id: str, records: Path) -> Job | None:
    """What the job recorded of its last run; an array's tasks summed up: failed if one failed, completed once
    all have, else still going (what Slurm says then counts)."""
    found = [json.loads(path.read_text()) for path in [records / f"{job_id}.json", *records.glob(f"{job_id}_*.json")]
             if path.exists()]
    if not found:
        return None
    failed = [each for each in found if each["state"] == "FAILED"]
    complete = len(found) == found[0].get("tasks", 1) and all(each["state"] == "COMPLETED" for each in found)
    state = "FAILED" if failed else "COMPLETED" if complete else "RUNNING"
    state = found[0]["state"] if len(found) == 1 and state == "RUNNING" else state
    return Job(job_id, state, ",".join(sorted({each["node"] for each in found})),
               str(failed[0]["exit_status"]) if failed else "", max(each.get("restarts", 0) for each in found))


def _asked(job_id: str) -> Job:
    """A job's state from slurmctld; an array's tasks summed up as the most telling one."""
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
               task.get("ExitCode", "") if task.get("ExitCode", "0:0") != "0:0" else "",
               max(int(t.get("Restarts", "0") or 0) for t in tasks))
