"""Clusters take jobs away, on a real Slurm on loopback (tests/slurm_cluster.py): a training job warned before its
time limit saves a checkpoint at the end of its step and requeues itself; a job requeued from outside (as a
preemption does) starts again; both resume to exactly the run that nothing interrupted, and the jobs after them
wait instead of being cancelled. `wrpo status` shows the requeues, and outlives slurmctld's memory of the jobs."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from slurm_cluster import started_or_skipped
from test_recipe import recipe_file
from test_scale import weights, with_resources
from test_slurm_executor import scorers_in_jobs  # noqa: F401  (a fixture)
from wrpo.cli import app
from wrpo.pipeline.run import recipe_status

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def losses(model: Path) -> list[float]:
    return [row["loss"] for row in map(json.loads, (model / "metrics.jsonl").read_text().splitlines())]


def logged_steps(model: Path) -> int:
    metrics = model / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def wait_for_jobs(recipe: Path, env: dict, timeout: float = 900, when=None) -> dict:
    """Each stage's state once no job of the recipe is queued or running, calling when() on the way. A requeued
    job is made eligible after 3 s: Slurm holds it back for two minutes, a wait of the cluster's and not wrpo's.
    Not at once: slurmd refuses a job started in the second its last run's credential was revoked ("Job
    credential revoked"), and Slurm then fails it and cancels the jobs that depend on it."""
    deadline = time.time() + timeout
    held_since: dict[str, float] = {}
    while time.time() < deadline:
        held = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], env=env, capture_output=True, text=True)
        for line in held.stdout.splitlines():
            job, reason = line.split()
            if reason == "BeginTime" and time.time() - held_since.setdefault(job, time.time()) >= 3:
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True)
                del held_since[job]
        if when is not None:
            when()
        states = {state.name: state for state in recipe_status(recipe)}
        if not any(state.state in ("running", "queued") for state in states.values()):
            return states
        time.sleep(1)
    raise AssertionError(f"jobs still running after {timeout} s: {states}")


def test_training_warned_before_its_time_limit_or_requeued_from_outside_ends_as_the_uninterrupted_run(
        zoo, tmp_path, slurm_env, scorers_in_jobs):  # noqa: F811
    recipe = with_resources(recipe_file(tmp_path, zoo), {},
                            sft={"max_steps": 100, "gradient_accumulation_steps": 16, "save_steps": 25},
                            wrpo={"max_steps": 24, "gradient_accumulation_steps": 6, "save_steps": 5})
    assert CliRunner().invoke(app, ["run", str(recipe)]).exit_code == 0
    work, env = tmp_path / "work", slurm_env.client_env()
    models = {name: work / "models" / name for name in ("target-sft", "target-sft-wrpo")}
    uninterrupted = {name: (weights(folder), losses(folder)) for name, folder in models.items()}
    shutil.rmtree(work / "models")
    (work / ".wrpo" / "stages" / "sft.json").unlink()  # SFT and the stages after it run again, as jobs

    # The SFT job is warned (USR1 to its batch step, as --signal=B:USR1@SECONDS does) a third of the way through
    # its steps; the WRPO job is requeued from outside (as a preemption) after its first checkpoint.
    with_resources(recipe, {"slurm": {"partition": slurm_env.partition, "time": "30:00"}, "warning_seconds": 10,
                            "stages": {"sft": {"slurm": {"time": "1"}}}})
    assert CliRunner().invoke(app, ["run", "--executor", "slurm", str(recipe)]).exit_code == 0
    script = (work / ".wrpo" / "slurm" / "sft.sh").read_text()
    assert "#SBATCH --signal=B:USR1@10" in script and "#SBATCH --requeue" in script
    jobs = json.loads((work / ".wrpo" / "slurm" / "jobs.json").read_text())
    done = set()

    def interrupt():
        if "sft" not in done and logged_steps(models["target-sft"]) >= 30:
            subprocess.run(["scancel", "--batch", "--signal=USR1", jobs["sft"][0]], env=env, check=True)
            done.add("sft")
        if "wrpo" not in done and logged_steps(models["target-sft-wrpo"]) >= 7:
            subprocess.run(["scontrol", "requeue", jobs["wrpo"][0]], env=env, check=True)
            done.add("wrpo")
        states = {state.name: state for state in recipe_status(recipe)}
        assert all(state.state != "failed" for state in states.values()), states  # nothing cancelled

    states = wait_for_jobs(recipe, env, when=interrupt)
    assert done == {"sft", "wrpo"} and {state.state for state in states.values()} == {"done"}, states
    assert states["sft"].detail.endswith("requeued once") and states["wrpo"].detail.endswith("requeued once")
    sft_log = (work / "logs" / "sft.log").read_text()
    assert "Slurm's warning" in sft_log and "stopped on request at step" in sft_log and "resuming from" in sft_log
    for name, folder in models.items():
        expected_weights, expected_losses = uninterrupted[name]
        assert losses(folder) == pytest.approx(expected_losses, abs=1e-5), name
        for parameter, value in weights(folder).items():
            torch.testing.assert_close(value, expected_weights[parameter], atol=1e-5, rtol=1e-4, msg=parameter)

    # Slurm's own warning, from its clock: an SFT far longer than its one-minute limit is warned 10 s before it
    # (up to 30 s earlier: slurmctld looks every 30 s), stops at a step and requeues itself.
    log = work / "logs" / "sft.log"
    before = len(log.read_text())
    with_resources(recipe, {"slurm": {"partition": slurm_env.partition, "time": "30:00"}, "warning_seconds": 10,
                            "stages": {"sft": {"slurm": {"time": "1"}}}}, sft={"max_steps": 100_000})
    assert CliRunner().invoke(app, ["run", "--executor", "slurm", str(recipe)]).exit_code == 0
    deadline = time.time() + 180
    while "requeued" not in (state := {s.name: s for s in recipe_status(recipe)}["sft"]).detail:
        assert time.time() < deadline and state.state in ("queued", "running"), state
        time.sleep(1)
    jobs = json.loads((work / ".wrpo" / "slurm" / "jobs.json").read_text())
    subprocess.run(["scancel", *(job for ids in jobs.values() for job in ids)], env=env, check=True)
    warned = log.read_text()[before:]
    assert "Slurm's warning" in warned and "stopped on request at step" in warned, warned[-3000:]


