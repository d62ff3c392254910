"""`wrpo ablate RECIPE`: the recipe's pipeline (its stages not yet done), then the ablation's stages
(wrpo.ablation.variants): the variants' data, every variant and seed as a training stage of its own (skipped
when finished and unchanged, resumed after a kill), and the report's: every model judged on the held-out
prompts by the recipe's judge, and report.md, report.json and plots written in WORKDIR/ablation. An executor
that submits and returns (slurm) needs the pipeline done first: the runs' data is made from its quadruples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wrpo.ablation.variants import plan_ablation, variant_names
from wrpo.data.prompts import check_held_out
from wrpo.errors import InputError
from wrpo.evaluation.ablation_judge import AblationResult, judge_and_report
from wrpo.locks import output_lock
from wrpo.pipeline.executor import Executor
from wrpo.pipeline.local import LocalExecutor
from wrpo.pipeline.plan import plan
from wrpo.pipeline.recipe import Recipe, load_recipe
from wrpo.pipeline.run import run_recipe, run_stages
from wrpo.pipeline.state import decision_now, not_done


@dataclass
class Ablation:
    statuses: dict[str, str]            # each ablation stage's status, as `wrpo run` gives them
    result: AblationResult | None       # None until the report is written (slurm: by the last job)


def ablate(recipe_path: str | Path, seeds: list[int] | None = None, variants: list[str] | None = None,
           executor: Executor | None = None) -> Ablation:
    """Seeds and variants default to the recipe's `ablation:` section (all variants, seeds 0, 1, 2); the
    executor to the local one."""
    executor = executor or LocalExecutor()
    recipe, seeds, names = checked(recipe_path, seeds, variants)
    if executor.waits:
        run_recipe(recipe_path, executor)
    else:
        unfinished = not_done(plan(recipe))
        if unfinished:
            raise InputError(f"--executor {executor.name}: the recipe's stages {', '.join(unfinished)} are not done; "
                             f"run `wrpo run {recipe_path} --executor {executor.name}`, then `wrpo ablate` once "
                             "those jobs finish", recipe_path)
    with output_lock(recipe.layout.ablation):  # one `wrpo ablate` per workdir at a time
        stages = plan_ablation(recipe, names, seeds, str(recipe_path))
        statuses = run_stages(stages, recipe.layout, executor, recipe_path)
    report = stages[-1]
    finished = decision_now(report).action == "skip"
    return Ablation(statuses, judge_and_report(report.spec, write=False) if finished else None)


def checked(recipe_path: str | Path, seeds: list[int] | None,
            variants: list[str] | None) -> tuple[Recipe, list[int], list[str]]:
    """The recipe, seeds and variant names of an ablation, checked before hours of training."""
    recipe = load_recipe(recipe_path)
    spec = recipe.ablation
    if spec is None:
        raise InputError("the recipe has no ablation: section; add one naming the held-out prompts, e.g. "
                         "ablation: {eval_prompts: data/heldout.jsonl}", recipe_path)
    seeds = list(dict.fromkeys(seeds or spec.seeds))
    names = variants or spec.variants or variant_names(len(recipe.sources))
    for index, name in enumerate(names):
        if name not in variant_names(len(recipe.sources)):
            given_in_recipe = not variants
            raise InputError(f"{'ablation.variants' if given_in_recipe else '--variants'}: no variant '{name}' "
                             f"(known for {len(recipe.sources)} sources: "
                             f"{', '.join(variant_names(len(recipe.sources)))})",
                             recipe_path if given_in_recipe else None,
                             recipe.line("ablation", "variants", index) if given_in_recipe else None)
    check_held_out(recipe.prompts, spec.eval_prompts)
    return recipe, seeds, names
