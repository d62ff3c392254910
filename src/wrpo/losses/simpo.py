"""WRPO in SimPO form: reference-free and length-normalised, with a target margin gamma.

    r(x, y) = (beta / |y|) * log pi_theta(y|x)
    z       = alpha * r(x, y_ws) + (1 - alpha) * r(x, y_wt) - r(x, y_l) - gamma
    loss    = (1 - eps) * -log sigmoid(z) + eps * -log sigmoid(-z)
"""

from __future__ import annotations

from functools import partial

from wrpo.losses.common import LossOutput, LossSettings, PreferenceLogps, fused_output, logistic_loss, require


def simpo_form(batch: PreferenceLogps, settings: LossSettings) -> LossOutput:
    policy, lengths = batch.policy, require(batch.lengths, "response lengths", "simpo")
    beta = settings.beta
    # An absent source response (weight 0) has length 0: clamp so it contributes 0, not NaN.
    return fused_output(beta * policy.source / lengths.source.clamp(min=1),
                        beta * policy.target / lengths.target.clamp(min=1),
                        beta * policy.rejected / lengths.rejected.clamp(min=1),
                        batch, settings.alpha, gamma=settings.gamma,
                        link=partial(logistic_loss, label_smoothing=settings.label_smoothing))
