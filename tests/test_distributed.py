"""Several CPU processes (gloo) launched by `accelerate launch` with the shipped configs: the same run
as one process with the same global batch, for data parallel (ddp_cpu.yaml) and DeepSpeed ZeRO-3
(deepspeed_zero3.yaml, whose reference pass runs before DeepSpeed's engine holds the weights)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from conftest import native_rows, write_jsonl
from wrpo.pipeline.local import free_port

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"
TRAIN = ["train", "--max-steps", "3", "--lr", "1e-2", "--beta", "0.5", "--alpha", "0.5", "--max-length", "48",
         "--max-prompt-length", "24", "--save-steps", "100", "--seed", "3"]
SFT = ["sft", "--max-steps", "3", "--lr", "1e-2", "--max-length", "48", "--save-steps", "100", "--seed", "3"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}



def run_wrpo(args: list[str], launch: list[str] = ()) -> None:
    """`wrpo ARGS` in one process, or under `accelerate launch LAUNCH`."""
    prefix = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--main_process_port", str(free_port())] \
        if launch else [sys.executable]
    done = subprocess.run([*prefix, "-m", "wrpo.cli", *args], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    if launch:  # said once, by the main process, not by each
        assert done.stdout.count("saved the") == 1, done.stdout


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(one: Path, two: Path, keys: tuple[str, ...]) -> None:
    assert [m["step"] for m in metrics(two)] == [1, 2, 3]  # logged once, by the main process
    for key in keys:
        assert [m[key] for m in metrics(two)] == pytest.approx([m[key] for m in metrics(one)], abs=1e-4), key
    a, b = AutoModelForCausalLM.from_pretrained(one), AutoModelForCausalLM.from_pretrained(two)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


@pytest.fixture
def quadruples(tmp_path) -> Path:
    rows = native_rows() + native_rows()  # distinct dicts: each gets its own prompt_id
    for index, row in enumerate(rows):
        row["prompt_id"] = f"p{index}"
    return write_jsonl(tmp_path / "q.jsonl", rows)


def sft_rows(folder: Path) -> Path:
    return write_jsonl(folder / "sft.jsonl", [{"prompt": r["prompt"], "response": r["chosen_source"]}
                                              for r in native_rows() * 2])


WRPO_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "alpha")


def test_data_parallel_train_and_sft_match_one_process_with_the_same_global_batch(tiny_model, quadruples, tmp_path):
    ddp = ["--config_file", str(CONFIGS / "ddp_cpu.yaml")]
    common = [*TRAIN, "--model", str(tiny_model), "--data", str(quadruples)]
    run_wrpo([*common, "--output", str(tmp_path / "one"), "--batch-size", "8"])
    run_wrpo([*common, "--output", str(tmp_path / "two"), "--batch-size", "4"], ddp)
    assert_same_run(tmp_path / "one", tmp_path / "two", WRPO_KEYS)

    common = [*SFT, "--model", str(tiny_model), "--data", str(sft_rows(tmp_path))]
    run_wrpo([*common, "--output", str(tmp_path / "sft-one"), "--batch-size", "8"])
    run_wrpo([*common, "--output", str(tmp_path / "sft-two"), "--batch-size", "4"], ddp)
    assert_same_run(tmp_path / "sft-one", tmp_path / "sft-two", ("loss", "grad_norm"))


def zero3_launch(folder: Path) -> list[str]:
    """The shipped accelerate and DeepSpeed configs on 2 processes, with every weight split over them:
    by default ZeRO-3 keeps weights as small as a tiny model's whole on each process, and nothing would be."""
    split = json.loads((CONFIGS.parent / "deepspeed" / "zero3.json").read_text())
    split["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (folder / "zero3-split.json").write_text(json.dumps(split))
    launch = yaml.safe_load((CONFIGS / "deepspeed_zero3.yaml").read_text())
    del launch["mixed_precision"]  # the DeepSpeed file decides it ("auto": off here)
    launch.update(num_processes=2, deepspeed_config={"deepspeed_config_file": str(folder / "zero3-split.json"),
                                                     "zero3_init_flag": True})
    (folder / "zero3.yaml").write_text(yaml.safe_dump(launch))
    return ["--config_file", str(folder / "zero3.yaml")]


@pytest.mark.parametrize("lora", [[], ["--lora-r", "4", "--merge-lora"]], ids=["full", "lora-merged"])
def test_deepspeed_zero3_train_matches_one_process(tiny_model, quadruples, tmp_path, lora):
    """With the chunked output head (logps_chunk_size's default): ZeRO-3 gathers the head's weight at each
    chunk's call and reduces its gradient back to the shards."""
    common = [*TRAIN, *lora, "--model", str(tiny_model), "--data", str(quadruples)]
    run_wrpo([*common, "--output", str(tmp_path / "one"), "--batch-size", "8"])
    run_wrpo([*common, "--output", str(tmp_path / "zero3"), "--batch-size", "4"], zero3_launch(tmp_path))
    # Not rewards/accuracies: at step 2, where the policy still equals the reference, chosen > rejected is
    # decided by rounding.
    assert_same_run(tmp_path / "one", tmp_path / "zero3", ("loss", "rewards/margins", "alpha"))


def test_the_paper_recipes_wrpo_stage_bf16_under_zero3_follows_one_process(tiny_model, quadruples, tmp_path):
    """recipes/llama3-8b-ultrafeedback.yaml's WRPO settings (bf16, DeepSpeed ZeRO-3, the chunked head and the
    padding-free layout by default) on 2 CPU processes, against one process in bf16 autocast. DeepSpeed keeps
    bf16 weights (float32 masters in its optimizer) where one process autocasts over float32 weights, and the
    reference pass runs before DeepSpeed casts the weights: the runs agree within bf16 rounding."""
    common = [*TRAIN, "--bf16", "--model", str(tiny_model), "--data", str(quadruples)]
    run_wrpo([*common, "--output", str(tmp_path / "one"), "--batch-size", "8"])
    run_wrpo([*common, "--output", str(tmp_path / "zero3"), "--batch-size", "4"], zero3_launch(tmp_path))
    one, zero3 = metrics(tmp_path / "one"), metrics(tmp_path / "zero3")
    assert [m["step"] for m in zero3] == [1, 2, 3]
    assert [m["loss"] for m in zero3] == pytest.approx([m["loss"] for m in one], abs=0.01)
    # beta is 0.5 here (0.01 in the recipe): a log-prob rounded differently moves a margin 50 times as much.
    assert [m["rewards/margins"] for m in zero3] == pytest.approx([m["rewards/margins"] for m in one], abs=0.03)
    assert zero3[-1]["loss"] < zero3[0]["loss"] - 0.1  # and it learns: a broken gradient would not


def test_deepspeed_zero3_sft_matches_one_process(tiny_model, tmp_path):
    common = [*SFT, "--model", str(tiny_model), "--data", str(sft_rows(tmp_path))]
    run_wrpo([*common, "--output", str(tmp_path / "one"), "--batch-size", "8"])
    run_wrpo([*common, "--output", str(tmp_path / "zero3"), "--batch-size", "4"], zero3_launch(tmp_path))
    assert_same_run(tmp_path / "one", tmp_path / "zero3", ("loss", "grad_norm"))
