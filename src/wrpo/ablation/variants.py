"""The variants of `wrpo ablate`: the paper's comparisons, each a training stage from the recipe's
target-sft on data made from the recipe's own quadruples, so that they differ from WRPO in one thing.

    wrpo            the recipe's WRPO (every other variant is compared with it, seed by seed)
    dpo             DPO on the target's pairs (y_wt over y_l): alpha 0
    hybrid          DPO on the hybrid pairs (y_ws over y_l): alpha 1
    constant-alpha  alpha_max from the first step
    linear-alpha    alpha ramping from 0 to alpha_max
    sft-continued   SFT continued on y_ws, as many steps of the same batch as WRPO takes
    rft             rejection-sampling SFT: the same, on whichever of y_ws and y_wt scored higher
    sources-K       WRPO whose y_ws comes from the recipe's first K sources only (K < their number);
                    target-sft still learnt from all of them: only the preference stage is restricted

A variant whose settings are the recipe's own (linear-alpha when the recipe ramps alpha) is the wrpo
run itself and is not trained twice; the wrpo variant at the recipe's own seed is the pipeline's model.
Planned as stages (wrpo.pipeline.kinds): the variants' data, their runs, then the report's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wrpo.data.records import read_rows
from wrpo.data.variant_data import VariantDataSpec
from wrpo.evaluation.ablation_judge import ReportSpec, VariantRun
from wrpo.pipeline.kinds import Stage
from wrpo.pipeline.placement import training_processes
from wrpo.pipeline.plan import model_backend, model_of, stage, training
from wrpo.pipeline.recipe import Recipe, section_setting

REPORT = "ablation/report"


@dataclass(frozen=True)
class Variant:
    kind: str          # sft or wrpo: the training command
    settings: dict     # over the recipe's section of that kind
    data: str          # quadruples, y_ws, better, or sources-K
    description: str


FIXED = {
    "wrpo": Variant("wrpo", {}, "quadruples", "WRPO as the recipe trains it"),
    "dpo": Variant("wrpo", {"alpha": 0.0, "alpha_schedule": "constant"}, "quadruples",
                   "DPO on target pairs (y_wt over y_l), alpha 0"),
    "hybrid": Variant("wrpo", {"alpha": 1.0, "alpha_schedule": "constant"}, "quadruples",
                      "DPO on hybrid pairs (y_ws over y_l), alpha 1"),
    "constant-alpha": Variant("wrpo", {"alpha_schedule": "constant"}, "quadruples", "WRPO, alpha_max throughout"),
    "linear-alpha": Variant("wrpo", {"alpha_schedule": "linear"}, "quadruples", "WRPO, alpha ramping 0 -> alpha_max"),
    "sft-continued": Variant("sft", {}, "y_ws", "SFT continued on y_ws, WRPO's steps and batch"),
    "rft": Variant("sft", {}, "better", "SFT continued on the better of y_ws and y_wt (rejection sampling)"),
}


def variant_names(sources: int) -> list[str]:
    return [*FIXED, *(f"sources-{k}" for k in range(1, sources))]


def variant(name: str) -> Variant:
    """The variant of a name of variant_names()."""
    if name in FIXED:
        return FIXED[name]
    count = int(name.split("-")[1])
    return Variant("wrpo", {}, name, f"WRPO, y_ws from the first {count} source{'s' if count > 1 else ''} only")


def plan_ablation(recipe: Recipe, names: list[str], seeds: list[int], recipe_label: str) -> list[Stage]:
    """The stages of the ablation, in order: the variants' data made from the pipeline's outputs, every run of
    every variant and seed, and the report's last (its spec a ReportSpec). Reads the pipeline's quadruples (the
    SFT variants' budget), so the pipeline must have run; writes nothing."""
    layout = recipe.layout
    data_stages = variant_data(recipe, {variant(name).data for name in names})
    data = {form: each.outputs[0] for form, each in data_stages.items()} | {"quadruples": layout.quadruples}
    runs = variant_runs(recipe, names, seeds)
    budget = sft_budget(recipe) if any(variant(name).kind == "sft" for name in names) else {}
    training_stages = [training(recipe, f"ablation/seed{run.seed}/{run.name}", variant(run.name).kind,
                                str(model_of(recipe, "sft")), data[variant(run.name).data], run.model,
                                {**settings, **budget} if variant(run.name).kind == "sft" else settings)
                       for run, settings in runs if settings is not None]
    spec = report_spec(recipe, [run for run, _ in runs], seeds, recipe_label)
    models = [str(model) for model in dict.fromkeys(run.model for run, _ in runs)]
    report = stage(recipe, REPORT, "ablation-report", spec,
                   [recipe.target.model, str(model_of(recipe, "sft")), *models, str(spec.eval_prompts),
                    recipe.reward.scorer], [spec.output / "report.json", spec.output / "report.md"])
    return [*data_stages.values(), *training_stages, report]


def variant_runs(recipe: Recipe, names: list[str], seeds: list[int]) -> list[tuple[VariantRun, dict | None]]:
    """Every variant and seed with the settings it trains with; None where it trains nothing: it is another
    run of the same settings (same_as), or the pipeline's own wrpo run."""
    layout = recipe.layout
    own_seed = section_setting("wrpo", recipe.wrpo, "seed")
    runs: list[tuple[VariantRun, dict | None]] = []
    for seed in seeds:
        for name in dict.fromkeys(["wrpo", *names]):  # wrpo first: the others are compared with it
            spec = variant(name)
            if spec.kind == "wrpo":
                settings = {**recipe.wrpo, **spec.settings, "seed": seed}
                if name != "wrpo" and spec.data == "quadruples" and settings == {**recipe.wrpo, "seed": seed}:
                    runs.append((VariantRun(name=name, seed=seed, model=layout.ablation_model("wrpo", seed),
                                            same_as="wrpo"), None))
                    continue
                if settings == {**recipe.wrpo, "seed": own_seed} and spec.data == "quadruples":
                    runs.append((VariantRun(name=name, seed=seed, model=layout.target_wrpo), None))
                    continue
            else:
                settings = {**recipe.sft, "seed": seed}
            runs.append((VariantRun(name=name, seed=seed, model=layout.ablation_model(name, seed)), settings))
    # A run that is another's (same settings) points at that one's model.
    models = {(run.name, run.seed): run.model for run, _ in runs}
    return [(run.model_copy(update={"model": models[(run.same_as, run.seed)]}) if run.same_as else run, settings)
            for run, settings in runs]


def report_spec(recipe: Recipe, runs: list[VariantRun], seeds: list[int], recipe_label: str) -> ReportSpec:
    ablation = recipe.ablation
    return ReportSpec(
        recipe=recipe_label, reward=recipe.reward, eval_prompts=ablation.eval_prompts, target=recipe.target.model,
        target_backend=model_backend(recipe.target),
        target_sft=model_of(recipe, "sft"), runs=runs,
        descriptions={run.name: variant(run.name).description for run in runs}, seeds=seeds,
        max_new_tokens=ablation.answer_tokens(recipe.sampling), batch_size=ablation.batch_size,
        output=recipe.layout.ablation)


def sft_budget(recipe: Recipe) -> dict:
    """The SFT variants' steps and batch: those of the recipe's WRPO run, so that they see as many
    examples as WRPO does."""
    wrpo = {name: section_setting("wrpo", recipe.wrpo, name)
            for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps")}
    resources = recipe.resources
    processes = training_processes(resources.devices_per_node, resources.of("wrpo", "wrpo").nodes or 1)
    per_step = wrpo["per_device_train_batch_size"] * wrpo["gradient_accumulation_steps"] * processes
    rows = sum(1 for _ in read_rows(recipe.layout.quadruples))
    steps = wrpo["max_steps"] if wrpo["max_steps"] > 0 else math.ceil(math.ceil(rows / per_step)
                                                                       * wrpo["num_train_epochs"])
    return {"max_steps": steps, "per_device_train_batch_size": wrpo["per_device_train_batch_size"],
            "gradient_accumulation_steps": wrpo["gradient_accumulation_steps"]}


def variant_data(recipe: Recipe, forms: set[str]) -> dict[str, Stage]:
    """The stage that makes each variant's training file other than the quadruples themselves."""
    layout, stages = recipe.layout, {}
    for form, name in (("y_ws", "sft-continued"), ("better", "rft")):
        if form in forms:
            spec = VariantDataSpec(form=form, quadruples=layout.quadruples, output=layout.ablation_data(name))
            stages[form] = stage(recipe, f"ablation/data/{name}", "variant-data", spec, [str(layout.quadruples)],
                                 [spec.output])
    target_scores = [layout.target_scores] if recipe.pairs.target_samples else []
    for form in sorted(forms - {"quadruples", "y_ws", "better"}):
        count = int(form.split("-")[1])
        spec = VariantDataSpec(form="sources", output=layout.ablation_data(f"quadruples-{count}-sources"),
                               preference_prompts=layout.preference_prompts,
                               kept_prompts=layout.ablation_data(f"preference-{count}-sources"),
                               target_scores=target_scores, sources=[s.name for s in recipe.sources[:count]],
                               pairs=recipe.pairs)
        stages[form] = stage(recipe, f"ablation/data/{count}-sources", "variant-data", spec,
                             [str(layout.preference_prompts), *map(str, target_scores)],
                             [spec.output, spec.kept_prompts])
    return stages
