"""Each training speed-up gives the naive computation's result: log-probs, gradients, losses, weights."""

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from conftest import WORDS, write_jsonl
from wrpo.cli import app
from wrpo.data import QuadrupleCollator, QuadrupleEncoder, load_quadruple_dataset
from wrpo.modeling import load_causal_lm, load_tokenizer
from wrpo.training import WRPOConfig, WRPOTrainer, train
from wrpo.training.logps import batch_logps
from wrpo.training.packing import INSTALLED_VARLEN, attention_by_units
from wrpo.training.reference import with_reference_logps

NAIVE = dict(share_prompt=False, chunk_size=0, padding_free=False)


def varied_rows(count=len(WORDS)):
    """Prompts of different lengths (left padding), one or two source responses (an empty slot)."""
    rows = []
    for i in range(count):
        word = WORDS[i % len(WORDS)] * (1 + i // len(WORDS))
        sources = [word[::-1], word[::-1].upper()] if i % 3 == 0 else word[::-1]
        rows.append({"prompt_id": str(i), "prompt": "please reverse " * (i % 4) + word, "chosen_source": sources,
                     "chosen_target": word[::-1][:-1], "rejected": word * (1 + i % 2)})
    return rows


@pytest.fixture
def setting(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    model = load_causal_lm(str(tiny_model), dtype=torch.float32)
    encoder = QuadrupleEncoder(tokenizer, max_length=96, max_prompt_length=64, top_k_sources=2)
    dataset = load_quadruple_dataset(write_jsonl(tmp_path / "varied.jsonl", varied_rows()), encoder)
    return tokenizer, model, dataset


def logps_and_gradients(model, tokenizer, examples, share_prompt, chunk_size, padding_free=False):
    batch = QuadrupleCollator(tokenizer.pad_token_id, share_prompt=share_prompt, padding_free=padding_free)(examples)
    model.zero_grad()
    logps, counts = batch_logps(model, batch, chunk_size)
    # Any scalar that weighs every response differently exercises every gradient path.
    weights = torch.linspace(0.5, 1.5, logps.shape[0])
    (logps * weights).sum().backward()
    return logps.detach(), counts, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_full_rows_give_the_log_probs_of_one_unpadded_sequence_at_a_time(setting):
    tokenizer, model, dataset = setting
    examples = [dataset[i] for i in range(4)]
    batch = QuadrupleCollator(tokenizer.pad_token_id, share_prompt=False, padding_free=False)(examples)
    with torch.no_grad():
        batched, counts = batch_logps(model, batch, 0)
        one_at_a_time = []
        for example in examples:
            slots = example.source_ids + [[]] * (2 - len(example.source_ids))
            for response in (*slots, example.target_ids, example.rejected_ids):
                ids = torch.tensor([example.prompt_ids + response])
                token_logps = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
                one_at_a_time.append(token_logps[len(example.prompt_ids) - 1:].sum())
    torch.testing.assert_close(batched, torch.stack(one_at_a_time), atol=1e-5, rtol=1e-5)
    assert counts.tolist() == [len(r) for e in examples
                               for r in (*e.source_ids, *[[]] * (2 - len(e.source_ids)), e.target_ids, e.rejected_ids)]


@pytest.mark.parametrize("share_prompt, chunk_size, padding_free",
                         [(False, 7, False), (True, 0, False), (True, 7, False), (True, 0, True), (True, 7, True)])
def test_padding_free_shared_prompt_and_chunked_head_equal_the_naive_log_probs_and_gradients(
        setting, share_prompt, chunk_size, padding_free):
    tokenizer, model, dataset = setting
    examples = [dataset[i] for i in range(6)]
    naive_logps, naive_counts, naive_grads = logps_and_gradients(model, tokenizer, examples, **NAIVE)
    logps, counts, grads = logps_and_gradients(model, tokenizer, examples, share_prompt, chunk_size, padding_free)
    torch.testing.assert_close(logps, naive_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(counts, naive_counts)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, naive_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_chunked_head_keeps_no_tokens_by_vocab_float32_tensor_for_backward(setting):
    tokenizer, model, dataset = setting
    examples = [dataset[i] for i in range(6)]
    vocab, hidden = model.config.vocab_size, model.config.hidden_size

    def vocab_rows_saved(share_prompt, chunk_size, padding_free=False):
        collator = QuadrupleCollator(tokenizer.pad_token_id, share_prompt=share_prompt, padding_free=padding_free)
        batch = collator(examples)
        rows = [0]

        def pack(tensor):  # every tensor autograd keeps for backward, except the head's weight
            if tensor.dtype == torch.float32 and vocab in tensor.shape and tensor.numel() != vocab * hidden:
                rows[0] += tensor.numel() // vocab
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            _, counts = batch_logps(model, batch, chunk_size)
        return rows[0], int(counts.sum())

    naive_rows, tokens = vocab_rows_saved(False, 0)
    assert naive_rows >= tokens                   # full logits over every position
    assert vocab_rows_saved(False, 8)[0] == 0     # chunks are recomputed in backward
    # Shared prompt: only the prompts' last log-probs (which predict each first response token) remain.
    assert vocab_rows_saved(True, 8)[0] == len(examples)
    # Padding-free: the prompt's last hidden state goes through the chunked head like any other.
    assert vocab_rows_saved(True, 8, padding_free=True)[0] == 0


def config(output_dir, **overrides):
    settings = dict(output_dir=str(output_dir), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                    beta=0.5, alpha=0.5, max_length=96, max_prompt_length=64, top_k_sources=2, save_steps=100,
                    disable_tqdm=True, report_to="none", seed=3, train_sampling_strategy="random")
    return WRPOConfig(**{**settings, **overrides})


def test_precomputed_reference_trains_exactly_like_a_reference_run_every_step(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "varied.jsonl", varied_rows())
    train(str(tiny_model), data, config(tmp_path / "every-step", precompute_ref_logps=False, share_prompt=False,
                                        padding_free=False, logps_chunk_size=0))
    train(str(tiny_model), data, config(tmp_path / "fast"))
    slow, fast = ([json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                  for run in ("every-step", "fast"))
    for key in ("loss", "rewards/chosen", "rewards/rejected", "logps/source_chosen"):
        assert [m[key] for m in fast] == pytest.approx([m[key] for m in slow], abs=1e-4), key
    assert list((tmp_path / "varied.jsonl.wrpo-cache").glob("reference-logps-*.json"))


def test_the_reference_is_not_kept_in_memory_when_precomputed(setting, tmp_path):
    tokenizer, model, dataset = setting
    trainer = WRPOTrainer(model=model, args=config(tmp_path / "out"), train_dataset=dataset, processing_class=tokenizer)
    assert trainer.ref_model is None
    assert all(example.reference_logps is not None for example in trainer.train_dataset.examples)


def test_reference_cache_is_reused_and_keyed_by_model_and_data(setting, tmp_path):
    tokenizer, model, dataset = setting
    collator = QuadrupleCollator(tokenizer.pad_token_id)
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))

    def attach(data):
        return with_reference_logps(data, model, collator, 4, torch.device("cpu"), 8, tmp_path / "cache")

    first = attach(dataset)
    assert calls and len(list((tmp_path / "cache").iterdir())) == 1
    calls.clear()
    again = attach(dataset)
    assert not calls  # read from the cache, no forward pass
    assert [e.reference_logps for e in again.examples] == [e.reference_logps for e in first.examples]

    attach(type(dataset)(dataset.examples[:5]))  # other data: a new entry
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # other weights: a new entry
    attach(dataset)
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_length_grouped_batches_need_less_padding_and_hold_every_example_once(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    encoder = QuadrupleEncoder(tokenizer, max_length=128, max_prompt_length=64, top_k_sources=2)
    dataset = load_quadruple_dataset(write_jsonl(tmp_path / "many.jsonl", varied_rows(48)), encoder)

    def padding(strategy):
        trainer = WRPOTrainer(model=load_causal_lm(str(tiny_model)), processing_class=tokenizer, train_dataset=dataset,
                              args=config(tmp_path / strategy, train_sampling_strategy=strategy,
                                          precompute_ref_logps=False))
        torch.manual_seed(0)
        order = list(trainer._get_train_sampler())
        assert sorted(order) == list(range(len(dataset)))
        batches = [[dataset[i].length for i in order[start: start + 4]] for start in range(0, len(order), 4)]
        return sum(max(batch) * len(batch) - sum(batch) for batch in batches)

    assert padding("group_by_length") < 0.5 * padding("random")


def test_packing_under_activation_checkpointing_recomputes_through_the_packed_attention(setting, tmp_path):
    """The recompute in backward runs after packed_logps returns: inside attention_by_units (as the trainer's
    training_step keeps it) it attends by units; a recompute with the model's plain attention would give other
    gradients. The shared prompt needs the key/value cache that checkpointing turns off."""
    tokenizer, model, dataset = setting
    examples = [dataset[i] for i in range(6)]
    naive_logps, _, naive_grads = logps_and_gradients(model, tokenizer, examples, **NAIVE)
    # As the Trainer does it, by the name of the installed transformers (the older one before 5.2x).
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    model.train()
    with attention_by_units(model):
        logps, _, grads = logps_and_gradients(model, tokenizer, examples, True, 7, padding_free=True)
    torch.testing.assert_close(logps, naive_logps, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, naive_grads[name], atol=1e-5, rtol=1e-4, msg=name)

    assert config(tmp_path, activation_checkpointing=True).padding_free is True
    settings = config(tmp_path, activation_checkpointing=True, padding_free=False)
    assert settings.share_prompt is False


@pytest.mark.parametrize("architecture", ["qwen2", "gpt2", "gpt_neox"])
def test_padding_free_equals_the_naive_log_probs_and_gradients_on_other_architectures(tiny_model, tmp_path,
                                                                                     architecture):
    """Absolute positions (GPT-2), partial rotary embeddings (GPT-NeoX), biases (Qwen2)."""
    from wrpo.demo.tiny import save_tiny_model

    tokenizer = load_tokenizer(str(tiny_model))
    model = load_causal_lm(str(save_tiny_model(tmp_path / architecture, tokenizer, architecture)), dtype=torch.float32)
    encoder = QuadrupleEncoder(tokenizer, max_length=96, max_prompt_length=64, top_k_sources=2)
    examples = list(load_quadruple_dataset(write_jsonl(tmp_path / "varied.jsonl", varied_rows()), encoder).examples)[:6]
    naive_logps, _, naive_grads = logps_and_gradients(model, tokenizer, examples, **NAIVE)
    logps, _, grads = logps_and_gradients(model, tokenizer, examples, True, 7, padding_free=True)
    torch.testing.assert_close(logps, naive_logps, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, naive_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_sliding_window_shorter_than_the_examples_turns_padding_free_off(tiny_model, native_data, tmp_path):
    """Packed units attend over their whole prefix; a 4-token window cannot be expressed so."""
    from transformers import MistralConfig, MistralForCausalLM

    tokenizer = load_tokenizer(str(tiny_model))
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             sliding_window=4))
    dataset = load_quadruple_dataset(native_data, QuadrupleEncoder(tokenizer, 48, 24))
    trainer = WRPOTrainer(model=model, args=config(tmp_path / "out", max_length=48, max_prompt_length=24,
                                                   top_k_sources=1),
                          train_dataset=dataset, processing_class=tokenizer)
    assert trainer.args.padding_free is False and trainer.data_collator.padding_free is False
    examples = [dataset[i] for i in range(4)]
    naive, _, _ = logps_and_gradients(model, tokenizer, examples, **NAIVE)
    fast, _, _ = logps_and_gradients(model, tokenizer, examples, share_prompt=True, chunk_size=7)
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-5)


def test_a_model_whose_logits_the_head_cannot_reproduce_falls_back_to_its_own_logits(tiny_model, native_data, tmp_path):
    """Granite divides its logits by logits_scaling inside forward; no config convention says so."""
    from transformers import GraniteConfig, GraniteForCausalLM

    tokenizer = load_tokenizer(str(tiny_model))
    torch.manual_seed(0)
    model = GraniteForCausalLM(GraniteConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, logits_scaling=4.0))
    dataset = load_quadruple_dataset(native_data, QuadrupleEncoder(tokenizer, 48, 24))
    trainer = WRPOTrainer(model=model, args=config(tmp_path / "out", max_length=48, max_prompt_length=24,
                                                   top_k_sources=1),
                          train_dataset=dataset, processing_class=tokenizer)
    assert trainer.args.logps_chunk_size == 0
    examples = [dataset[i] for i in range(4)]
    naive, _, _ = logps_and_gradients(model, tokenizer, examples, **NAIVE)
    shared, _, _ = logps_and_gradients(model, tokenizer, examples, share_prompt=True, chunk_size=0)
    torch.testing.assert_close(shared, naive, atol=1e-5, rtol=1e-5)


