"""Recipe files: one YAML naming the models, backends and settings of every stage of `wrpo run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wrpo.errors import InputError
from wrpo.generation.settings import BackendSettings, SamplingSettings
from wrpo.yaml_files import line_of, load_yaml, validated


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(BackendSettings):
    """A model of the recipe and the engine it runs on (BackendSettings: hf, vllm or openai)."""

    name: str = Field(description="Label used in file names and reports.")
    model: str = Field(description="A model folder or Hub id (openai: the model's name on the server).")

    @field_validator("name")
    @classmethod
    def usable_in_file_names(cls, name: str) -> str:
        if not name or any(c in name for c in "/\\:") or name.startswith("."):
            raise ValueError(f"name {name!r} must be usable as a file name")
        return name


class RewardSpec(Strict):
    model: str | None = Field(default=None, description="A reward model folder or Hub id.")
    function: str | None = Field(default=None, description="A Python scorer, pkg.module:function.")
    trust_remote_code: bool = False
    batch_size: int = 16

    @property
    def scorer(self) -> str:
        return self.model or self.function

    @model_validator(mode="after")
    def one_scorer(self) -> RewardSpec:
        if (self.model is None) == (self.function is None):
            raise ValueError("reward needs exactly one of 'model' and 'function'")
        return self


class SplitSpec(Strict):
    sft_fraction: float = Field(default=1 / 3, ge=0, le=1)
    seed: int = 42


class PairsSpec(Strict):
    top_k_sources: int = Field(default=1, ge=1)


class Recipe(Strict):
    workdir: Path = Field(description="Every stage writes below here; relative to the recipe file.")
    prompts: Path = Field(description="Prompt file (JSONL, Parquet or datasets folder); relative to the recipe.")
    sources: list[ModelSpec] = Field(min_length=1)
    target: ModelSpec
    reward: RewardSpec
    sampling: SamplingSettings = SamplingSettings()
    target_sampling: SamplingSettings | None = Field(default=None,
                                                     description="Sampling of target-sft; default: sampling.")
    split: SplitSpec = SplitSpec()
    pairs: PairsSpec = PairsSpec()
    sft: dict[str, Any] = Field(default_factory=dict, description="WRPOSFTConfig fields (or `wrpo sft` flag names).")
    wrpo: dict[str, Any] = Field(default_factory=dict, description="WRPOConfig fields (or `wrpo train` flag names).")

    @field_validator("sources")
    @classmethod
    def distinct_names(cls, sources: list[ModelSpec]) -> list[ModelSpec]:
        names = [source.name for source in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be distinct, got {names}")
        return sources


def load_recipe(path: str | Path) -> Recipe:
    """The recipe at `path`, its relative paths resolved against the recipe's folder."""
    path = Path(path)
    data, node = load_yaml(path, "recipe")
    recipe = validated(Recipe, data or {}, path, node)
    base = path.parent

    def local(model: str | None) -> str | None:
        """A model named relative to the recipe, when that folder exists; else as written (a Hub id)."""
        return str(base / model) if model is not None and (base / model).exists() else model

    recipe = recipe.model_copy(update={
        "workdir": base / recipe.workdir, "prompts": base / recipe.prompts,
        "sources": [s.model_copy(update={"model": local(s.model)}) for s in recipe.sources],
        "target": recipe.target.model_copy(update={"model": local(recipe.target.model)}),
        "reward": recipe.reward.model_copy(update={"model": local(recipe.reward.model)}),
    })
    return recipe.model_copy(update={section: training_settings(recipe, section, path, node)
                                     for section in TRAINING_OUTPUTS})


# The training stages' sections and their output folders below the workdir.
TRAINING_OUTPUTS = {"sft": Path("models/target-sft"), "wrpo": Path("models/target-sft-wrpo")}
MACHINE_SETTINGS = ("bf16", "fp16", "tf32", "deepspeed", "fsdp", "fsdp_config", "use_cpu")


def training_config(recipe: Recipe, section: str):
    """The stage's config (WRPOSFTConfig or WRPOConfig) from a recipe that load_recipe checked."""
    return _config_class(section)(output_dir=str(recipe.workdir / TRAINING_OUTPUTS[section]),
                                  **getattr(recipe, section))


def training_settings(recipe: Recipe, section: str, path: Path, node) -> dict[str, Any]:
    """The section's settings, checked now (not when its stage starts): keys as config fields, a
    DeepSpeed file named relative to the recipe resolved; a bad key or value names its line."""
    from wrpo.training.settings import build_config, normalise_settings

    config_class = _config_class(section)
    given = {key: (value, line_of(node, (section, key))) for key, value in getattr(recipe, section).items()}
    values, lines, _ = normalise_settings(config_class, given, path)
    if isinstance(values.get("deepspeed"), str):
        values["deepspeed"] = str(path.parent / values["deepspeed"])
    if section == "wrpo":
        top_k = values.setdefault("top_k_sources", recipe.pairs.top_k_sources)
        if top_k != recipe.pairs.top_k_sources:
            raise InputError(f"wrpo.top_k_sources ({top_k}) differs from pairs.top_k_sources "
                             f"({recipe.pairs.top_k_sources}): the quadruples would not match training", path,
                             lines.get("top_k_sources"))
    # Settings that depend on the machine that trains are left to that machine: a recipe for GPUs is
    # loaded (and submitted) from machines without them, and a DeepSpeed config would switch
    # transformers' ZeRO-3 loading on in this process.
    portable = {name: value for name, value in values.items() if name not in MACHINE_SETTINGS}
    build_config(config_class, {**portable, "output_dir": str(recipe.workdir / TRAINING_OUTPUTS[section])}, lines,
                 path, section_line=line_of(node, (section,)))
    return values


def _config_class(section: str):
    from wrpo.training.config import WRPOConfig
    from wrpo.training.sft import WRPOSFTConfig

    return {"sft": WRPOSFTConfig, "wrpo": WRPOConfig}[section]
