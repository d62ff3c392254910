"""The kinds of stage, each registered once: its typed spec, the library call that runs one, how it is placed
(shards then a merge, one process, one process on a device, or an accelerate launch), which entry of a
recipe's `resources.stages` it takes, and what of its spec decides its outputs beside its inputs' content
(its fingerprint). A Stage is one spec of a kind, with its inputs, outputs and placement: plain data that a
worker process reads from a JSON file (wrpo.pipeline.worker).

Adding a kind: its spec and run function here and a line in KINDS; the planner (wrpo.pipeline.plan or
wrpo.ablation.variants) makes stages of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SerializeAsAny, field_validator

from wrpo.data.construct import PairSettings, SplitSettings
from wrpo.data.variant_data import VariantDataSpec, write_variant_data
from wrpo.evaluation.ablation_judge import ReportSpec, judge_and_report
from wrpo.evaluation.checkpoint_choice import CheckpointChoiceSpec, choose_checkpoint, describe_choice, read_choice
from wrpo.files import missing_module
from wrpo.generation.settings import BackendSettings, SamplingSettings
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.placement import Placement
from wrpo.reward.settings import RewardSettings

Shard = tuple[int, int]  # (I, N): the I-th of N processes sharing a stage's rows


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleSpec(Spec):
    model: str
    prompts: Path
    output: Path
    name: str                     # the model's name in the rows
    sampling: SamplingSettings
    backend: BackendSettings
    categories: list[str] | None = None  # the prompt categories it answers; None: all

    def devices(self) -> int:
        """Devices of one shard: a server holds its own."""
        return 0 if self.backend.backend == "openai" else self.backend.tensor_parallel_size


def _sample(spec: SampleSpec, shard: Shard) -> str:
    from wrpo.generation.sample import sample

    written = sample(spec.model, spec.prompts, spec.output, spec.sampling, backend=spec.backend, shard=shard,
                     name=spec.name, categories=spec.categories)
    return f"wrote {written}"


def _sampled_with(spec: SampleSpec) -> dict:
    options = spec.backend.options
    return {"sampling": spec.sampling.model_dump(), "backend": spec.backend.backend, "name": spec.name,
            **({"options": options} if options else {}), **({"categories": spec.categories} if spec.categories else {})}


class ScoreSpec(Spec):
    responses: list[Path]
    output: Path
    reward: RewardSettings

    def devices(self) -> int:
        return 1


def _score(spec: ScoreSpec, shard: Shard) -> str:
    from wrpo.reward.score import score

    written = score(spec.responses, spec.reward.scorer, spec.output, batch_size=spec.reward.batch_size,
                    trust_remote_code=spec.reward.trust_remote_code, shard=shard, verifiers=spec.reward.verifiers)
    return f"wrote {written}"


class BuildSFTSpec(Spec):
    scores: list[Path]
    sft_output: Path
    preference_output: Path
    split: SplitSettings


def _build_sft(spec: BuildSFTSpec):
    from wrpo.data.construct import build_sft

    return build_sft(spec.scores, spec.sft_output, spec.preference_output, **spec.split.model_dump())


class BuildPairsSpec(Spec):
    preference_prompts: Path
    target_scores: list[Path]
    output: Path
    pairs: PairSettings


def _build_pairs(spec: BuildPairsSpec):
    from wrpo.data.construct import build_pairs

    return build_pairs(spec.preference_prompts, spec.target_scores, spec.output,
                       **spec.pairs.model_dump(exclude={"target_samples"}))


class TrainingSpec(Spec):
    model: str
    data: Path
    output: Path
    settings: dict[str, Any]      # fields of the kind's config class; those of the machine are set where it runs


def _sft_config():
    from wrpo.training.sft import WRPOSFTConfig

    return WRPOSFTConfig


def _wrpo_config():
    from wrpo.training.config import WRPOConfig

    return WRPOConfig


def _sft(spec: TrainingSpec) -> str:
    from wrpo.training.run import trained
    from wrpo.training.sft import sft

    return trained(lambda: sft(spec.model, spec.data, _config(spec, _sft_config())), "fine-tuned")


def _wrpo(spec: TrainingSpec) -> str:
    from wrpo.training.run import train, trained

    return trained(lambda: train(spec.model, spec.data, _config(spec, _wrpo_config())), "trained")


def _config(spec: TrainingSpec, config_class):
    from wrpo.training.settings import build_config

    return build_config(config_class, {**spec.settings, "output_dir": str(spec.output)})


def _variant_data(spec: VariantDataSpec):
    written = write_variant_data(spec)
    return f"wrote {written}" if isinstance(written, Path) else written


def _ablation_report(spec: ReportSpec) -> str:
    return f"report: {judge_and_report(spec).folder / 'report.md'}"


def _choose_checkpoint(spec: CheckpointChoiceSpec) -> str:
    return describe_choice(choose_checkpoint(spec))


def _chosen(spec: CheckpointChoiceSpec) -> str | None:
    choice = read_choice(spec.output)
    return describe_choice(choice) if choice else None


def _spec_settings(spec: BaseModel) -> dict:
    return spec.model_dump(mode="json")


@dataclass(frozen=True)
class StageKind:
    name: str
    spec: type[BaseModel]
    run: Callable                       # run(spec) -> what to print; shards: run(spec, shard)
    placement: Literal["shards", "one", "one-device", "launch"]
    resources: str                      # its key in a recipe's resources.stages
    settings: Callable[[BaseModel], dict] = _spec_settings  # what decides its outputs beside its inputs' content
    config_class: Callable | None = None  # launch: the training config class (imported when asked for)
    outcome: Callable[[BaseModel], str | None] | None = None  # what `wrpo status` says of it once done


KINDS = {kind.name: kind for kind in (
    StageKind("sample", SampleSpec, _sample, "shards", "sample", _sampled_with),
    StageKind("score", ScoreSpec, _score, "shards", "score", lambda spec: spec.reward.model_dump()),
    StageKind("build-sft", BuildSFTSpec, _build_sft, "one", "build", lambda spec: spec.split.model_dump()),
    StageKind("build-pairs", BuildPairsSpec, _build_pairs, "one", "build", lambda spec: spec.pairs.model_dump()),
    StageKind("sft", TrainingSpec, _sft, "launch", "sft", lambda spec: spec.settings, _sft_config),
    StageKind("wrpo", TrainingSpec, _wrpo, "launch", "wrpo", lambda spec: spec.settings, _wrpo_config),
    StageKind("variant-data", VariantDataSpec, _variant_data, "one", "build"),
    StageKind("ablation-report", ReportSpec, _ablation_report, "one-device", "score"),
    StageKind("choose-checkpoint", CheckpointChoiceSpec, _choose_checkpoint, "one-device", "score",
              outcome=_chosen),
)}
RESOURCE_KEYS = tuple(dict.fromkeys(kind.resources for kind in KINDS.values()))


class Stage(BaseModel):
    """One spec of a kind: what it reads (inputs: files, folders or Hub ids whose content decides its
    outputs), what it writes, and where it runs."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    spec: SerializeAsAny[BaseModel]  # its kind's spec class
    inputs: list[str]
    outputs: list[Path]
    workdir: Path                   # where its manifest and log are kept
    placement: Placement = Placement()

    @field_validator("spec", mode="before")
    @classmethod
    def typed(cls, spec, info):
        """A spec read from JSON becomes its kind's spec class."""
        return KINDS[info.data["kind"]].spec.model_validate(spec) if isinstance(spec, dict) else spec

    @property
    def settings(self) -> dict:
        return KINDS[self.kind].settings(self.spec)

    @property
    def layout(self) -> Workdir:
        return Workdir(self.workdir)

    def unreadable(self) -> str | None:
        """What keeps its inputs from being fingerprinted here, in words: a scorer whose module cannot be
        imported (a shell without the recipe's PYTHONPATH). None when they can be."""
        reward = getattr(self.spec, "reward", None)
        functions = [reward.function, *reward.verifiers.values()] if reward is not None else []
        module = next(filter(None, (missing_module(function) for function in functions if function)), None)
        return f"its scorer's module {module} cannot be imported here" if module else None
