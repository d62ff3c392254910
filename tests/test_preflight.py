"""`wrpo run` checks the recipe's inputs before any stage runs and reports every problem at once."""

import pytest
import yaml
from typer.testing import CliRunner

from conftest import WORDS, write_jsonl
from wrpo.cli import app
from wrpo.demo.tiny import build_char_tokenizer, save_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    good = save_tiny_model(root / "good", build_char_tokenizer(), "llama", seed=1)
    weights_only = root / "weights-only"  # a folder without its tokenizer
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (weights_only / name).write_bytes((good / name).read_bytes())
    return {"good": good, "weights-only": weights_only}


def recipe(tmp_path, models, source: str, scorer: str):
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"reverse {w}"} for w in WORDS[:4]])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "workdir": "work", "prompts": "prompts.jsonl",
        "sources": [{"name": "a", "model": str(models[source])}, {"name": "b", "model": str(models["good"])}],
        "target": {"name": "t", "model": str(models["good"])}, "reward": {"function": scorer},
        "sampling": {"n": 2, "max_new_tokens": 4}, "sft": {"max_steps": 1}, "wrpo": {"max_steps": 1}}))
    return path


@pytest.mark.parametrize("source, scorer, expected", [
    ("weights-only", "scorers:reversal_similarity", ["weights-only: no tokenizer could be loaded"]),
    ("good", "no_such_module:score", ["no_such_module:score: cannot import scorer module"]),
    ("good", "scorers:always_nan", ["scorers:always_nan: the scorer returned nan for a test response"]),
    ("weights-only", "scorers:no_such_function", ["2 problems", "no tokenizer could be loaded",
                                                  "module scorers has no function 'no_such_function'"]),
])
def test_a_broken_input_stops_the_run_before_any_stage(models, tmp_path, source, scorer, expected):
    result = CliRunner().invoke(app, ["run", str(recipe(tmp_path, models, source, scorer))])
    assert result.exit_code == 2, result.output
    assert all(text in result.stderr for text in expected), result.stderr
    assert not (tmp_path / "work" / "samples").exists()
