"""WRPO objectives as pure functions of per-response log-probs, picked by name.

Each entry of LOSSES maps (PreferenceLogps, LossSettings) -> LossOutput; `wrpo_loss` is the
DPO form with the tensor signature other code relies on (the README's "Python API"), kept stable.
"""

from collections.abc import Callable

from wrpo.losses.common import (
    SOURCE_WEIGHTINGS,
    LossOutput,
    LossSettings,
    PreferenceLogps,
    ResponseLogps,
    source_weights_from_scores,
)
from wrpo.losses.dpo import dpo_form, wrpo_loss
from wrpo.losses.ipo import ipo_form
from wrpo.losses.ln_dpo import ln_dpo_form
from wrpo.losses.simpo import simpo_form

LOSSES: dict[str, Callable[[PreferenceLogps, LossSettings], LossOutput]] = {
    "dpo": dpo_form,
    "simpo": simpo_form,
    "ipo": ipo_form,
    "ln_dpo": ln_dpo_form,
}

# Forms that never look at a reference model, so none is loaded or run for them.
REFERENCE_FREE = {"simpo"}

__all__ = ["LOSSES", "REFERENCE_FREE", "SOURCE_WEIGHTINGS", "LossOutput", "LossSettings", "PreferenceLogps",
           "ResponseLogps", "source_weights_from_scores", "wrpo_loss"]
