"""benchmarks/train_throughput.py --smoke: both modes' code (the CUDA mode's on the CPU where there is no
GPU) on tiny points, every runner once, each in its own process."""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "benchmarks" / "train_throughput.py"
RUNNERS = {"smoke-cpu": {"wrpo", "trl-fast"},
           "smoke-cuda": {"wrpo", "naive", "trl-default", "trl-precompute", "trl-liger"}}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_smoke_run_measures_every_runner_and_prints_the_table(tmp_path):
    committed = ROOT / "benchmarks" / "train_throughput.json"
    before = digest(committed)
    output = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(BENCHMARK), "--smoke", "--output", str(output)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert digest(committed) == before

    saved = json.loads(output.read_text())
    assert set(saved["points"]) == set(RUNNERS)
    liger_runs = torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None
    for name, entry in saved["points"].items():
        expected = RUNNERS[name] - ({"trl-liger"} if not liger_runs else set())
        assert set(entry["summary"]) == expected, entry.get("not_run")
        for runner, row in entry["summary"].items():
            assert row["whole_per_s"] > 0 and row["steady_per_s"] > 0 and row["mfu"] > 0, (name, runner, row)
            assert row["peak_mb"] > 0 and row.get("gpu_peak_gib", 1) > 0, (name, runner, row)
            # The sampler's order covers the epoch: MFU counts each timed step's own examples.
            (run,) = entry["runs"][runner]
            assert sorted(run["order"]) == list(range(row["examples"]))
        if not liger_runs and name == "smoke-cuda":
            assert entry["not_run"]["trl-liger"].startswith("skipped: ")

    header = "| point | trainer | whole/s | steady/s |"
    assert header in saved["table"] and saved["table"] in done.stdout
    for name, runners in RUNNERS.items():
        for runner in runners:
            assert f"| {name} | {runner} | " in saved["table"]


@pytest.mark.parametrize("benchmark", ["train_throughput", "sample_throughput"])
def test_the_readme_shows_the_table_the_benchmark_wrote(benchmark):
    """Pasted from the benchmark's saved output (benchmarks/NAME.json, which the run writes), not retyped."""
    table = json.loads((ROOT / "benchmarks" / f"{benchmark}.json").read_text())["table"]
    assert table.strip() in (ROOT / "README.md").read_text()
