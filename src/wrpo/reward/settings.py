"""What scores the responses: a recipe's `reward:` section, the score stages' spec and the ablation's judge.
Kept apart from the scorers so that reading a recipe does not import torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RewardSettings(BaseModel):
    """A reward model or a Python function (wrpo.reward.scorers), and how it is run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, description="A reward model folder or Hub id.")
    function: str | None = Field(default=None, description="A Python scorer, pkg.module:function.")
    trust_remote_code: bool = Field(default=False, description="Run the reward model's own code (ArmoRM needs it).")
    batch_size: int = Field(default=16, ge=1, description="Responses per scoring batch.")

    @property
    def scorer(self) -> str:
        return self.model or self.function

    @model_validator(mode="after")
    def one_scorer(self) -> RewardSettings:
        if (self.model is None) == (self.function is None):
            raise ValueError("reward needs exactly one of 'model' and 'function'")
        return self
