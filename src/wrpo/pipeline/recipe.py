"""Recipe files: one YAML naming the models, backends and settings of every stage of `wrpo run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from wrpo.data.construct import PairSettings, SplitSettings
from wrpo.errors import InputError
from wrpo.generation.settings import BackendSettings, ModelSampling, SamplingSettings
from wrpo.pipeline.kinds import KINDS
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.placement import SlurmOptions, distributed_type
from wrpo.reward.settings import RewardSettings
from wrpo.yaml_files import line_of, load_yaml, validated


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(BackendSettings):
    """A model of the recipe and the engine it runs on (BackendSettings: hf, vllm or openai)."""

    name: str = Field(description="Label used in file names and reports.")
    model: str = Field(description="A model folder or Hub id (openai: the model's name on the server).")
    sampling: ModelSampling | None = Field(default=None, description=(
        "This model's own sampling settings, each over the recipe's (by_category: category by category)."))

    @field_validator("name")
    @classmethod
    def usable_in_file_names(cls, name: str) -> str:
        if not name or any(c in name for c in "/\\:") or name.startswith("."):
            raise ValueError(f"name {name!r} must be usable as a file name")
        return name


class SourceSpec(ModelSpec):
    categories: list[str] | None = Field(default=None, min_length=1, description=(
        "The prompt categories this source answers [all]: FuseChat-3.0 samples math from a math model only."))


class HeldOutJudging(Strict):
    """What models are judged on where the recipe compares them: greedy answers to held-out prompts, scored by the
    recipe's reward (`wrpo ablate`'s variants, checkpoint_choice's checkpoints)."""

    eval_prompts: Path = Field(description=(
        "Held-out prompts the models are judged on (with 'category' for per-category figures); none may be a "
        "training prompt. Relative to the recipe."))
    max_new_tokens: int | None = Field(default=None, ge=1, description=(
        "Longest greedy answer in the evaluation [sampling.max_new_tokens]."))
    batch_size: int = Field(default=16, ge=1, description="Prompts per answering batch, responses per judging batch.")

    def answer_tokens(self, sampling: SamplingSettings) -> int:
        """The longest greedy answer: max_new_tokens, else the recipe's sampling's."""
        return self.max_new_tokens or sampling.max_new_tokens


class AblationSpec(HeldOutJudging):
    """`wrpo ablate`: the paper's comparisons trained from the recipe's target-sft and quadruples."""

    seeds: list[int] = Field(default=[0, 1, 2], min_length=1, description="Training seeds of every variant.")
    variants: list[str] | None = Field(default=None, description="Variants to train [all]; see `wrpo ablate --help`.")


class CheckpointChoice(HeldOutJudging):
    """FuseChat-3.0's checkpoint choice: a training run keeps a checkpoint every `save_steps` (its section's
    setting), and the best of its last few by the recipe's judge on held-out prompts is the model that goes on."""

    stages: list[Literal["sft", "wrpo"]] = Field(default=["wrpo"], min_length=1, description=(
        "Training stages whose checkpoint is chosen; the chosen model is models/NAME-chosen, and what follows "
        "(wrpo after sft) starts from it."))
    last: int = Field(default=2, ge=1, description="Choose among this many last checkpoints.")


class StageResources(Strict):
    """What one stage (or every stage of a kind) gets instead of the defaults."""

    nodes: int | None = Field(default=None, ge=1, description="sft, wrpo: nodes (one launcher each, under Slurm).")
    shards: int | None = Field(default=None, ge=1, description=(
        "sample, score: processes, each on its own devices [devices / tensor parallel size]."))
    accelerate_config: Path | None = Field(default=None, description="sft, wrpo: accelerate config file.")
    slurm: SlurmOptions = Field(default_factory=dict, description="sbatch options of this stage's jobs.")
    warning_seconds: int | None = Field(default=None, ge=0, le=65535, description="See resources.warning_seconds.")


