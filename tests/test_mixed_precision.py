"""Every log-prob path in the precisions users train in on GPUs, checked on CPU: bf16 and fp16 autocast over
float32 weights, and bf16 weights (with and without autocast), against the float32 naive computation within
half-precision tolerance: log-probs, gradients, the reference pass, and whole training runs."""

import json

import pytest
import torch

from conftest import write_jsonl
from test_speedups import NAIVE, logps_and_gradients, varied_rows
from wrpo.data import QuadrupleCollator, QuadrupleEncoder, load_quadruple_dataset
from wrpo.modeling import load_causal_lm, load_tokenizer
from wrpo.training import WRPOConfig, train
from wrpo.training.reference import compute_reference_logps

LAYOUTS = {
    "naive": NAIVE,
    "chunked-head": dict(share_prompt=False, chunk_size=7, padding_free=False),
    "shared-prompt": dict(share_prompt=True, chunk_size=0, padding_free=False),
    "shared-prompt-chunked": dict(share_prompt=True, chunk_size=7, padding_free=False),
    "packed": dict(share_prompt=True, chunk_size=0, padding_free=True),
    "packed-chunked": dict(share_prompt=True, chunk_size=7, padding_free=True),
}
# (weights dtype, autocast dtype or None)
PRECISIONS = {
    "bf16-autocast": (torch.float32, torch.bfloat16),
    "fp16-autocast": (torch.float32, torch.float16),
    "bf16-weights": (torch.bfloat16, None),
    "bf16-weights-autocast": (torch.bfloat16, torch.bfloat16),
}


@pytest.fixture(scope="module")
def examples(tiny_model, tmp_path_factory):
    tokenizer = load_tokenizer(str(tiny_model))
    encoder = QuadrupleEncoder(tokenizer, max_length=96, max_prompt_length=64, top_k_sources=2)
    data = write_jsonl(tmp_path_factory.mktemp("data") / "varied.jsonl", varied_rows())
    return tokenizer, list(load_quadruple_dataset(data, encoder).examples)[:6]


@pytest.fixture(scope="module")
def float32_naive(tiny_model, examples):
    tokenizer, chosen = examples
    model = load_causal_lm(str(tiny_model), dtype=torch.float32)
    return logps_and_gradients(model, tokenizer, chosen, **NAIVE)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.float() - reference).norm() / reference.norm())


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_in_half_precision_gives_the_float32_naive_log_probs_and_gradients(
        tiny_model, examples, float32_naive, layout, precision):
    tokenizer, chosen = examples
    weights, autocast = PRECISIONS[precision]
    model = load_causal_lm(str(tiny_model), dtype=weights)
    with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        logps, counts, grads = logps_and_gradients(model, tokenizer, chosen, **LAYOUTS[layout])
    reference_logps, reference_counts, reference_grads = float32_naive
    assert logps.dtype == torch.float32  # log-probs are summed in float32 whatever the model computes in
    torch.testing.assert_close(counts, reference_counts)
    # Half precision keeps 8 (bf16) or 11 (fp16) bits: a response's summed log-prob is off by a few tenths at
    # most, while a wrong mask or position moves it by whole units.
    torch.testing.assert_close(logps, reference_logps, atol=0.5, rtol=0.02)
    for name, grad in grads.items():
        assert relative_error(grad, reference_grads[name]) < 0.1, name


@pytest.mark.parametrize("precision", ["bf16-autocast", "bf16-weights"])
def test_the_reference_pass_in_half_precision_gives_the_float32_log_probs(tiny_model, examples, precision):
    tokenizer, chosen = examples
    collator = QuadrupleCollator(tokenizer.pad_token_id)
    weights, autocast = PRECISIONS[precision]

    def reference(dtype, autocast_dtype):
        model = load_causal_lm(str(tiny_model), dtype=dtype)
        per_example = compute_reference_logps(
            model, chosen, collator, batch_size=4, device=torch.device("cpu"), chunk_size=7,
            autocast=lambda: torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None))
        return torch.tensor([value for values in per_example for value in values])

    torch.testing.assert_close(reference(weights, autocast), reference(torch.float32, None), atol=0.5, rtol=0.02)


def metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def training(output_dir, **overrides) -> WRPOConfig:
    settings = dict(output_dir=str(output_dir), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                    beta=0.5, alpha=0.5, max_length=96, max_prompt_length=64, top_k_sources=2, save_steps=100,
                    report_to="none", seed=3)
    return WRPOConfig(**{**settings, **overrides})


RUNS = {
    "defaults": {},
    "shared-prompt": dict(padding_free=False),
    "naive": dict(padding_free=False, share_prompt=False, logps_chunk_size=0, precompute_ref_logps=False),
    "activation-checkpointing": dict(activation_checkpointing=True),
    "lora": dict(lora_r=4),
    "lora-reference-every-step": dict(lora_r=4, precompute_ref_logps=False),
}


