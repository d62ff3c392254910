"""What runs in every Slurm job that wrpo submits, around the worker's command. The batch script execs it, so it
is the process that Slurm's warnings reach:

    python -m wrpo.pipeline.slurm_job RECORDS -- COMMAND...

- It records the job in RECORDS/JOB.json: where and when it started, how often Slurm had started it before
  (SLURM_RESTART_COUNT), and how it ended (exit status, time). `wrpo status` reads these first: slurmctld
  forgets a job MinJobAge seconds after it ends (300 by default), and without accounting nobody else remembers.
- Slurm's warning before the time limit (sbatch --signal=B:USR1@SECONDS) makes it create RECORDS/JOB.stop, the
  file the command's processes watch (wrpo.stop_request): training saves a checkpoint at the end of its step,
  sampling and scoring stop after their batch. When the command then ends unfinished, it requeues the job
  (scontrol requeue): the same job id runs again and resumes, and the jobs waiting for it (afterok) go on
  waiting rather than being cancelled.
- SIGTERM (a cancel, the time limit, a preemption) is passed to the command and recorded before the job dies;
  a job that Slurm requeues itself (preemption, node failure, `scontrol requeue`) starts again and resumes the
  same way, from the last checkpoint or row.

Light imports only (the standard library, wrpo.files, wrpo.stop_request), and written out here rather than in the
batch script's bash: it is the one place of the job that outlives the command, and Python handles a signal during
a wait (PEP 475) where bash defers it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from wrpo.files import write_text_atomically
from wrpo.stop_request import STOP_FILE_VARIABLE


def job_id() -> str:
    """This job's id as squeue shows it: an array task's as ARRAY_TASK."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ["SLURM_JOB_ID"]


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m wrpo.pipeline.slurm_job RECORDS -- COMMAND...", file=sys.stderr)
        return 2
    records, command = Path(argv[0]), argv[2:]
    records.mkdir(parents=True, exist_ok=True)
    job = job_id()
    path, stop = records / f"{job}.json", records / f"{job}.stop"
    started = {"job": job, "tasks": int(os.environ.get("SLURM_ARRAY_TASK_COUNT", 1)),
               "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),  # the name squeue shows
               "restarts": int(os.environ.get("SLURM_RESTART_COUNT", 0)), "started": now()}

    def record(**fields) -> None:
        write_text_atomically(path, json.dumps({**started, **fields}) + "\n")

    record(state="RUNNING")
    stop.unlink(missing_ok=True)  # a request of this job's earlier run was answered by that run
    children: list[subprocess.Popen] = []

    def warned(signum, frame) -> None:
        stop.touch()
        print(f"{now()} Slurm's warning: the time limit is near; stopping at the next safe point to requeue",
              flush=True)

    def terminated(signum, frame) -> None:
        record(state="TERMINATED", signal="SIGTERM", ended=now())
        for child in children:
            child.send_signal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    # Before the command starts: a warning or SIGTERM that came first would otherwise end this process unheard.
    signal.signal(signal.SIGUSR1, warned)
    signal.signal(signal.SIGTERM, terminated)
    child = subprocess.Popen(command, env={**os.environ, STOP_FILE_VARIABLE: str(stop)})
    children.append(child)
    status = child.wait()
    status = 128 - status if status < 0 else status  # killed by a signal: as a shell reports it
    if status and stop.exists():
        record(state="REQUEUED", exit_status=status, ended=now())
        # Slurm ends this run at once with a SIGTERM; nothing is left to record.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        requeued = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if requeued.returncode == 0:
            return 0
        print(f"scontrol requeue {job} failed: {requeued.stderr.strip()}", file=sys.stderr)
    record(state="COMPLETED" if status == 0 else "FAILED", exit_status=status, ended=now())
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
