"""Plots a person would rather look at than read: per-category rewards of every model, training curves."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

# Red marks what is flagged (a bar below its target, a difference below 0) and nothing else: models take
# matplotlib's qualitative colours without their reds (tab10's nine others; past nine models, tab20's eighteen).
FLAG_COLOUR = "red"
_REDS = {"tab10": {3}, "tab20": {6, 7}}


def model_colours(count: int) -> list[tuple[float, float, float]]:
    """A colour for each of `count` models, none of them red; they repeat only past eighteen."""
    name = "tab10" if count <= 9 else "tab20"
    palette = [colour for index, colour in enumerate(plt.get_cmap(name).colors) if index not in _REDS[name]]
    return [palette[index % len(palette)] for index in range(count)]


def per_category_bars(per_category: dict[str, dict[str, float]], path: str | Path, title: str,
                      errors: dict[str, dict[str, float]] | None = None, ylabel: str = "mean reward",
                      flagged: dict[str, set[str]] | None = None) -> Path:
    """Grouped bars: one group per category (plus "mean"), one bar per model. The y range is the
    data's: a reward model's scores need not lie in 0-1. Bars of `flagged` (model -> categories) are
    hatched with a red edge, to be seen at a glance."""
    return _saved(per_category_figure(per_category, title, errors, ylabel, flagged), path)


def per_category_figure(per_category: dict[str, dict[str, float]], title: str,
                        errors: dict[str, dict[str, float]] | None = None, ylabel: str = "mean reward",
                        flagged: dict[str, set[str]] | None = None):
    """per_category_bars' figure, open (a test reads its bars' colours)."""
    labels = list(per_category)
    categories = list(dict.fromkeys(c for values in per_category.values() for c in values))  # first-seen order
    figure, axes = plt.subplots(figsize=(max(7, 1.6 * len(categories) + 2), 4.5))
    width = 0.8 / len(labels)
    for index, (label, colour) in enumerate(zip(labels, model_colours(len(labels)), strict=True)):
        positions = [c + (index - (len(labels) - 1) / 2) * width for c in range(len(categories))]
        heights = [per_category[label].get(category, 0.0) for category in categories]
        spread = [errors.get(label, {}).get(category, 0.0) for category in categories] if errors else None
        bars = axes.bar(positions, heights, width, label=label, yerr=spread, capsize=2 if spread else 0,
                        color=colour)
        for bar, category in zip(bars, categories, strict=True):
            if category in (flagged or {}).get(label, ()):
                bar.set_hatch("//")
                bar.set_edgecolor(FLAG_COLOUR)
    axes.set_xticks(range(len(categories)), categories)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=8, ncol=2, loc="best")
    figure.tight_layout()
    return figure


def _saved(figure, path: str | Path) -> Path:
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def training_curves(metrics_files: dict[str, str | Path], path: str | Path,
                    keys: tuple[str, ...] = ("alpha", "rewards/margins", "rewards/accuracies", "loss")) -> Path:
    """One panel per metric of metrics.jsonl over optimizer steps, one line per run."""
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    for (label, metrics_file), colour in zip(metrics_files.items(), model_colours(len(metrics_files)), strict=True):
        rows = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line.strip()]
        for axis, key in zip(axes, keys, strict=True):
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                axis.plot(*zip(*points, strict=True), label=label, color=colour)
    for axis, key in zip(axes, keys, strict=True):
        axis.set_title(key)
        axis.set_xlabel("optimizer step")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    figure.tight_layout()
    return _saved(figure, path)


def paired_differences(differences: dict[str, tuple[float, float, float]], path: str | Path, title: str,
                       xlabel: str) -> Path:
    """One row per model: its mean difference from a reference (label -> (mean, low, high)) with the
    interval, and a line at 0; red where the interval lies below 0."""
    labels = list(differences)
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.5))
    for row, label in enumerate(labels):
        mean, low, high = differences[label]
        axes.errorbar(mean, row, xerr=[[mean - low], [high - mean]], fmt="o", capsize=4,
                      color=FLAG_COLOUR if high < 0 else "black")
    axes.axvline(0, color="grey", linestyle="--", linewidth=1)
    axes.set_yticks(range(len(labels)), labels)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    figure.tight_layout()
    return _saved(figure, path)


def win_rate_bars(comparisons: list, path: str | Path, title: str) -> Path:
    """Win rate of each comparison with its 95% interval, and the length-controlled rate as a dot."""
    figure, axes = plt.subplots(figsize=(max(6, 1.3 * len(comparisons) + 2), 4))
    names = [f"{c.model}\nvs {c.baseline}" for c in comparisons]
    rates = [c.overall.rate for c in comparisons]
    spread = [[c.overall.rate - c.overall.low for c in comparisons],
              [c.overall.high - c.overall.rate for c in comparisons]]
    axes.bar(names, rates, yerr=spread, capsize=4, label="win rate (95% CI)", color=model_colours(1)[0])
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
    return _saved(figure, path)


def reward_distributions(results: dict, path: str | Path) -> Path:
    """A histogram of per-prompt rewards of each model, and their length against reward."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for (label, result), colour in zip(results.items(), model_colours(len(results)), strict=True):
        values = list(result.rewards.values())
        left.hist(values, bins=20, histtype="step", label=label, color=colour)
        right.scatter([len(result.answers[p]) for p in result.rewards], values, s=6, alpha=0.5, label=label,
                      color=colour)
    left.set_xlabel("reward")
    left.set_ylabel("prompts")
    left.set_title("reward distribution")
    right.set_xlabel("answer length (characters)")
    right.set_ylabel("reward")
    right.set_title("length against reward")
    left.legend(fontsize=7)
    figure.tight_layout()
    return _saved(figure, path)
