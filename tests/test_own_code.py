"""Reward and judge models that ship their own code (ArmoRM, the paper's reward model), as a tiny model saved the
way such checkpoints are (tests/own_code_model.py): with --trust-remote-code they score in `wrpo score` (sharded
too), judge in `wrpo eval` and pass the preflight of `wrpo run`, their `.score` being the reward; without it each
of those stops in one line saying how to allow it, and the model's code never runs."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import TINY, WORDS, prompts_file, read
from own_code_model import save_gated_reward_model
from test_recipe import recipe_file
from wrpo.cli import app
from wrpo.generation.sample import sample
from wrpo.pipeline.preflight import check_recipe_inputs
from wrpo.pipeline.recipe import load_recipe

REFUSED = ("the model runs its own code (modeling_gated_reward.py, named by config.json's auto_map); allow it "
           "with --trust-remote-code (in a recipe: reward.trust_remote_code: true)")


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    return save_gated_reward_model(tmp_path_factory.mktemp("models") / "gated-reward")


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """A file the model's module writes to whenever it is imported."""
    path = tmp_path / "imported.txt"
    monkeypatch.setenv("GATED_REWARD_IMPORTED", str(path))
    return path


@pytest.fixture
def samples(zoo, tmp_path):
    return sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl", WORDS[:5]), tmp_path / "s.jsonl", TINY)


def score_command(samples, gated, output, *flags):
    return CliRunner().invoke(app, ["score", "--responses", str(samples), "--reward-model", str(gated),
                                    "--output", str(output), "--batch-size", "3", *flags])


def test_its_score_is_the_reward_with_the_flag_and_sharded_scoring_gives_the_same_rows(samples, gated, tmp_path,
                                                                                          marker):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = score_command(samples, gated, tmp_path / "scored.jsonl", "--trust-remote-code")
    assert result.exit_code == 0, result.output
    assert marker.exists()  # its code ran, as allowed
    model = AutoModelForSequenceClassification.from_pretrained(gated, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(gated)
    rows = read(tmp_path / "scored.jsonl")
    for row in rows:
        for response, value in zip(row["responses"], row["scores"], strict=True):
            text = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                                  {"role": "assistant", "content": response}], tokenize=False)
            with torch.no_grad():
                output = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False))
            assert output.rewards.shape == (1, 3) and output.gating_output.sum().item() == pytest.approx(1.0)
            assert value == pytest.approx(output.score.item(), abs=1e-4)

    parts = [tmp_path / f"part{index}.jsonl" for index in range(2)]
    for index, part in enumerate(parts):
        assert score_command(samples, gated, part, "--trust-remote-code", "--shard", f"{index}/2").exit_code == 0
    merged = CliRunner().invoke(app, ["merge", *map(str, parts), "--output", str(tmp_path / "merged.jsonl")])
    assert merged.exit_code == 0, merged.output
    by_id = {row["prompt_id"]: row for row in rows}
    assert {row["prompt_id"]: row for row in read(tmp_path / "merged.jsonl")} == by_id


def test_without_the_flag_score_eval_and_run_stop_in_one_line_and_its_code_never_runs(zoo, samples, gated,
                                                                                        tmp_path, marker):
    # In a fresh process: in this one, transformers may hold the module from another test already.
    refused = subprocess.run([sys.executable, "-m", "wrpo.cli", "score", "--responses", str(samples),
                              "--reward-model", str(gated), "--output", str(tmp_path / "scored.jsonl")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr == f"error: {gated}: {REFUSED}\n"
    assert not marker.exists()

    result = CliRunner().invoke(app, ["eval", "--models", str(zoo["llama-char"]), "--baseline", str(zoo["gpt2-bpe"]),
                                      "--prompts", str(tmp_path / "p.jsonl"), "--judge", str(gated),
                                      "--output", str(tmp_path / "eval")])
    assert result.exit_code == 2 and result.stderr == f"error: {gated}: {REFUSED}\n"

    recipe = recipe_file(tmp_path, zoo)
    data = yaml.safe_load(recipe.read_text())
    data["reward"] = {"model": str(gated)}
    recipe.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2 and result.stderr == f"error: {gated}: {REFUSED}\n"
    assert not marker.exists() and not (tmp_path / "work" / "samples").exists()

    data["reward"]["trust_remote_code"] = True  # allowed: the preflight loads its config and tokenizer
    recipe.write_text(yaml.safe_dump(data))
    check_recipe_inputs(load_recipe(recipe))


def test_it_judges_wrpo_eval_with_the_flag(zoo, gated, tmp_path):
    prompts = prompts_file(tmp_path / "p.jsonl", WORDS[:4])
    result = CliRunner().invoke(app, ["eval", "--models", str(zoo["llama-char"]), "--baseline", str(zoo["gpt2-bpe"]),
                                      "--prompts", str(prompts), "--judge", str(gated), "--trust-remote-code",
                                      "--output", str(tmp_path / "eval"), "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert all(entry["judged"] == 4 for entry in report["models"].values())
