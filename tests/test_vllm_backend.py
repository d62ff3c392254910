"""`wrpo sample --backend vllm` on vLLM's CPU build (make test-engines), in a subprocess as a user runs
it: n responses per prompt, prompts fed as the very tokens the hf backend feeds, and a run killed
mid-way by SIGKILL (its engine's processes end with it) and rerun; and `wrpo eval --backend vllm`. Each
test starts vLLM's engine (about a minute on 2 cores): there are few of them."""

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from conftest import WORDS, gone, read, scorers_env, write_jsonl
from wrpo.cli import app
from wrpo.data.tokenize import encode_prompt
from wrpo.generation.sample import sample
from wrpo.generation.settings import SamplingSettings
from wrpo.modeling import load_tokenizer

pytestmark = [pytest.mark.engines, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="make test-engines installs vLLM's CPU build")]

# On a CPU: the KV cache takes this share of RAM; no compilation of the model (a minute on 2 cores);
# float32, the dtype the hf backend runs on a CPU (vLLM would take bfloat16).
ENGINE_KWARGS = json.dumps({"gpu_memory_utilization": 0.2, "enforce_eager": True, "dtype": "float32"})
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def sample_command(model, prompts, output, *flags, script=("-m", "wrpo.cli")):
    return [sys.executable, *script, "sample", "--model", str(model), "--prompts", str(prompts), "--output",
            str(output), "--backend", "vllm", "--engine-kwargs", ENGINE_KWARGS, *map(str, flags)]


def test_n_responses_per_prompt_from_the_prompt_tokens_of_encode_prompt(engine_model, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [
        *({"prompt_id": f"w{i}", "prompt": f"reverse {word}"} for i, word in enumerate(WORDS[:5])),
        {"prompt_id": "chat", "prompt": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "reverse kiwi"},
                                         {"role": "assistant", "content": "iwik"},
                                         {"role": "user", "content": "and plum?"}]}])
    record = tmp_path / "prompt_ids.jsonl"
    script = (str(Path(__file__).with_name("vllm_recording_cli.py")),)
    done = subprocess.run(sample_command(engine_model, prompts, tmp_path / "s.jsonl", "-n", 3, "--temperature", 1.0,
                                         "--max-new-tokens", 8, "--batch-size", 4, script=script),
                          env={**ENV, "WRPO_TEST_PROMPT_IDS": str(record)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read(tmp_path / "s.jsonl")
    assert sorted(row["prompt_id"] for row in rows) == sorted([*(f"w{i}" for i in range(5)), "chat"])
    assert all(len(row["responses"]) == 3 for row in rows)
    assert all(len(set(row["responses"])) > 1 for row in rows), "the n samples of a prompt are copies"
    assert rows[0]["generation"]["backend"] == "vllm"
    tokenizer = load_tokenizer(str(engine_model))
    expected = sorted(encode_prompt(tokenizer, row["prompt"])[0] for row in read(prompts))
    assert sorted(json.loads(line) for line in record.read_text().splitlines()) == expected


def test_a_run_killed_mid_way_resumes_with_every_prompt_once_and_the_hf_backends_greedy_answers(engine_model,
                                                                                               tmp_path):
    count = 200  # one prompt per batch: the run lasts long enough to be killed half-way
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt_id": f"q{i}", "prompt": f"reverse {WORDS[i % 12]}{i}"}
                                                 for i in range(count)])
    output, partial = tmp_path / "s.jsonl", tmp_path / "s.jsonl.partial"
    command = sample_command(engine_model, prompts, output, "-n", 2, "--temperature", 0, "--max-new-tokens", 8,
                             "--batch-size", 1)
    sampler = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and sampler.poll() is None and (
            not partial.exists() or partial.read_text().count("\n") < 3):
        time.sleep(0.05)
    # vLLM's engine (its EngineCore and worker), and the watchdog that ends them.
    started = {process: process.name() for process in psutil.Process(sampler.pid).children(recursive=True)}
    os.kill(sampler.pid, signal.SIGKILL)  # the wrpo process only, as kill -9 or the kernel's OOM killer would
    sampler.wait()
    written = partial.read_text().count("\n")
    assert 3 <= written < count, f"{written} rows when killed: {sampler.stderr.read()[-3000:]}"
    assert any("EngineCore" in name for name in started.values()), started
    # The watchdog's next look (within 1 s), then the engine's shutdown on SIGTERM (6-10 s, SIGKILL at 10 s).
    deadline = time.time() + 15
    while time.time() < deadline and not all(map(gone, started)):
        time.sleep(0.1)
    left = [name for process, name in started.items() if not gone(process)]
    for process in started:  # not to leave them to the next tests
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert left == [], sampler.stderr.read()[-3000:]
    resumed = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read(output)
    assert sorted(row["prompt_id"] for row in rows) == sorted(f"q{i}" for i in range(count))
    # Greedy: vLLM saw the tokens the hf backend feeds and computed what transformers computes.
    hf = {row["prompt_id"]: row["responses"] for row in read(sample(
        str(engine_model), prompts, tmp_path / "hf.jsonl",
        SamplingSettings(n=2, temperature=0, max_new_tokens=8, batch_size=16)))}
    assert {row["prompt_id"]: row["responses"] for row in rows} == hf
    assert len({tuple(answers) for answers in hf.values()}) > count // 2  # answers that tell prompts apart


