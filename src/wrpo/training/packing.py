"""Attention for the padding-free layout: a batch's prompts and responses packed in one row.

The collator's padding_free layout puts each example's prompt once and its responses after it, every
response positioned right after the prompt. Each response must attend to its own prompt and its own
earlier tokens only: a prompt shared by several segments, which transformers' packed-sequence support
(segments found from position ids restarting at 0) cannot express. So the forward runs with an attention
function of wrpo's own, registered with transformers' AttentionInterface and switched on while it is used
(attention_by_units). A unit is a run of tokens and the prefix it attends to besides itself (its prompt).

Two ways to compute it, equal to float tolerance:
- one varlen call (GPU, half precision): FlashAttention over all units at once, each unit's keys gathered
  as its prefix followed by itself, so the kernel's causal mask (aligned to the last key) is the lower-right
  one. torch's `varlen_attn` (2.9+) or flash-attn's `flash_attn_varlen_func`, in the form each accepts.
- scaled_dot_product_attention over the units padded to a common length in a few groups of similar length,
  with a boolean mask: on CPU (no varlen kernel there; flex attention needs a torch.compile per shape), in
  float32 on a GPU, and on a torch without varlen. A handful of calls per layer, not one per unit: on a GPU
  each call is a kernel launch.

Mixed precision: under autocast the rotary embedding hands back float32 query/key beside a half-precision
value; both kernels need one dtype, so all three are cast to the autocast dtype, as SDPA's own autocast
rule does.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

ATTENTION = "wrpo_packed"


@dataclass(frozen=True)
class VarlenKernel:
    """A varlen attention function called in the form it accepts. torch's has changed between releases:
    `is_causal` (2.9), then `window_size=(-1, 0)` for causal; `enable_gqa` only from 2.12 (before that the
    key/value heads are repeated here). flash-attn's takes `causal` and `softmax_scale` and groups natively."""

    function: Callable
    parameters: frozenset[str]
    native_gqa: bool = False

    @property
    def name(self) -> str:
        return f"{self.function.__module__}.{self.function.__name__}"

    @classmethod
    def of(cls, function: Callable) -> VarlenKernel:
        return cls(function, frozenset(inspect.signature(function).parameters),
                   native_gqa=function.__module__.startswith("flash_attn"))

    def __call__(self, query, key, value, cu_seq_q, cu_seq_k, max_q: int, max_k: int, scale: float | None):
        """query [Tq, heads, D], key/value [Tk, kv_heads, D] -> [Tq, heads, D], causal per sequence."""
        options = {}
        for name, causal in (("window_size", (-1, 0)), ("is_causal", True), ("causal", True)):
            if name in self.parameters:
                options[name] = causal
                break
        else:
            raise TypeError(f"{self.function.__module__}.{self.function.__name__} takes no causal option")
        if "scale" in self.parameters:
            options["scale"] = scale
        elif "softmax_scale" in self.parameters:
            options["softmax_scale"] = scale
        elif scale is not None:  # the kernel's own scale is 1/sqrt(D)
            query = query * (scale * query.shape[-1] ** 0.5)
        groups = query.shape[1] // key.shape[1]
        if groups > 1 and "enable_gqa" in self.parameters:
            options["enable_gqa"] = True
        elif groups > 1 and not self.native_gqa:
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        return self.function(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **options)


def installed_varlen_kernel() -> VarlenKernel | None:
    """flash-attn's where it is installed (wrpo[gpu]: a user who installs it means it to be used), else torch's."""
    with contextlib.suppress(ImportError):
        from flash_attn import flash_attn_varlen_func

        return VarlenKernel.of(flash_attn_varlen_func)
    with contextlib.suppress(ImportError):
        from torch.nn.attention.varlen import varlen_attn

        return VarlenKernel.of(varlen_attn)
    return None


INSTALLED_VARLEN = installed_varlen_kernel()


def varlen_kernel_for(query: torch.Tensor) -> VarlenKernel | None:
    """The varlen kernel for this query, or None where none runs: FlashAttention kernels are CUDA and
    half precision only."""
    if INSTALLED_VARLEN is not None and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        return INSTALLED_VARLEN
    return None


