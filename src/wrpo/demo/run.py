"""`wrpo demo`: a real fusion of heterogeneous tiny models, end to end on a laptop CPU.

Three tiny sources (Llama / char tokenizer, Qwen2 / BPE 300, GPT-2 / BPE 260), each a specialist on
two of four string tasks and each with a style tic, and a GPT-NeoX / BPE 400 target that only repeats
its input. The real pipeline runs on them through a recipe (`wrpo run`): sample, score with the
task reward, build, SFT, sample target-sft, score, build pairs, WRPO. Every model is then judged on
held-out prompts by the same reward, and DIR/report.md, report.json and PNG plots are written.

With --ablation, `wrpo ablate` runs on the demo's recipe: the paper's comparisons (wrpo.ablation.variants)
trained from its target-sft on its quadruples with three training seeds, judged on the held-out prompts;
the demo adds its style figures (tics, content) to that report.
"""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.table import Table

from wrpo.ablation import ablate
from wrpo.data.records import read_rows
from wrpo.data.resumable import write_jsonl_atomically
from wrpo.demo.tasks import TASKS, make_prompt, prompt_rows, reward
from wrpo.demo.zoo import SOURCES, TARGET, build_zoo
from wrpo.evaluation.ablation_report import flags as ablation_flags
from wrpo.evaluation.ablation_report import format_difference
from wrpo.evaluation.ablation_report import show as show_ablation
from wrpo.evaluation.compare import ModelResult, compare, evaluate_model, format_rate
from wrpo.evaluation.plots import per_category_bars, reward_distributions, training_curves, win_rate_bars
from wrpo.files import write_text_atomically
from wrpo.generation.settings import GREEDY
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.run import run_recipe
from wrpo.progress import console

JUDGE = "wrpo.demo.tasks:reward"
REWARD_AXIS = "mean reward (1 = exact answer)"  # the task reward's scale, which a generic judge lacks
EVAL_SETTINGS = GREEDY.model_copy(update={"max_new_tokens": 24})
# 1,800 SFT steps: with 600, SFT continued on the preference prompts still learnt content fast enough to
# tie the preference stage on the reward; with three times as many it gains less (see the README).
SFT_SETTINGS = {"max_steps": 1800, "per_device_train_batch_size": 64, "learning_rate": 3e-3,
                "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "max_length": 64, "logging_steps": 25}
WRPO_SETTINGS = {"num_train_epochs": 2, "per_device_train_batch_size": 32, "learning_rate": 2e-4, "beta": 0.5,
                 "alpha": 0.5, "alpha_schedule": "linear", "max_length": 64, "max_prompt_length": 32,
                 "logging_steps": 5, "save_steps": 1000}
ABLATION_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class DemoSize:
    """How big a demo runs: the default fits 10 minutes on 2 CPU cores from an empty cache."""

    prompts: int = 12000      # training prompts, a third of them for SFT
    eval_prompts: int = 400   # held-out prompts
    zoo_steps: int = 600      # training steps of each zoo model
    sft_steps: int = SFT_SETTINGS["max_steps"]
    wrpo_epochs: float = WRPO_SETTINGS["num_train_epochs"]


TICS = tuple(model.style.format("") for model in SOURCES)  # ".", "!", " ok"


def without_tic(answer: str) -> str:
    text = answer.rstrip()
    for tic in TICS:
        if text.endswith(tic):
            return text[: -len(tic)]
    return text


def style_metrics(result: ModelResult, prompts: dict[str, str]) -> dict[str, float]:
    """tic_share: the share of a model's answers that end with a source's style tic (what imitating
    the sources carries over); content_reward: the reward with that tic cut off (what the answers
    know, whatever their style). The reward itself counts both."""
    bare = {p: without_tic(result.answers[p]) for p in result.rewards}
    return {"tic_share": statistics.fmean(bare[p] != result.answers[p].rstrip() for p in bare),
            "content_reward": statistics.fmean(reward(prompts[p], bare[p]) for p in bare)}


def prompt_texts(eval_prompts: Path) -> dict[str, str]:
    return {row["prompt_id"]: row["prompt"] for _, row in read_rows(eval_prompts)}


def heldout_rows(count: int, seed: int, training: set[str]) -> list[dict]:
    """`count` distinct prompts, evenly over the tasks, none of them a training prompt."""
    rng, rows, seen = random.Random(seed), [], set(training)
    while len(rows) < count:
        task = list(TASKS)[len(rows) % len(TASKS)]
        prompt = make_prompt(task, rng)
        if prompt not in seen:
            seen.add(prompt)
            rows.append({"prompt_id": f"eval-{len(rows)}", "prompt": prompt, "category": task})
    return rows


def demo_recipe(zoo: dict[str, Path], seed: int, prompts: Path, workdir: Path, size: DemoSize,
                eval_prompts: Path, ablation_seeds: tuple[int, ...]) -> dict:
    return {
        "workdir": str(workdir), "prompts": str(prompts),
        "sources": [{"name": model.name, "model": str(zoo[model.name])} for model in SOURCES],
        "target": {"name": TARGET.name, "model": str(zoo[TARGET.name])},
        "reward": {"function": JUDGE, "batch_size": 256},
        "sampling": {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 24, "batch_size": 128, "seed": seed},
        "split": {"sft_fraction": 1 / 3, "seed": seed},
        "sft": {**SFT_SETTINGS, "max_steps": size.sft_steps, "seed": seed},
        "wrpo": {**WRPO_SETTINGS, "num_train_epochs": size.wrpo_epochs, "seed": seed},
        "ablation": {"eval_prompts": str(eval_prompts.resolve()), "seeds": list(ablation_seeds),
                     "max_new_tokens": EVAL_SETTINGS.max_new_tokens, "batch_size": 128},
    }


def run_pipeline(output_dir: Path, zoo: dict[str, Path], seed: int, size: DemoSize, eval_prompts: Path,
                 ablation_seeds: tuple[int, ...]) -> Path:
    """The recipe of one seed, run (or resumed) in output_dir/run-seed{seed}; returns the recipe file."""
    run_dir = (output_dir / f"run-seed{seed}").resolve()  # the recipe reads relative paths from its own folder
    run_dir.mkdir(parents=True, exist_ok=True)
    prompts = write_jsonl_atomically(run_dir / "prompts.jsonl", prompt_rows(size.prompts, list(TASKS), seed, "train"))
    recipe = run_dir / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(demo_recipe(zoo, seed, prompts, run_dir / "work", size, eval_prompts,
                                                 ablation_seeds), sort_keys=False))
    run_recipe(recipe)
    return recipe


