"""The state of a workdir's stages, which every executor stands on and none of it knows an executor.

A stage's fingerprint hashes its settings and the content of its inputs (files by content, model
folders by file names, sizes and times). Its manifest (Workdir.manifest) records the fingerprint it
started and finished with: a finished stage with the same fingerprint is skipped; an unfinished one
resumes (its own outputs are resumable); one whose fingerprint changed is redone from scratch, its stale
outputs removed first. Where a stage runs (its placement) does not enter the fingerprint: sharded sampling
and scoring give the rows of one process.

The process that runs a stage marks it (wrpo.pipeline.worker): started, with the fingerprint of its inputs
as they are then, and finished; the executor that ran it marks it failed.
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

from filelock import FileLock

from wrpo.files import path_fingerprint, write_text_atomically
from wrpo.pipeline.kinds import Stage
from wrpo.pipeline.layout import Workdir


@dataclass
class StageState:
    name: str
    state: str                  # done, running, queued, failed, pending
    detail: str = ""


def stage_fingerprint(stage: Stage) -> str:
    parts = [json.dumps(stage.settings, sort_keys=True, default=str)] + [path_fingerprint(i) for i in stage.inputs]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def read_manifest(layout: Workdir, name: str) -> dict | None:
    path = layout.manifest(name)
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(stage: Stage, **fields) -> None:
    write_text_atomically(stage.layout.manifest(stage.name), json.dumps(fields) + "\n")


def decide(stages: list[Stage]) -> dict[str, str]:
    """What a run would do with each stage now: skip, run, resume or redo. A stage whose inputs an
    earlier stage will (re)write is redone, or run if it never started."""
    changing: set[str] = set()
    decisions = {}
    for stage in stages:
        if any(str(Path(i)) in changing for i in stage.inputs):
            decision = "redo" if read_manifest(stage.layout, stage.name) else "run"
        else:
            decision = decision_now(stage)
        decisions[stage.name] = decision
        if decision != "skip":
            changing |= {str(output) for output in stage.outputs}
    return decisions


def decision_now(stage: Stage) -> str:
    """skip, run, resume or redo for a stage whose inputs are as they will be when it runs; its inputs'
    fingerprint is computed only when a manifest needs it."""
    manifest = read_manifest(stage.layout, stage.name)
    if manifest is None:
        return "run"
    if manifest.get("fingerprint") != stage_fingerprint(stage):  # None: submitted, never started
        return "redo"
    if manifest.get("complete") and all(output.exists() for output in stage.outputs):
        return "skip"
    return "resume"


def not_done(stages: list[Stage]) -> list[str]:
    return [name for name, decision in decide(stages).items() if decision != "skip"]


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


def mark_started(stage: Stage) -> None:
    """Records the fingerprint the stage starts from, its inputs being final by then; its outputs are removed
    first when they were made from other inputs. The shards of a stage each mark it as they start: under a
    lock, so that the first removes what is stale and the others find it started from the same inputs."""
    layout = stage.layout
    manifest_path = layout.manifest(stage.name)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = stage_fingerprint(stage)
    with FileLock(manifest_path.with_name(manifest_path.name + ".lock")):
        manifest = read_manifest(layout, stage.name) or {}
        if manifest.get("fingerprint") not in (None, fingerprint):
            remove_outputs(stage)
        write_manifest(stage, fingerprint=fingerprint, complete=False, host=socket.gethostname(), pid=os.getpid(),
                       started=time.strftime("%Y-%m-%d %H:%M:%S"))


def mark_finished(stage: Stage) -> None:
    manifest = read_manifest(stage.layout, stage.name) or {}
    write_manifest(stage, fingerprint=manifest.get("fingerprint") or stage_fingerprint(stage), complete=True)


def mark_failed(stage: Stage, failure: dict) -> None:
    """`failure`: the exit status or error, and the log to read."""
    manifest = read_manifest(stage.layout, stage.name) or {}
    write_manifest(stage, fingerprint=manifest.get("fingerprint"), complete=False, failed=failure)


def mark_submitted(stage: Stage, ready: bool) -> None:
    """A stage handed to a scheduler: with the fingerprint of its inputs where they are final already (`ready`),
    else none until it starts."""
    write_manifest(stage, fingerprint=stage_fingerprint(stage) if ready else None, complete=False,
                   submitted=time.strftime("%Y-%m-%d %H:%M:%S"))
