"""Fusion-coefficient schedules: alpha as a pure function of the global optimizer step.

Being a function of the step alone (no state) is what makes a resumed run continue the same ramp.
"""

from __future__ import annotations

ALPHA_SCHEDULES = ("linear", "constant")


def alpha_at(step: int, total_steps: int, alpha_max: float, schedule: str = "linear") -> float:
    """alpha for optimizer step `step` (0-based) of a run of `total_steps` steps.

    linear (the paper's "dynamic"): alpha_max * step / total_steps, clamped to alpha_max after it.
    constant: alpha_max.
    """
    if schedule == "constant":
        return alpha_max
    if schedule == "linear":
        if total_steps <= 0:
            return alpha_max
        return alpha_max * min(step / total_steps, 1.0)
    raise ValueError(f"alpha schedule must be one of {', '.join(ALPHA_SCHEDULES)}, got {schedule!r}")