class Resources(Strict):
    """Where the stages run. Without this section every stage is one process with no launcher."""

    devices_per_node: int = Field(default=0, ge=0, description=(
        "Devices of a node: GPUs (device_type gpu) or CPU processes (cpu); 0: one process per stage."))
    device_type: Literal["gpu", "cpu"] = Field(default="gpu", description=(
        "cpu: the devices are processes on CPUs (DDP over gloo; for trying a layout without GPUs)."))
    nodes: int = Field(default=1, ge=1, description="Nodes the training stages use (the slurm executor).")
    accelerate_config: Path | None = Field(default=None, description=(
        "sft, wrpo: accelerate config (DDP, DeepSpeed, FSDP); relative to the recipe."))
    slurm: SlurmOptions = Field(default_factory=dict, description=(
        "sbatch options of every job: partition, account, time, qos, ..."))
    warning_seconds: int = Field(default=300, ge=0, le=65535, description=(
        "Slurm: seconds before a job's time limit at which Slurm warns it (sbatch --signal; Slurm may warn up to "
        "60 s earlier): training saves a checkpoint at the end of its step, sampling and scoring stop after "
        "their batch, and the job requeues itself to resume. Leave time for a step and a checkpoint; 0: none."))
    stages: dict[str, StageResources] = Field(default_factory=dict, description=(
        "Overrides per stage kind (sample, score, build, sft, wrpo) or stage name (sample/sources/NAME)."))

    def of(self, kind: str, stage: str) -> StageResources:
        """The stage's resources: its own entry over its kind's over the defaults."""
        merged = StageResources(nodes=self.nodes, accelerate_config=self.accelerate_config, slurm=self.slurm,
                                warning_seconds=self.warning_seconds)
        for key in (kind, stage):
            given = self.stages.get(key)
            if given is not None:
                merged = merged.model_copy(update={
                    **given.model_dump(exclude_unset=True, exclude={"slurm"}),
                    "slurm": {**merged.slurm, **given.slurm}})
        return merged