def test_dropout_is_off_so_the_first_step_has_zero_rewards(tmp_path, native_data):
    """A GPT-2 has dropout 0.1 by default: left on, the policy differs from the reference at step 0."""
    from wrpo.demo.tiny import build_char_tokenizer, save_tiny_model

    model_dir = save_tiny_model(tmp_path / "gpt2", build_char_tokenizer(), "gpt2")
    train(str(model_dir), native_data, config(tmp_path / "out", max_steps=1, max_length=48, max_prompt_length=24,
                                              top_k_sources=1))
    first = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["rewards/margins"] == pytest.approx(0, abs=1e-6) and first["loss"] == pytest.approx(0.693147, abs=1e-5)


def test_evaluating_during_training_does_not_change_the_run(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "varied.jsonl", varied_rows(24))
    tokenizer = load_tokenizer(str(tiny_model))
    dataset = load_quadruple_dataset(data, QuadrupleEncoder(tokenizer, 96, 64, top_k_sources=2))

    def losses(**evaluation):
        trainer = WRPOTrainer(model=load_causal_lm(str(tiny_model)), processing_class=tokenizer,
                              train_dataset=dataset, eval_dataset=dataset,
                              args=config(tmp_path / str(len(evaluation)), max_steps=6,
                                          train_sampling_strategy="group_by_length", **evaluation))
        trainer.train()
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    assert losses() == pytest.approx(losses(eval_strategy="steps", eval_steps=1), abs=1e-6)


