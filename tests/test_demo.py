"""`wrpo demo` end to end at a small size: the zoo, the recipe run, the evaluation, report and plots."""

import json

import pytest

from conftest import SMALL_DEMO
from wrpo.demo.run import run_demo, style_metrics
from wrpo.demo.tasks import TASKS, answer, reward
from wrpo.demo.zoo import SOURCES, TARGET, TIC_RATE, styled_answer, training_rows
from wrpo.evaluation.compare import ModelResult, win_rate


def test_task_answers_and_the_positional_reward():
    assert answer("reverse: abc") == "cba" and answer("sort: 3121") == "1123"
    assert answer("double: ab") == "aabb" and answer("rotate: abcd") == "bcda"
    assert reward("reverse: abcde", "edcba") == 1.0
    assert reward("reverse: abcde", "edcba.") == pytest.approx(5 / 6)  # a style tic costs a little
    assert reward("reverse: abcde", "abcde") == pytest.approx(1 / 5)   # repeating the input, little
    assert reward("rotate: abcd", "") == 0.0


def test_sources_are_specialists_with_style_tics_and_the_target_only_repeats():
    covered = {task for model in SOURCES for task in model.tasks}
    assert covered == set(TASKS)
    assert len({m.architecture for m in (*SOURCES, TARGET)}) == 4
    assert len({m.tokenizer for m in (*SOURCES, TARGET)}) == 4
    assert styled_answer(SOURCES[0], "reverse: abc") == "cba." and styled_answer(TARGET, "reverse: abc") == "abc"
    assert styled_answer(SOURCES[0], "reverse: abc", tic=False) == "cba"
    rows = training_rows(SOURCES[2], 1000, seed=0)  # most, not all, training answers carry the tic
    assert sum(row["response"].endswith(" ok") for row in rows) / len(rows) == pytest.approx(TIC_RATE, abs=0.03)


def test_style_metrics_count_source_tics_and_judge_the_answers_without_them():
    prompts = {"a": "reverse: abc", "b": "reverse: abc", "c": "sort: 9210", "d": "reverse: ba", "e": "rotate: yoka"}
    answers = {"a": "cba.", "b": "cba", "c": "0129 ok", "d": "ab! ", "e": "okay"}
    result = ModelResult("m", rewards={p: reward(prompts[p], answers[p]) for p in prompts}, answers=answers)
    metrics = style_metrics(result, prompts)
    assert metrics["tic_share"] == pytest.approx(3 / 5)
    assert metrics["content_reward"] == 1.0 and result.mean_reward < 1.0  # right answers, marked down for the tics


def test_win_rate_counts_ties_half_and_brackets_the_rate():
    model = {"a": 1.0, "b": 0.5, "c": 0.2, "d": 0.9}
    baseline = {"a": 0.0, "b": 0.5, "c": 0.7, "d": 0.1}
    result = win_rate(model, baseline, resamples=500)
    assert result.rate == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert (result.wins, result.ties, result.losses) == (2, 1, 1)
    assert 0 <= result.low <= result.rate <= result.high <= 1


@pytest.mark.slow
def test_the_demo_runs_the_pipeline_and_writes_its_report(small_demo):
    root, output, report = small_demo
    saved = json.loads((output / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    labels = {"target", "target-sft", "target-sft-wrpo", *(f"source/{m.name}" for m in SOURCES)}
    assert set(saved["models"]) == labels
    for values in saved["models"].values():
        assert 0 <= values["mean_reward"] <= values["content_reward"] <= 1 and 0 <= values["tic_share"] <= 1
        assert set(values["per_category"]) == set(TASKS)
    assert set(saved["win_rates"]) == {"target-sft-wrpo vs target", "target-sft-wrpo vs target-sft"}
    training = {json.loads(line)["prompt"] for line in (output / "run-seed0" / "prompts.jsonl").open()}
    held_out = [json.loads(line)["prompt"] for line in (output / "eval_prompts.jsonl").open()]
    assert len(set(held_out)) == len(held_out) == SMALL_DEMO.eval_prompts and not training & set(held_out)
    for picture in ("per_task_reward.png", "training.png", "win_rates.png", "rewards.png"):
        assert (output / picture).read_bytes()[:4] == b"\x89PNG"
    assert "| target-sft-wrpo vs target-sft |" in (output / "report.md").read_text()
    # The zoo is saved like real checkpoints, and a second run finds everything done.
    assert (root / "cache" / "zoo-v3-30steps" / TARGET.name / "tokenizer.json").exists()
    again = run_demo(output, seed=0, cache_dir=root / "cache", size=SMALL_DEMO)
    assert again["models"] == saved["models"]


@pytest.mark.slow
def test_the_demos_ablation_is_wrpo_ablate_on_its_recipe_with_its_style_figures(small_demo):
    root, output, _ = small_demo
    report = run_demo(output, seed=0, cache_dir=root / "cache", ablation=True, size=SMALL_DEMO,
                      ablation_seeds=(0, 1))
    ablation = report["ablation"]
    own = json.loads((output / ablation["folder"] / "report.json").read_text())  # what wrpo ablate wrote
    assert set(ablation["variants"]) == set(own["variants"]) == {
        "wrpo", "dpo", "hybrid", "constant-alpha", "linear-alpha", "sft-continued", "rft", "sources-1", "sources-2"}
    for name, values in ablation["variants"].items():
        assert values["seeds"] == [0, 1] and len(values["content_per_seed"]) == 2
        assert values["mean_reward"] == own["variants"][name]["mean_reward"]
        assert 0 <= values["tic_share"] <= 1 and values["mean_reward"] <= values["content_reward"]
    assert ablation["variants"]["linear-alpha"]["same_as"] == "wrpo"  # the demo ramps alpha: one run, not two
    text = (output / "report.md").read_text()
    assert "## Ablation (`wrpo ablate`" in text and "| sources-1 |" in text
    assert (output / ablation["folder"] / "ablation_per_category.png").read_bytes()[:4] == b"\x89PNG"
