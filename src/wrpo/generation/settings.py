"""What a sampling run is asked for, each setting defined once: SamplingSettings (how many responses,
how random, how long, and how that differs by the prompt's category) and BackendSettings (which engine
runs the model, and its own settings). The recipe's `sampling:` and source entries, `wrpo sample`'s flags
and `wrpo eval`'s greedy answers all use these two types; the flags and their help come from the fields.
ModelSampling, a source's own `sampling:` in a recipe, is SamplingSettings with every field optional."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wrpo.settings import Settings, optional_fields


class ResponseSettings(Settings):
    """How each response of a prompt is drawn: what a prompt's category may change."""

    ADDED: ClassVar[tuple[str, ...]] = ("repetition_penalty",)

    n: int = Field(default=5, ge=1, description="Responses per prompt.")
    temperature: float = Field(default=0.8, ge=0, description="Sampling temperature (0: greedy).")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling probability.")
    repetition_penalty: float = Field(default=1.0, gt=0, description=(
        "Divides the logit of every token already in the prompt or the response (1: none; Qwen's 1.05)."))
    max_new_tokens: int = Field(default=512, ge=1, description="Longest response, in tokens.")
    seed: int = Field(default=0, description="Sampling seed.")


CategorySampling = optional_fields(ResponseSettings, "CategorySampling")


class SamplingSettings(ResponseSettings):
    ADDED: ClassVar[tuple[str, ...]] = ("repetition_penalty", "by_category")

    batch_size: int = Field(default=16, ge=1, description=(
        "Prompts per batch and per flush to disk; with hf, samples depend on the batches."))
    by_category: dict[str, CategorySampling] = Field(default_factory=dict, description=(
        "Settings of the prompts of a category (the prompt row's 'category'), over these: "
        '{"code": {"n": 8}}.'))

    def for_category(self, category: str | None) -> SamplingSettings:
        """The settings a prompt of `category` is sampled with (these, where the category has none of its own)."""
        given = self.by_category.get(category)
        if given is None:
            return self
        return self.model_copy(update={**given.model_dump(), "by_category": {}})

    def over(self, overrides: BaseModel | None) -> SamplingSettings:
        """These settings with those set in `overrides` (a ModelSampling) in their place; by_category is merged
        category by category, setting by setting."""
        if overrides is None:
            return self
        given = overrides.model_dump()
        categories = {category: settings.model_dump() for category, settings in self.by_category.items()}
        for category, settings in given.pop("by_category", {}).items():
            categories[category] = {**categories.get(category, {}), **settings}
        return SamplingSettings.model_validate({**self.model_dump(exclude={"by_category"}), **given,
                                                "by_category": categories})


ModelSampling = optional_fields(SamplingSettings, "ModelSampling")


# Evaluation answers: one greedy answer per prompt.
GREEDY = SamplingSettings(n=1, temperature=0.0, top_p=1.0)

Backend = Literal["hf", "vllm", "openai"]


class BackendSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend = Field(default="hf", description=(
        "hf (transformers), vllm, or openai (any OpenAI-compatible server)."))
    tensor_parallel_size: int = Field(default=1, ge=1, description="vllm: GPUs per model replica.")
    data_parallel_size: int = Field(default=1, ge=1, description="vllm: model replicas.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description=(
        'vllm: passed to vllm.LLM as is, e.g. {"gpu_memory_utilization": 0.8, "max_model_len": 4096}.'))
    base_url: str | None = Field(default=None, description="openai: the server's URL, e.g. http://localhost:8000/v1.")
    api_key_env: str | None = Field(default=None, description="openai: the environment variable holding the API key.")
    concurrency: int = Field(default=8, ge=1, description="openai: requests in flight at once.")

    @model_validator(mode="after")
    def openai_needs_a_server(self) -> BackendSettings:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai backend needs base_url (--base-url), e.g. http://localhost:8000/v1")
        return self

    def local(self) -> BackendSettings:
        """The engine for models no server holds (those trained here): this one, or hf where this is a server."""
        return self if self.backend != "openai" else BackendSettings()

    @property
    def options(self) -> dict[str, Any]:
        """The settings of this backend only (what its generator takes)."""
        names = {"hf": (), "vllm": ("tensor_parallel_size", "data_parallel_size", "engine_kwargs"),
                 "openai": ("base_url", "api_key_env", "concurrency")}[self.backend]
        return {name: getattr(self, name) for name in names}
