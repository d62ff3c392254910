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
    state: str                  # done, changed, unchecked, running, queued, failed, pending
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    """What a run would do with a stage now, and why where that is not plain."""

    action: str     # skip, run, resume, redo; unknown: its inputs cannot be fingerprinted here
    why: str = ""


def stage_fingerprint(stage: Stage, inputs: list[str] | None = None) -> str:
    """`inputs`: the inputs' fingerprints where they were computed already (input_fingerprints)."""
    parts = [_settings_json(stage)] + (inputs if inputs is not None else input_fingerprints(stage))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def input_fingerprints(stage: Stage) -> list[str]:
    return [path_fingerprint(i) for i in stage.inputs]


def _settings_json(stage: Stage) -> str:
    return json.dumps(stage.settings, sort_keys=True, default=str)


def read_manifest(layout: Workdir, name: str) -> dict | None:
    path = layout.manifest(name)
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(stage: Stage, **fields) -> None:
    write_text_atomically(stage.layout.manifest(stage.name), json.dumps(fields) + "\n")


def decide(stages: list[Stage]) -> dict[str, Decision]:
    """What a run would do with each stage now. A stage whose inputs an earlier stage will (re)write is
    redone, or run if it never started; a complete stage that cannot be checked here is taken as it is."""
    changing: set[str] = set()
    decisions = {}
    for stage in stages:
        rewritten = [i for i in stage.inputs if str(Path(i)) in changing]
        decision = decision_now(stage)
        if rewritten and decision.action in ("skip", "resume"):  # its own change said first, where it has one
            decision = Decision("redo", f"{rewritten[0]} is to be rewritten")
        decisions[stage.name] = decision
        kept = decision.action == "skip" or (decision.action == "unknown"
                                             and (read_manifest(stage.layout, stage.name) or {}).get("complete"))
        if not kept:
            changing |= {str(output) for output in stage.outputs}
    return decisions


def decision_now(stage: Stage) -> Decision:
    """Skip, run, resume, redo (and why) or unknown (and why) for a stage whose inputs are as they will be when
    it runs; its inputs are fingerprinted only when a manifest needs them."""
    manifest = read_manifest(stage.layout, stage.name)
    if manifest is None:
        return Decision("run")
    unreadable = stage.unreadable()
    if unreadable:
        return Decision("unknown", f"recorded {'complete' if manifest.get('complete') else 'started'}, not "
                                   f"checked against its inputs: {unreadable}")
    inputs = input_fingerprints(stage)
    if manifest.get("fingerprint") != stage_fingerprint(stage, inputs):
        return Decision("redo", _what_changed(stage, manifest, inputs))
    missing = [output for output in stage.outputs if not output.exists()]
    if manifest.get("complete") and not missing:
        return Decision("skip")
    return Decision("resume", f"{missing[0]} is missing" if manifest.get("complete") else "")


def _what_changed(stage: Stage, manifest: dict, inputs: list[str]) -> str:
    if manifest.get("fingerprint") is None:
        return "submitted, never started"
    if "inputs" not in manifest:  # recorded before manifests named them
        return "its inputs or settings changed"
    changed = [path for path, now in zip(stage.inputs, inputs, strict=True) if manifest["inputs"].get(path) != now]
    if changed:
        return f"{', '.join(changed)} changed"
    before, now = manifest["settings"], json.loads(_settings_json(stage))
    return f"settings changed: {', '.join(sorted(key for key in {*before, *now} if before.get(key) != now.get(key)))}"


def not_done(stages: list[Stage]) -> list[str]:
    return [name for name, decision in decide(stages).items() if decision.action != "skip"]


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
    recorded = _recorded(stage)
    with FileLock(manifest_path.with_name(manifest_path.name + ".lock")):
        manifest = read_manifest(layout, stage.name) or {}
        if manifest.get("fingerprint") not in (None, recorded["fingerprint"]):
            remove_outputs(stage)
        write_manifest(stage, **recorded, complete=False, host=socket.gethostname(), pid=os.getpid(),
                       started=time.strftime("%Y-%m-%d %H:%M:%S"))


def _recorded(stage: Stage) -> dict:
    """What a manifest keeps of the stage's inputs and settings: their fingerprint, and each input's and every
    setting, to say later which of them changed."""
    inputs = input_fingerprints(stage)
    return {"fingerprint": stage_fingerprint(stage, inputs), "inputs": dict(zip(stage.inputs, inputs, strict=True)),
            "settings": json.loads(_settings_json(stage))}


def _kept(manifest: dict) -> dict:
    return {key: manifest[key] for key in ("fingerprint", "inputs", "settings") if key in manifest}


def mark_finished(stage: Stage) -> None:
    manifest = read_manifest(stage.layout, stage.name) or {}
    write_manifest(stage, **(_kept(manifest) if manifest.get("fingerprint") else _recorded(stage)), complete=True)


def mark_failed(stage: Stage, failure: dict) -> None:
    """`failure`: the exit status or error, and the log to read."""
    manifest = read_manifest(stage.layout, stage.name) or {}
    write_manifest(stage, **{"fingerprint": None, **_kept(manifest)}, complete=False, failed=failure)


def mark_submitted(stage: Stage, ready: bool) -> None:
    """A stage handed to a scheduler: with the fingerprint of its inputs where they are final already (`ready`),
    else none until it starts."""
    write_manifest(stage, **(_recorded(stage) if ready else {"fingerprint": None}), complete=False,
                   submitted=time.strftime("%Y-%m-%d %H:%M:%S"))
