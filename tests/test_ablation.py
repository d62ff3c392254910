"""`wrpo ablate`: the statistics against hand-computed values, the checks before any training, and a
run on the demo's recipe that is killed and resumed without training a finished variant again."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from conftest import native_rows, write_jsonl
from test_recipe import recipe_file
from wrpo.ablation import ablate
from wrpo.ablation.variants import plan_ablation
from wrpo.cli import app
from wrpo.data.prompts import check_held_out
from wrpo.errors import InputError
from wrpo.evaluation.ablation_report import flags, paired_difference, render, summarise
from wrpo.evaluation.compare import ModelResult
from wrpo.pipeline.recipe import load_recipe


def result(label, rewards, categories):
    return ModelResult(label, rewards=rewards, categories=categories, answers={p: "x" for p in rewards})


def test_the_paired_difference_averages_each_prompts_difference_over_the_seeds():
    wrpo = {0: result("w0", {"a": 0.5, "b": 0.5, "c": 0.1}, {}), 1: result("w1", {"a": 0.3, "b": 0.9, "c": 0.1}, {})}
    dpo = {0: result("d0", {"a": 0.6, "b": 0.1, "c": 0.1}, {}), 1: result("d1", {"a": 0.5, "b": 0.9, "c": 0.4}, {})}
    difference = paired_difference(dpo, wrpo, resamples=500)
    # per prompt: a (0.1 + 0.2) / 2, b (-0.4 + 0) / 2, c (0 + 0.3) / 2
    assert difference.mean == pytest.approx((0.15 - 0.2 + 0.15) / 3)
    assert difference.per_seed == pytest.approx([-0.3 / 3, 0.5 / 3])
    assert difference.low <= difference.mean <= difference.high and difference.prompts == 3
    assert not difference.significant


def test_every_category_below_the_target_or_target_sft_is_flagged():
    categories = {"p1": "math", "p2": "math", "p3": "chat"}
    baselines = {"target": result("t", {"p1": 0.8, "p2": 0.8, "p3": 0.2}, categories),
                 "target-sft": result("s", {"p1": 0.9, "p2": 0.9, "p3": 0.5}, categories)}
    wrpo = {seed: result(f"w{seed}", {"p1": 0.85, "p2": 0.85, "p3": 0.9}, categories) for seed in (0, 1)}
    dpo = {0: result("d0", {"p1": 0.5, "p2": 0.7, "p3": 0.9}, categories),
           1: result("d1", {"p1": 0.7, "p2": 0.7, "p3": 0.7}, categories)}
    report = {"recipe": "r.yaml", "judge": "j", "seeds": [0, 1], "eval_prompts": 3, "eval_prompts_file": "e.jsonl",
              **summarise(baselines, {"wrpo": wrpo, "dpo": dpo}, {"wrpo": "WRPO", "dpo": "DPO"}, {})}
    wrpo_entry, dpo_entry = report["variants"]["wrpo"], report["variants"]["dpo"]
    # wrpo: math 0.85 lies between the target's 0.8 and target-sft's 0.9; overall 0.867 is above both.
    assert wrpo_entry["below"] == {"target": [], "target-sft": ["math"]}
    # dpo: math (0.6 + 0.7) / 2, chat (0.9 + 0.7) / 2; overall 0.7 in both seeds, under target-sft's 0.767.
    assert dpo_entry["per_category"] == {"chat": pytest.approx(0.8), "math": pytest.approx(0.65)}
    assert (dpo_entry["mean_reward"], dpo_entry["std"]) == (pytest.approx(0.7), pytest.approx(0.0))
    assert dpo_entry["below"] == {"target": ["math"], "target-sft": ["math", "overall"]}
    # per prompt, averaged over seeds: p1 (-0.35 - 0.15) / 2, p2 -0.15, p3 (0 - 0.2) / 2
    assert dpo_entry["vs_wrpo"]["mean"] == pytest.approx((-0.25 - 0.15 - 0.1) / 3)
    assert flags(report) == ["wrpo is below target-sft on math 0.850 < 0.900",
                             "dpo is below target on math 0.650 < 0.800",
                             "dpo is below target-sft on math 0.650 < 0.900, overall 0.700 < 0.767"]
    text = render(report)
    assert "| dpo | DPO | 0.700 ± 0.000 ↓S | 0.700, 0.700 |" in text and "| 0.650 ↓T ↓S |" in text


def test_held_out_prompts_that_are_training_prompts_are_refused_naming_the_line(tmp_path):
    training = write_jsonl(tmp_path / "train.jsonl", [{"prompt_id": "t1", "prompt": "reverse abc"},
                                                      {"prompt_id": "t2", "prompt": "reverse xyz"}])
    held_out = write_jsonl(tmp_path / "heldout.jsonl", [{"prompt_id": "h1", "prompt": "reverse def"},
                                                        {"prompt_id": "h2", "prompt": "reverse xyz"}])
    with pytest.raises(InputError) as caught:
        check_held_out(training, held_out)
    assert str(caught.value) == (f"{held_out}:2: held-out prompt 'h2' is also the training prompt of line 2 of "
                                 f"{training}: the held-out prompts must be disjoint from training")
    check_held_out(training, write_jsonl(tmp_path / "ok.jsonl", [{"prompt_id": "h1", "prompt": "reverse def"}]))


def test_slurm_ablation_needs_the_pipeline_done_and_its_plan_writes_nothing(zoo, tmp_path):
    """Refused before any job: `--executor slurm` while the pipeline is not done (the runs' data is made from
    its quadruples). Planned: the variants' data as stages, then the runs, then the report, which reads every
    run's model (so its job waits for theirs); and planning writes nothing."""
    recipe = recipe_file(tmp_path, zoo)
    write_jsonl(tmp_path / "heldout.jsonl", [{"prompt_id": "h1", "prompt": "reverse banana"}])
    recipe.write_text(recipe.read_text() + "ablation: {eval_prompts: heldout.jsonl}\n")
    result = CliRunner().invoke(app, ["ablate", str(recipe), "--executor", "slurm"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {recipe}: --executor slurm: the recipe's stages "
                                    "sample/sources/llama-char, score/sources/llama-char, ")
    assert result.stderr.endswith(f", wrpo are not done; run `wrpo run {recipe} --executor slurm`, then `wrpo ablate` "
                                  "once those jobs finish\n")
    (tmp_path / "work" / "data").mkdir(parents=True)
    write_jsonl(tmp_path / "work" / "data" / "quadruples.jsonl", native_rows())  # as if the pipeline had made them
    recipe_model = load_recipe(recipe)
    before = sorted((tmp_path / "work").rglob("*"))
    stages = plan_ablation(recipe_model, ["dpo", "rft", "sources-1"], [0], str(recipe))
    assert sorted((tmp_path / "work").rglob("*")) == before
    assert [stage.name for stage in stages] == ["ablation/data/rft", "ablation/data/1-sources", "ablation/seed0/wrpo",
                                                "ablation/seed0/dpo", "ablation/seed0/rft", "ablation/seed0/sources-1",
                                                "ablation/report"]
    runs = {stage.name: stage for stage in stages}
    assert runs["ablation/seed0/rft"].spec.data == runs["ablation/data/rft"].outputs[0]
    assert runs["ablation/seed0/rft"].spec.settings["max_steps"] == 2  # WRPO's budget
    report = stages[-1]
    assert {str(stage.outputs[0]) for stage in stages[2:-1]} <= set(report.inputs)


def demo_recipe(small_demo):
    return small_demo[1] / "run-seed0" / "recipe.yaml"


def edited(recipe, path, **ablation):
    data = yaml.safe_load(recipe.read_text())
    data["ablation"] = {**data["ablation"], **ablation} if ablation else None
    if data["ablation"] is None:
        del data["ablation"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_recipe_without_ablation_section_or_with_an_unknown_variant_stops_before_training(small_demo):
    recipe = demo_recipe(small_demo)
    bare = edited(recipe, recipe.with_name("bare.yaml"))
    result = CliRunner().invoke(app, ["ablate", str(bare)])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {bare}: the recipe has no ablation: section")
    typo = edited(recipe, recipe.with_name("typo.yaml"), variants=["dpo", "ftr"])
    result = CliRunner().invoke(app, ["ablate", str(typo)])
    line = next(n for n, text in enumerate(typo.read_text().splitlines(), 1) if text.strip() == "- ftr")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {typo}:{line}: ablation.variants: no variant 'ftr'")
    result = CliRunner().invoke(app, ["ablate", str(recipe), "--seeds", "0,x"])
    assert result.exit_code == 2 and "--seeds must be comma-separated integers" in result.stderr


@pytest.mark.slow
def test_ablate_killed_mid_run_resumes_without_training_a_finished_variant_again(small_demo):
    recipe = demo_recipe(small_demo)
    work = recipe.parent / "work"
    finished = work / ".wrpo" / "stages" / "ablation--seed0--dpo.json"
    command = [sys.executable, "-m", "wrpo.cli", "ablate", str(recipe), "--seeds", "0,1", "--variants", "dpo,rft"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None and not (
                finished.exists() and json.loads(finished.read_text()).get("complete")):
            time.sleep(0.2)
        assert process.poll() is None, f"ablate ended before it could be killed: {process.stderr.read()[-2000:]}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    model = work / "ablation" / "models" / "seed0" / "dpo" / "model.safetensors"
    trained_at = model.stat().st_mtime_ns

    result = ablate(recipe, seeds=[0, 1], variants=["dpo", "rft"]).result
    assert model.stat().st_mtime_ns == trained_at  # finished before the kill: reused, not trained again
    assert set(result.report["variants"]) == {"wrpo", "dpo", "rft"}
    assert all(entry["seeds"] == [0, 1] for entry in result.report["variants"].values())
    # seed 0's wrpo is the pipeline's own model (the recipe trains with seed 0); seed 1's is trained here.
    runs = {(run.name, run.seed): run for run in result.runs}
    assert runs[("wrpo", 0)].model == work / "models" / "target-sft-wrpo"
    assert (work / "ablation" / "models" / "seed1" / "rft" / "config.json").exists()
    report = (result.folder / "report.md").read_text()
    assert "| rft |" in report and "## Below the starting point" in report
    for picture in ("ablation_per_category.png", "ablation_differences.png", "ablation_training.png"):
        assert (result.folder / picture).read_bytes()[:4] == b"\x89PNG"