def test_a_plain_cpu_run_imports_neither_deepspeed_nor_trl(tiny_model, tmp_path):
    """Both are installed here (the test extras); a run that uses neither must not pay their imports."""
    data = write_jsonl(tmp_path / "varied.jsonl", varied_rows())
    script = ("import sys; from wrpo.training import WRPOConfig, train; "
              f"train({str(tiny_model)!r}, {str(data)!r}, WRPOConfig(output_dir={str(tmp_path / 'out')!r}, "
              "max_steps=1, max_length=96, max_prompt_length=64, report_to='none')); "
              "print(sorted(name for name in ('deepspeed', 'trl') if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"
    assert "DeepSpeed" not in done.stderr and "real_accelerator" not in done.stderr


def sdpa_per_sequence(query, key, value, cu_seq_q, cu_seq_k, scale=None, causal=True):
    """What a varlen kernel computes, [Tq, heads, D] -> [Tq, heads, D]: each sequence attends within itself,
    causally aligned to its last key (lower right)."""
    pieces = []
    for b in range(len(cu_seq_q) - 1):
        q, k, v = (t[int(c[b]): int(c[b + 1])].transpose(0, 1)
                   for t, c in ((query, cu_seq_q), (key, cu_seq_k), (value, cu_seq_k)))
        assert q.shape[0] == k.shape[0], "the kernel was handed fewer key heads than query heads"
        i, j = torch.arange(q.shape[1])[:, None], torch.arange(k.shape[1])[None]
        mask = j <= i + k.shape[1] - q.shape[1] if causal else None
        pieces.append(torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale))
    return torch.cat(pieces, dim=1).transpose(0, 1)


