"""The last stage of `wrpo ablate`: the target, target-sft and every variant's run answer the held-out
prompts greedily, the recipe's judge scores them, and the report is written (report.json, report.md,
plots). Answers and scores are cached by model, prompts and settings (evaluate_model), so a rerun judges
only what changed, and judging again what was judged costs a read of the caches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from wrpo.evaluation.ablation_report import OVERALL, render, summarise
from wrpo.evaluation.compare import ModelResult, evaluate_model
from wrpo.files import write_text_atomically
from wrpo.generation.settings import GREEDY, BackendSettings
from wrpo.reward.settings import RewardSettings


class VariantRun(BaseModel):
    """One variant trained with one seed."""

    model_config = ConfigDict(frozen=True)

    name: str
    seed: int
    model: Path                  # where its model is (or will be)
    same_as: str | None = None   # the variant whose run this is, when the settings are the same


class ReportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: str                      # as the report names it
    reward: RewardSettings           # the judge
    eval_prompts: Path
    target: str
    target_backend: BackendSettings  # the engine the target answers on
    target_sft: Path
    runs: list[VariantRun]
    descriptions: dict[str, str]     # variant -> what it trains
    seeds: list[int]
    max_new_tokens: int
    batch_size: int
    output: Path                     # the report's folder


@dataclass
class AblationResult:
    report: dict                                      # what report.json holds
    baselines: dict[str, ModelResult]                 # target, target-sft
    variants: dict[str, dict[int, ModelResult]]       # variant -> seed -> its judged answers
    runs: list[VariantRun]
    folder: Path                                      # report.md, report.json and the plots


def judge_and_report(spec: ReportSpec, write: bool = True) -> AblationResult:
    """Every model judged and, with `write`, the report written."""
    baselines, results = judge(spec)
    report = {"recipe": spec.recipe, "judge": spec.reward.scorer, "seeds": spec.seeds,
              "eval_prompts_file": str(spec.eval_prompts),
              "eval_prompts": len(next(iter(baselines.values())).rewards),
              **summarise(baselines, results, {name: spec.descriptions[name] for name in results},
                          {run.name: run.same_as for run in spec.runs if run.same_as})}
    if write:
        write_outputs(spec.output, report, spec.runs)
    return AblationResult(report, baselines, results, spec.runs, spec.output)


def judge(spec: ReportSpec) -> tuple[dict[str, ModelResult], dict[str, dict[int, ModelResult]]]:
    """Greedy answers of the target, target-sft and every run, judged."""
    settings = GREEDY.model_copy(update={"max_new_tokens": spec.max_new_tokens})
    local = spec.target_backend.local()  # the models trained here

    def evaluated(label: str, model: Path | str, backend: BackendSettings = local) -> ModelResult:
        return evaluate_model(label, str(model), spec.eval_prompts, spec.reward.scorer, spec.output / "eval",
                              settings, batch_size=spec.batch_size, trust_remote_code=spec.reward.trust_remote_code,
                              backend=backend)

    baselines = {"target": evaluated("target", spec.target, spec.target_backend),
                 "target-sft": evaluated("target-sft", spec.target_sft)}
    results: dict[str, dict[int, ModelResult]] = {}
    for run in spec.runs:
        results.setdefault(run.name, {})[run.seed] = evaluated(f"{run.same_as or run.name}-seed{run.seed}", run.model)
    return baselines, results


def write_outputs(folder: Path, report: dict, runs: list[VariantRun]) -> None:
    from wrpo.evaluation.plots import paired_differences, per_category_bars, training_curves

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