@pytest.fixture(scope="module")
def forgetful_cluster(tmp_path_factory):
    """A cluster whose slurmctld forgets a job 2 s after it ends (MinJobAge; 300 by default)."""
    cluster = started_or_skipped(tmp_path_factory.mktemp("slurm-forgetful"), min_job_age=2)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_status_outlives_slurmctlds_memory_of_the_jobs(zoo, tmp_path, forgetful_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", forgetful_cluster.env["SLURM_CONF"])
    module = tmp_path / "failing_scorer.py"
    module.write_text("def score(prompt, response):  # fails on sampled responses, not on the preflight's\n"
                      "    if response != 'a response':\n        raise SystemExit(3)\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    recipe = recipe_file(tmp_path, zoo)
    recipe.write_text(recipe.read_text().replace("scorers:reversal_similarity", "failing_scorer:score"))
    with_resources(recipe, {"slurm": {"partition": forgetful_cluster.partition}})
    assert CliRunner().invoke(app, ["run", "--executor", "slurm", str(recipe)]).exit_code == 0
    wait_for_jobs(recipe, forgetful_cluster.client_env(), timeout=300)
    jobs = json.loads((tmp_path / "work" / ".wrpo" / "slurm" / "jobs.json").read_text())
    deadline = time.time() + 120
    while any(forgetful_cluster.run("scontrol", "show", "job", job, check=False).strip()
              for ids in jobs.values() for job in ids):
        assert time.time() < deadline, "slurmctld still remembers the jobs"
        time.sleep(2)
    states = {state.name: state for state in recipe_status(recipe)}
    sampled, job = states["sample/sources/llama-char"], jobs["sample/sources/llama-char"][0]
    assert sampled.state == "done" and sampled.detail == f"Slurm job {job} on localhost", sampled
    failed = states["score/sources/llama-char"]
    assert failed.state == "failed" and "failed (exit code 3)" in failed.detail, failed
    # Cancelled while they waited, the jobs after it never ran, and nobody is left to say more.
    assert states["wrpo"].state == "failed" and "no record" in states["wrpo"].detail, states["wrpo"]
