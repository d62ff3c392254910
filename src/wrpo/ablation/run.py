"""`wrpo ablate RECIPE`: the recipe's pipeline (its stages not yet done), then every variant and seed as
a training stage of its own (skipped when finished and unchanged, resumed after a kill), then every
model judged on the held-out prompts by the recipe's judge, and the report (report.md, report.json,
plots) in WORKDIR/ablation. With `--executor slurm` the runs are Slurm jobs (wrpo.pipeline.slurm) and the
judging and report a last job after them, `wrpo ablate --report-only`; the pipeline must be done first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from wrpo.ablation.report import OVERALL, render, summarise
from wrpo.ablation.variants import VariantRun, plan_variants, variant, variant_names
from wrpo.data.prompts import read_prompts
from wrpo.errors import InputError
from wrpo.evaluation.compare import ModelResult, evaluate_model
from wrpo.evaluation.plots import paired_differences, per_category_bars, training_curves
from wrpo.files import write_text_atomically
from wrpo.generation.settings import GREEDY, BackendSettings
from wrpo.locks import output_lock
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.local import LocalExecutor
from wrpo.pipeline.recipe import Recipe, load_recipe
from wrpo.pipeline.run import decide, mark_stage, run_recipe, run_stages, stage_named
from wrpo.pipeline.slurm import submit
from wrpo.pipeline.stages import Stage, Step, Task, plan
from wrpo.yaml_files import line_of, load_yaml

REPORT = "ablation/report"  # the stage of the slurm executor's last job


@dataclass
class AblationResult:
    report: dict                                      # what report.json holds
    baselines: dict[str, ModelResult]                 # target, target-sft
    variants: dict[str, dict[int, ModelResult]]       # variant -> seed -> its judged answers
    runs: list[VariantRun]
    folder: Path                                      # report.md, report.json and the plots


def ablate(recipe_path: str | Path, seeds: list[int] | None = None, variants: list[str] | None = None,
           executor: str = "local") -> AblationResult | dict[str, str]:
    """Seeds and variants default to the recipe's `ablation:` section (all variants, seeds 0, 1, 2).
    local: the pipeline's stages not yet done, then the runs, here; returns the result. slurm: submits the
    runs and a last job that writes the report once they finish (ablation_report); returns each stage's status,
    as run_recipe does. The pipeline must be finished first: the runs' data is made from its quadruples."""
    recipe, seeds, names = checked(recipe_path, seeds, variants)
    layout = recipe.layout
    if executor == "slurm":
        unfinished = not_done(plan(recipe), layout)
        if unfinished:
            raise InputError(f"--executor slurm: the recipe's stages {', '.join(unfinished)} are not done; run "
                             f"`wrpo run {recipe_path} --executor slurm`, then `wrpo ablate` once those jobs finish",
                             recipe_path)
        with output_lock(layout.ablation):  # no `wrpo ablate` here meanwhile
            stages = ablation_stages(recipe_path, recipe, seeds, names)
            # The jobs go to the workdir's one record of jobs, the pipeline's: a run or an ablation of the workdir
            # is refused while the other's jobs are active (they read and write the same models), and
            # `wrpo status` lists these stages after the pipeline's.
            return submit(Path(recipe_path), recipe, stages, decide(stages, layout),
                          arguments(recipe_path, seeds, names))
    run_recipe(recipe_path)
    with output_lock(layout.ablation):  # one `wrpo ablate` per workdir at a time
        runs = plan_variants(recipe, names, seeds)
        run_stages([run.stage for run in runs if run.stage is not None], layout,
                   LocalExecutor(recipe.resources.device_type))
        return judge_and_report(recipe_path, recipe, seeds, runs)


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
                             line_of(load_yaml(recipe_path, "recipe")[1], ("ablation", "variants", index))
                             if given_in_recipe else None)
    check_held_out(recipe.prompts, spec.eval_prompts)
    return recipe, seeds, names


