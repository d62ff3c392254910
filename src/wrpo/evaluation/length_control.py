"""Length-controlled win rate, in the spirit of AlpacaEval's LC.

Judges (reward models included) tend to prefer longer answers, so a raw win rate mixes quality
with verbosity. As AlpacaEval 2 does, we regress the per-prompt outcome on the length difference
and report the win rate the fit predicts when the two answers are equally long:

    P(model beats baseline) = sigmoid(a + b * tanh((len_model - len_baseline) / s))

with s the root mean square of the length differences and ties as outcome 0.5; the LC win rate is
sigmoid(a). AlpacaEval's GLM also has a per-instruction difficulty term, which a single pair of
models cannot identify, so it is left out. A two-parameter logistic fit is a few Newton steps:
written here rather than pulling in scikit-learn.
"""

from __future__ import annotations

import math
import statistics


def _sigmoid(value: float) -> float:
    if value >= 0:
        return 1 / (1 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1 + exp)


def length_controlled_win_rate(outcomes: list[float], length_differences: list[float], steps: int = 50,
                               min_share: float = 0.1) -> float:
    """NaN when the fit cannot say what happens at equal lengths: fewer than `min_share` of the
    prompts have the model's answer longer, or fewer have it shorter (an intercept read there
    would be an extrapolation). Equal lengths everywhere give the plain win rate."""
    if len(outcomes) != len(length_differences) or not outcomes:
        raise ValueError("one outcome and one length difference per prompt are needed")
    if not any(length_differences):
        return sum(outcomes) / len(outcomes)
    longer = sum(d > 0 for d in length_differences) / len(length_differences)
    shorter = sum(d < 0 for d in length_differences) / len(length_differences)
    if min(longer, shorter) < min_share:
        return float("nan")
    scale = math.sqrt(statistics.fmean(d * d for d in length_differences))  # about 0, not about the mean
    features = [math.tanh(d / scale) for d in length_differences]
    a = b = 0.0
    ridge = 1e-3  # keeps the fit finite when the outcomes are separable
    for _ in range(steps):
        ga, gb = -ridge * a, -ridge * b
        haa = hbb = ridge
        hab = 0.0
        for y, x in zip(outcomes, features, strict=True):
            p = _sigmoid(a + b * x)
            ga += y - p
            gb += (y - p) * x
            w = p * (1 - p)
            haa += w
            hab += w * x
            hbb += w * x * x
        determinant = haa * hbb - hab * hab
        step_a, step_b = (hbb * ga - hab * gb) / determinant, (haa * gb - hab * ga) / determinant
        a, b = a + step_a, b + step_b
        if abs(step_a) + abs(step_b) < 1e-10:  # converged: a bootstrap fits hundreds of times
            break
    return _sigmoid(a)
