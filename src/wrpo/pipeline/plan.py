"""The stages of `wrpo run`, planned from a recipe without running or writing anything:

    sample/sources/<name>, score/sources/<name>   for every source model
    build-sft        y_ws per prompt; SFT set and preference prompts
    sft              target -> target-sft
    sample/target-sft, score/target-sft            (unless pairs.target_samples is false)
    build-pairs      quadruples (y_ws, y_wt, y_l)
    wrpo             target-sft -> target-sft-wrpo
    choose/sft, choose/wrpo   the checkpoint chosen by held-out reward (with checkpoint_choice)

Each stage is a spec of its kind (wrpo.pipeline.kinds), placed by the recipe's resources
(wrpo.pipeline.placement).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import BaseModel

from wrpo.errors import InputError
from wrpo.evaluation.checkpoint_choice import CheckpointChoiceSpec
from wrpo.generation.settings import BackendSettings, SamplingSettings
from wrpo.pipeline.kinds import (
    KINDS,
    RESOURCE_KEYS,
    BuildPairsSpec,
    BuildSFTSpec,
    SampleSpec,
    ScoreSpec,
    Stage,
    TrainingSpec,
)
from wrpo.pipeline.placement import place
from wrpo.pipeline.recipe import ModelSpec, Recipe


def plan(recipe: Recipe) -> list[Stage]:
    """Every stage of the recipe's pipeline, in the order they run."""
    layout = recipe.layout
    stages: list[Stage] = []

    def sampling(spec: ModelSpec, model: str, prompts: Path, output: Path, settings: SamplingSettings) -> None:
        name = f"sample/{output.relative_to(layout.root / 'samples').with_suffix('')}"
        stages.append(stage(recipe, name, "sample", SampleSpec(
            model=model, prompts=prompts, output=output, name=output.stem, sampling=settings,
            backend=model_backend(spec), categories=getattr(spec, "categories", None)),  # a source's only
            [model, str(prompts)], [output]))
        scores = layout.root / "scores" / output.relative_to(layout.root / "samples")
        stages.append(stage(recipe, f"score/{scores.relative_to(layout.root / 'scores').with_suffix('')}", "score",
                            ScoreSpec(responses=[output], output=scores, reward=recipe.reward),
                            [str(output), recipe.reward.scorer, *recipe.reward.verifiers.values()], [scores]))

    for source in recipe.sources:
        sampling(source, source.model, recipe.prompts, layout.source_samples(source.name),
                 recipe.sampling.over(source.sampling))
    source_scores = [layout.source_scores(source.name) for source in recipe.sources]
    stages.append(stage(recipe, "build-sft", "build-sft",
                        BuildSFTSpec(scores=source_scores, sft_output=layout.sft_data,
                                     preference_output=layout.preference_prompts, split=recipe.split),
                        list(map(str, source_scores)), [layout.sft_data, layout.preference_prompts]))
    stages.append(training(recipe, "sft", "sft", recipe.target.model, layout.sft_data, layout.target_sft, recipe.sft))
    stages += checkpoint_choice(recipe, "sft")
    target_scores = [layout.target_scores] if recipe.pairs.target_samples else []
    if recipe.pairs.target_samples:
        sampling(recipe.target, str(model_of(recipe, "sft")), layout.preference_prompts, layout.target_samples,
                 recipe.sampling.over(recipe.target.sampling))
    stages.append(stage(recipe, "build-pairs", "build-pairs",
                        BuildPairsSpec(preference_prompts=layout.preference_prompts, target_scores=target_scores,
                                       output=layout.quadruples, pairs=recipe.pairs),
                        [str(layout.preference_prompts), *map(str, target_scores)], [layout.quadruples]))
    stages.append(training(recipe, "wrpo", "wrpo", str(model_of(recipe, "sft")), layout.quadruples,
                           layout.target_wrpo, recipe.wrpo))
    stages += checkpoint_choice(recipe, "wrpo")
    check_resource_keys(recipe, [stage.name for stage in stages])
    return stages


def stage(recipe: Recipe, name: str, kind: str, spec: BaseModel, inputs: list[str], outputs: list[Path]) -> Stage:
    """A stage of `kind`, placed by the recipe's resources."""
    placement = place(KINDS[kind], spec, name, recipe.resources, recipe.layout.accelerate_config(name))
    return Stage(name=name, kind=kind, spec=spec, inputs=inputs, outputs=outputs, workdir=recipe.layout.root,
                 placement=placement)


def training(recipe: Recipe, name: str, kind: str, model: str, data: Path, output: Path, settings: dict) -> Stage:
    """An SFT or WRPO stage (kind sft or wrpo) whose settings are its config class's fields."""
    return stage(recipe, name, kind, TrainingSpec(model=model, data=data, output=output, settings=settings),
                 [model, str(data)], [output])


def model_of(recipe: Recipe, section: str) -> Path:
    """The model a training section's stage hands on: its run's chosen checkpoint where the recipe chooses one."""
    return recipe.layout.chosen(section) if recipe.chooses_checkpoint(section) else recipe.layout.trained(section)


def checkpoint_choice(recipe: Recipe, section: str) -> list[Stage]:
    """The stage choosing the section's checkpoint, where the recipe asks for one."""
    if not recipe.chooses_checkpoint(section):
        return []
    choice = recipe.checkpoint_choice
    judge = recipe.reward.model_copy(update={"verifiers": {}})  # a mean reward has no place for their order
    spec = CheckpointChoiceSpec(trained=recipe.layout.trained(section), last=choice.last,
                                eval_prompts=choice.eval_prompts, reward=judge,
                                backend=model_backend(recipe.target).local(),
                                max_new_tokens=choice.answer_tokens(recipe.sampling),
                                batch_size=choice.batch_size, output=recipe.layout.chosen(section))
    return [stage(recipe, f"choose/{section}", "choose-checkpoint", spec,
                  [str(spec.trained), str(spec.eval_prompts), recipe.reward.scorer], [spec.output])]


def model_backend(spec: ModelSpec) -> BackendSettings:
    """The engine settings of a recipe's model."""
    return BackendSettings(**spec.model_dump(include=set(BackendSettings.model_fields)))


def check_resource_keys(recipe: Recipe, names: list[str]) -> None:
    """Every key of resources.stages names a stage kind's entry or a stage; a bad one names its line."""
    known = [*RESOURCE_KEYS, *names]
    for key in recipe.resources.stages:
        if key not in known:
            nearest = difflib.get_close_matches(key, sorted(known), n=1)
            raise InputError(f"resources.stages: no stage or stage kind '{key}'"
                             + (f" (did you mean '{nearest[0]}'?)" if nearest else ""), recipe.path,
                             recipe.line("resources", "stages", key))
