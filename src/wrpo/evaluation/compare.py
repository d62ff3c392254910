"""Reward-judged comparison of models on held-out prompts: answers, rewards, win rates.

Answers come from `wrpo sample` (greedy by default) and rewards from `wrpo score`, so evaluation is
as resumable as the pipeline, and a judge is anything `wrpo score` accepts. A row the judge fails
on is reported and left out; the others are kept.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from wrpo.data.prompts import read_prompts
from wrpo.data.records import read_rows
from wrpo.errors import InputError
from wrpo.evaluation.length_control import length_controlled_win_rate
from wrpo.files import path_fingerprint
from wrpo.generation.sample import sample
from wrpo.generation.settings import GREEDY, SamplingSettings
from wrpo.reward.score import score


@dataclass
class ModelResult:
    label: str
    rewards: dict[str, float]                                 # prompt_id -> reward of the (first) answer
    categories: dict[str, str] = field(default_factory=dict)  # prompt_id -> category
    answers: dict[str, str] = field(default_factory=dict)     # prompt_id -> answer
    failures: list[str] = field(default_factory=list)         # the judge's errors, one per failed row

    @property
    def mean_reward(self) -> float:
        return statistics.fmean(self.rewards.values())

    @property
    def mean_length(self) -> float:
        return statistics.fmean(len(self.answers[p]) for p in self.rewards)

    @property
    def per_category(self) -> dict[str, float]:
        grouped = defaultdict(list)
        for prompt_id, value in self.rewards.items():
            grouped[self.categories.get(prompt_id, "all")].append(value)
        return {category: statistics.fmean(values) for category, values in sorted(grouped.items())}

    def as_dict(self) -> dict:
        return {"mean_reward": self.mean_reward, "per_category": self.per_category, "mean_length": self.mean_length,
                "judged": len(self.rewards), "judge_failures": len(self.failures)}


@dataclass(frozen=True)
class WinRate:
    """Share of prompts where `model` beats `baseline` (ties count half), with a bootstrap interval."""

    rate: float
    low: float
    high: float
    wins: int
    ties: int
    losses: int

    def as_dict(self) -> dict:
        return {"win_rate": self.rate, "ci95": [self.low, self.high], "wins": self.wins, "ties": self.ties,
                "losses": self.losses}


def outcomes(model: dict[str, float], baseline: dict[str, float], tolerance: float = 1e-9) -> dict[str, float]:
    """prompt_id -> 1 (model's reward higher), 0.5 (equal) or 0, over the prompts both have."""
    return {p: 1.0 if model[p] > baseline[p] + tolerance else 0.0 if model[p] < baseline[p] - tolerance else 0.5
            for p in sorted(set(model) & set(baseline))}


def bootstrap_interval(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of `values` (resampled with replacement)."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def win_rate(model: dict[str, float], baseline: dict[str, float], resamples: int = 2000, seed: int = 0) -> WinRate:
    results = list(outcomes(model, baseline).values())
    if not results:
        raise ValueError("the two models share no judged prompt")
    low, high = bootstrap_interval(results, resamples, seed)
    return WinRate(rate=statistics.fmean(results), low=low, high=high, wins=results.count(1.0),
                   ties=results.count(0.5), losses=results.count(0.0))


@dataclass(frozen=True)
class Comparison:
    model: str
    baseline: str
    overall: WinRate
    length_controlled: float
    per_category: dict[str, WinRate]

    def as_dict(self) -> dict:
        return {**self.overall.as_dict(), "lc_win_rate": self.length_controlled,
                "per_category": {c: w.as_dict() for c, w in self.per_category.items()}}


def compare(model: ModelResult, baseline: ModelResult) -> Comparison:
    """Win rate (with interval), length-controlled win rate and per-category win rates."""
    results = outcomes(model.rewards, baseline.rewards)
    differences = [len(model.answers[p]) - len(baseline.answers[p]) for p in results]
    by_category = defaultdict(list)
    for prompt_id in results:
        by_category[model.categories.get(prompt_id, "all")].append(prompt_id)
    per_category = {}
    if len(by_category) > 1:
        for category, prompt_ids in sorted(by_category.items()):
            per_category[category] = win_rate({p: model.rewards[p] for p in prompt_ids}, baseline.rewards)
    return Comparison(model=model.label, baseline=baseline.label, overall=win_rate(model.rewards, baseline.rewards),
                      length_controlled=length_controlled_win_rate(list(results.values()), differences),
                      per_category=per_category)


def evaluate_model(label: str, model: str, prompts: str | Path, judge: str, output_dir: str | Path,
                   settings: SamplingSettings = GREEDY, batch_size: int = 64,
                   trust_remote_code: bool = False) -> ModelResult:
    """Answers the prompts with `model`, scores them with `judge`; files go to output_dir/{answers,scores},
    answers named by the label and a fingerprint of the model, prompts and sampling settings, scores
    by the answers' content and the judge: nothing stale is reused, and a new judge re-scores the
    same answers without generating them again."""
    output_dir = Path(output_dir)
    answers_key = _key(path_fingerprint(str(model)), path_fingerprint(str(prompts)),
                       json.dumps(settings.model_dump(), sort_keys=True), str(batch_size))
    answers = sample(model, prompts, output_dir / "answers" / f"{label}-{answers_key}.jsonl",
                     settings.model_copy(update={"batch_size": batch_size}), name=label)
    scores_key = _key(path_fingerprint(str(answers)), path_fingerprint(judge))
    scored = score([answers], judge, output_dir / "scores" / f"{label}-{scores_key}.jsonl", batch_size=batch_size,
                   trust_remote_code=trust_remote_code, skip_failures=True)
    categories = {row.prompt_id: str(row.meta["category"]) for row in read_prompts(prompts) if "category" in row.meta}
    result = ModelResult(label=label, rewards={}, categories=categories)
    for _, row in read_rows(scored):
        prompt_id = str(row["prompt_id"])
        result.answers[prompt_id] = row["responses"][0]
        if row["scores"] is None:
            result.failures.append(row["error"])
        else:
            result.rewards[prompt_id] = float(row["scores"][0])
    if not result.rewards:
        raise InputError(f"the judge failed on every answer of {label}; the first error: {result.failures[0]}")
    return result


def format_rate(value: float) -> str:
    """A rate for a report; a length-controlled rate the fit could not identify is NaN: n/a."""
    return "n/a" if value != value else f"{value:.3f}"


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
