"""What `wrpo ablate` reports: per variant the held-out reward, mean ± std over seeds and per category;
its paired per-prompt difference from WRPO of the same seed with a bootstrap interval; and a flag on
every category where a variant ends below the starting target or below target-sft, the loss a user
must see at a glance when the sources are weaker than the target somewhere."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from wrpo.evaluation.compare import ModelResult, bootstrap_interval

OVERALL = "overall"


@dataclass(frozen=True)
class Difference:
    """Mean over prompts of (variant - wrpo) reward, each prompt's difference averaged over the seeds
    both ran; `per_seed` the same mean per seed."""

    mean: float
    low: float
    high: float
    per_seed: list[float]
    prompts: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_difference(variant: dict[int, ModelResult], reference: dict[int, ModelResult],
                      resamples: int = 2000) -> Difference:
    seeds = sorted(set(variant) & set(reference))
    prompts = sorted(set.intersection(*(set(variant[s].rewards) & set(reference[s].rewards) for s in seeds)))
    per_prompt = [statistics.fmean(variant[s].rewards[p] - reference[s].rewards[p] for s in seeds) for p in prompts]
    low, high = bootstrap_interval(per_prompt, resamples=resamples)
    return Difference(mean=statistics.fmean(per_prompt), low=low, high=high, prompts=len(prompts),
                      per_seed=[statistics.fmean(variant[s].rewards[p] - reference[s].rewards[p] for p in prompts)
                                for s in seeds])


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(baselines: dict[str, ModelResult], variants: dict[str, dict[int, ModelResult]],
              descriptions: dict[str, str], same_as: dict[str, str]) -> dict:
    """The report's numbers (JSON-able). `variants` maps a variant to its result per seed and must
    hold "wrpo"; `same_as` names the variants that are another's run."""
    categories = list(next(iter(baselines.values())).per_category)
    baseline_values = {label: {**result.per_category, OVERALL: result.mean_reward}
                       for label, result in baselines.items()}
    summary = {}
    for name, per_seed in variants.items():
        results = [per_seed[s] for s in sorted(per_seed)]
        values = {category: [r.per_category.get(category, float("nan")) for r in results] for category in categories}
        values[OVERALL] = [r.mean_reward for r in results]
        means = {category: statistics.fmean(v) for category, v in values.items()}
        entry = {
            "description": descriptions[name], "seeds": sorted(per_seed),
            "mean_reward": means[OVERALL], "std": _spread(values[OVERALL]), "per_seed": values[OVERALL],
            "per_category": {c: means[c] for c in categories},
            "per_category_std": {c: _spread(values[c]) for c in categories},
            "below": {baseline: [c for c in [*categories, OVERALL] if means[c] < baseline_values[baseline][c]]
                      for baseline in baselines},
        }
        if name in same_as:
            entry["same_as"] = same_as[name]
        if name != "wrpo":
            difference = paired_difference(per_seed, variants["wrpo"])
            entry["vs_wrpo"] = {"mean": difference.mean, "ci95": [difference.low, difference.high],
                                "per_seed": difference.per_seed, "prompts": difference.prompts,
                                "significant": difference.significant}
        summary[name] = entry
    return {"categories": categories,
            "baselines": {label: {"mean_reward": values[OVERALL], "per_category": {c: values[c] for c in categories}}
                          for label, values in baseline_values.items()},
            "variants": summary}


def flags(report: dict) -> list[str]:
    """One line per variant that ends below the target or target-sft somewhere."""
    lines = []
    for name, entry in report["variants"].items():
        for baseline, categories in entry["below"].items():
            if categories:
                values = ", ".join(
                    f"{c} {_value(entry, c):.3f} < {_value(report['baselines'][baseline], c):.3f}" for c in categories)
                lines.append(f"{name} is below {baseline} on {values}")
    return lines


def _value(entry: dict, category: str) -> float:
    """A variant's or a baseline's mean reward in a category (OVERALL: over every prompt)."""
    return entry["mean_reward"] if category == OVERALL else entry["per_category"][category]


def format_difference(entry: dict) -> str:
    """A variant's paired difference from wrpo with its interval; wrpo's own entry has none: "reference"."""
    difference = entry.get("vs_wrpo")
    if difference is None:
        return "reference"
    low, high = difference["ci95"]
    return f"{difference['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"


TABLE = ("variant", "what it trains", "mean ± std", "per seed", "Δ vs wrpo [95% CI]")


def table(report: dict) -> tuple[list[str], list[list[str]]]:
    """The report's table, for report.md and the console alike: the baselines, then every variant; a cell
    marked ↓T below the target, ↓S below target-sft, a difference marked * where its interval excludes 0."""
    categories = report["categories"]
    rows = [[label, "(no training here)", f"{values['mean_reward']:.3f}", "", "",
             *(f"{values['per_category'][c]:.3f}" for c in categories)]
            for label, values in report["baselines"].items()]
    for name, entry in report["variants"].items():
        significant = "*" if entry.get("vs_wrpo", {}).get("significant") else ""
        rows.append([name, entry["description"] + (f" (= {entry['same_as']}'s run)" if "same_as" in entry else ""),
                     f"{entry['mean_reward']:.3f} ± {entry['std']:.3f}{_marks(entry, OVERALL)}",
                     ", ".join(f"{v:.3f}" for v in entry["per_seed"]), format_difference(entry) + significant,
                     *(f"{entry['per_category'][c]:.3f}{_marks(entry, c)}" for c in categories)])
    return [*TABLE, *categories], rows


def render(report: dict) -> str:
    """report.md: the table, the flags in words, the plots."""
    columns, rows = table(report)
    lines = [f"# Ablation of {report['recipe']}", "",
             f"Judge: `{report['judge']}`; {report['eval_prompts']} held-out prompts "
             f"(`{report['eval_prompts_file']}`); "
             f"seeds {', '.join(map(str, report['seeds']))}. Every variant starts from target-sft and differs from "
             "wrpo in one thing. *Δ vs wrpo*: the per-prompt reward difference from wrpo of the same seed, averaged "
             "over seeds and prompts, with a 95% bootstrap interval over prompts (* where it excludes 0). "
             "↓T: below the starting target; ↓S: below target-sft.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    below = flags(report)
    lines += ["", "## Below the starting point", ""]
    lines += [f"- {line}" for line in below] or ["No variant ends below the target or target-sft, overall or in any "
                                                 "category."]
    lines += ["", "![per category](ablation_per_category.png)", "", "![differences](ablation_differences.png)", "",
              "![training](ablation_training.png)", ""]
    return "\n".join(lines)


def _marks(entry: dict, category: str) -> str:
    marks = {"target": "↓T", "target-sft": "↓S"}
    return "".join(f" {marks[b]}" for b, categories in entry["below"].items() if category in categories)


def show(report: dict) -> None:
    """The table on the console (without the variants' descriptions), and every flag in red."""
    from rich.table import Table

    from wrpo.progress import console

    columns, rows = table(report)
    shown = [index for index, column in enumerate(columns) if column != "what it trains"]
    console_table = Table(title=f"held-out reward, seeds {', '.join(map(str, report['seeds']))} (mean ± std)")
    for index in shown:
        console_table.add_column(columns[index], justify="left" if index == 0 else "right")
    for row in rows:
        console_table.add_row(*(row[index] for index in shown))
    console.print(console_table)
    for line in flags(report):
        console.print(f"[red]{line}")
