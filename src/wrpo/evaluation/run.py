"""`wrpo eval`: judge models against a baseline on a prompt set, write a report and benchmark exports."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from wrpo.data.prompts import read_prompts
from wrpo.errors import InputError, Problems
from wrpo.evaluation.compare import Comparison, ModelResult, compare, evaluate_model, format_rate
from wrpo.evaluation.exports import FORMATS, export_alpaca_eval, export_arena_hard, export_mt_bench
from wrpo.evaluation.plots import reward_distributions, win_rate_bars
from wrpo.files import write_text_atomically
from wrpo.generation.settings import GREEDY, SamplingSettings
from wrpo.modeling import check_model_location, load_tokenizer
from wrpo.progress import console
from wrpo.reward.scorers import check_scorer


def parse_models(text: str) -> dict[str, str]:
    """'A,label=B' -> {label: path}: a model is labelled by its folder name unless named."""
    models = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        label, path = _labelled(item)
        if label in models:
            raise InputError(f"two models are labelled {label!r} ({models[label]} and {path}): "
                             "name them with label=path")
        models[label] = path
    return models


def _labelled(item: str) -> tuple[str, str]:
    label, _, path = item.rpartition("=") if "=" in item else ("", "", item)
    return label or Path(path).name, path


def resolve_baseline(models: dict[str, str], baseline: str) -> tuple[str, str]:
    """(label, path) of the baseline: one of the models (by label or path), or a model of its own
    (path or label=path)."""
    if "=" not in baseline:
        for label, path in models.items():
            if label == baseline or Path(path).resolve() == Path(baseline).resolve():
                return label, path
    label, path = _labelled(baseline)
    if label in models and Path(models[label]).resolve() != Path(path).resolve():
        raise InputError(f"the baseline {path} and the model {models[label]} share the label {label!r}: "
                         f"name one of them with label=path")
    return label, path


def check_eval_arguments(models: dict[str, str], baseline: tuple[str, str], prompts: str | Path, judge: str,
                         exports: tuple[str, ...], trust_remote_code: bool = False) -> None:
    """Everything that can be checked before any model answers: the model folders, the prompts, the
    judge (imported and called once, or its folder loaded) and the export formats. Each problem is
    named; all of them are reported at once."""
    problems = Problems()
    for path in dict.fromkeys([*models.values(), baseline[1]]):
        problems.check(check_model_location, path)
    rows = problems.check(read_prompts, prompts)
    if rows:
        problems.check(check_scorer, judge, rows[0].prompt, trust_remote_code, rows[0].meta)
    unknown = [name for name in exports if name not in FORMATS]
    if unknown:
        problems.add(f"--export knows {', '.join(FORMATS)}, not {', '.join(unknown)}")
    problems.raise_if_any()


def run_eval(models: dict[str, str], baseline: str, prompts: str | Path, judge: str, output_dir: str | Path,
             settings: SamplingSettings = GREEDY, exports: tuple[str, ...] = (), batch_size: int = 16,
             trust_remote_code: bool = False) -> dict:
    """Answers, judges and compares; writes report.md, report.json, plots and exports to output_dir
    and returns the report. Every argument is checked before any model answers."""
    output_dir = Path(output_dir)
    baseline_label, baseline_path = resolve_baseline(models, baseline)
    check_eval_arguments(models, (baseline_label, baseline_path), prompts, judge, exports, trust_remote_code)
    output_dir.mkdir(parents=True, exist_ok=True)
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
            export_mt_bench(results[label], rows, output_dir / "exports" / "mt_bench" / f"{label}.jsonl", path,
                            settings)

    report = {"baseline": baseline_label, "prompts": str(prompts), "judge": judge,
              "models": {label: result.as_dict() for label, result in results.items()},
              "comparisons": {c.model: c.as_dict() for c in comparisons},
              "judge_failures": {label: r.failures for label, r in results.items() if r.failures}}
    if comparisons:
        win_rate_bars(comparisons, output_dir / "win_rates.png",
                      f"against {baseline_label}, judged by {Path(judge).name}")
    reward_distributions(results, output_dir / "rewards.png")
    write_text_atomically(output_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(output_dir / "report.md", render(report, comparisons))
    return report


def render(report: dict, comparisons: list[Comparison]) -> str:
    lines = [f"# Evaluation against {report['baseline']}", "",
             f"Prompts: `{report['prompts']}`; judge: `{report['judge']}`.",
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
