"""`wrpo eval`: judge models against a baseline on a prompt set (a reward judge, an LLM judge or both), write a
report and benchmark exports."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from wrpo.data.prompts import PromptRow, read_prompts
from wrpo.errors import InputError, Problems
from wrpo.evaluation.compare import ModelResult, compare, evaluate_model, format_rate
from wrpo.evaluation.exports import FORMATS, export_alpaca_eval, export_arena_hard, export_mt_bench
from wrpo.evaluation.llm_judge import check_llm_judge, judge_with_llm
from wrpo.evaluation.llm_judge_settings import TEMPLATE, LLMJudge
from wrpo.evaluation.plots import per_category_bars, reward_distributions, win_rate_bars
from wrpo.files import write_text_atomically
from wrpo.generation.backends import openai_client
from wrpo.generation.settings import GREEDY, BackendSettings, SamplingSettings
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


def check_eval_arguments(models: dict[str, str], baseline: tuple[str, str], prompts: str | Path, judge: str | None,
                         exports: tuple[str, ...], trust_remote_code: bool = False,
                         backend: BackendSettings = BackendSettings(), llm_judge: LLMJudge | None = None) -> None:
    """Everything that can be checked before any model answers: a judge given, the model folders (a
    server's model is a name: only its client is checked), the prompts, the judges (a reward judge
    imported and called once, or its folder loaded; the LLM judge's template and client) and the
    export formats. Each problem is named; all of them are reported at once."""
    problems = Problems()
    if judge is None and llm_judge is None:
        problems.add("no judge: give --judge (a reward model or a Python scorer), --judge-llm (a model on an "
                     "OpenAI-compatible server, with --judge-base-url), or both")
    if backend.backend == "openai":
        problems.check(openai_client, backend.base_url, backend.api_key_env)
    else:
        for path in dict.fromkeys([*models.values(), baseline[1]]):
            problems.check(check_model_location, path)
    rows = problems.check(read_prompts, prompts)
    if rows and judge is not None:
        problems.check(check_scorer, judge, rows[0].prompt, trust_remote_code, rows[0].meta)
    if llm_judge is not None:
        problems.check(check_llm_judge, llm_judge)
    unknown = [name for name in exports if name not in FORMATS]
    if unknown:
        problems.add(f"--export knows {', '.join(FORMATS)}, not {', '.join(unknown)}")
    problems.raise_if_any()


def run_eval(models: dict[str, str], baseline: str, prompts: str | Path, judge: str | None, output_dir: str | Path,
             settings: SamplingSettings = GREEDY, exports: tuple[str, ...] = (), batch_size: int = 16,
             trust_remote_code: bool = False, backend: BackendSettings = BackendSettings(),
             llm_judge: LLMJudge | None = None) -> dict:
    """Answers (through `backend`), judges (by the reward judge `judge`, the LLM judge, or both) and
    compares; writes report.md, report.json, plots and exports to output_dir and returns the report.
    Every argument is checked before any model answers. A model of which the LLM judge could judge
    no prompt ends the run with an InputError, once the report (listing the judge's replies) is written."""
    output_dir = Path(output_dir)
    baseline_label, baseline_path = resolve_baseline(models, baseline)
    check_eval_arguments(models, (baseline_label, baseline_path), prompts, judge, exports, trust_remote_code, backend,
                         llm_judge)
    output_dir.mkdir(parents=True, exist_ok=True)
    everyone = {**models, baseline_label: baseline_path}
    results: dict[str, ModelResult] = {
        label: evaluate_model(label, path, prompts, judge, output_dir, settings, batch_size, trust_remote_code,
                              backend)
        for label, path in everyone.items()}
    others = [label for label in models if label != baseline_label]

    rows = read_prompts(prompts)
    for label, path in everyone.items():
        _export(results[label], path, rows, exports, output_dir / "exports", settings, backend)
    report = {"baseline": baseline_label, "prompts": str(prompts), "judge": judge}
    if judge is not None:
        report.update(_judge_by_rewards(results, baseline_label, others, judge, output_dir))
    unjudged = []
    if llm_judge is not None:
        judged = judge_with_llm(llm_judge, [results[label] for label in others], results[baseline_label], rows,
                                output_dir)
        report["llm_judge"] = judged.as_dict()
        rated = [c for c in judged.comparisons if c.overall is not None]
        if rated:
            win_rate_bars(rated, output_dir / "llm_win_rates.png",
                          f"against {baseline_label}, judged by {llm_judge.model} (both orders)")
        unjudged = [c for c in judged.comparisons if c.overall is None]
    write_text_atomically(output_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(output_dir / "report.md", render(report))
    if unjudged:
        raise InputError(f"the LLM judge's replies about {', '.join(c.model for c in unjudged)} could not be parsed "
                         f"for any prompt (the first: {unjudged[0].unparseable[0]['reply'][:60]!r}); "
                         f"{output_dir / 'report.md'} lists them")
    return report


def _export(result: ModelResult, model: str, rows: list[PromptRow], exports: tuple[str, ...], folder: Path,
            settings: SamplingSettings, backend: BackendSettings) -> None:
    if "alpaca_eval" in exports:
        export_alpaca_eval(result, rows, folder / "alpaca_eval" / f"{result.label}.json")
    if "arena_hard" in exports:  # a server's model has no tokenizer here: its answers are counted in words
        export_arena_hard(result, rows, folder / "arena_hard" / f"{result.label}.jsonl",
                          None if backend.backend == "openai" else load_tokenizer(model))
    if "mt_bench" in exports:
        export_mt_bench(result, rows, folder / "mt_bench" / f"{result.label}.jsonl", model, settings, backend)


def _judge_by_rewards(results: dict[str, ModelResult], baseline: str, others: list[str], judge: str,
                      output_dir: Path) -> dict:
    """The reward judge's part of the report, and its plots."""
    comparisons = [compare(results[label], results[baseline]) for label in others]
    if comparisons:
        win_rate_bars(comparisons, output_dir / "win_rates.png", f"against {baseline}, judged by {Path(judge).name}")
    reward_distributions(results, output_dir / "rewards.png")
    per_category = {label: result.per_category for label, result in results.items()}
    if len({category for values in per_category.values() for category in values}) > 1:
        per_category_bars(per_category, output_dir / "per_category.png",
                          f"mean reward by category, judged by {Path(judge).name}")
    return {"models": {label: result.as_dict() for label, result in results.items()},
            "comparisons": {c.model: c.as_dict() for c in comparisons},
            "judge_failures": {label: r.failures for label, r in results.items() if r.failures}}


def _interval(pair: list[float] | None) -> str:
    return "n/a" if pair is None or pair[0] != pair[0] else f"{pair[0]:.3f}-{pair[1]:.3f}"


def render(report: dict) -> str:
    judges = " and ".join(f"`{name}`" for name in (report["judge"], report.get("llm_judge", {}).get("model")) if name)
    lines = [f"# Evaluation against {report['baseline']}", "", f"Prompts: `{report['prompts']}`; judged by {judges}."]
    if report["judge"] is not None:
        lines += ["", *_render_rewards(report)]
    if "llm_judge" in report:
        lines += ["", *_render_llm_judge(report["llm_judge"])]
    return "\n".join([*lines, ""])


def _render_rewards(report: dict) -> list[str]:
    lines = ["## Reward judge", "",
             "Win rates count ties half; the interval is a 95% bootstrap over prompts; the length-controlled "
             "win rate is the fit's prediction at equal answer lengths (see wrpo/evaluation/length_control.py; n/a "
             "where too few answers are longer, or too few shorter, than the baseline's).", "",
             "| model | win rate | 95% CI | LC win rate | mean reward | mean length | judged | judge failures |",
             "|---|---|---|---|---|---|---|---|"]
    for label, values in report["models"].items():
        c = report["comparisons"].get(label)
        win = (f"{c['win_rate']:.3f} | {_interval(c['ci95'])} | {format_rate(c['lc_win_rate'])}" if c
               else "baseline | | ")
        lines.append(f"| {label} | {win} | {values['mean_reward']:.3f} | {values['mean_length']:.0f} | "
                     f"{values['judged']} | {values['judge_failures']} |")
    lines += _by_category(report["comparisons"])
    if report["judge_failures"]:
        lines += ["", "### Rows the judge failed on (left out)", ""]
        lines += [f"- {label}: {error}" for label, errors in report["judge_failures"].items() for error in errors]
    plotted = ["", "![win rates](win_rates.png)"] if report["comparisons"] else []
    if len({c for values in report["models"].values() for c in values["per_category"]}) > 1:
        plotted += ["", "![mean reward by category](per_category.png)"]
    return [*lines, *plotted, "", "![rewards](rewards.png)"]


def _by_category(comparisons: dict[str, dict]) -> list[str]:
    """A table of win rates by category for each comparison that has them."""
    lines = []
    for label, c in comparisons.items():
        if c["per_category"]:
            lines += ["", f"### {label} by category", "", "| category | win rate | 95% CI |", "|---|---|---|"]
            lines += [f"| {category} | {w['win_rate']:.3f} | {_interval(w['ci95'])} |"
                      for category, w in c["per_category"].items()]
    return lines


def _render_llm_judge(section: dict) -> list[str]:
    template = "the built-in template" if section["template"] == TEMPLATE else "its own template (in report.json)"
    lines = [f"## LLM judge `{section['model']}`", "",
             f"Asked at {section['base_url']} with {template}, greedy; each pair in both orders (the model's answer "
             "as output A, then as output B). A prompt's preference is the mean of \"the model's answer was picked\" "
             "over the orders whose reply parsed (a prompt with none is left out); the win rate is its mean (0.5 is "
             "a tie) with a 95% bootstrap over prompts; the LC win rate is the length-controlled fit of the same "
             "preferences (95% bootstrap, 200 resamples); the first-position share is that of the parsed verdicts "
             "that picked output A (0.5: no position bias).", "",
             f"This run asked {section['asked']} requests in {section['seconds']:.1f} s ({section['prompt_tokens']} "
             f"prompt and {section['completion_tokens']} completion tokens); {section['from_cache']} judgements came "
             f"from the cache `{section['cache']}`.", "",
             "| model | win rate | 95% CI | LC win rate | LC 95% CI | judged | left out | unparseable | first-position "
             "share | tokens (prompt + completion) | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, c in section["comparisons"].items():
        lines.append(f"| {label} | {format_rate(c['win_rate'])} | {_interval(c['ci95'])} | "
                     f"{format_rate(c['lc_win_rate'])} | {_interval(c['lc_ci95'])} | {c['judged']} | "
                     f"{len(c['unjudged'])} | {sum(c['unparseable'].values())} | "
                     f"{format_rate(c['first_position_share'])} | {c['prompt_tokens']} + {c['completion_tokens']} | "
                     f"{c['seconds']:.1f} |")
    lines += _by_category(section["comparisons"])
    left_out = {label: c["unjudged"] for label, c in section["comparisons"].items() if c["unjudged"]}
    if left_out:
        lines += ["", "### Prompts left out (no reply parsed in either order)", ""]
        lines += [f"- {label}: {', '.join(prompt_ids)}" for label, prompt_ids in left_out.items()]
    if section["unparseable"]:
        lines += ["", f"### Unparseable replies ({len(section['unparseable'])})", ""]
        lines += [f"- {item['model']}, prompt {item['prompt_id']}, {item['order']}: "
                  f"`` {json.dumps(item['reply'], ensure_ascii=False)} ``" for item in section["unparseable"]]
    rated = any(c["win_rate"] is not None for c in section["comparisons"].values())
    return [*lines, *(["", "![LLM judge win rates](llm_win_rates.png)"] if rated else [])]


def show(report: dict) -> None:
    if report["judge"] is not None:
        table = Table(title=f"against {report['baseline']}, judged by {report['judge']}")
        for column in ("model", "win rate", "95% CI", "LC", "mean reward", "mean length"):
            table.add_column(column)
        for label, values in report["models"].items():
            c = report["comparisons"].get(label)
            table.add_row(label, f"{c['win_rate']:.3f}" if c else "baseline", _interval(c["ci95"]) if c else "",
                          format_rate(c["lc_win_rate"]) if c else "", f"{values['mean_reward']:.3f}",
                          f"{values['mean_length']:.0f}")
        console.print(table)
        for label, errors in report["judge_failures"].items():
            console.print(f"[yellow]{label}: the judge failed on {len(errors)} row(s), left out; first: {errors[0]}")
    if "llm_judge" in report:
        section = report["llm_judge"]
        table = Table(title=f"against {report['baseline']}, judged by {section['model']} (both orders)")
        for column in ("model", "win rate", "95% CI", "LC", "LC 95% CI", "judged", "unparseable", "first position"):
            table.add_column(column)
        for label, c in section["comparisons"].items():
            table.add_row(label, format_rate(c["win_rate"]), _interval(c["ci95"]), format_rate(c["lc_win_rate"]),
                          _interval(c["lc_ci95"]), str(c["judged"]), str(sum(c["unparseable"].values())),
                          format_rate(c["first_position_share"]))
        console.print(table)
        console.print(f"LLM judge: {section['asked']} requests asked in {section['seconds']:.1f} s "
                      f"({section['prompt_tokens']} + {section['completion_tokens']} tokens), "
                      f"{section['from_cache']} from the cache")
        for label, c in section["comparisons"].items():
            if c["unjudged"] or sum(c["unparseable"].values()):
                console.print(f"[yellow]{label}: {sum(c['unparseable'].values())} judge replies could not be parsed, "
                              f"{len(c['unjudged'])} prompt(s) left out (listed in report.md)")
