"""`wrpo train` through the command line: both data formats, YAML config, and one-line errors with exit 2."""

import json
import os
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from conftest import native_rows
from wrpo.cli import app

FAST = ["--max-steps", "3", "--batch-size", "4", "--lr", "1e-2", "--beta", "0.5", "--alpha", "0.5",
        "--max-length", "48", "--max-prompt-length", "24", "--save-steps", "2"]

def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result

def metrics(output):
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]

@pytest.mark.parametrize("data_fixture", ["native_data", "release_data"])
def test_train_writes_a_loadable_model_tokenizer_and_metrics(tiny_model, tmp_path, request, data_fixture):
    data = request.getfixturevalue(data_fixture)
    output = tmp_path / "out"
    result = run("train", "--model", tiny_model, "--data", data, "--output", output, *FAST)
    assert result.exit_code == 0, result.output
    lines = metrics(output)
    assert [m["step"] for m in lines] == [1, 2, 3]
    for line in lines:
        assert {"step", "alpha", "loss", "rewards/margins", "rewards/accuracies"} <= set(line)
    assert [m["alpha"] for m in lines] == pytest.approx([0.0, 0.5 / 3, 1 / 3])
    AutoModelForCausalLM.from_pretrained(output)
    assert AutoTokenizer.from_pretrained(output).chat_template is not None

def test_yaml_config_sets_every_flag_and_the_command_line_overrides_it(tiny_model, native_data, tmp_path):
    config = tmp_path / "wrpo.yaml"
    config.write_text(f"model: {tiny_model}\ndata: {native_data}\noutput: {tmp_path / 'out'}\n"
                      "max-steps: 2\nbatch_size: 4\nlr: 1e-2\nbeta: 0.5\nalpha: 0.8\nalpha_schedule: constant\n"
                      "max_length: 48\nmax_prompt_length: 24\nwarmup_steps: 0\n")
    result = run("train", "--config", config, "--alpha", "0.4")
    assert result.exit_code == 0, result.output
    lines = metrics(tmp_path / "out")
    assert [m["alpha"] for m in lines] == [0.4, 0.4]
    assert lines[0]["learning_rate"] == pytest.approx(1e-2)  # from YAML, with YAML's warmup_steps 0

def snapshot(folder):
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_rerunning_a_finished_run_leaves_its_folder_untouched_and_a_longer_one_resumes(tiny_model, native_data,
                                                                                       tmp_path):
    output = tmp_path / "out"
    command = ["train", "--model", tiny_model, "--data", native_data, "--output", output, *FAST]
    assert run(*command).exit_code == 0
    before = snapshot(output)
    again = run(*command)
    assert again.exit_code == 0 and "already finished" in again.output
    assert snapshot(output) == before
    longer = run(*command, "--max-steps", "4")
    assert longer.exit_code == 0
    assert "resuming from" in longer.output and "checkpoint-3" in longer.output
    assert [m["step"] for m in metrics(output)] == [1, 2, 3, 4]


@pytest.mark.parametrize("case, expected", [
    ("missing_data", "missing.jsonl: file does not exist"),
    ("not_json", "bad.jsonl:2: not valid JSON"),
    ("missing_field", "bad.jsonl:3: missing field 'rejected'"),
    ("empty_response", "bad.jsonl:1: 'chosen_source' is an empty response"),
    ("missing_model", "no-such-model: model folder does not exist"),
    ("unknown_setting", "wrpo.yaml:2: unknown setting 'temperature'"),
    ("bad_value", "alpha must lie in [0, 1], got 3.0"),
])
def test_bad_input_ends_with_one_line_naming_the_file_and_exit_status_2(tiny_model, tmp_path, case, expected):
    rows = [json.dumps(r) for r in native_rows(3)]
    data, model, extra = tmp_path / "bad.jsonl", tiny_model, []
    if case == "missing_data":
        data = tmp_path / "missing.jsonl"
    elif case == "not_json":
        rows[1] = rows[1][:-5]
    elif case == "missing_field":
        rows[2] = json.dumps({k: v for k, v in native_rows(3)[2].items() if k != "rejected"})
    elif case == "empty_response":
        rows[0] = json.dumps({**native_rows(1)[0], "chosen_source": ""})
    elif case == "missing_model":
        model = tmp_path / "no-such-model"
    elif case == "unknown_setting":
        (tmp_path / "wrpo.yaml").write_text("beta: 0.1\ntemperature: 0.7\n")
        extra = ["--config", tmp_path / "wrpo.yaml"]
    elif case == "bad_value":
        extra = ["--alpha", "3"]
    (tmp_path / "bad.jsonl").write_text("\n".join(rows) + "\n")
    result = run("train", "--model", model, "--data", data, "--output", tmp_path / "out", *extra)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and expected in result.stderr

@pytest.mark.parametrize("command", [[], ["train"], ["sft"], ["sample"], ["score"], ["build"], ["build", "sft"],
                                     ["build", "pairs"], ["run"], ["demo"], ["eval"], ["merge"]])
def test_every_command_has_help(command):
    shown = run(*command, "--help")
    assert shown.exit_code == 0 and "Usage" in shown.output


@pytest.mark.slow
def test_the_installed_command_prints_a_one_line_error_without_traceback(tmp_path):
    failed = subprocess.run([sys.executable, "-m", "wrpo.cli", "train", "--model", str(tmp_path / "nope"),
                             "--data", "x.jsonl", "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert failed.returncode == 2
    assert failed.stderr == f"error: {tmp_path / 'nope'}: model folder does not exist\n"


def test_missing_required_flag_is_named(tmp_path):
    result = run("train", "--data", "x.jsonl", "--output", tmp_path)
    assert result.exit_code == 2 and "--model is required" in result.stderr
