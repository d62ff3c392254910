"""What every WRPO objective shares: the inputs, the outputs and the weighted chosen reward.

WRPO replaces DPO's single chosen reward by a fused one,

    r_chosen = alpha * r(x, y_ws) + (1 - alpha) * r(x, y_wt)

where y_ws is the best source response and y_wt the target's own best. With several source
responses per prompt, r(x, y_ws) is their weighted mean (weights sum to 1 per prompt; an absent
response has weight 0). The objective forms differ only in how r is computed and in the link
applied to z = r_chosen - r(x, y_l) - gamma.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class ResponseLogps:
    """Per-response quantities of one model for a batch of quadruples.

    source: [B, K] (K source responses per prompt) or [B]; target, rejected: [B].
    Used both for summed log-probs and for response token counts.
    """

    source: Tensor
    target: Tensor
    rejected: Tensor


@dataclass(frozen=True)
class PreferenceLogps:
    """Everything a loss may need. `reference` is None for reference-free forms,
    `lengths` (response token counts) is None for forms that do not normalise by length,
    `source_weights` [B, K] is None for one source response (or a uniform mean)."""

    policy: ResponseLogps
    reference: ResponseLogps | None = None
    lengths: ResponseLogps | None = None
    source_weights: Tensor | None = None


@dataclass(frozen=True)
class LossSettings:
    alpha: float | Tensor
    beta: float
    gamma: float = 0.0
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class LossOutput:
    """Per-example losses and the rewards that produced them (all [B])."""

    losses: Tensor
    source_rewards: Tensor
    target_rewards: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor

    @property
    def margins(self) -> Tensor:
        return self.chosen_rewards - self.rejected_rewards


def mean_source_reward(source_rewards: Tensor, source_weights: Tensor | None) -> Tensor:
    """[B, K] or [B] -> [B]: the weighted (default uniform) mean over source responses."""
    if source_rewards.dim() == 1:
        return source_rewards
    if source_weights is None:
        return source_rewards.mean(dim=-1)
    return (source_rewards * source_weights).sum(dim=-1)


def _uniform(scores: Tensor, present: Tensor) -> Tensor:
    return present.float()


def _score_softmax(scores: Tensor, present: Tensor) -> Tensor:
    return torch.softmax(scores.float().masked_fill(~present, float("-inf")), dim=-1)


# How several source rewards are weighted; WRPOConfig checks its setting against these names.
SOURCE_WEIGHTINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"uniform": _uniform, "score": _score_softmax}


def source_weights_from_scores(scores: Tensor, present: Tensor, mode: str = "uniform") -> Tensor:
    """Weights [B, K] over source responses that sum to 1 per prompt.

    uniform: 1/k over the k present responses.
    score:   softmax of the reward-model scores over the present responses (scores may be
             negative, as ArmoRM's are, so they cannot be used as weights directly).
    """
    present = present.bool()
    weights = SOURCE_WEIGHTINGS[mode](scores, present).masked_fill(~present, 0.0)
    return weights / weights.sum(dim=-1, keepdim=True)


def length_normalised_rewards(batch: PreferenceLogps, beta: float, loss: str) -> tuple[Tensor, Tensor, Tensor]:
    """beta * (log pi_theta(y|x) - log pi_ref(y|x)) / |y| of y_ws, y_wt and y_l: the per-token log-ratio
    the ipo and ln_dpo forms share. An absent source response (weight 0) has length 0: clamped, so it
    contributes 0, not NaN."""
    policy = batch.policy
    reference = require(batch.reference, "reference log-probs", loss)
    lengths = require(batch.lengths, "response lengths", loss)
    return (beta * (policy.source - reference.source) / lengths.source.clamp(min=1),
            beta * (policy.target - reference.target) / lengths.target.clamp(min=1),
            beta * (policy.rejected - reference.rejected) / lengths.rejected.clamp(min=1))


def fused_output(source: Tensor, target: Tensor, rejected: Tensor, batch: PreferenceLogps, alpha: float | Tensor,
                 link: Callable[[Tensor], Tensor], gamma: float = 0.0) -> LossOutput:
    """Per-response rewards -> fused chosen reward, z = r_chosen - r_rejected - gamma, losses = link(z)."""
    source = mean_source_reward(source, batch.source_weights)
    chosen = alpha * source + (1 - alpha) * target
    return LossOutput(losses=link(chosen - rejected - gamma), source_rewards=source, target_rewards=target,
                      chosen_rewards=chosen, rejected_rewards=rejected)


def logistic_loss(z: Tensor, label_smoothing: float) -> Tensor:
    """(1 - eps) * -log sigmoid(z) + eps * -log sigmoid(-z): conservative DPO's label smoothing."""
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def require(value, name: str, loss: str):
    if value is None:
        raise ValueError(f"the {loss} loss needs {name}")
    return value
