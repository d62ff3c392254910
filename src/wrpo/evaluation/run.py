"""`wrpo eval`: judge models against a baseline on a prompt set, write a report and benchmark exports."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from wrpo.data.prompts import read_prompts
from wrpo.errors import InputError
from wrpo.evaluation.compare import GREEDY, Comparison, ModelResult, compare, evaluate_model, format_rate
from wrpo.evaluation.exports import export_alpaca_eval, export_arena_hard, export_mt_bench
from wrpo.evaluation.plots import reward_distributions, win_rate_bars
from wrpo.generation.backends import SamplingSettings
from wrpo.modeling import load_tokenizer
from wrpo.progress import console


def parse_models(text: str) -> dict[str, str]:
    """'A,label=B' -> {label: path}: a model is labelled by its folder name unless named."""
    models = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, _, path = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
        label = label or Path(path).name
        if label in models:
            raise InputError(f"two models are labelled {label!r} ({models[label]} and {path}): name them with label=path")
        models[label] = path
    return models


def resolve_baseline(models: dict[str, str], baseline: str) -> tuple[str, str]:
    """(label, path) of the baseline: one of the models (by path or label) or a model of its own."""
    for label, path in models.items():
        if Path(path).resolve() == Path(baseline).resolve() or label == baseline:
            return label, path
    label = Path(baseline).name
    if label in models:
        raise InputError(f"the baseline {baseline} and the model {models[label]} share the label {label!r}: "
                         f"name the model with label=path")
    return label, baseline


def run_eval(models: dict[str, str], baseline: str, prompts: str | Path, judge: str, output_dir: str | Path,
             settings: SamplingSettings = GREEDY, exports: tuple[str, ...] = (), batch_size: int = 16,
             trust_remote_code: bool = False) -> dict:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    baseline_label, baseline_path = resolve_baseline(models, baseline)
    everyone = {**models, baseline_label: baseline_path}
    results: dict[str, ModelResult] = {
        label: evaluate_model(label, path, prompts, judge, output_dir, settings, batch_size, trust_remote_code)
        for label, path in everyone.items()}
    comparisons = [compare(results[label], results[baseline_label]) for label in models if label != baseline_label]

    rows = read_prompts(prompts)
    for label, path in everyone.items():
        if "alpaca_eval" in exports:
            export_alpaca_eval(results[label], rows, output_dir / "exports" / "alpaca_eval" / f"{label}.json")
        if "arena_hard" in exports:
            export_arena_hard(results[label], rows, output_dir / "exports" / "arena_hard" / f"{label}.jsonl",
                              load_tokenizer(path))
        if "mt_bench" in exports:
            export_mt_bench(results[label], rows, output_dir / "exports" / "mt_bench" / f"{label}.jsonl", path, settings)

    report = {"baseline": baseline_label, "prompts": str(prompts), "judge": judge,
              "models": {label: result.as_dict() for label, result in results.items()},
              "comparisons": {c.model: c.as_dict() for c in comparisons},
              "judge_failures": {label: r.failures for label, r in results.items() if r.failures}}
    if comparisons:
        win_rate_bars(comparisons, output_dir / "win_rates.png", f"against {baseline_label}, judged by {Path(judge).name}")
    reward_distributions(results, output_dir / "rewards.png")
    (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (output_dir / "report.md").write_text(render(report, comparisons))
    show(report)
    return report


def render(report: dict, comparisons: list[Comparison]) -> str:
    lines = [f"# Evaluation against {report['baseline']}", "", f"Prompts: `{report['prompts']}`; judge: `{report['judge']}`.",
             "Win rates count ties half; the interval is a 95% bootstrap over prompts; the length-controlled "
             "win rate is the fit's prediction at equal answer lengths (see wrpo/evaluation/length_control.py; n/a "
             "where too few answers are longer, or too few shorter, than the baseline's).", "",
             "| model | win rate | 95% CI | LC win rate | mean reward | mean length | judged | judge failures |",
             "|---|---|---|---|---|---|---|---|"]
    for label, values in report["models"].items():
        c = report["comparisons"].get(label)
        win = (f"{c['win_rate']:.3f} | {c['ci95'][0]:.3f}-{c['ci95'][1]:.3f} | {format_rate(c['lc_win_rate'])}"
               if c else "baseline | | ")
        lines.append(f"| {label} | {win} | {values['mean_reward']:.3f} | {values['mean_length']:.0f} | "
                     f"{values['judged']} | {values['judge_failures']} |")
    for comparison in comparisons:
        if comparison.per_category:
            lines += ["", f"## {comparison.model} by category", "", "| category | win rate | 95% CI |", "|---|---|---|"]
            lines += [f"| {category} | {w.rate:.3f} | {w.low:.3f}-{w.high:.3f} |"
                      for category, w in comparison.per_category.items()]
    if report["judge_failures"]:
        lines += ["", "## Rows the judge failed on (left out)", ""]
        lines += [f"- {label}: {error}" for label, errors in report["judge_failures"].items() for error in errors]
    lines += ["", "![win rates](win_rates.png)", "", "![rewards](rewards.png)", ""]
    return "\n".join(lines)


def show(report: dict) -> None:
    table = Table(title=f"against {report['baseline']}")
    for column in ("model", "win rate", "95% CI", "LC", "mean reward", "mean length"):
        table.add_column(column)
    for label, values in report["models"].items():
        c = report["comparisons"].get(label)
        table.add_row(label, f"{c['win_rate']:.3f}" if c else "baseline",
                      f"{c['ci95'][0]:.3f}-{c['ci95'][1]:.3f}" if c else "", format_rate(c["lc_win_rate"]) if c else "",
                      f"{values['mean_reward']:.3f}", f"{values['mean_length']:.0f}")
    console.print(table)
    for label, errors in report["judge_failures"].items():
        console.print(f"[yellow]{label}: the judge failed on {len(errors)} row(s), left out; first: {errors[0]}")