def torch_2_9_form(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
    calls.append({"is_causal": is_causal, "key_heads": key.shape[1]})
    return sdpa_per_sequence(query, key, value, cu_seq_q, cu_seq_k, causal=is_causal)


def torch_2_11_form(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                    window_size=(-1, -1)):
    calls.append({"window_size": window_size, "scale": scale, "key_heads": key.shape[1]})
    return sdpa_per_sequence(query, key, value, cu_seq_q, cu_seq_k, scale, causal=window_size == (-1, 0))


def torch_2_12_form(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                    window_size=(-1, -1), enable_gqa=False):
    calls.append({"window_size": window_size, "enable_gqa": enable_gqa, "key_heads": key.shape[1]})
    if enable_gqa:
        key, value = (t.repeat_interleave(query.shape[1] // t.shape[1], dim=1) for t in (key, value))
    return sdpa_per_sequence(query, key, value, cu_seq_q, cu_seq_k, scale, causal=window_size == (-1, 0))


def flash_attn_form(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                    softmax_scale=None, causal=False):
    calls.append({"causal": causal, "softmax_scale": softmax_scale, "key_heads": k.shape[1]})
    k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))  # groups natively
    return sdpa_per_sequence(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale, causal)


flash_attn_form.__module__ = "flash_attn.flash_attn_interface"
calls: list[dict] = []


@pytest.mark.parametrize("form, expected", [
    (torch_2_9_form, {"is_causal": True, "key_heads": 4}),
    (torch_2_11_form, {"window_size": (-1, 0), "scale": 8 ** -0.5, "key_heads": 4}),
    (torch_2_12_form, {"window_size": (-1, 0), "enable_gqa": True, "key_heads": 2}),
    (flash_attn_form, {"causal": True, "softmax_scale": 8 ** -0.5, "key_heads": 2}),
], ids=["torch-2.9", "torch-2.11", "torch-2.12", "flash-attn"])
def test_each_varlen_kernel_signature_is_called_in_its_own_form_and_gives_the_naive_result(
        setting, monkeypatch, form, expected):
    """On a GPU the packed layout runs through one varlen call; here a stand-in with each signature records its
    arguments and computes with SDPA. The tiny Llama has 4 query heads over 2 key/value heads."""
    from wrpo.training import packing

    tokenizer, model, dataset = setting
    examples = [dataset[i] for i in range(6)]
    naive_logps, _, naive_grads = logps_and_gradients(model, tokenizer, examples, **NAIVE)
    monkeypatch.setattr(packing, "varlen_kernel_for", lambda query: packing.VarlenKernel.of(form))
    calls.clear()
    logps, _, grads = logps_and_gradients(model, tokenizer, examples, True, 7, padding_free=True)
    assert calls and all(call == expected for call in calls), calls[0]
    torch.testing.assert_close(logps, naive_logps, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, naive_grads[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's varlen FlashAttention kernel needs a GPU")
@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_padding_free_on_a_gpu_in_bf16_equals_the_naive_log_probs(setting, weights):
    tokenizer, model, dataset = setting
    model = model.to("cuda", weights)
    examples = [dataset[i] for i in range(6)]

    def logps(**layout):
        batch = QuadrupleCollator(tokenizer.pad_token_id, **layout)(examples)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return batch_logps(model, {key: value.cuda() for key, value in batch.items()}, 7)[0].float().cpu()

    torch.testing.assert_close(logps(padding_free=True), logps(share_prompt=False, padding_free=False),
                               atol=0.05, rtol=0.01)


def test_each_optional_kernel_is_used_where_installed_and_can_run():
    from wrpo.training.packing import VarlenKernel
    from wrpo.training.speedups import liger_by_default, liger_said, packed_attention_said

    assert [liger_by_default(installed, cuda) for installed, cuda in ((True, True), (True, False), (False, True))] \
        == [True, False, False]
    assert liger_said(False, False, True) == "Liger's kernels off (pip install 'wrpo[gpu]' for them)"
    assert liger_said(False, True, False) == "Liger's kernels off (installed; they need a CUDA GPU)"
    assert liger_said(True, True, True) == "Liger's kernels on"

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=None,
                               causal=False):  # flash-attn's signature, the kernel a GPU user installs
        raise AssertionError("not called here")

    flash_attn_varlen_func.__module__ = "flash_attn.flash_attn_interface"
    kernel = VarlenKernel.of(flash_attn_varlen_func)
    assert packed_attention_said(kernel, cuda=True, half=True) == \
        "packed attention through flash_attn.flash_attn_interface.flash_attn_varlen_func"
    assert packed_attention_said(kernel, cuda=False, half=True).endswith("(it needs a CUDA GPU)")
    assert packed_attention_said(kernel, cuda=True, half=False).endswith("(it needs bf16 or fp16)")
    assert packed_attention_said(None, cuda=True, half=True).endswith("(no varlen kernel installed)")


def test_a_run_says_once_which_kernels_it_uses(tiny_model, native_data, tmp_path):
    """On this machine (no GPU): Liger off, said with why; the packed rows through padded units."""
    from wrpo.training.speedups import LIGER_INSTALLED

    result = CliRunner().invoke(app, ["train", "--model", str(tiny_model), "--data", str(native_data), "--output",
                                      str(tmp_path / "out"), "--max-steps", "1", "--max-length", "48",
                                      "--max-prompt-length", "24"])
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if line.startswith("kernels: ")]
    liger = "(installed; they need a CUDA GPU)" if LIGER_INSTALLED else "(pip install 'wrpo[gpu]' for them)"
    assert said == [f"kernels: Liger's kernels off {liger}; packed attention through SDPA over padded units "
                    f"({'it needs a CUDA GPU' if INSTALLED_VARLEN else 'no varlen kernel installed'})"]


@pytest.mark.engines  # the engines venv holds liger-kernel (its triton comes with vLLM); the main one does not
@pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a GPU does with liger-kernel")
def test_liger_installed_without_a_gpu_is_off_and_refused_when_asked_for(tmp_path):
    pytest.importorskip("liger_kernel")
    from wrpo.training.speedups import speedups_said

    config = WRPOConfig(output_dir=str(tmp_path))
    assert config.use_liger_kernel is False
    assert speedups_said(config).startswith("kernels: Liger's kernels off (installed; they need a CUDA GPU)")
    with pytest.raises(ValueError, match="Liger's kernels \\(triton\\) run on CUDA GPUs only"):
        WRPOConfig(output_dir=str(tmp_path), use_liger_kernel=True)
