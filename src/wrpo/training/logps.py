"""Summed log-probs of response tokens under a causal LM, naive and fast, with equal results.

Naive (`full_sequence_logps` with chunk_size=0): each (prompt + response) is one padded row and the
model's full [N, L, vocab] logits are turned into float32 log-probs — what peers do. chunk_size=0
always reads the model's own logits.

Fast, each part switchable and tested equal to the naive result:
- shared prompt (`shared_prompt_logps`): the prompt runs once; its key/value cache, repeated once per
  response, feeds one forward over the responses. The prompt's last logit predicts each response's
  first token. Gradients reach the prompt's activations through the cache.
- padding-free (`packed_logps`): prompts once and responses after them in one row without padding,
  each response attending to its own prompt only (wrpo.training.packing); one forward, no pad token.
- chunked head (chunk_size > 0): the output head runs only on response positions, a chunk of tokens
  at a time, each chunk recomputed in backward (torch.utils.checkpoint) so no [tokens, vocab] float32
  tensor outlives its chunk.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers.integrations import is_deepspeed_zero3_enabled

from wrpo.data.dataset import QuadrupleCollator
from wrpo.losses import ResponseLogps
from wrpo.training.compat import CACHE, cache_of
from wrpo.training.packing import PackedUnits, attention_by_units


def _logit_transform(config):
    """Output-head post-processing some architectures apply inside forward (Cohere, Gemma 2+)."""
    scale = getattr(config, "logit_scale", None)
    softcap = getattr(config, "final_logit_softcapping", None)

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None:
            logits = logits * scale
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return transform


def _unwrapped_config(model):
    return getattr(model, "module", model).config


def head_token_logps(model, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """log p(labels) [T] from final hidden states [T, H] through the model's output head, in chunks
    of chunk_size tokens (all at once when chunk_size <= 0). Run it under the autocast the model's forward
    ran in (WRPOTrainer does): the head then computes in half precision like the model's own."""
    head = getattr(model, "module", model).get_output_embeddings()
    transform = _logit_transform(_unwrapped_config(model))
    if not torch.is_autocast_enabled(hidden.device.type):
        hidden = hidden.to(head.weight.dtype)  # bf16 weights; the forward may hand back float32 outputs

    def chunk_logps(hidden_chunk: torch.Tensor, labels_chunk: torch.Tensor) -> torch.Tensor:
        logits = transform(head(hidden_chunk)).float()  # [chunk, V]
        return -F.cross_entropy(logits, labels_chunk, reduction="none")

    if chunk_size <= 0:
        return chunk_logps(hidden, labels)
    # Under DeepSpeed ZeRO-3 the recompute must run as a forward of its own (reentrant), so that ZeRO-3's module
    # hooks gather the head's weight for it: a frozen head (LoRA) is otherwise recomputed from its empty shard.
    # Elsewhere not: DDP refuses a weight whose gradient arrives from several reentrant backward passes.
    reentrant = is_deepspeed_zero3_enabled()
    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        stop = start + chunk_size
        if torch.is_grad_enabled():
            pieces.append(checkpoint(chunk_logps, hidden[start:stop], labels[start:stop], use_reentrant=reentrant))
        else:
            pieces.append(chunk_logps(hidden[start:stop], labels[start:stop]))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


@contextlib.contextmanager
def final_hidden_states(model):
    """A list that receives the final hidden states (after the last norm) of each forward made inside, taken
    from the decoder's output by a hook rather than with output_hidden_states, which would keep every layer's
    hidden states (and accelerate's mixed precision would hand each back as a float32 copy)."""
    captured = []
    decoder = getattr(model, "module", model).get_decoder()
    hook = decoder.register_forward_hook(lambda module, args, output: captured.append(output[0]))
    try:
        yield captured
    finally:
        hook.remove()


def forward_with_final_hidden(model, chunk_size: int, **inputs):
    """(the model's output, its final hidden states [.., H] or None): with chunk_size > 0 the logits of the
    last position only, and the final hidden states for the chunked head."""
    if chunk_size <= 0:
        return model(**inputs), None
    with final_hidden_states(model) as captured:
        out = model(**inputs, logits_to_keep=1)
    return out, captured[-1]


def _sum_per_row(values: torch.Tensor, rows: torch.Tensor, num_rows: int) -> torch.Tensor:
    return torch.zeros(num_rows, dtype=values.dtype, device=values.device).index_add(0, rows, values)


def full_sequence_logps(model, input_ids, attention_mask, response_mask, chunk_size: int = 0):
    """(summed response log-probs [N], response token counts [N]) for right-padded rows [N, L]
    holding prompt + response; response_mask marks the response tokens."""
    labels, mask = input_ids[:, 1:], response_mask[:, 1:]  # position t predicts token t+1
    counts = mask.sum(dim=-1).float()
    if chunk_size <= 0:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        token_logps = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, reduction="none")
        return token_logps.masked_fill(~mask, 0.0).sum(dim=-1), counts
    _, hidden = forward_with_final_hidden(model, chunk_size, input_ids=input_ids, attention_mask=attention_mask,
                                          use_cache=False)
    rows, positions = mask.nonzero(as_tuple=True)
    token_logps = head_token_logps(model, hidden[:, :-1][rows, positions], labels[rows, positions], chunk_size)
    return _sum_per_row(token_logps, rows, input_ids.shape[0]), counts


