"""WRPO in IPO form: a squared loss on length-averaged log-ratios.

    h(x, y) = (log pi_theta(y|x) - log pi_ref(y|x)) / |y|
    z'      = alpha * h(x, y_ws) + (1 - alpha) * h(x, y_wt) - h(x, y_l)
    loss    = (z' - 1 / (2 * beta))^2

Reported rewards are beta * h, so that they read like the other forms' r = beta * h.
"""

from __future__ import annotations

from dataclasses import replace

from wrpo.losses.common import LossOutput, LossSettings, PreferenceLogps, fuse_rewards, require


def ipo_form(batch: PreferenceLogps, settings: LossSettings) -> LossOutput:
    policy = batch.policy
    reference = require(batch.reference, "reference log-probs", "ipo")
    lengths = require(batch.lengths, "response lengths", "ipo")
    log_ratios, z = fuse_rewards((policy.source - reference.source) / lengths.source.clamp(min=1),
                                 (policy.target - reference.target) / lengths.target.clamp(min=1),
                                 (policy.rejected - reference.rejected) / lengths.rejected.clamp(min=1),
                                 batch, replace(settings, gamma=0.0))
    beta = settings.beta
    return LossOutput(losses=(z - 1 / (2 * beta)) ** 2,
                      source_rewards=beta * log_ratios.source_rewards,
                      target_rewards=beta * log_ratios.target_rewards,
                      chosen_rewards=beta * log_ratios.chosen_rewards,
                      rejected_rewards=beta * log_ratios.rejected_rewards)
