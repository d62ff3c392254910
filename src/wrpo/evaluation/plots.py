"""Plots a person would rather look at than read: per-category rewards of every model, training curves."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def per_category_bars(per_category: dict[str, dict[str, float]], path: str | Path, title: str,
                      errors: dict[str, dict[str, float]] | None = None, ylabel: str = "mean reward",
                      flagged: dict[str, set[str]] | None = None) -> Path:
    """Grouped bars: one group per category (plus "mean"), one bar per model. The y range is the
    data's: a reward model's scores need not lie in 0-1. Bars of `flagged` (model -> categories) are
    hatched with a red edge, to be seen at a glance."""
    labels = list(per_category)
    categories = list(dict.fromkeys(c for values in per_category.values() for c in values))  # first-seen order
    figure, axes = plt.subplots(figsize=(max(7, 1.6 * len(categories) + 2), 4.5))
    width = 0.8 / len(labels)
    for index, label in enumerate(labels):
        positions = [c + (index - (len(labels) - 1) / 2) * width for c in range(len(categories))]
        heights = [per_category[label].get(category, 0.0) for category in categories]
        spread = [errors.get(label, {}).get(category, 0.0) for category in categories] if errors else None
        # Past ten models matplotlib's default colours repeat: tab20 keeps every bar's colour its own.
        colour = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")(index)
        bars = axes.bar(positions, heights, width, label=label, yerr=spread, capsize=2 if spread else 0,
                        color=colour)
        for bar, category in zip(bars, categories, strict=True):
            if category in (flagged or {}).get(label, ()):
                bar.set_hatch("//")
                bar.set_edgecolor("red")
    axes.set_xticks(range(len(categories)), categories)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=8, ncol=2, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def training_curves(metrics_files: dict[str, str | Path], path: str | Path,
                    keys: tuple[str, ...] = ("alpha", "rewards/margins", "rewards/accuracies", "loss")) -> Path:
    """One panel per metric of metrics.jsonl over optimizer steps, one line per run."""
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for label, metrics_file in metrics_files.items():
        rows = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line.strip()]
        for axis, key in zip(axes, keys, strict=True):
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                axis.plot(*zip(*points, strict=True), label=label)
    for axis, key in zip(axes, keys, strict=True):
        axis.set_title(key)
        axis.set_xlabel("optimizer step")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def paired_differences(differences: dict[str, tuple[float, float, float]], path: str | Path, title: str,
                       xlabel: str) -> Path:
    """One row per model: its mean difference from a reference (label -> (mean, low, high)) with the
    interval, and a line at 0; red where the interval lies below 0."""
    labels = list(differences)
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.5))
    for row, label in enumerate(labels):
        mean, low, high = differences[label]
        axes.errorbar(mean, row, xerr=[[mean - low], [high - mean]], fmt="o", capsize=4,
                      color="red" if high < 0 else "black")
    axes.axvline(0, color="grey", linestyle="--", linewidth=1)
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def win_rate_bars(comparisons: list, path: str | Path, title: str) -> Path:
    """Win rate of each comparison with its 95% interval, and the length-controlled rate as a dot."""
    figure, axes = plt.subplots(figsize=(max(6, 1.3 * len(comparisons) + 2), 4))
    names = [f"{c.model}\nvs {c.baseline}" for c in comparisons]
    rates = [c.overall.rate for c in comparisons]
    spread = [[c.overall.rate - c.overall.low for c in comparisons],
              [c.overall.high - c.overall.rate for c in comparisons]]
    axes.bar(names, rates, yerr=spread, capsize=4, label="win rate (95% CI)")
    identified = [(name, c.length_controlled) for name, c in zip(names, comparisons, strict=True)
                  if c.length_controlled == c.length_controlled]  # NaN: the fit could not tell
    if identified:
        axes.scatter(*zip(*identified, strict=True), color="black", zorder=3, label="length-controlled")
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    axes.set_ylim(0, 1)
    axes.set_ylabel("win rate (ties count half)")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def reward_distributions(results: dict, path: str | Path) -> Path:
    """A histogram of per-prompt rewards of each model, and their length against reward."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, result in results.items():
        values = list(result.rewards.values())
        left.hist(values, bins=20, histtype="step", label=label)
        right.scatter([len(result.answers[p]) for p in result.rewards], values, s=6, alpha=0.5, label=label)
    left.set_xlabel("reward")
    left.set_ylabel("prompts")
    left.set_title("reward distribution")
    right.set_xlabel("answer length (characters)")
    right.set_ylabel("reward")
    right.set_title("length against reward")
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
