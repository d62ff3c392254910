"""A request from outside that a stage stop at its next safe point and resume later: Slurm's warning that a
job's time is nearly up (wrpo.pipeline.slurm_job turns it into a file). Training stops at the end of its
optimizer step with a checkpoint saved there; sampling and scoring stop after the batch they are writing.
Either raises StopRequested, and the job requeues itself.

A file, not a signal: the warning reaches one process (the job's batch step), while the processes of a launch
run under srun and accelerate on every node of the job; they all see the file in the shared workdir."""

from __future__ import annotations

import os

# Names the file whose existence asks the stage to stop; unset (no request possible) outside a Slurm job.
STOP_FILE_VARIABLE = "WRPO_STOP_FILE"
STOPPED_EXIT_STATUS = 75  # EX_TEMPFAIL: stopped on request, to be run again


class StopRequested(Exception):
    """The stage stopped at a safe point on request; what it wrote so far is where it resumes."""


def stop_requested() -> bool:
    path = os.environ.get(STOP_FILE_VARIABLE)
    return bool(path) and os.path.exists(path)


def stop_if_requested() -> None:
    """At a safe point: raises StopRequested when a stop is asked for."""
    if stop_requested():
        raise StopRequested("stopped on request")
