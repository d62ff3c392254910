"""Summed log-probs of the response tokens of a batch of sequences under a causal LM."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wrpo.losses import ResponseLogps


def sequence_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed response log-probs [N], response token counts [N]) for right-padded sequences [N, L]."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    # Position t predicts token t+1: drop the last logit and the first label.
    labels = input_ids[:, 1:]
    mask = response_mask[:, 1:]
    token_logps = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, reduction="none")  # [N, L-1]
    token_logps = token_logps.masked_fill(~mask, 0.0)
    return token_logps.sum(dim=-1), mask.sum(dim=-1).float()


def split_responses(values: torch.Tensor, num_sources: int) -> ResponseLogps:
    """[B*(K+2)] in the collator's example-major order -> source [B, K], target [B], rejected [B]."""
    per_example = values.view(-1, num_sources + 2)
    return ResponseLogps(source=per_example[:, :num_sources], target=per_example[:, num_sources],
                         rejected=per_example[:, num_sources + 1])