def not_done(stages: list[Stage], layout: Workdir) -> list[str]:
    return [name for name, decision in decide(stages, layout).items() if decision != "skip"]


def arguments(recipe_path: str | Path, seeds: list[int], names: list[str]) -> tuple[str, ...]:
    """`wrpo ablate` of these seeds and variants (less `wrpo`), as a job runs it: its stages are planned again
    there, to be marked (--start-stage, --finish-stage) and reported (--report-only)."""
    return ("ablate", str(Path(recipe_path).resolve()), "--seeds", ",".join(map(str, seeds)),
            "--variants", ",".join(names))


def ablation_stages(recipe_path: str | Path, recipe: Recipe, seeds: list[int], names: list[str]) -> list[Stage]:
    """The stages the slurm executor submits: each run's training, then the report's. Its inputs are the
    runs' models, so its job waits for theirs; it gets a device as a scoring shard does, and the resources
    of the score stages (resources.stages.score)."""
    layout, resources, spec = recipe.layout, recipe.resources, recipe.ablation
    runs = plan_variants(recipe, names, seeds)
    models = [str(model) for model in dict.fromkeys(run.model for run in runs)]
    task = Task(("wrpo", *arguments(recipe_path, seeds, names), "--report-only"),
                tuple(range(1 if resources.devices_per_node else 0)))
    report_stage = Stage(
        REPORT, "score", [recipe.target.model, str(layout.target_sft), *models, str(spec.eval_prompts),
                          recipe.reward.scorer],
        {"seeds": seeds, "variants": names, "ablation": spec.model_dump(mode="json"),
         "reward": recipe.reward.model_dump(mode="json")},
        [layout.ablation / "report.json", layout.ablation / "report.md"], [Step((task,))],
        "every model judged on the held-out prompts, then the report; 1 process", resources.of("score", REPORT))
    return [*(run.stage for run in runs if run.stage is not None), report_stage]


def mark_ablation_stage(recipe_path: str | Path, seeds: list[int] | None, variants: list[str] | None, name: str,
                        event: str) -> None:
    """`wrpo ablate --start-stage/--finish-stage NAME`: mark_stage for a stage of ablation_stages."""
    recipe, seeds, names = checked(recipe_path, seeds, variants)
    stages = ablation_stages(recipe_path, recipe, seeds, names)
    mark_stage(stage_named(stages, name, recipe_path), recipe.layout, event)


def ablation_report(recipe_path: str | Path, seeds: list[int] | None = None,
                    variants: list[str] | None = None) -> AblationResult:
    """The report of runs trained already (by the slurm executor's jobs); refused while any is not."""
    recipe, seeds, names = checked(recipe_path, seeds, variants)
    runs = plan_variants(recipe, names, seeds)
    unfinished = not_done([run.stage for run in runs if run.stage is not None], recipe.layout)
    if unfinished:
        raise InputError(f"--report-only: the runs {', '.join(unfinished)} are not finished; wait for their jobs "
                         f"(wrpo status {recipe_path}) or run `wrpo ablate` without --report-only", recipe_path)
    with output_lock(recipe.layout.ablation):
        return judge_and_report(recipe_path, recipe, seeds, runs)


def judge_and_report(recipe_path: str | Path, recipe: Recipe, seeds: list[int],
                     runs: list[VariantRun]) -> AblationResult:
    """Every model judged, and the report written: the same whichever executor trained the runs."""
    spec, layout = recipe.ablation, recipe.layout
    baselines, results = judge(recipe, runs)
    report = {"recipe": str(recipe_path), "judge": recipe.reward.scorer, "seeds": seeds,
              "eval_prompts_file": str(spec.eval_prompts),
              "eval_prompts": len(next(iter(baselines.values())).rewards),
              **summarise(baselines, results,
                          {name: variant(name).description for name in results},
                          {run.name: run.same_as for run in runs if run.same_as})}
    write_outputs(layout.ablation, report, runs)
    return AblationResult(report, baselines, results, runs, layout.ablation)


