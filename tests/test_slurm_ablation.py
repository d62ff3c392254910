"""`wrpo ablate --executor slurm` against a real Slurm on loopback (tests/slurm_cluster.py): every run a job,
then one job after them that judges and reports; the command returns at once, a second submission is
refused while they run, and `wrpo ablate` here afterwards trains nothing again and reports the same."""

import json
import os
import time

import pytest
from typer.testing import CliRunner

from conftest import scorers_env, write_jsonl
from test_recipe import recipe_file
from test_scale import with_resources
from test_slurm_executor import wait_for_jobs
from wrpo.ablation import ablate
from wrpo.cli import app

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_ablate_submits_every_run_and_the_report_as_slurm_jobs(zoo, tmp_path, slurm_env, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", scorers_env(os.environ)["PYTHONPATH"])  # the jobs judge with tests/scorers.py
    recipe = with_resources(recipe_file(tmp_path, zoo, seed=0), {"slurm": {"partition": slurm_env.partition}})
    held_out = [{"prompt_id": f"h{i}", "prompt": f"reverse {word}", "category": "long" if len(word) > 5 else "short"}
                for i, word in enumerate(["banana", "cherry", "papaya", "guava", "olive", "quince"])]
    write_jsonl(tmp_path / "heldout.jsonl", held_out)
    recipe.write_text(recipe.read_text() + "ablation: {eval_prompts: heldout.jsonl}\n")
    assert CliRunner().invoke(app, ["run", str(recipe)]).exit_code == 0  # the pipeline first, here
    work = tmp_path / "work"
    command = ["ablate", str(recipe), "--executor", "slurm", "--seeds", "0,1", "--variants", "rft"]
    started = time.time()
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    # rft's data, three runs, sft and wrpo (seed 0's wrpo is the pipeline's model: the recipe trains with
    # seed 0), and the report.
    assert time.time() - started < 60 and result.output.splitlines()[-1].count("submitted as job") == 5
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code == 2 and "still queued or running" in refused.output

    states = wait_for_jobs(recipe)
    assert {state.state for state in states.values()} == {"done"}, states
    runs = ["seed0/rft", "seed1/wrpo", "seed1/rft"]
    assert [name for name in states if name.startswith("ablation/")] == [
        "ablation/data/rft", *(f"ablation/{r}" for r in runs), "ablation/report"]
    assert all("saved the" in (work / "logs" / f"ablation--{run.replace('/', '--')}.log").read_text() for run in runs)
    assert f"report: {work / 'ablation' / 'report.md'}" in (work / "logs" / "ablation--report.log").read_text()
    report = json.loads((work / "ablation" / "report.json").read_text())
    assert set(report["variants"]) == {"wrpo", "rft"}
    assert all(entry["seeds"] == [0, 1] for entry in report["variants"].values())

    models = sorted((work / "ablation" / "models").glob("seed*/*/model.safetensors"))
    trained_at = [model.stat().st_mtime_ns for model in models]
    assert len(models) == 3
    assert ablate(recipe, seeds=[0, 1], variants=["rft"]).result.report == report
    assert [model.stat().st_mtime_ns for model in models] == trained_at  # every run reused, none trained again
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0 and again.output.count("up to date, skipped") == 5
