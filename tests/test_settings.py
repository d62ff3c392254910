"""Each setting defined once: flags, YAML keys, recipe sections and the README's table all come from the
config dataclasses' fields, and a bad key or value names its file, line and (for a typo) the nearest key."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wrpo.cli import app
from wrpo.errors import InputError
from wrpo.training.config import WRPOConfig
from wrpo.training.settings import flag_table, flags_of
from wrpo.training.sft import WRPOSFTConfig

README = Path(__file__).parent.parent / "README.md"
RECIPE = "workdir: w\nprompts: p.jsonl\nsources: [{name: a, model: m}]\ntarget: {name: t, model: m}\n" \
         "reward: {function: 'scorers:reversal_similarity'}\n"


def test_every_wrpo_config_field_with_help_is_a_train_flag_with_that_help():
    flags = {flag.field: flag for flag in flags_of(WRPOConfig)}
    for name in ("beta", "alpha", "alpha_schedule", "loss", "gamma", "label_smoothing", "max_prompt_length",
                 "top_k_sources", "source_weighting", "lora_r", "merge_lora", "load_in_4bit", "share_prompt"):
        assert flags[name].help.startswith(WRPOConfig.__dataclass_fields__[name].metadata["help"].split(". ")[0])
    assert flags["learning_rate"].name == "lr" and "[3e-07]" in flags["learning_rate"].help
    assert {flag.name for flag in flags_of(WRPOSFTConfig)} >= {"lr", "batch_size", "grad_accum", "max_steps", "seed"}
    assert "[7e-06]" in {flag.name: flag for flag in flags_of(WRPOSFTConfig)}["lr"].help


def test_help_shows_the_fields_help_and_defaults():
    shown = CliRunner().invoke(app, ["train", "--help"])
    assert shown.exit_code == 0
    assert "--alpha-schedule" in shown.output and "--load-in-4bit / --no-load-in-4bit" in shown.output
    assert "[0.01]" in shown.output  # beta's default, read from WRPOConfig


@pytest.mark.parametrize("config_class, heading", [(WRPOConfig, "wrpo train"), (WRPOSFTConfig, "wrpo sft")])
def test_the_readme_flag_tables_are_the_generated_ones(config_class, heading):
    assert flag_table(config_class) in README.read_text(), f"README's {heading} flag table is stale: " \
        f"paste wrpo.training.settings.flag_table({config_class.__name__})"


@pytest.mark.parametrize("yaml_text, expected", [
    ("beta: 0.1\nlearning_rat: 1e-3\n", "wrpo.yaml:2: unknown setting 'learning_rat' (did you mean 'learning_rate'?)"),
    ("beta: 0.1\nalpha: 3\n", "wrpo.yaml:2: alpha must lie in [0, 1], got 3"),
    ("lr: fast\n", "wrpo.yaml:1: 'lr' must be a number, got 'fast'"),
    ("loss: ipo\nlabel_smoothing: 0.1\n", "wrpo.yaml:2: label_smoothing does not apply to the ipo form (a squared "
                                          "loss, no preference to flip): leave it at 0"),
])
def test_a_bad_config_key_or_value_names_its_line(tiny_model, native_data, tmp_path, yaml_text, expected):
    (tmp_path / "wrpo.yaml").write_text(yaml_text)
    result = CliRunner().invoke(app, ["train", "--model", str(tiny_model), "--data", str(native_data),
                                      "--output", str(tmp_path / "out"), "--config", str(tmp_path / "wrpo.yaml")])
    assert result.exit_code == 2 and result.stderr == f"error: {tmp_path / expected}\n"


@pytest.mark.parametrize("section, expected", [
    ("sft:\n  lr: 1e-5\n  learning_rat: 1e-5\n",
     "recipe.yaml:9: unknown setting 'learning_rat' (did you mean 'learning_rate'?)"),
    ("wrpo:\n  beta: -1\n", "recipe.yaml:8: beta must be positive, got -1"),
    ("pairs: {top_k_sources: 2}\nwrpo:\n  top_k_sources: 3\n",
     "recipe.yaml:9: wrpo.top_k_sources (3) differs from pairs.top_k_sources (2)"),
])
def test_a_recipe_training_section_is_checked_when_the_recipe_loads(tmp_path, section, expected):
    from wrpo.pipeline.recipe import load_recipe

    (tmp_path / "recipe.yaml").write_text(RECIPE + "split: {seed: 1}\n" + section)
    with pytest.raises(InputError) as raised:
        load_recipe(tmp_path / "recipe.yaml")
    assert str(raised.value).startswith(str(tmp_path / expected))


def test_recipe_sections_take_flag_names_and_machine_settings_wait_for_the_training_machine(tmp_path):
    from wrpo.pipeline.recipe import load_recipe

    (tmp_path / "recipe.yaml").write_text(RECIPE + "sft: {lr: 1e-5, max-steps: 3}\nwrpo: {bf16: true, beta: 0.2}\n")
    recipe = load_recipe(tmp_path / "recipe.yaml")  # bf16 on a machine without a GPU: checked when training starts
    assert recipe.sft == {"learning_rate": 1e-5, "max_steps": 3}
    assert recipe.wrpo == {"bf16": True, "beta": 0.2, "top_k_sources": 1}