def evaluate(models: dict[str, Path], eval_prompts: Path, output_dir: Path) -> dict[str, ModelResult]:
    return {label: evaluate_model(label, str(folder), eval_prompts, JUDGE, output_dir, EVAL_SETTINGS, batch_size=128)
            for label, folder in models.items()}


def run_demo(output_dir: str | Path = "demo-output", seed: int = 0, cache_dir: str | Path | None = None,
             ablation: bool = False, size: DemoSize = DemoSize(),
             ablation_seeds: tuple[int, ...] = ABLATION_SEEDS) -> dict:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    zoo = build_zoo(Path(cache_dir) if cache_dir else Path.home() / ".cache" / "wrpo", steps=size.zoo_steps)
    # Held out from the training prompts of this seed and of the ablation's seeds (the prompts the
    # ablation was judged on when it ran the pipeline once per seed: kept, so the README's figures hold).
    training = {row["prompt"] for s in {seed, *ablation_seeds}
                for row in prompt_rows(size.prompts, list(TASKS), s, "train")}
    eval_prompts = write_jsonl_atomically(output_dir / "eval_prompts.jsonl",
                                          heldout_rows(size.eval_prompts, 10_000 + seed, training))

    recipe = run_pipeline(output_dir, zoo, seed, size, eval_prompts, ablation_seeds)
    work = Workdir(recipe.parent / "work")
    models = {**{f"source/{m.name}": zoo[m.name] for m in SOURCES}, "target": zoo[TARGET.name],
              "target-sft": work.target_sft, "target-sft-wrpo": work.target_wrpo}
    results = evaluate(models, eval_prompts, output_dir / "eval" / f"seed{seed}")
    prompts = prompt_texts(eval_prompts)
    comparisons = [compare(results["target-sft-wrpo"], results[baseline]) for baseline in ("target", "target-sft")]
    report = {
        "seed": seed, "tasks": list(TASKS), "train_prompts": size.prompts, "eval_prompts": size.eval_prompts,
        "models": {label: {**result.as_dict(), **style_metrics(result, prompts)} for label, result in results.items()},
        "win_rates": {f"{c.model} vs {c.baseline}": c.as_dict() for c in comparisons},
    }
    win_rate_bars(comparisons, output_dir / "win_rates.png", "target-sft-wrpo, judged by the task reward")
    reward_distributions(results, output_dir / "rewards.png")
    per_category_bars({label: {**r.per_category, "mean": r.mean_reward} for label, r in results.items()},
                      output_dir / "per_task_reward.png", f"held-out reward per task (seed {seed})", ylabel=REWARD_AXIS)
    training_curves({"target-sft-wrpo": work.target_wrpo / "metrics.jsonl"},
                    output_dir / "training.png")

    if ablation:
        report["ablation"] = run_ablation(recipe, prompt_texts(eval_prompts), output_dir)
    write_text_atomically(output_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(output_dir / "report.md", render_report(report))
    return report


def run_ablation(recipe: Path, prompts: dict[str, str], output_dir: Path) -> dict:
    """`wrpo ablate` on the demo's recipe, its report with the demo's style figures added per variant."""
    result = ablate(recipe).result
    report = result.report
    for name, per_seed in result.variants.items():
        style = [style_metrics(per_seed[seed], prompts) for seed in sorted(per_seed)]
        report["variants"][name].update({"tic_share": statistics.fmean(m["tic_share"] for m in style),
                                         "content_reward": statistics.fmean(m["content_reward"] for m in style),
                                         "content_per_seed": [m["content_reward"] for m in style]})
    return {**report, "folder": result.folder.relative_to(output_dir.resolve()).as_posix()}


def render_report(report: dict) -> str:
    lines = [f"# wrpo demo (seed {report['seed']})", "",
             f"Tasks: {', '.join(report['tasks'])}. {report['train_prompts']} training prompts, "
             f"{report['eval_prompts']} held-out prompts; reward = share of positions where the greedy answer "
             "has the right character (1.0 = exact answer); tics = share of answers ending with a source's style tic;",
             "content = the reward with the tic cut off.",
             "", "| model | mean | tics | content | " + " | ".join(report["tasks"]) + " |",
             "|---|---|---|---|" + "---|" * len(report["tasks"])]
    for label, values in report["models"].items():
        lines.append(f"| {label} | {values['mean_reward']:.3f} | {values['tic_share']:.2f} | "
                     f"{values['content_reward']:.3f} | "
                     + " | ".join(f"{values['per_category'].get(t, float('nan')):.3f}" for t in report["tasks"]) + " |")
    lines += ["", "| comparison | win rate | 95% CI | length-controlled | wins / ties / losses |",
              "|---|---|---|---|---|"]
    for name, value in report["win_rates"].items():
        lines.append(f"| {name} | {value['win_rate']:.3f} | {value['ci95'][0]:.3f}-{value['ci95'][1]:.3f} | "
                     f"{format_rate(value['lc_win_rate'])} | {value['wins']} / {value['ties']} / {value['losses']} |")
    lines += ["", "![per-task reward](per_task_reward.png)", "", "![win rates](win_rates.png)", "",
              "![rewards](rewards.png)", "", "![training](training.png)", ""]
    if "ablation" in report:
        ablation, folder = report["ablation"], report["ablation"]["folder"]
        lines += [f"## Ablation (`wrpo ablate`, training seeds {', '.join(map(str, ablation['seeds']))}, "
                  "mean ± std)", "",
                  f"Every variant from this seed's target-sft on its quadruples; full report: [{folder}/report.md]"
                  f"({folder}/report.md). Δ vs wrpo: paired per-prompt difference, 95% bootstrap interval; "
                  "↓T / ↓S: below the target / target-sft.", "",
                  "| variant | mean reward | Δ vs wrpo | tics | content | " + " | ".join(report["tasks"]) + " |",
                  "|---|---|---|---|---|" + "---|" * len(report["tasks"])]
        for label, values in ablation["variants"].items():
            lines.append(f"| {label} | {values['mean_reward']:.3f} ± {values['std']:.3f} | "
                         f"{format_difference(values)} | "
                         f"{values['tic_share']:.2f} | {values['content_reward']:.3f} | "
                         + " | ".join(f"{values['per_category'][t]:.3f}" for t in report["tasks"]) + " |")
        lines += ["", *(f"- {line}" for line in ablation_flags(ablation)), "",
                  f"![ablation]({folder}/ablation_per_category.png)", "",
                  f"![differences]({folder}/ablation_differences.png)", ""]
    return "\n".join(lines)


def show(report: dict) -> None:
    table = Table(title="held-out reward (1.0 = exact answer)")
    for column in ("model", "mean", "tics", "content", *report["tasks"]):
        table.add_column(column, justify="right" if column != "model" else "left")
    for label, values in report["models"].items():
        table.add_row(label, f"{values['mean_reward']:.3f}", f"{values['tic_share']:.2f}",
                      f"{values['content_reward']:.3f}",
                      *(f"{values['per_category'].get(t, 0):.3f}" for t in report["tasks"]))
    console.print(table)
    for name, value in report["win_rates"].items():
        console.print(f"{name}: {value['win_rate']:.3f} (95% CI {value['ci95'][0]:.3f}-{value['ci95'][1]:.3f})")
    if "ablation" in report:
        show_ablation(report["ablation"])
        for label, values in report["ablation"]["variants"].items():
            console.print(f"ablation {label}: tics {values['tic_share']:.2f}, content {values['content_reward']:.3f}")
