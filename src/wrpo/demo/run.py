"""`wrpo demo`: a real fusion of heterogeneous tiny models, end to end on a laptop CPU.

Three tiny sources (Llama / char tokenizer, Qwen2 / BPE 300, GPT-2 / BPE 260), each a specialist on
two of four string tasks and each with a style tic, and a GPT-NeoX / BPE 400 target that only repeats
its input. The real pipeline runs on them through a recipe (`wrpo run`): sample, score with the
task reward, build, SFT, sample target-sft, score, build pairs, WRPO. Every model is then judged on
held-out prompts by the same reward, and DIR/report.md, report.json and PNG plots are written.

With --ablation the pipeline runs for three seeds, and from each seed's target-sft the comparisons
of the paper are trained on the same quadruples: DPO (alpha 0), WRPO with constant alpha, alpha
fixed at 1, continued SFT (same steps) on y_ws and on the better of y_ws and y_wt, and WRPO whose y_ws
come from 1 or 2 of the three sources (only the preference stage is restricted: target-sft learnt
from all three).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.table import Table

from wrpo.data.construct import build_pairs, read_preference_prompts
from wrpo.data.records import read_rows
from wrpo.data.resumable import write_jsonl_atomically
from wrpo.demo.tasks import TASKS, make_prompt, prompt_rows, reward
from wrpo.demo.zoo import SOURCES, TARGET, build_zoo
from wrpo.evaluation.compare import ModelResult, compare, evaluate_model, format_rate
from wrpo.evaluation.plots import per_category_bars, reward_distributions, training_curves, win_rate_bars
from wrpo.files import write_text_atomically
from wrpo.generation.settings import GREEDY
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.local import LocalExecutor
from wrpo.pipeline.recipe import StageResources
from wrpo.pipeline.run import run_recipe, run_stages
from wrpo.pipeline.stages import training_stage
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


def demo_recipe(zoo: dict[str, Path], seed: int, prompts: Path, workdir: Path, size: DemoSize) -> dict:
    return {
        "workdir": str(workdir), "prompts": str(prompts),
        "sources": [{"name": model.name, "model": str(zoo[model.name])} for model in SOURCES],
        "target": {"name": TARGET.name, "model": str(zoo[TARGET.name])},
        "reward": {"function": JUDGE, "batch_size": 256},
        "sampling": {"n": 4, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 24, "batch_size": 128, "seed": seed},
        "split": {"sft_fraction": 1 / 3, "seed": seed},
        "sft": {**SFT_SETTINGS, "max_steps": size.sft_steps, "seed": seed},
        "wrpo": {**WRPO_SETTINGS, "num_train_epochs": size.wrpo_epochs, "seed": seed},
    }


def run_pipeline(output_dir: Path, zoo: dict[str, Path], seed: int, size: DemoSize) -> Workdir:
    """The recipe of one seed, run (or resumed) in output_dir/run-seed{seed}; returns its workdir."""
    run_dir = (output_dir / f"run-seed{seed}").resolve()  # the recipe reads relative paths from its own folder
    run_dir.mkdir(parents=True, exist_ok=True)
    prompts = write_jsonl_atomically(run_dir / "prompts.jsonl", prompt_rows(size.prompts, list(TASKS), seed, "train"))
    recipe = run_dir / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(demo_recipe(zoo, seed, prompts, run_dir / "work", size), sort_keys=False))
    run_recipe(recipe)
    return Workdir(run_dir / "work")


def evaluate(models: dict[str, Path], eval_prompts: Path, output_dir: Path) -> dict[str, ModelResult]:
    return {label: evaluate_model(label, str(folder), eval_prompts, JUDGE, output_dir, EVAL_SETTINGS, batch_size=128)
            for label, folder in models.items()}


def ablation_variants(work: Workdir, seed: int, size: DemoSize) -> dict[str, Path]:
    """Trains the paper's comparisons from this seed's target-sft; returns label -> model folder."""
    target_sft, quadruples, preference = work.target_sft, work.quadruples, work.preference_prompts
    variants_dir = work.root / "ablation"
    steps = math.ceil(math.ceil(sum(1 for _ in quadruples.open()) / WRPO_SETTINGS["per_device_train_batch_size"])
                      * size.wrpo_epochs)
    settings = {**WRPO_SETTINGS, "num_train_epochs": size.wrpo_epochs, "seed": seed}
    runs = {
        "target-sft-dpo": ({"alpha": 0.0, "alpha_schedule": "constant"}, quadruples),
        "wrpo-constant-alpha": ({"alpha_schedule": "constant"}, quadruples),
        "wrpo-alpha-1": ({"alpha": 1.0, "alpha_schedule": "constant"}, quadruples),
    }
    # The scaling question, for the preference stage only: target-sft (shared) learnt from all sources.
    for count in (1, 2):
        kept = {model.name for model in SOURCES[:count]}
        subset_prompts = write_jsonl_atomically(variants_dir / f"preference-{count}-sources.jsonl", [
            {**row, "source_responses": [s for s in row["source_responses"] if s["model"] in kept]}
            for _, row in read_preference_prompts(preference)])
        subset = variants_dir / f"quadruples-{count}-sources.jsonl"
        build_pairs(subset_prompts, [work.target_scores], subset)
        runs[f"wrpo-y_ws-from-{count}-source{'s' if count > 1 else ''}"] = ({}, subset)
    def variant(label: str, kind: str, data: Path, settings: dict):
        return training_stage(f"ablation/{label}", kind, str(target_sft), data, variants_dir / label, settings, 0,
                              "cpu", StageResources(), work)

    stages = [variant(label, "wrpo", data, {**settings, **overrides}) for label, (overrides, data) in runs.items()]

    # The sceptic's baselines: plain SFT continued, with the SFT stage's settings, for as many steps of
    # the same batch size as WRPO takes; on the preference prompts' y_ws, and (rejection-sampling SFT)
    # on whichever of y_ws and y_wt the reward scored higher in each quadruple.
    sft_settings = {**SFT_SETTINGS, "seed": seed, "max_steps": steps,
                    "per_device_train_batch_size": WRPO_SETTINGS["per_device_train_batch_size"]}
    sft_data = {
        "target-sft-sft": [{"prompt_id": row["prompt_id"], "prompt": row["prompt"],
                            "response": row["source_responses"][0]["text"]}
                           for _, row in read_preference_prompts(preference)],
        "target-sft-rft": [{"prompt_id": row["prompt_id"], "prompt": row["prompt"],
                            "response": row["chosen_target"] if row["meta"]["chosen_target_score"]
                            > row["meta"]["source_scores"][0] else row["chosen_source"][0]}
                           for _, row in read_rows(quadruples)],
    }
    for label, data in sft_data.items():
        rows = write_jsonl_atomically(variants_dir / f"{label}.jsonl", data)
        stages.append(variant(label, "sft", rows, sft_settings))
    # The pipeline's own runner: a variant is retrained exactly when its start, data or settings change.
    run_stages(stages, work, LocalExecutor())
    return {stage.name.split("/", 1)[1]: stage.outputs[0] for stage in stages}


def run_demo(output_dir: str | Path = "demo-output", seed: int = 0, cache_dir: str | Path | None = None,
             ablation: bool = False, size: DemoSize = DemoSize(),
             ablation_seeds: tuple[int, ...] = ABLATION_SEEDS) -> dict:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    zoo = build_zoo(Path(cache_dir) if cache_dir else Path.home() / ".cache" / "wrpo", steps=size.zoo_steps)
    # Held out from the training prompts of every seed this demo may run, with or without --ablation,
    # so the plain run and the ablation are judged on the same prompts.
    training = {row["prompt"] for s in {seed, *ablation_seeds}
                for row in prompt_rows(size.prompts, list(TASKS), s, "train")}
    eval_prompts = write_jsonl_atomically(output_dir / "eval_prompts.jsonl",
                                          heldout_rows(size.eval_prompts, 10_000 + seed, training))

    work = run_pipeline(output_dir, zoo, seed, size)
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
        report["ablation"] = run_ablation(output_dir, zoo, eval_prompts, size, ablation_seeds)
    write_text_atomically(output_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(output_dir / "report.md", render_report(report))
    return report


def run_ablation(output_dir: Path, zoo: dict[str, Path], eval_prompts: Path, size: DemoSize,
                 seeds: tuple[int, ...]) -> dict:
    per_seed: dict[str, list[ModelResult]] = {}
    curves = {}
    for seed in seeds:
        work = run_pipeline(output_dir, zoo, seed, size)
        models = {"target-sft": work.target_sft, "target-sft-wrpo": work.target_wrpo,
                  **ablation_variants(work, seed, size)}
        for label, result in evaluate(models, eval_prompts, output_dir / "eval" / f"seed{seed}").items():
            per_seed.setdefault(label, []).append(result)
        if seed == seeds[0]:
            curves = {label: folder / "metrics.jsonl" for label, folder in models.items()
                      if label.startswith(("target-sft-wrpo", "target-sft-dpo", "wrpo-"))}
    summary = {}
    prompts = prompt_texts(eval_prompts)
    for label, results in per_seed.items():
        means = [r.mean_reward for r in results]
        tasks = results[0].per_category
        style = [style_metrics(r, prompts) for r in results]
        summary[label] = {
            "mean_reward": statistics.fmean(means), "std": statistics.stdev(means) if len(means) > 1 else 0.0,
            "per_seed": means, **{name: statistics.fmean(m[name] for m in style) for name in style[0]},
            "content_per_seed": [m["content_reward"] for m in style],
            "per_category": {t: statistics.fmean(r.per_category[t] for r in results) for t in tasks},
            "per_category_std": {t: statistics.stdev([r.per_category[t] for r in results]) if len(results) > 1 else 0.0
                                 for t in tasks},
        }
    per_category_bars({label: {**s["per_category"], "mean": s["mean_reward"]} for label, s in summary.items()},
                      output_dir / "ablation_per_task_reward.png",
                      f"ablation: held-out reward, mean over seeds {', '.join(map(str, seeds))}",
                      errors={label: {**s["per_category_std"], "mean": s["std"]} for label, s in summary.items()},
                      ylabel=REWARD_AXIS)
    training_curves(curves, output_dir / "ablation_training.png")
    return {"seeds": list(seeds), "models": summary}


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
        ablation = report["ablation"]
        lines += [f"## Ablation (seeds {', '.join(map(str, ablation['seeds']))}, mean ± std)", "",
                  "| model | mean reward | tics | content | " + " | ".join(report["tasks"]) + " |",
                  "|---|---|---|---|" + "---|" * len(report["tasks"])]
        for label, values in ablation["models"].items():
            lines.append(f"| {label} | {values['mean_reward']:.3f} ± {values['std']:.3f} | {values['tic_share']:.2f} | "
                         f"{values['content_reward']:.3f} | "
                         + " | ".join(f"{values['per_category'][t]:.3f}" for t in report["tasks"]) + " |")
        lines += ["", "![ablation](ablation_per_task_reward.png)", "",
                  "![ablation training](ablation_training.png)", ""]
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
        for label, values in report["ablation"]["models"].items():
            console.print(f"ablation {label}: {values['mean_reward']:.3f} ± {values['std']:.3f} "
                          f"(tics {values['tic_share']:.2f}, content {values['content_reward']:.3f})")
