"""WRPOTrainer on a tiny Llama: log-probs, alpha over steps, the frozen reference, resume, evaluation."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from wrpo.data import QuadrupleEncoder, load_quadruple_dataset
from wrpo.modeling import load_causal_lm, load_tokenizer
from wrpo.stop_request import STOP_FILE_VARIABLE, StopRequested
from wrpo.training import WRPOConfig, WRPOTrainer, train


def config(output_dir, **overrides):
    settings = dict(output_dir=str(output_dir), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
                    beta=0.5, alpha=0.6, max_length=48, max_prompt_length=24, save_steps=2, disable_tqdm=True,
                    report_to="none", seed=7)
    return WRPOConfig(**{**settings, **overrides})


def read_metrics(output_dir):
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_moves_the_policy_keeps_the_reference_frozen_and_logs_the_alpha_ramp(tiny_model, native_data,
                                                                                      tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    dataset = load_quadruple_dataset(native_data, QuadrupleEncoder(tokenizer, 48, 24))
    policy = load_causal_lm(str(tiny_model), dtype=torch.float32)
    start = {name: p.detach().clone() for name, p in policy.named_parameters()}
    trainer = WRPOTrainer(model=policy, args=config(tmp_path / "out", precompute_ref_logps=False),
                          train_dataset=dataset, processing_class=tokenizer)
    trainer.train()

    assert any(not torch.equal(p, start[name]) for name, p in trainer.model.named_parameters())
    for name, p in trainer.ref_model.named_parameters():
        assert torch.equal(p, start[name]) and p.grad is None and not p.requires_grad

    metrics = read_metrics(tmp_path / "out")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert [m["alpha"] for m in metrics] == pytest.approx([0.6 * t / 4 for t in range(4)])
    # Step 1 runs with policy == reference: every reward is 0 and the loss is log 2.
    assert metrics[0]["loss"] == pytest.approx(0.6931, abs=1e-4) and metrics[0]["rewards/margins"] == 0
    assert metrics[-1]["rewards/margins"] > 0
    for key in ("rewards/source_chosen", "rewards/target_chosen", "rewards/chosen", "rewards/rejected",
                "rewards/accuracies", "logps/source_chosen", "logps/target_chosen", "logps/rejected"):
        assert key in metrics[-1]

    evaluation = trainer.evaluate(dataset)
    assert evaluation["eval_rewards/margins"] > 0 and evaluation["eval_loss"] < 0.6931


class CrashAt(TrainerCallback):
    """Kills a run after `step` is logged, past its last checkpoint."""

    def __init__(self, step):
        self.step = step

    def on_log(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_a_crashed_run_resumes_to_the_same_model_metrics_and_alpha_as_an_uninterrupted_one(tiny_model, native_data,
                                                                                           tmp_path):
    # 12 quadruples, 4 a step: 3 steps an epoch; the checkpoint at step 4 is one step into the second epoch,
    # whose order (grouped by length) the resumed run must draw again.
    settings = {"max_steps": 7, "save_steps": 4}
    train(str(tiny_model), native_data, config(tmp_path / "straight", **settings))
    with pytest.raises(KeyboardInterrupt):
        train(str(tiny_model), native_data, config(tmp_path / "resumed", **settings), callbacks=[CrashAt(5)])
    assert [m["step"] for m in read_metrics(tmp_path / "resumed")] == [1, 2, 3, 4, 5]
    train(str(tiny_model), native_data, config(tmp_path / "resumed", **settings))

    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4, 5, 6, 7]
    assert [m["alpha"] for m in resumed] == [m["alpha"] for m in straight]
    assert [m["loss"] for m in resumed] == pytest.approx([m["loss"] for m in straight], abs=1e-5)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "straight")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "resumed")
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)


class AskToStopAt(TrainerCallback):
    """Asks the run to stop (wrpo.stop_request) as a scheduler's warning would, during step `step`."""

    def __init__(self, step, path):
        self.step, self.path = step, path

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.path.touch()


def test_a_run_asked_to_stop_saves_at_that_step_and_resumes_to_the_uninterrupted_run(tiny_model, native_data,
                                                                                     tmp_path, monkeypatch):
    settings = {"max_steps": 7, "save_steps": 100}  # no checkpoint but the one the stop makes
    train(str(tiny_model), native_data, config(tmp_path / "straight", **settings))
    stop = tmp_path / "stop"
    monkeypatch.setenv(STOP_FILE_VARIABLE, str(stop))
    with pytest.raises(StopRequested, match="at step 5 of 7"):
        train(str(tiny_model), native_data, config(tmp_path / "resumed", **settings), callbacks=[AskToStopAt(5, stop)])
    assert [path.name for path in (tmp_path / "resumed").glob("checkpoint-*")] == ["checkpoint-5"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # stopped, not finished
    stop.unlink()
    train(str(tiny_model), native_data, config(tmp_path / "resumed", **settings))

    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [m["loss"] for m in resumed] == pytest.approx([m["loss"] for m in straight], abs=1e-5)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "straight")
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "resumed")
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)


