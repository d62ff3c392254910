"""WRPO in length-normalised DPO form (FuseChat-3.0's DPO): DPO's reward divided by the response length.

    r(x, y) = (beta / |y|) * (log pi_theta(y|x) - log pi_ref(y|x))     (|y| response tokens)
    z       = alpha * r(x, y_ws) + (1 - alpha) * r(x, y_wt) - r(x, y_l)
    loss    = (1 - eps) * -log sigmoid(z) + eps * -log sigmoid(-z)

Dividing by |y| makes the reward a per-token log-ratio, so beta must be some hundred times DPO's:
FuseChat-3.0 trains Llama-3.1-8B with beta = 10. Unlike SimPO it keeps the reference model.
"""

from __future__ import annotations

from functools import partial

from wrpo.losses.common import (
    LossOutput,
    LossSettings,
    PreferenceLogps,
    fused_output,
    length_normalised_rewards,
    logistic_loss,
)


def ln_dpo_form(batch: PreferenceLogps, settings: LossSettings) -> LossOutput:
    """The ipo form's rewards (length_normalised_rewards) in DPO's logistic loss."""
    return fused_output(*length_normalised_rewards(batch, settings.beta, "ln_dpo"), batch, settings.alpha,
                        link=partial(logistic_loss, label_smoothing=settings.label_smoothing))