TRAINING_PRECISIONS = {
    "bf16": dict(bf16=True),
    "bf16-weights": dict(bf16=True, model_dtype="bfloat16"),
    "fp16": dict(bf16=False, fp16=True),
}


# Every run in bf16 (the GPU default); the other precisions on the runs whose paths differ most.
TRAINING_CASES = [(run, "bf16") for run in RUNS] + [
    (run, precision) for precision in ("bf16-weights", "fp16") for run in ("defaults", "naive", "lora")]


@pytest.mark.parametrize("run, precision", TRAINING_CASES)
def test_training_in_half_precision_follows_the_float32_run(tiny_model, tmp_path, run, precision):
    """`wrpo train` with bf16 on (the GPU default and the paper recipe's setting) over float32 or bf16 weights,
    or in fp16 autocast: the same first-step loss (policy = reference), then losses within half-precision
    rounding of a float32 run."""
    data = write_jsonl(tmp_path / "varied.jsonl", varied_rows())
    train(str(tiny_model), data, training(tmp_path / "fp32", bf16=False, **RUNS[run]))
    train(str(tiny_model), data, training(tmp_path / "half", **TRAINING_PRECISIONS[precision], **RUNS[run]))
    exact, half = metrics(tmp_path / "fp32"), metrics(tmp_path / "half")
    assert half[0]["loss"] == pytest.approx(0.693147, abs=1e-3)
    assert [m["loss"] for m in half] == pytest.approx([m["loss"] for m in exact], abs=0.05)
    if not run.startswith("lora"):  # a LoRA run saves its adapters alone
        weights = torch.bfloat16 if precision == "bf16-weights" else torch.float32
        assert next(load_causal_lm(str(tmp_path / "half")).parameters()).dtype == weights


@pytest.mark.slow
def test_qlora_trains_in_bf16(tmp_path):
    from wrpo.demo.tiny import save_tiny_llama

    model = save_tiny_llama(tmp_path / "llama64", hidden_size=64)  # bitsandbytes packs 64-wide blocks
    data = write_jsonl(tmp_path / "varied.jsonl", varied_rows())
    train(str(model), data, training(tmp_path / "qlora", lora_r=4, load_in_4bit=True, bf16=True))
    logged = metrics(tmp_path / "qlora")
    assert logged[0]["rewards/margins"] == pytest.approx(0, abs=1e-3) and logged[-1]["rewards/margins"] > 0


def test_sft_loads_bf16_weights_and_trains_in_bf16(tiny_model, tmp_path):
    from wrpo.training.sft import WRPOSFTConfig, sft

    rows = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": r["prompt"], "response": r["chosen_target"]}
                                                 for r in varied_rows()])
    sft(str(tiny_model), rows, WRPOSFTConfig(output_dir=str(tmp_path / "out"), max_steps=3, learning_rate=1e-2,
                                             report_to="none", bf16=True, model_dtype="bfloat16",
                                             per_device_train_batch_size=4, max_length=96))
    assert next(load_causal_lm(str(tmp_path / "out")).parameters()).dtype == torch.bfloat16
    losses = [m["loss"] for m in metrics(tmp_path / "out")]
    assert losses[-1] < losses[0]


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("run", ["defaults", "shared-prompt", "activation-checkpointing"])
def test_training_on_a_gpu_in_bf16_follows_the_float32_run(tiny_model, tmp_path, run):
    """On a GPU the packed layout goes through the varlen kernel; bf16 is the default there."""
    data = write_jsonl(tmp_path / "varied.jsonl", varied_rows())
    train(str(tiny_model), data, training(tmp_path / "fp32", bf16=False, **RUNS[run]))
    train(str(tiny_model), data, training(tmp_path / "bf16", **RUNS[run]))
    exact, half = metrics(tmp_path / "fp32"), metrics(tmp_path / "bf16")
    assert [m["loss"] for m in half] == pytest.approx([m["loss"] for m in exact], abs=0.05)


@pytest.mark.gpu
@needs_gpu
def test_liger_layer_kernels_train_like_the_plain_run(tiny_model, tmp_path):
    pytest.importorskip("liger_kernel")
    from wrpo.training import WRPOTrainer

    data = write_jsonl(tmp_path / "varied.jsonl", varied_rows())
    tokenizer = load_tokenizer(str(tiny_model))

    def run(name, **settings):
        trainer = WRPOTrainer(model=str(tiny_model), args=training(tmp_path / name, **settings),
                              train_dataset=[json.loads(line) for line in data.read_text().splitlines()],
                              processing_class=tokenizer)
        trainer.train()
        return trainer, [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    liger, liger_losses = run("liger", use_liger_kernel=True)
    _, plain_losses = run("plain", use_liger_kernel=False)  # on by default where installed
    kinds = {type(module).__name__ for module in liger.model.modules()}
    assert "LigerRMSNorm" in kinds and "LigerSwiGLUMLP" in kinds
    assert liger_losses == pytest.approx(plain_losses, abs=0.05)
