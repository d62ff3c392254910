"""Length-controlled win rate, in the spirit of AlpacaEval's LC.

Judges (reward models included) tend to prefer longer answers, so a raw win rate mixes quality
with verbosity. As AlpacaEval 2 does, we regress the per-prompt outcome on the length difference
and report the win rate the fit predicts when the two answers are equally long:

    P(model beats baseline) = sigmoid(a + b * tanh((len_model - len_baseline) / s))

with s the standard deviation of the length differences and ties as outcome 0.5; the LC win rate
is sigmoid(a). AlpacaEval's GLM also has a per-instruction difficulty term, which a single pair of
models cannot identify, so it is left out. A two-parameter logistic fit is a few Newton steps:
written here rather than pulling in scikit-learn.
"""

from __future__ import annotations

import math
import statistics


def length_controlled_win_rate(outcomes: list[float], length_differences: list[float], steps: int = 50) -> float:
    if len(outcomes) != len(length_differences) or not outcomes:
        raise ValueError("one outcome and one length difference per prompt are needed")
    spread = statistics.pstdev(length_differences) or 1.0
    features = [math.tanh(d / spread) for d in length_differences]
    a = b = 0.0
    for _ in range(steps):
        # Newton step on the log-likelihood of (a, b), with a small ridge so it stays finite
        # when the outcomes are separable.
        ga = gb = 0.0
        haa = hab = hbb = 1e-3
        for y, x in zip(outcomes, features):
            p = 1 / (1 + math.exp(-(a + b * x)))
            ga += y - p
            gb += (y - p) * x
            w = p * (1 - p)
            haa += w
            hab += w * x
            hbb += w * x * x
        ga -= 1e-3 * a
        gb -= 1e-3 * b
        determinant = haa * hbb - hab * hab
        a += (hbb * ga - hab * gb) / determinant
        b += (haa * gb - hab * ga) / determinant
    return 1 / (1 + math.exp(-a))
