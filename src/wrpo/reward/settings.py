"""What scores the responses: a recipe's `reward:` section, the score stages' spec and the ablation's judge.
Kept apart from the scorers so that reading a recipe does not import torch."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from wrpo.settings import Settings


class RewardSettings(Settings):
    """A reward model or a Python function (wrpo.reward.scorers), and how it is run."""

    ADDED: ClassVar[tuple[str, ...]] = ("verifiers",)

    model: str | None = Field(default=None, description="A reward model folder or Hub id.")
    function: str | None = Field(default=None, description="A Python scorer, pkg.module:function.")
    trust_remote_code: bool = Field(default=False, description="Run the reward model's own code (ArmoRM needs it).")
    batch_size: int = Field(default=16, ge=1, description="Responses per scoring batch.")
    verifiers: dict[str, str] = Field(default_factory=dict, description=(
        "Categories whose answers are also checked, each by a Python verifier pkg.module:function (1.0: correct), "
        'e.g. {"math": "wrpo.reward.verifiable:math_exact_match"}: a correct answer ranks above any incorrect one, '
        "the reward orders each group, and a prompt with no correct answer is dropped."))

    @property
    def scorer(self) -> str:
        return self.model or self.function

    @model_validator(mode="after")
    def one_scorer(self) -> RewardSettings:
        if (self.model is None) == (self.function is None):
            raise ValueError("reward needs exactly one of 'model' and 'function'")
        return self
