"""`wrpo run --executor slurm` against a real Slurm on loopback (tests/slurm_cluster.py): every stage a
job (shards as arrays, training through srun + accelerate launch), chained by dependencies; the run
returns at once, `wrpo status` follows the jobs, and the result equals the local run. A failed job is
reported with its log, the jobs after it are cancelled, never left pending."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import scorers_env
from test_fusechat import fusechat_recipe
from test_recipe import recipe_file
from test_scale import RECIPES, rows_by_id, weights, with_resources
from wrpo.cli import app
from wrpo.pipeline.run import recipe_status

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TESTS = Path(__file__).parent.resolve()


def wait_for_jobs(recipe: Path, timeout: float = 900) -> dict[str, str]:
    """Each stage's state once no job of the recipe is queued or running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = {state.name: state for state in recipe_status(recipe)}
        if not any(state.state in ("running", "queued") for state in states.values()):
            return states
        time.sleep(2)
    raise AssertionError(f"jobs still running after {timeout} s: {states}")


@pytest.fixture
def scorers_in_jobs(monkeypatch):
    # sbatch passes the environment on; what PYTHONPATH held stays (a checkout's src/ runs its own code)
    monkeypatch.setenv("PYTHONPATH", scorers_env(os.environ)["PYTHONPATH"])


def test_the_pipeline_runs_as_slurm_jobs_and_equals_the_local_run(zoo, tmp_path, slurm_env, scorers_in_jobs,
                                                                  monkeypatch):
    (tmp_path / "local").mkdir()
    (tmp_path / "slurm").mkdir()
    local = recipe_file(tmp_path / "local", zoo, gradient_accumulation_steps=2)
    with_resources(local, {}, sft={"gradient_accumulation_steps": 2})
    submitted = with_resources(recipe_file(tmp_path / "slurm", zoo),
                               {"devices_per_node": 2, "device_type": "cpu",
                                "accelerate_config": str(RECIPES / "accelerate" / "ddp_cpu.yaml"),
                                "slurm": {"partition": slurm_env.partition, "time": "30:00"}},
                               sft={"gradient_accumulation_steps": 1}, wrpo={"gradient_accumulation_steps": 1})
    started = time.time()
    result = CliRunner().invoke(app, ["run", "--executor", "slurm", str(submitted)])
    assert result.exit_code == 0, result.output
    assert time.time() - started < 60 and result.output.splitlines()[-1].count("submitted as job") == 10
    states = {state.name: state.state for state in recipe_status(submitted)}
    assert set(states.values()) <= {"queued", "running", "done"} and states["wrpo"] == "queued"
    refused = CliRunner().invoke(app, ["run", "--executor", "slurm", str(submitted)])  # a double submission
    assert refused.exit_code == 2 and "still queued or running" in refused.output

    assert CliRunner().invoke(app, ["run", str(local)]).exit_code == 0
    finished = wait_for_jobs(submitted)
    assert {state.state for state in finished.values()} == {"done"}, finished
    first, second = tmp_path / "local" / "work", tmp_path / "slurm" / "work"
    for data in ("samples/sources/llama-char.jsonl", "scores/target-sft.jsonl"):
        assert rows_by_id(second / data) == rows_by_id(first / data), data
    assert (second / "data" / "quadruples.jsonl").read_text() == (first / "data" / "quadruples.jsonl").read_text()
    a, b = weights(first / "models" / "target-sft-wrpo"), weights(second / "models" / "target-sft-wrpo")
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert (second / "logs" / "wrpo.log").exists()
    again = CliRunner().invoke(app, ["run", "--executor", "slurm", str(submitted)])
    assert again.exit_code == 0 and again.output.count("up to date, skipped") == 10
    states = {state.name: state for state in recipe_status(submitted)}
    assert states["sft"].state == "done" and states["sft"].detail.startswith("Slurm job ")
    with_resources(submitted, yaml.safe_load(submitted.read_text())["resources"], wrpo={"beta": 0.3})
    states = {state.name: state for state in recipe_status(submitted)}
    assert states["wrpo"].state == "changed" and states["wrpo"].detail == "would be redone: settings changed: beta"
    with_resources(submitted, yaml.safe_load(submitted.read_text())["resources"], wrpo={"beta": 0.5})

    # From a shell where the recipe's scorer cannot be imported: the scoring stages cannot be checked (and say
    # why), the others are done, none failed.
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if Path(entry or ".").resolve() != TESTS])
    monkeypatch.delitem(sys.modules, "scorers")
    states = {state.name: state for state in recipe_status(submitted)}
    scoring = [name for name in states if name.startswith("score/")]
    assert len(scoring) == 3 and {states[name].state for name in scoring} == {"unchecked"}, states
    assert all("module scorers cannot be imported" in states[name].detail for name in scoring)
    assert {state.state for name, state in states.items() if name not in scoring} == {"done"}, states


def test_a_failed_job_is_reported_and_the_jobs_after_it_are_cancelled(zoo, tmp_path, slurm_env, monkeypatch):
    module = tmp_path / "failing_scorer.py"
    module.write_text("def score(prompt, response):  # fails on sampled responses, not on the preflight's\n"
                      "    if response != 'a response':\n        raise SystemExit(3)\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{scorers_env(os.environ)['PYTHONPATH']}")
    path = recipe_file(tmp_path, zoo)
    path.write_text(path.read_text().replace("scorers:reversal_similarity", "failing_scorer:score"))
    with_resources(path, {"slurm": {"partition": slurm_env.partition}})
    assert CliRunner().invoke(app, ["run", "--executor", "slurm", str(path)]).exit_code == 0
    states = wait_for_jobs(path, timeout=300)
    assert states["sample/sources/llama-char"].state == "done"
    assert states["score/sources/llama-char"].state == "failed"
    assert "exit code 3" in states["score/sources/llama-char"].detail
    assert "score--sources--llama-char.log" in states["score/sources/llama-char"].detail
    assert states["wrpo"].state == "failed" and "cancelled" in states["wrpo"].detail
    status = CliRunner().invoke(app, ["status", str(path)])
    assert status.exit_code == 0 and "failed" in status.output


def test_a_fusechat_recipe_chooses_its_checkpoint_in_a_job_and_status_says_which(zoo, tmp_path, slurm_env,
                                                                                  scorers_in_jobs):
    recipe = with_resources(fusechat_recipe(tmp_path, zoo), {"slurm": {"partition": slurm_env.partition,
                                                                       "time": "30:00"}})
    result = CliRunner().invoke(app, ["run", "--executor", "slurm", str(recipe)])
    assert result.exit_code == 0, result.output
    finished = wait_for_jobs(recipe)
    assert {state.state for state in finished.values()} == {"done"}, finished
    choice = json.loads((tmp_path / "work" / "models" / "target-sft-wrpo-chosen" / "choice.json").read_text())
    detail = finished["choose/wrpo"].detail
    assert detail.startswith("Slurm job ") and f"; chose {choice['chosen']} by mean held-out reward (" in detail
