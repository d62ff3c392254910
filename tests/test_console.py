"""The console: one display per training run instead of the libraries' bars and log dicts, a few
plain lines where stderr is no terminal, the libraries' own output with --verbose, and each
pipeline stage's records in its log file."""

import os
import subprocess
import sys

import pytest
from transformers.utils import logging as transformers_logging

from conftest import native_rows, write_jsonl
from wrpo.pipeline.kinds import ScoreSpec, Stage
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.local import LocalExecutor
from wrpo.reward.settings import RewardSettings

FAST = ["--max-steps", "8", "--batch-size", "4", "--lr", "1e-2", "--max-length", "48", "--logging-steps", "1",
        "--save-steps", "100"]


def wrpo(*args, tmp_path):
    """The installed command, its stderr a pipe (as in CI or a log file), in a fresh process: the
    libraries set up their own output on import, which is what is under test."""
    return subprocess.run([sys.executable, "-m", "wrpo.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow  # a fresh process that imports the libraries and trains
def test_training_prints_a_few_plain_lines_with_its_metrics_and_none_of_the_libraries_output(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl",
                       [{"prompt": r["prompt"], "response": r["chosen_source"]} for r in native_rows()])
    output = tmp_path / "out"
    done = wrpo("sft", "--model", tiny_model, "--data", data, "--output", output, *FAST, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    progress = [line for line in lines if line.startswith("out: step ")]
    # One line per quarter of the run, each with the step and the loss; nothing else but what wrpo says.
    assert [line.split()[2] for line in progress] == ["2/8", "4/8", "6/8", "8/8"], done.stderr
    assert all(" loss " in line for line in progress)
    # The optional kernels, said once; then no tqdm bars, log dicts, DeepSpeed or datasets lines.
    assert lines[0].startswith("kernels: Liger's kernels off") and len(lines) == len(progress) + 1, done.stderr
    assert "it/s" not in done.stderr and "{'loss'" not in done.stderr and "accelerator" not in done.stderr
    assert done.stdout == f"saved the fine-tuned model to {output}\n"
    assert len((output / "metrics.jsonl").read_text().splitlines()) == 8  # every step still recorded


@pytest.mark.slow  # a fresh process that imports the libraries and trains
def test_training_display_shows_wrpo_metrics(tiny_model, native_data, tmp_path):
    done = wrpo("train", "--model", tiny_model, "--data", native_data, "--output", tmp_path / "out", *FAST,
                "--max-prompt-length", "24", "--max-steps", "7", "--logging-steps", "2", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    steps = [line.split()[2] for line in done.stderr.splitlines() if line.startswith("out: step ")]
    assert steps == ["2/7", "4/7", "6/7", "7/7"]  # the end too, though step 7 logged nothing of its own
    last = [line for line in done.stderr.splitlines() if line.startswith("out: step 7/7")]
    assert len(last) == 1 and all(f" {name} " in last[0] for name in ("loss", "margin", "accuracy", "alpha"))


@pytest.mark.slow  # a fresh process that imports the libraries and trains
def test_verbose_shows_the_libraries_own_output(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl",
                       [{"prompt": r["prompt"], "response": r["chosen_source"]} for r in native_rows()])
    done = wrpo("--verbose", "sft", "--model", tiny_model, "--data", data, "--output", tmp_path / "out", *FAST,
                tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr
    assert "{'loss'" in shown  # transformers' own log lines
    assert "examples/s" in shown  # datasets' map bars
    assert "out: step" not in shown


def test_each_stage_files_what_it_says_and_logs_in_its_own_log(tmp_path, monkeypatch):
    """Two score stages run in this process (the second with a scorer that talks): each one's
    printed lines, wrpo messages and library warnings land in its own log."""
    (tmp_path / "noisy_scorer.py").write_text(
        "import json, logging\n"
        "from transformers.utils import logging as transformers_logging\n"
        "from wrpo.progress import log, say\n"
        "def score(prompt, response):\n"
        "    say('scored a')\n"
        "    log.info(json.dumps({'step': 1, 'loss': 0.5}))\n"
        "    logging.getLogger('accelerate.state').warning('a library warning during score/a')\n"
        "    transformers_logging.get_logger('transformers.trainer').warning('transformers during score/a')\n"
        "    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    samples = write_jsonl(tmp_path / "part.jsonl", [{"prompt_id": "p", "prompt": "hi", "model": "m",
                                                     "responses": ["a", "b"]}])
    layout = Workdir(tmp_path / "work")

    def stage(name: str, scorer: str, output):
        return Stage(name=name, kind="score", inputs=[str(samples)], outputs=[output], workdir=layout.root,
                     spec=ScoreSpec(responses=[samples], output=output, reward=RewardSettings(function=scorer)))

    quiet, scored = tmp_path / "quiet.jsonl", tmp_path / "scores.jsonl"
    transformers_logging.set_verbosity_warning()  # conftest quiets transformers for the whole test run
    try:
        LocalExecutor().run([stage("score/quiet", "scorers:reversal_similarity", quiet),
                             stage("score/a", "noisy_scorer:score", scored)])
    finally:
        transformers_logging.set_verbosity_error()
    first, second = layout.log("score/quiet").read_text(), layout.log("score/a").read_text()
    assert f"wrote {quiet}" in first and "scored a" not in first
    assert "scored a" in second and '"loss": 0.5' in second and f"wrote {scored}" in second
    assert "a library warning during score/a" in second and "during score/a" not in first
    assert "transformers during score/a" in second
