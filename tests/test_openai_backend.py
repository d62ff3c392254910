"""`wrpo sample --backend openai` against a real OpenAI-compatible server on loopback: transformers'
own `transformers serve` with a tiny local model (it ignores `n`, which the backend must make up for)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import WORDS, write_jsonl
from wrpo.generation.sample import sample
from wrpo.generation.settings import BackendSettings, SamplingSettings

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")
pytest.importorskip("openai")
pytestmark = [pytest.mark.server, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model, port):
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", str(model),
                               "--port", str(port)],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise RuntimeError("transformers serve did not start")


def stop(server):
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def prompts(path, count):
    return write_jsonl(path, [{"prompt_id": f"q{i}", "prompt": f"reverse {WORDS[i % len(WORDS)]}{i}"}
                              for i in range(count)])


def test_n_samples_per_prompt_from_a_server_that_ignores_n(tiny_model, tmp_path):
    port = free_port()
    server = start_server(tiny_model, port)
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
    server = start_server(tiny_model, port)
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
        server = start_server(tiny_model, port)
        assert sampler.wait(timeout=300) == 0, sampler.stderr.read()[-2000:]
    finally:
        stop(server)
        if sampler.poll() is None:
            sampler.kill()
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["prompt_id"] for row in rows) == sorted(f"q{i}" for i in range(40))
    assert all(len(row["responses"]) == 2 for row in rows)
