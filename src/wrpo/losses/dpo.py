"""WRPO in DPO form, the paper's main objective.

    r(x, y) = beta * (log pi_theta(y|x) - log pi_ref(y|x))          (summed over response tokens)
    z       = alpha * r(x, y_ws) + (1 - alpha) * r(x, y_wt) - r(x, y_l)
    loss    = (1 - eps) * -log sigmoid(z) + eps * -log sigmoid(-z)

alpha = 0 is DPO on (y_wt, y_l); alpha = 1 is DPO on (y_ws, y_l).
"""

from __future__ import annotations

from functools import partial

from torch import Tensor

from wrpo.losses.common import (
    LossOutput,
    LossSettings,
    PreferenceLogps,
    ResponseLogps,
    fused_output,
    logistic_loss,
    require,
)


def dpo_form(batch: PreferenceLogps, settings: LossSettings) -> LossOutput:
    policy, reference = batch.policy, require(batch.reference, "reference log-probs", "dpo")
    beta = settings.beta
    return fused_output(beta * (policy.source - reference.source), beta * (policy.target - reference.target),
                        beta * (policy.rejected - reference.rejected), batch, settings.alpha,
                        link=partial(logistic_loss, label_smoothing=settings.label_smoothing))


def wrpo_loss(policy_source_logps: Tensor, policy_target_logps: Tensor, policy_rejected_logps: Tensor,
              ref_source_logps: Tensor, ref_target_logps: Tensor, ref_rejected_logps: Tensor,
              *, alpha: float | Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """Per-example WRPO (DPO form) losses [B] from summed response log-probs, each of shape [B]."""
    batch = PreferenceLogps(
        policy=ResponseLogps(policy_source_logps, policy_target_logps, policy_rejected_logps),
        reference=ResponseLogps(ref_source_logps, ref_target_logps, ref_rejected_logps),
    )
    return dpo_form(batch, LossSettings(alpha=alpha, beta=beta, label_smoothing=label_smoothing)).losses