def shared_prompt_logps(model, prompt_ids, prompt_mask, response_ids, response_mask, chunk_size: int = 0):
    """(summed response log-probs [N], response token counts [N]) for B left-padded prompts [B, P] and
    N = B * R right-padded responses [N, L], example-major (responses of prompt b are rows b*R..b*R+R-1)."""
    per_prompt = response_ids.shape[0] // prompt_ids.shape[0]
    prompt_positions = (prompt_mask.cumsum(dim=-1) - 1).clamp(min=0)
    prompt_out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_positions,
                       use_cache=True, logits_to_keep=1)
    cache = cache_of(prompt_out)
    cache.batch_repeat_interleave(per_prompt)

    prompt_lengths = prompt_mask.sum(dim=-1).repeat_interleave(per_prompt)  # [N]
    positions = prompt_lengths[:, None] + torch.arange(response_ids.shape[1], device=response_ids.device)
    attention_mask = torch.cat([prompt_mask.repeat_interleave(per_prompt, dim=0), response_mask.long()], dim=1)
    response_out, response_hidden = forward_with_final_hidden(
        model, chunk_size, input_ids=response_ids, attention_mask=attention_mask, position_ids=positions,
        use_cache=True, **{CACHE: cache})

    # The first response token is predicted by the prompt's last logit, token t+1 by response position t.
    # Indexing (not repeating) the prompts' log-probs keeps autograd from saving one [vocab] row per response.
    prompt_logps = prompt_out.logits[:, -1].float().log_softmax(dim=-1)  # [B, V]
    owner = torch.arange(prompt_ids.shape[0], device=prompt_ids.device).repeat_interleave(per_prompt)
    first = prompt_logps[owner, response_ids[:, 0]] * response_mask[:, 0]
    mask, labels = response_mask[:, 1:], response_ids[:, 1:]
    if chunk_size <= 0:
        token_logps = -F.cross_entropy(response_out.logits[:, :-1].float().transpose(1, 2), labels, reduction="none")
        return first + token_logps.masked_fill(~mask, 0.0).sum(dim=-1), response_mask.sum(dim=-1).float()
    rows, positions = mask.nonzero(as_tuple=True)
    rest = head_token_logps(model, response_hidden[rows, positions], labels[rows, positions], chunk_size)
    return first + _sum_per_row(rest, rows, response_ids.shape[0]), response_mask.sum(dim=-1).float()


def packed_logps(model, batch: dict, chunk_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed response log-probs [N], response token counts [N]) from the collator's padding_free layout."""
    with attention_by_units(model):
        out, hidden = forward_with_final_hidden(
            model, chunk_size, input_ids=batch["packed_ids"], position_ids=batch["position_ids"], use_cache=False,
            attention_units=PackedUnits(batch["attention_units"].tolist(), batch["packed_ids"].device))
    predictors, labels = batch["predictor_positions"], batch["packed_ids"][0, batch["label_positions"]]
    if chunk_size > 0:
        token_logps = head_token_logps(model, hidden[0, predictors], labels, chunk_size)
    else:
        token_logps = -F.cross_entropy(out.logits[0, predictors].float(), labels, reduction="none")
    lengths = batch["response_lengths"]
    return _sum_per_row(token_logps, batch["token_response"], lengths.shape[0]), lengths


def head_reproduces_logits(model, input_ids: torch.Tensor) -> bool:
    """Whether the output head applied to the final hidden states (with the logit post-processing
    wrpo knows) gives the model's own log-probs. Some architectures scale their logits in ways a
    config key does not tell (Granite divides by logits_scaling); for those the chunked head is off."""
    with torch.no_grad(), final_hidden_states(model) as hidden:
        own = model(input_ids=input_ids, use_cache=False).logits[0].float().log_softmax(dim=-1)
        labels = own.argmax(dim=-1)
        ours = head_token_logps(model, hidden[-1][0], labels, chunk_size=0)
    return torch.allclose(ours, own.gather(1, labels[:, None])[:, 0], atol=1e-3, rtol=1e-3)


def packing_reproduces_logps(model, examples, pad_token_id: int, device) -> bool:
    """Whether the padding-free layout gives the padded layout's log-probs on these examples: not for
    attention the packed units cannot express (a sliding window shorter than the example) or that does
    not go through transformers' AttentionInterface."""
    def logps(padding_free: bool) -> torch.Tensor:
        batch = QuadrupleCollator(pad_token_id, share_prompt=False, padding_free=padding_free)(examples)
        return batch_logps(model, {key: value.to(device) for key, value in batch.items()})[0]

    with torch.no_grad():
        return torch.allclose(logps(True), logps(False), atol=1e-3, rtol=1e-3)


def batch_logps(model, batch: dict, chunk_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatches on the collator's layout: padding-free (packed_ids), shared prompt (prompt_ids) or full
    rows (input_ids)."""
    if "packed_ids" in batch:
        return packed_logps(model, batch, chunk_size)
    if "prompt_ids" in batch:
        return shared_prompt_logps(model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                                   batch["response_mask"], chunk_size)
    return full_sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"], chunk_size)


def split_responses(values: torch.Tensor, num_sources: int) -> ResponseLogps:
    """[B*(K+2)] in the collator's example-major order -> source [B, K], target [B], rejected [B]."""
    per_example = values.view(-1, num_sources + 2)
    return ResponseLogps(source=per_example[:, :num_sources], target=per_example[:, num_sources],
                         rejected=per_example[:, num_sources + 1])