class PackedUnits:
    """The units of one packed row, with the index tensors each kernel needs, built once per forward (not
    once per layer). units: (prefix_start, prefix_end, start, end) tiling 0..T in order; a prefix is an
    earlier unit."""

    def __init__(self, units: list[tuple[int, int, int, int]], device: torch.device):
        self.units = [unit for unit in units if unit[3] > unit[2]]
        self.device = device
        self.query_lengths = torch.tensor([end - start for _, _, start, end in self.units])
        self.key_lengths = torch.tensor([prefix_end - prefix_start + end - start
                                         for prefix_start, prefix_end, start, end in self.units])

    @cached_property
    def varlen(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        """(key_index [sum of key lengths], cu_seq_q [U+1], cu_seq_k [U+1], max_q, max_k)."""
        key_index = torch.cat([torch.cat([torch.arange(prefix_start, prefix_end), torch.arange(start, end)])
                               for prefix_start, prefix_end, start, end in self.units])

        def offsets(lengths):
            return F.pad(lengths.cumsum(0), (1, 0)).to(self.device, torch.int32)

        return (key_index.to(self.device), offsets(self.query_lengths), offsets(self.key_lengths),
                int(self.query_lengths.max()), int(self.key_lengths.max()))

    @cached_property
    def padded(self) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor]:
        """([(query_index [G, Lq], key_index [G, Lk], mask [G, 1, Lq, Lk], valid [G, Lq]) per group], order):
        the units in groups of similar length (longest first, a group closing where a unit is under four fifths
        of its first), each padded to its longest, so that padding costs little and the calls are few (about
        log(longest / shortest) / log(1.25) per layer; on CPU as fast as one call per unit was). Unit u's
        query i attends its key j when j < m_u and j <= i + m_u - n_u (lower-right causal). Padded queries
        repeat the unit's last token and attend to its keys, so no row of the mask is empty (an empty row gives
        NaN); their outputs are dropped. `order` puts the groups' valid outputs, concatenated, back in the row's
        token order."""
        by_length = sorted(range(len(self.units)), key=lambda u: -int(self.query_lengths[u]))
        groups, current = [], []
        for unit in by_length:
            if current and 5 * int(self.query_lengths[unit]) < 4 * int(self.query_lengths[current[0]]):
                groups.append(current)
                current = []
            current.append(unit)
        groups.append(current)
        tensors, positions = [], []
        for members in groups:
            index = torch.tensor(members)
            starts = torch.tensor([self.units[u][2] for u in members])[:, None]
            prefix_starts = torch.tensor([self.units[u][0] for u in members])[:, None]
            n, m = self.query_lengths[index][:, None], self.key_lengths[index][:, None]
            prefix = m - n
            i, j = torch.arange(int(n.max()))[None], torch.arange(int(m.max()))[None]
            query_index = starts + torch.minimum(i, n - 1)
            key_index = torch.where(j < prefix, prefix_starts + j, starts + (j - prefix).clamp(min=0))
            key_index = torch.where(j < m, key_index, starts)
            mask = (j[:, None, :] < m[:, :, None]) & (j[:, None, :] <= i[:, :, None] + prefix[:, :, None])
            valid = i < n
            positions.append(query_index[valid])
            tensors.append(tuple(t.to(self.device) for t in (query_index, key_index, mask[:, None], valid)))
        return tensors, torch.cat(positions).argsort().to(self.device)


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                     attention_units: PackedUnits | None = None, **kwargs):
    """query [1, heads, T, D], key/value [1, kv_heads, T, D] -> [1, T, heads, D], as transformers'
    attention functions return it."""
    if attention_units is None:
        raise ValueError("the packed attention was called without attention_units: only packed_logps' forward "
                         "passes may run while it is switched on")
    dropout = dropout if module.training else 0.0
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
    query, key, value = (tensor.to(dtype) for tensor in (query, key, value))
    kernel = varlen_kernel_for(query)
    if kernel is not None and not dropout:
        key_index, cu_seq_q, cu_seq_k, max_q, max_k = attention_units.varlen
        output = kernel(query[0].transpose(0, 1), key[0].transpose(0, 1)[key_index],
                        value[0].transpose(0, 1)[key_index], cu_seq_q, cu_seq_k, max_q, max_k, scaling)
        return output.unsqueeze(0), None  # [1, T, heads, D]
    return _padded_units_attention(query, key, value, attention_units, scaling, dropout), None


def _padded_units_attention(query, key, value, units: PackedUnits, scaling, dropout) -> torch.Tensor:
    groups, order = units.padded

    def gather(tensor, index):  # [1, heads, T, D] -> [G, heads, L, D]
        return tensor[0][:, index.reshape(-1)].unflatten(1, index.shape).transpose(0, 1)

    outputs = []
    for query_index, key_index, mask, valid in groups:
        output = F.scaled_dot_product_attention(gather(query, query_index), gather(key, key_index),
                                                gather(value, key_index), attn_mask=mask, dropout_p=dropout,
                                                scale=scaling, enable_gqa=query.shape[1] != key.shape[1])
        outputs.append(output.transpose(1, 2)[valid])  # [valid queries, heads, D]
    return torch.cat(outputs)[order][None]  # [1, T, heads, D]


AttentionInterface.register(ATTENTION, packed_attention)


@contextlib.contextmanager
def attention_by_units(model):
    """The model's attention replaced by packed_attention for the calls made inside, the recompute of
    activation checkpointing included when the backward runs inside too. transformers reads the
    implementation from the config at every forward and, for a name without a mask function of its own,
    builds no [T, T] mask."""
    config = getattr(model, "module", model).config
    original = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = original
