"""`wrpo eval` checks every argument before any model answers, and takes the baseline as a label,
a folder or label=path."""

import json

import pytest
from typer.testing import CliRunner

from conftest import WORDS, write_jsonl
from wrpo.cli import app
from wrpo.demo.tiny import build_char_tokenizer, save_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("eval-args") / "char", build_char_tokenizer(), "llama", seed=4)


def evaluate(model, tmp_path, *extra):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"reverse {w}"} for w in WORDS[:4]])
    return CliRunner().invoke(app, ["eval", "--models", f"mine={model}", "--prompts", str(prompts), "--output",
                                    str(tmp_path / "out"), "--max-new-tokens", "4", *extra])


def test_the_baseline_may_be_label_equals_path(model, tmp_path):
    result = evaluate(model, tmp_path, "--baseline", f"base={model}", "--judge", "scorers:reversal_similarity")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["baseline"] == "base" and set(report["comparisons"]) == {"mine"}


@pytest.mark.parametrize("extra, expected", [
    (["--baseline", "base=no-such-folder/", "--judge", "scorers:reversal_similarity"],
     "no-such-folder/: model folder does not exist"),
    (["--baseline", "mine", "--judge", "no_such_module:score"], "cannot import scorer module"),
    (["--baseline", "mine", "--judge", "scorers:fails_on_grape", "--export", "alpaca_eval,helm"],
     "--export knows alpaca_eval, arena_hard, mt_bench, not helm"),
])
def test_a_bad_argument_stops_before_any_model_answers(model, tmp_path, extra, expected):
    result = evaluate(model, tmp_path, *extra)
    assert result.exit_code == 2 and expected in result.stderr, result.output
    assert not (tmp_path / "out").exists()  # nothing was sampled


def test_every_problem_is_reported_at_once(model, tmp_path):
    result = evaluate(model, tmp_path, "--baseline", "base=gone/", "--judge", "scorers:nan_on_grape",
                      "--export", "helm")
    assert result.exit_code == 2
    assert "2 problems" in result.stderr and "gone/" in result.stderr and "helm" in result.stderr
