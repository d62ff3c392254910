"""`wrpo ablate`: the paper's comparisons, trained from a recipe's target-sft and quadruples and judged."""

from wrpo.ablation.run import Ablation, ablate

__all__ = ["Ablation", "ablate"]