def test_a_repetition_penalty_gives_the_hf_backends_greedy_answers(engine_model, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt_id": f"w{i}", "prompt": f"reverse {word}"}
                                                 for i, word in enumerate(WORDS[:8])])
    done = subprocess.run(sample_command(engine_model, prompts, tmp_path / "vllm.jsonl", "-n", 1, "--temperature", 0,
                                         "--max-new-tokens", 12, "--repetition-penalty", 1.5),
                          env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # One prompt per hf batch: generate's penalty counts a batch's padding as tokens of the prompt.
    hf, plain = ({row["prompt_id"]: row["responses"] for row in read(sample(
        str(engine_model), prompts, tmp_path / f"{name}.jsonl",
        SamplingSettings(n=1, temperature=0, max_new_tokens=12, batch_size=1, repetition_penalty=penalty)))}
        for name, penalty in (("hf", 1.5), ("plain", 1.0)))
    assert {row["prompt_id"]: row["responses"] for row in read(tmp_path / "vllm.jsonl")} == hf
    assert hf != plain, "the penalty changed no answer: the test cannot tell whether vLLM applied it"


def test_eval_answers_through_vllm_as_the_hf_backend_does(engine_model, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt_id": f"w{i}", "prompt": f"reverse {word}"}
                                                 for i, word in enumerate(WORDS[:6])])
    # The model is its own baseline: one engine start.
    command = ["eval", "--models", f"m={engine_model}", "--baseline", "m", "--prompts", str(prompts),
               "--judge", "scorers:reversal_similarity", "--max-new-tokens", "8"]
    done = subprocess.run([sys.executable, "-m", "wrpo.cli", *command, "--output", str(tmp_path / "vllm"),
                           "--backend", "vllm", "--engine-kwargs", ENGINE_KWARGS], env=scorers_env(ENV),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    local = CliRunner().invoke(app, [*command, "--output", str(tmp_path / "hf")])
    assert local.exit_code == 0, local.output
    (served,), (hf,) = ((tmp_path / where / "answers").glob("m-*.jsonl") for where in ("vllm", "hf"))
    assert read(served)[0]["generation"]["backend"] == "vllm"
    assert {row["prompt_id"]: row["responses"] for row in read(served)} == \
        {row["prompt_id"]: row["responses"] for row in read(hf)}
    assert json.loads((tmp_path / "vllm" / "report.json").read_text())["models"]["m"]["judged"] == 6
