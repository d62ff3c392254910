"""WRPO in length-normalised DPO form (FuseChat-3.0's DPO): DPO's reward divided by the response length.

    r(x, y) = (beta / |y|) * (log pi_theta(y|x) - log pi_ref(y|x))     (|y| response tokens)
    z       = alpha * r(x, y_ws) + (1 - alpha) * r(x, y_wt) - r(x, y_l)
    loss    = (1 - eps) * -log sigmoid(z) + eps * -log sigmoid(-z)

Dividing by |y| makes the reward a per-token log-ratio, so beta must be some hundred times DPO's:
FuseChat-3.0 trains Llama-3.1-8B with beta = 10. Unlike SimPO it keeps the reference model.
"""

from __future__ import annotations

from functools import partial

from wrpo.losses.common import LossOutput, LossSettings, PreferenceLogps, fused_output, logistic_loss, require


def ln_dpo_form(batch: PreferenceLogps, settings: LossSettings) -> LossOutput:
    policy = batch.policy
    reference = require(batch.reference, "reference log-probs", "ln_dpo")
    lengths = require(batch.lengths, "response lengths", "ln_dpo")
    beta = settings.beta
    # An absent source response (weight 0) has length 0: clamp so it contributes 0, not NaN.
    return fused_output(beta * (policy.source - reference.source) / lengths.source.clamp(min=1),
                        beta * (policy.target - reference.target) / lengths.target.clamp(min=1),
                        beta * (policy.rejected - reference.rejected) / lengths.rejected.clamp(min=1),
                        batch, settings.alpha, link=partial(logistic_loss, label_smoothing=settings.label_smoothing))