def test_an_explicit_reference_model_is_used(tiny_model, tiny_model_without_template, native_data, tmp_path):
    # A reference that differs from the policy gives non-zero rewards from the first step.
    train(str(tiny_model), native_data, config(tmp_path / "out", max_steps=1),
          ref_model=str(tiny_model_without_template))
    assert read_metrics(tmp_path / "out")[0]["rewards/rejected"] != 0


@pytest.mark.parametrize("loss", ["simpo", "ipo", "ln_dpo"])
def test_other_forms_train(tiny_model, native_data, tmp_path, loss):
    train(str(tiny_model), native_data,
          config(tmp_path / loss, loss=loss, max_steps=3, beta={"simpo": 2.0, "ipo": 0.1, "ln_dpo": 10.0}[loss]))
    metrics = read_metrics(tmp_path / loss)
    assert len(metrics) == 3 and all(m["loss"] == m["loss"] for m in metrics)  # no NaN
    assert metrics[-1]["loss"] < metrics[0]["loss"]


def test_config_rejects_bad_settings(tmp_path):
    for overrides, message in [({"alpha": 1.5}, "alpha must lie"), ({"loss": "kto"}, "loss must be one of"),
                               ({"alpha_schedule": "cosine"}, "alpha_schedule"), ({"beta": 0}, "beta must be positive"),
                               ({"max_prompt_length": 48}, "must be below max_length"),
                               ({"max_prompt_length": 0}, "max_prompt_length must be at least 1")]:
        with pytest.raises(ValueError, match=message):
            config(tmp_path, **overrides)


@pytest.mark.parametrize("precompute", [True, False])
def test_lora_trains_only_adapters_against_the_base_with_adapters_disabled(tiny_model, native_data, tmp_path,
                                                                           precompute):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    train(str(tiny_model), native_data, config(out, lora_r=4, lora_target_modules="q_proj,v_proj",
                                               precompute_ref_logps=precompute))
    assert (out / "adapter_config.json").exists()
    first = read_metrics(out)[0]
    assert first["rewards/margins"] == 0 and first["loss"] == pytest.approx(0.6931, abs=1e-4)
    assert read_metrics(out)[-1]["rewards/margins"] > 0

    merged = tmp_path / "merged"
    train(str(tiny_model), native_data, config(merged, lora_r=4, merge_lora=True))
    assert not (merged / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tuned = AutoModelForCausalLM.from_pretrained(merged)
    changed = {name for (name, p), q in zip(base.named_parameters(), tuned.parameters(), strict=True)
               if not torch.equal(p, q)}
    assert changed and all("proj" in name for name in changed)  # adapters merged into linear layers only


@pytest.mark.parametrize("checkpointing", [False, True])
def test_qlora_trains_adapters_on_a_4bit_base_and_merges_them_into_full_precision_weights(native_data, tmp_path,
                                                                                          checkpointing):
    from transformers import AutoModelForCausalLM

    from wrpo.demo.tiny import save_tiny_llama

    model = save_tiny_llama(tmp_path / "llama64", hidden_size=64)  # bitsandbytes packs 64-wide blocks
    out = tmp_path / "qlora"
    train(str(model), native_data, config(out, lora_r=4, load_in_4bit=True, merge_lora=True,
                                          activation_checkpointing=checkpointing))
    metrics = read_metrics(out)
    assert metrics[0]["rewards/margins"] == 0 and metrics[-1]["rewards/margins"] > 0  # reference = base, adapters off

    base, merged = AutoModelForCausalLM.from_pretrained(model), AutoModelForCausalLM.from_pretrained(out)
    assert getattr(merged.config, "quantization_config", None) is None and not (out / "adapter_config.json").exists()
    changed = {name for (name, p), q in zip(base.named_parameters(), merged.parameters(), strict=True)
               if p.dtype == q.dtype == torch.float32 and not torch.equal(p, q)}
    # Every linear layer, the first too: gradients flowed back through the frozen 4-bit layers above it.
    assert changed == {name for name, _ in base.named_parameters() if "proj" in name}
    # Each change is the rank-4 adapter product alone: merged into the full-precision base, not into
    # dequantized 4-bit weights (whose rounding error would be a full-rank change).
    for (name, p), q in zip(base.named_parameters(), merged.parameters(), strict=True):
        if name in changed:
            assert torch.linalg.matrix_rank(q - p) <= 4, name
    with pytest.raises(ValueError, match="load_in_4bit needs lora_r"):
        config(out, load_in_4bit=True)
