"""Recipes and `wrpo run`: every stage end to end on tiny local models, skipping what is done,
redoing what changed; the shipped paper recipe; a bad recipe named by line."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import WORDS, prompts_file, read, scorers_env
from wrpo.cli import app
from wrpo.data.records import iter_quadruples
from wrpo.demo.tiny import build_bpe_tokenizer, save_tiny_model
from wrpo.pipeline.run import recipe_status


def recipe_file(tmp_path, zoo, **wrpo):
    recipe = {
        "workdir": "work", "prompts": "prompts.jsonl",
        "sources": [{"name": "llama-char", "model": str(zoo["llama-char"])},
                    {"name": "gpt2-bpe", "model": str(zoo["gpt2-bpe"])}],
        "target": {"name": "qwen2-bpe", "model": str(zoo["qwen2-bpe"])},
        "reward": {"function": "scorers:reversal_similarity"},
        "sampling": {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "batch_size": 6},
        "split": {"sft_fraction": 0.34, "seed": 1},
        "sft": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_length": 64},
        "wrpo": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "beta": 0.5,
                 "max_length": 64, "max_prompt_length": 32, **wrpo},
    }
    prompts_file(tmp_path / "prompts.jsonl", [w + s for s in ("", "s", "x") for w in WORDS])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
def test_a_recipe_runs_end_to_end_then_skips_what_is_done_and_redoes_what_changed(zoo, tmp_path):
    recipe = recipe_file(tmp_path, zoo)
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    work = tmp_path / "work"
    quadruples = [q for _, q in iter_quadruples(work / "data" / "quadruples.jsonl")]
    assert quadruples and all(q.meta["source_models"][0] in ("llama-char", "gpt2-bpe") for q in quadruples)
    assert len(read(work / "models" / "target-sft-wrpo" / "metrics.jsonl")) == 2
    assert (work / "models" / "target-sft" / "tokenizer.json").exists()
    first = result.output.strip().splitlines()[-1]
    assert "wrpo: ran" in first and "sample/sources/llama-char: ran" in first

    again = CliRunner().invoke(app, ["run", str(recipe)])
    assert again.exit_code == 0 and again.output.strip().splitlines()[-1].count("skipped") == 10

    changed = recipe_file(tmp_path, zoo, beta=0.3)
    planned = CliRunner().invoke(app, ["run", "--plan", str(changed)]).output
    assert "wrpo: changed: would be redone (settings changed: beta)" in planned
    states = {state.name: state for state in recipe_status(changed)}
    assert states["wrpo"].state == "changed" and states["wrpo"].detail == "would be redone: settings changed: beta"
    assert {state.state for name, state in states.items() if name != "wrpo"} == {"done"}
    last = CliRunner().invoke(app, ["run", str(changed)]).output.strip().splitlines()[-1]
    assert "wrpo: redone" in last and last.count("skipped") == 9


@pytest.mark.slow
def test_an_edited_python_scorer_redoes_the_scoring_stages(zoo, tmp_path, monkeypatch):
    module = tmp_path / "edited_scorer.py"
    module.write_text("from scorers import reversal_similarity as score\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = recipe_file(tmp_path, zoo)
    recipe.write_text(recipe.read_text().replace("scorers:reversal_similarity", "edited_scorer:score"))
    assert CliRunner().invoke(app, ["run", str(recipe)]).exit_code == 0
    module.write_text("# same scores, edited source\nfrom scorers import reversal_similarity as score\n")
    states = {state.name: state for state in recipe_status(recipe)}
    assert states["score/target-sft"].state == "changed", states
    assert states["score/target-sft"].detail == "would be redone: edited_scorer:score changed"
    last = CliRunner().invoke(app, ["run", str(recipe)]).output.strip().splitlines()[-1]
    # Scores are the same, so the stages after them find their inputs unchanged.
    assert last.count("redone") == 3 and "score/target-sft: redone" in last and "wrpo: skipped" in last

    # From a shell where the scorer cannot be imported: what is recorded complete stays done, and the scoring
    # stages say they cannot be checked, and why.
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry != str(tmp_path)])
    monkeypatch.delitem(sys.modules, "edited_scorer")
    states = {state.name: state for state in recipe_status(recipe)}
    scoring = [name for name in states if name.startswith("score/")]
    assert len(scoring) == 3 and {states[name].state for name in scoring} == {"unchecked"}
    assert states["score/target-sft"].detail == ("recorded complete, not checked against its inputs: its scorer's "
                                                 "module edited_scorer cannot be imported here")
    assert {state.state for name, state in states.items() if name not in scoring} == {"done"}
    planned = CliRunner().invoke(app, ["run", "--plan", str(recipe)]).output
    assert "score/target-sft: cannot be checked here (recorded complete" in planned


def run_killed(recipe, stopped):
    """`wrpo run RECIPE` in a process of its own, killed (SIGKILL) once stopped() is true."""
    process = subprocess.Popen([sys.executable, "-m", "wrpo.cli", "run", str(recipe)], env=scorers_env(os.environ),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None and not stopped():
            time.sleep(0.01)
        assert process.poll() is None, f"wrpo run ended before it could be killed: {process.stderr.read()[-3000:]}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already: it failed
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def logged_steps(model) -> int:
    metrics = model / "metrics.jsonl"
    return metrics.read_text().count("\n") if metrics.exists() else 0


@pytest.mark.slow
def test_training_stages_killed_past_a_checkpoint_resume_to_the_models_and_losses_of_a_straight_run(zoo, tmp_path):
    """A GPT-NeoX target: transformers 5 saves its output head as embed_out and names it lm_head in memory. Each
    training stage is killed once its first checkpoint is complete (a step logged after it), and the SFT stage's
    next checkpoint is left as a kill in the middle of its save leaves it: its weights written, not its state."""
    corpus = [f"reverse {w} {w[::-1]}" for w in WORDS * 5]
    target = save_tiny_model(tmp_path / "neox-bpe", build_bpe_tokenizer(corpus, 280), "gpt_neox", seed=3)
    runs = {}
    for name in ("straight", "killed"):
        (tmp_path / name).mkdir()
        recipe = recipe_file(tmp_path / name, zoo, max_steps=12, save_steps=3)
        settings = yaml.safe_load(recipe.read_text())
        settings["target"] = {"name": "neox-bpe", "model": str(target)}
        settings["sft"].update(max_steps=24, save_steps=4)
        recipe.write_text(yaml.safe_dump(settings))
        runs[name] = (recipe, tmp_path / name / "work" / "models")
    assert CliRunner().invoke(app, ["run", str(runs["straight"][0])]).exit_code == 0

    recipe, models = runs["killed"]
    sft, wrpo = models / "target-sft", models / "target-sft-wrpo"
    run_killed(recipe, lambda: logged_steps(sft) > 4)
    assert (sft / "checkpoint-4" / "trainer_state.json").exists() and not (sft / "wrpo-finished.json").exists()
    cut_short = sft / f"checkpoint-{max(int(p.name.split('-')[1]) for p in sft.glob('checkpoint-*')) + 4}"
    cut_short.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(sft / "checkpoint-4" / name, cut_short / name)
    run_killed(recipe, lambda: logged_steps(wrpo) > 3)
    assert (wrpo / "checkpoint-3" / "trainer_state.json").exists() and not (wrpo / "wrpo-finished.json").exists()
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "sft: skipped" in result.output and "wrpo: resumed" in result.output

    straight = runs["straight"][1]
    for stage in ("target-sft", "target-sft-wrpo"):
        expected, resumed = (load_file(folder / stage / "model.safetensors") for folder in (straight, models))
        assert expected.keys() == resumed.keys()
        for name, weight in expected.items():
            torch.testing.assert_close(resumed[name], weight, atol=1e-6, rtol=1e-5, msg=f"{stage}: {name}")
        expected, resumed = ([json.loads(line) for line in (folder / stage / "metrics.jsonl").read_text().splitlines()]
                             for folder in (straight, models))
        assert [m["step"] for m in resumed] == [m["step"] for m in expected]
        assert [m["loss"] for m in resumed] == pytest.approx([m["loss"] for m in expected], abs=1e-6)


def test_top_k_sources_reaches_training(zoo, tmp_path):  # a mismatch: test_settings.py
    from wrpo.pipeline.plan import plan
    from wrpo.pipeline.recipe import load_recipe

    path = recipe_file(tmp_path, zoo)
    path.write_text(path.read_text() + "pairs: {top_k_sources: 2}\n")
    recipe = load_recipe(path)
    stages = {stage.name: stage for stage in plan(recipe)}
    assert stages["wrpo"].settings["top_k_sources"] == 2


def test_the_shipped_paper_recipe_is_valid(tmp_path):
    """Validated, not run: its models are far too large for this machine."""
    import dataclasses
    from pathlib import Path

    from wrpo.pipeline.plan import plan
    from wrpo.pipeline.recipe import load_recipe
    from wrpo.training.config import WRPOConfig
    from wrpo.training.sft import WRPOSFTConfig

    path = Path(__file__).parent.parent / "recipes" / "llama3-8b-ultrafeedback.yaml"
    recipe = load_recipe(path)
    assert len(recipe.sources) == 10 and recipe.target.model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert recipe.reward.model == "RLHFlow/ArmoRM-Llama3-8B-v0.1" and recipe.reward.trust_remote_code
    assert (recipe.sampling.n, recipe.sampling.temperature, recipe.sampling.top_p) == (5, 0.8, 0.95)
    assert all(source.backend == "vllm" for source in recipe.sources)
    wrpo, sft = recipe.wrpo, recipe.sft
    assert (wrpo["beta"], wrpo["alpha"], wrpo["alpha_schedule"], wrpo["learning_rate"]) == (0.01, 0.1, "linear", 3e-7)
    assert ((wrpo["max_length"], wrpo["max_prompt_length"], sft["learning_rate"], sft["max_length"])
            == (2048, 1800, 7e-6, 2048))
    assert wrpo["per_device_train_batch_size"] * wrpo["gradient_accumulation_steps"] * 8 == 128
    assert sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] * 8 == 128
    for section, config_class in ((wrpo, WRPOConfig), (sft, WRPOSFTConfig)):
        assert set(section) <= {f.name for f in dataclasses.fields(config_class)}
    # Every stage can be planned here, on a machine without the GPUs its bf16 and DeepSpeed settings need:
    # those are checked by the machine that trains (its plan on 8 GPUs: test_scale.py).
    assert [stage.name for stage in plan(recipe)][-3:] == ["score/target-sft", "build-pairs", "wrpo"]


@pytest.mark.slow
def test_a_fusechat_shaped_recipe_runs_end_to_end(zoo, tmp_path):
    """Same-source pairs without target samples and the length-normalised loss, through every stage."""
    recipe = recipe_file(tmp_path, zoo, loss="ln_dpo", beta=10.0)
    data = yaml.safe_load(recipe.read_text())
    data["pairs"] = {"same_source": True, "min_reward_gap": 0.0, "max_reward_gap": 1.0, "target_samples": False}
    recipe.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "sample/target-sft" not in result.output.strip().splitlines()[-1]
    quadruples = [q for _, q in iter_quadruples(tmp_path / "work" / "data" / "quadruples.jsonl")]
    assert quadruples and all(q.chosen_target == q.chosen_source[0] for q in quadruples)
    assert all(q.meta["rejected_model"] == q.meta["source_models"][0] for q in quadruples)
    assert len(read(tmp_path / "work" / "models" / "target-sft-wrpo" / "metrics.jsonl")) == 2


def test_a_bad_recipe_names_the_file_line_and_setting(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("workdir: w\nprompts: p.jsonl\nsources:\n  - {name: a, model: m}\n  - name: b\n    model: m\n"
                      "    backend: tgi\ntarget: {name: t, model: m}\n"
                      "reward: {function: 'scorers:reversal_similarity'}\n")
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {recipe}:7: sources.1.backend: Input should be 'hf', 'vllm' or 'openai'\n"
