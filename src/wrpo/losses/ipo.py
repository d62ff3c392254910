"""WRPO in IPO form: a squared loss on length-averaged log-ratios.

    h(x, y) = (log pi_theta(y|x) - log pi_ref(y|x)) / |y|
    z'      = alpha * h(x, y_ws) + (1 - alpha) * h(x, y_wt) - h(x, y_l)
    loss    = (z' - 1 / (2 * beta))^2

Rewards are reported as r = beta * h, like the other forms; z' is then z / beta.
"""

from __future__ import annotations

from wrpo.losses.common import LossOutput, LossSettings, PreferenceLogps, fused_output, length_normalised_rewards


def ipo_form(batch: PreferenceLogps, settings: LossSettings) -> LossOutput:
    beta = settings.beta
    return fused_output(*length_normalised_rewards(batch, beta, "ipo"), batch, settings.alpha,
                        link=lambda z: (z / beta - 1 / (2 * beta)) ** 2)