def check_held_out(training: Path, held_out: Path) -> None:
    """No held-out prompt may be a training prompt, by id or by text: a variant would be judged on
    what it learnt."""
    seen = {}
    for row in read_prompts(training):
        seen[row.prompt_id] = seen[json.dumps(row.prompt, sort_keys=True)] = row.line
    for row in read_prompts(held_out):
        for key in (row.prompt_id, json.dumps(row.prompt, sort_keys=True)):
            if key in seen:
                raise InputError(f"held-out prompt {row.prompt_id!r} is also the training prompt of line "
                                 f"{seen[key]} of {training}: the held-out prompts must be disjoint from training",
                                 held_out, row.line)


def judge(recipe: Recipe, runs: list[VariantRun]) -> tuple[dict[str, ModelResult], dict[str, dict[int, ModelResult]]]:
    """Greedy answers of the target, target-sft and every run, judged by the recipe's judge. Answers and
    scores are cached by model, prompts and settings (evaluate_model), so a rerun judges only what changed."""
    spec, layout = recipe.ablation, recipe.layout
    settings = GREEDY.model_copy(update={"max_new_tokens": spec.max_new_tokens or recipe.sampling.max_new_tokens})
    # The models answer on the target's engine (vLLM for a recipe that samples the target with it); a target
    # behind a server answers there, and the models trained here, which no server holds, through hf.
    engine = BackendSettings(**recipe.target.model_dump(include=set(BackendSettings.model_fields)))
    local = engine if engine.backend != "openai" else BackendSettings()

    def evaluated(label: str, model: Path | str, backend: BackendSettings = local) -> ModelResult:
        return evaluate_model(label, str(model), spec.eval_prompts, recipe.reward.scorer, layout.ablation / "eval",
                              settings, batch_size=spec.batch_size, trust_remote_code=recipe.reward.trust_remote_code,
                              backend=backend)

    baselines = {"target": evaluated("target", recipe.target.model, engine),
                 "target-sft": evaluated("target-sft", layout.target_sft)}
    results: dict[str, dict[int, ModelResult]] = {}
    for run in runs:
        label = f"{run.same_as or run.name}-seed{run.seed}"
        results.setdefault(run.name, {})[run.seed] = evaluated(label, run.model)
    return baselines, results


def write_outputs(folder: Path, report: dict, runs: list[VariantRun]) -> None:
    variants = report["variants"]
    bars = {**{label: {**values["per_category"], "mean": values["mean_reward"]}
               for label, values in report["baselines"].items()},
            **{name: {**entry["per_category"], "mean": entry["mean_reward"]} for name, entry in variants.items()}}
    errors = {name: {**entry["per_category_std"], "mean": entry["std"]} for name, entry in variants.items()}
    flagged = {name: {("mean" if c == OVERALL else c) for below in entry["below"].values() for c in below}
               for name, entry in variants.items()}
    per_category_bars(bars, folder / "ablation_per_category.png",
                      f"held-out reward per category, mean ± std over seeds {', '.join(map(str, report['seeds']))} "
                      "(hatched: below target or target-sft)", errors=errors, flagged=flagged)
    paired_differences({name: (entry["vs_wrpo"]["mean"], *entry["vs_wrpo"]["ci95"])
                        for name, entry in variants.items() if "vs_wrpo" in entry},
                       folder / "ablation_differences.png", "paired difference from wrpo (95% bootstrap interval)",
                       "reward difference per prompt, variant - wrpo")
    first_seed = report["seeds"][0]
    curves = {run.name: run.model / "metrics.jsonl" for run in runs
              if run.seed == first_seed and not run.same_as and (run.model / "metrics.jsonl").exists()}
    training_curves(curves, folder / "ablation_training.png")
    write_text_atomically(folder / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(folder / "report.md", render(report))
