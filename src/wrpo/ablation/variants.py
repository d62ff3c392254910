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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from wrpo.data.construct import build_pairs, read_preference_prompts
from wrpo.data.records import read_rows
from wrpo.data.resumable import write_jsonl_atomically
from wrpo.errors import InputError
from wrpo.pipeline.recipe import Recipe, section_setting
from wrpo.pipeline.stages import Stage, training_processes, training_stage


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


@dataclass(frozen=True)
class VariantRun:
    name: str
    seed: int
    model: Path                # where the trained model is (or will be)
    stage: Stage | None        # None: an existing run with these very settings (the pipeline's wrpo)
    same_as: str | None = None  # the variant whose run this is, when the settings are the same


def plan_variants(recipe: Recipe, names: list[str], seeds: list[int]) -> list[VariantRun]:
    """The runs of every variant and seed, the data they train on written first. Needs the pipeline's
    outputs (target-sft, quadruples)."""
    layout, resources = recipe.layout, recipe.resources
    data = variant_data(recipe, {variant(name).data for name in names})
    own_seed = section_setting("wrpo", recipe.wrpo, "seed")
    budget = sft_budget(recipe) if any(variant(name).kind == "sft" for name in names) else None
    runs = []
    for seed in seeds:
        for name in dict.fromkeys(["wrpo", *names]):  # wrpo first: the others are compared with it
            spec = variant(name)
            if spec.kind == "wrpo":
                settings = {**recipe.wrpo, **spec.settings, "seed": seed}
                if name != "wrpo" and spec.data == "quadruples" and settings == {**recipe.wrpo, "seed": seed}:
                    runs.append(VariantRun(name, seed, layout.ablation_model("wrpo", seed), None, same_as="wrpo"))
                    continue
                if settings == {**recipe.wrpo, "seed": own_seed} and spec.data == "quadruples":
                    runs.append(VariantRun(name, seed, layout.target_wrpo, None))
                    continue
            else:
                settings = {**recipe.sft, **budget, "seed": seed}
            output = layout.ablation_model(name, seed)
            stage = training_stage(f"ablation/seed{seed}/{name}", spec.kind, str(layout.target_sft), data[spec.data],
                                   output, settings, resources.devices_per_node, resources.device_type,
                                   resources.of(spec.kind, spec.kind), layout)
            runs.append(VariantRun(name, seed, output, stage))
    # A run that is another's (same settings) points at that one's model.
    models = {(run.name, run.seed): run.model for run in runs}
    return [VariantRun(r.name, r.seed, models[(r.same_as, r.seed)], None, r.same_as) if r.same_as else r
            for r in runs]


def sft_budget(recipe: Recipe) -> dict:
    """The SFT variants' steps and batch: those of the recipe's WRPO run, so that they see as many
    examples as WRPO does."""
    wrpo = {name: section_setting("wrpo", recipe.wrpo, name)
            for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps")}
    resources = recipe.resources
    processes = training_processes(resources.devices_per_node, resources.of("wrpo", "wrpo"))
    per_step = wrpo["per_device_train_batch_size"] * wrpo["gradient_accumulation_steps"] * processes
    rows = sum(1 for _ in read_rows(recipe.layout.quadruples))
    steps = wrpo["max_steps"] if wrpo["max_steps"] > 0 else math.ceil(math.ceil(rows / per_step)
                                                                       * wrpo["num_train_epochs"])
    return {"max_steps": steps, "per_device_train_batch_size": wrpo["per_device_train_batch_size"],
            "gradient_accumulation_steps": wrpo["gradient_accumulation_steps"]}


def variant_data(recipe: Recipe, kinds: set[str]) -> dict[str, Path]:
    """The training file of each kind of data: the quadruples themselves, or files made from them
    (rewritten each time with the same content, so a variant's fingerprint changes only with them)."""
    layout = recipe.layout
    files = {"quadruples": layout.quadruples}
    quadruples = [row for _, row in read_rows(layout.quadruples)] if kinds & {"y_ws", "better"} else []
    if "y_ws" in kinds:
        files["y_ws"] = write_jsonl_atomically(layout.ablation_data("sft-continued"), [
            {"prompt_id": row["prompt_id"], "prompt": row["prompt"], "response": row["chosen_source"][0]}
            for row in quadruples])
    if "better" in kinds:
        files["better"] = write_jsonl_atomically(layout.ablation_data("rft"), [
            {"prompt_id": row["prompt_id"], "prompt": row["prompt"], "response": better_response(row)}
            for row in quadruples])
    for kind in sorted(kinds - {"quadruples", "y_ws", "better"}):
        files[kind] = restricted_quadruples(recipe, int(kind.split("-")[1]))
    return files


def better_response(quadruple: dict) -> str:
    """y_wt where the reward scored it above y_ws, else y_ws."""
    meta = quadruple.get("meta") or {}
    if "chosen_target_score" not in meta or not meta.get("source_scores"):
        raise InputError(f"quadruple {quadruple['prompt_id']!r} has no scores in its meta (chosen_target_score, "
                         "source_scores): the rft variant needs them to pick the better response")
    better_target = meta["chosen_target_score"] > meta["source_scores"][0]
    return quadruple["chosen_target"] if better_target else quadruple["chosen_source"][0]


def restricted_quadruples(recipe: Recipe, count: int) -> Path:
    """The recipe's quadruples built again with y_ws drawn from its first `count` sources only."""
    layout, pairs = recipe.layout, recipe.pairs
    kept = {source.name for source in recipe.sources[:count]}
    rows = []
    for _, row in read_preference_prompts(layout.preference_prompts):
        responses = [response for response in row["source_responses"] if response["model"] in kept]
        if responses:
            rows.append({**row, "source_responses": responses})
    prompts = write_jsonl_atomically(layout.ablation_data(f"preference-{count}-sources"), rows)
    output = layout.ablation_data(f"quadruples-{count}-sources")
    build_pairs(prompts, [layout.target_scores] if pairs.target_samples else [], output,
                **pairs.model_dump(exclude={"target_samples"}))
    return output
