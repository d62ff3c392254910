"""Several processes on CPU (torchrun, gloo): the same run as one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import native_rows, write_jsonl

SETTINGS = ["--max-steps", "3", "--lr", "1e-2", "--beta", "0.5", "--alpha", "0.5", "--max-length", "48",
            "--max-prompt-length", "24", "--save-steps", "100", "--seed", "3"]


def free_port() -> int:
    """A loopback port nobody holds now (a fixed one may still be held by an earlier run)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_model, tmp_path):
    rows = native_rows() * 2
    for index, row in enumerate(rows):
        row["prompt_id"] = f"p{index}"
    data = write_jsonl(tmp_path / "q.jsonl", rows)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    train = ["-m", "wrpo.cli", "train", "--model", str(tiny_model), "--data", str(data), *SETTINGS]
    single = subprocess.run([sys.executable, *train, "--output", str(tmp_path / "one"), "--batch-size", "8"],
                            env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(free_port()), *train, "--output", str(tmp_path / "two"), "--batch-size", "4"],
                            env=env, capture_output=True, text=True)
    assert double.returncode == 0, double.stderr[-2000:]

    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [m["step"] for m in two] == [1, 2, 3]  # logged once, by the main process
    for key in ("loss", "rewards/margins", "rewards/accuracies", "alpha"):
        assert [m[key] for m in two] == pytest.approx([m[key] for m in one], abs=1e-4), key
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "one")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "two")
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