class Recipe(Strict):
    workdir: Path = Field(description="Every stage writes below here; relative to the recipe file.")
    prompts: Path = Field(description="Prompt file (JSONL, Parquet or datasets folder); relative to the recipe.")
    sources: list[SourceSpec] = Field(min_length=1)
    target: ModelSpec
    reward: RewardSettings
    sampling: SamplingSettings = SamplingSettings()
    split: SplitSettings = SplitSettings()
    pairs: PairSettings = PairSettings()
    sft: dict[str, Any] = Field(default_factory=dict, description="WRPOSFTConfig fields (or `wrpo sft` flag names).")
    wrpo: dict[str, Any] = Field(default_factory=dict, description="WRPOConfig fields (or `wrpo train` flag names).")
    resources: Resources = Resources()
    ablation: AblationSpec | None = None
    checkpoint_choice: CheckpointChoice | None = None
    _source: tuple[Path | None, Any] = PrivateAttr(default=(None, None))  # its file and YAML node

    def line(self, *location) -> int | None:
        """The line of a key of the recipe's file (a tuple of keys and indexes), when it was read from one."""
        return line_of(self._source[1], location) if self._source[1] is not None else None

    def chooses_checkpoint(self, section: str) -> bool:
        """Whether the training section's checkpoint is chosen by held-out reward (checkpoint_choice)."""
        return self.checkpoint_choice is not None and section in self.checkpoint_choice.stages

    @property
    def path(self) -> Path | None:
        return self._source[0]

    @property
    def layout(self) -> Workdir:
        return Workdir(self.workdir)

    @model_validator(mode="before")
    @classmethod
    def renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "target_sampling" in data:
            raise ValueError("target_sampling is now the target's own sampling: `target: {..., sampling: {...}}`, "
                             "which takes only the settings that differ from `sampling:`")
        return data

    @field_validator("sources")
    @classmethod
    def distinct_names(cls, sources: list[SourceSpec]) -> list[SourceSpec]:
        names = [source.name for source in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be distinct, got {names}")
        return sources


def load_recipe(path: str | Path) -> Recipe:
    """The recipe at `path`, its relative paths resolved against the recipe's folder."""
    path = Path(path)
    data, node = load_yaml(path, "recipe")
    recipe = validated(Recipe, data or {}, path, node)
    recipe._source = (path, node)
    base = path.parent.resolve()  # the stages' processes may start elsewhere (a Slurm job's folder)

    def local(model: str | None) -> str | None:
        """A model named relative to the recipe, when that folder exists; else as written (a Hub id)."""
        return str(base / model) if model is not None and (base / model).exists() else model

    recipe = recipe.model_copy(update={
        "workdir": base / recipe.workdir, "prompts": base / recipe.prompts,
        "sources": [s.model_copy(update={"model": local(s.model)}) for s in recipe.sources],
        "target": recipe.target.model_copy(update={"model": local(recipe.target.model)}),
        "reward": recipe.reward.model_copy(update={"model": local(recipe.reward.model)}),
        "resources": resolved_resources(recipe, path, node),
        **{section: judging and judging.model_copy(update={"eval_prompts": base / judging.eval_prompts})
           for section, judging in (("ablation", recipe.ablation), ("checkpoint_choice", recipe.checkpoint_choice))},
    })
    return recipe.model_copy(update={section: training_settings(recipe, section, path, node)
                                     for section in TRAINING_SECTIONS})


def resolved_resources(recipe: Recipe, path: Path, node) -> Resources:
    """The resources section with its accelerate configs read from the recipe's folder (and there); its
    per-stage keys are checked against the stages when they are planned (wrpo.pipeline.plan)."""
    resources = recipe.resources

    def local_file(config: Path | None, location: tuple) -> Path | None:
        if config is None:
            return None
        config = path.parent.resolve() / config
        if not config.is_file():
            raise InputError(f"{'.'.join(location)}: no file {config}", path, line_of(node, location))
        return config

    return resources.model_copy(update={
        "accelerate_config": local_file(resources.accelerate_config, ("resources", "accelerate_config")),
        "stages": {key: stage.model_copy(update={"accelerate_config": local_file(
            stage.accelerate_config, ("resources", "stages", key, "accelerate_config"))})
            if stage.accelerate_config else stage for key, stage in resources.stages.items()}})


TRAINING_SECTIONS = ("sft", "wrpo")  # each the settings of the stage kind of that name
MACHINE_SETTINGS = ("bf16", "fp16", "tf32", "deepspeed", "fsdp", "fsdp_config", "use_cpu")


def training_settings(recipe: Recipe, section: str, path: Path, node) -> dict[str, Any]:
    """The section's settings, checked now (not when its stage starts): keys as config fields, a
    DeepSpeed file named relative to the recipe resolved; a bad key or value names its line. DeepSpeed
    is set up one way only: a `deepspeed:` file here and an accelerate config of DeepSpeed type for
    the same stage would each configure it (accelerate stops on that), so that is refused here."""
    from wrpo.training.settings import build_config, normalise_settings

    section_class = KINDS[section].config_class()
    given = {key: (value, line_of(node, (section, key))) for key, value in getattr(recipe, section).items()}
    values, lines, _ = normalise_settings(section_class, given, path)
    if isinstance(values.get("deepspeed"), str):
        values["deepspeed"] = str(path.parent / values["deepspeed"])
    launch_config = recipe.resources.of(section, section).accelerate_config
    if values.get("deepspeed") and distributed_type(launch_config) == "DEEPSPEED":
        raise InputError(f"{section}.deepspeed: this stage is launched with the accelerate config {launch_config}, "
                         "which sets DeepSpeed up already; give DeepSpeed its settings one way: remove this key, "
                         "or launch with an accelerate config that does not use DeepSpeed", path,
                         lines.get("deepspeed"))
    if recipe.chooses_checkpoint(section):
        if values.get("lora_r", 0) > 0:
            raise InputError(f"{section}.lora_r: a LoRA run's checkpoints hold its adapters alone, not a model "
                             "checkpoint_choice can hand on; choose among full fine-tuning checkpoints", path,
                             lines.get("lora_r"))
        last = recipe.checkpoint_choice.last
        for name, fits in (("save_strategy", lambda value: value == "steps"),
                           ("save_total_limit", lambda value: value is None or value >= last)):
            value = section_setting(section, values, name)
            if not fits(str(value) if name == "save_strategy" else value):
                raise InputError(f"{section}.{name}: {value} keeps too few checkpoints for checkpoint_choice, which "
                                 f"chooses among the last {last} saved every save_steps", path,
                                 lines.get(name))
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
    build_config(section_class, {**portable, "output_dir": str(recipe.layout.trained(section))}, lines,
                 path, section_line=line_of(node, (section,)))
    return values


def section_setting(section: str, settings: dict[str, Any], name: str) -> Any:
    """A training section's setting: its value in `settings` (config fields), else its config class's default."""
    return settings.get(name, KINDS[section].config_class().__dataclass_fields__[name].default)
