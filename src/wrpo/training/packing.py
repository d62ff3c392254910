"""Attention for the padding-free layout: a batch's prompts and responses packed in one row.

The collator's padding_free layout puts each example's prompt once and its responses after it, every
response positioned right after the prompt. Each response must attend to its own prompt and its own
earlier tokens only: a prompt shared by several segments, which transformers' packed-sequence support
(segments found from position ids restarting at 0) cannot express. So the forward runs with an attention
function of wrpo's own, registered with transformers' AttentionInterface and switched on for that one
call: it attends unit by unit, each a scaled_dot_product_attention over the unit's prefix and itself with
a lower-right causal mask. On CPU that is what a varlen kernel would do (no such kernel exists there,
and flex attention needs a torch.compile per shape); SDPA picks its fused kernels for each unit. On a GPU
in half precision, torch's own FlashAttention varlen kernel (torch.nn.attention.varlen) takes all units
in one call, each unit's keys gathered as its prefix followed by itself.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv

try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # a torch without it: the per-unit path
    varlen_attn = None

ATTENTION = "wrpo_packed"


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                     attention_units=(), **kwargs):
    """query [1, heads, T, D], key/value [1, kv_heads, T, D] -> [1, T, heads, D], as transformers'
    attention functions return it. attention_units: (prefix_start, prefix_end, start, end) tiling 0..T
    in order; a prefix is an earlier unit."""
    dropout = dropout if module.training else 0.0
    if varlen_attn is not None and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and not dropout:
        return _varlen_attention(query, key, value, attention_units, scaling), None
    groups = query.shape[1] // key.shape[1]
    sizes = [end - start for _, _, start, end in attention_units]
    # One split per tensor, not a slice per unit: a slice's backward writes a whole [T] zero gradient.
    queries, keys, values = (tensor.split(sizes, dim=2) for tensor in (query, repeat_kv(key, groups),
                                                                          repeat_kv(value, groups)))
    unit_at = {start: index for index, (_, _, start, _) in enumerate(attention_units)}
    pieces = []
    for index, (prefix_start, prefix_end, start, end) in enumerate(attention_units):
        if end == start:
            continue
        if prefix_end == prefix_start:
            pieces.append(F.scaled_dot_product_attention(queries[index], keys[index], values[index], is_causal=True,
                                                         dropout_p=dropout, scale=scaling))
            continue
        prefix = unit_at[prefix_start]
        unit_key = torch.cat([keys[prefix], keys[index]], dim=2)
        unit_value = torch.cat([values[prefix], values[index]], dim=2)
        pieces.append(F.scaled_dot_product_attention(
            queries[index], unit_key, unit_value, attn_mask=causal_lower_right(end - start, unit_key.shape[2]),
            dropout_p=dropout, scale=scaling))
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def _varlen_attention(query, key, value, attention_units, scaling) -> torch.Tensor:
    """packed_attention's result through one varlen call: queries are the units in order; each unit's
    keys are its prefix then itself, so FlashAttention's causal mask (aligned to the last key) is the
    lower-right one."""
    units = [unit for unit in attention_units if unit[3] > unit[2]]
    key_index = torch.cat([torch.cat([torch.arange(prefix_start, prefix_end), torch.arange(start, end)])
                           for prefix_start, prefix_end, start, end in units]).to(key.device)
    query_lengths = torch.tensor([0] + [end - start for _, _, start, end in units])
    key_lengths = torch.tensor([0] + [prefix_end - prefix_start + end - start
                                      for prefix_start, prefix_end, start, end in units])
    output = varlen_attn(query[0].transpose(0, 1), key[0].transpose(0, 1)[key_index],
                         value[0].transpose(0, 1)[key_index],
                         query_lengths.cumsum(0).to(query.device, torch.int32),
                         key_lengths.cumsum(0).to(query.device, torch.int32),
                         int(query_lengths.max()), int(key_lengths.max()), scale=scaling, window_size=(-1, 0),
                         enable_gqa=key.shape[1] != query.shape[1])
    return output.unsqueeze(0)  # [1, T, heads, D]


AttentionInterface.register(ATTENTION, packed_attention)


@contextlib.contextmanager
def attention_by_units(model):
    """The model's attention replaced by packed_attention for the calls made inside. transformers reads
    the implementation from the config at every forward and, for a name without a mask function of its
    own, builds no [T, T] mask."""
    config = getattr(model, "module", model).config
    original = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = original
