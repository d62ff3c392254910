"""Reward-judged comparison of models on held-out prompts: answers, rewards, win rates.

Answers come from `wrpo sample` (greedy by default) and rewards from `wrpo score`, so evaluation is
as resumable as the pipeline, and a judge is anything `wrpo score` accepts. A row the judge fails
on is reported and left out; the others are kept.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wrpo.data.prompts import read_prompts
from wrpo.data.records import read_rows
from wrpo.errors import InputError
from wrpo.evaluation.length_control import length_controlled_win_rate
from wrpo.files import path_fingerprint, text_fingerprint
from wrpo.generation.settings import GREEDY, BackendSettings, SamplingSettings


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


def bootstrap_interval(items: list, statistic: Callable[[list], float] = statistics.fmean, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """The 95% interval of `statistic` over resamples of `items` (drawn with replacement, as many as
    there are; seeded). Resamples where the statistic is NaN (a length-controlled fit that cannot
    tell) are left out; NaN, NaN when every one is."""
    rng = random.Random(seed)
    values = sorted(value for value in (statistic(rng.choices(items, k=len(items))) for _ in range(resamples))
                    if value == value)
    if not values:
        return math.nan, math.nan
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def win_rate_of(results: list[float], resamples: int = 2000, seed: int = 0) -> WinRate:
    """The win rate of per-prompt outcomes: 1 a win, 0.5 a tie, 0 a loss."""
    if not results:
        raise ValueError("the two models share no judged prompt")
    low, high = bootstrap_interval(results, statistics.fmean, resamples, seed)
    return WinRate(rate=statistics.fmean(results), low=low, high=high, wins=results.count(1.0),
                   ties=results.count(0.5), losses=results.count(0.0))


def win_rate(model: dict[str, float], baseline: dict[str, float], resamples: int = 2000, seed: int = 0) -> WinRate:
    return win_rate_of(list(outcomes(model, baseline).values()), resamples, seed)


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


def per_category_win_rates(results: dict[str, float], categories: dict[str, str]) -> dict[str, WinRate]:
    """The win rate of each category's prompts (results: prompt_id -> 1, 0.5 or 0, or a preference between);
    none where every prompt is of one category (it would repeat the overall rate)."""
    by_category = defaultdict(list)
    for prompt_id, result in results.items():
        by_category[categories.get(prompt_id, "all")].append(result)
    if len(by_category) < 2:
        return {}
    return {category: win_rate_of(values) for category, values in sorted(by_category.items())}


def compare(model: ModelResult, baseline: ModelResult) -> Comparison:
    """Win rate (with interval), length-controlled win rate and per-category win rates."""
    results = outcomes(model.rewards, baseline.rewards)
    differences = [len(model.answers[p]) - len(baseline.answers[p]) for p in results]
    return Comparison(model=model.label, baseline=baseline.label, overall=win_rate(model.rewards, baseline.rewards),
                      length_controlled=length_controlled_win_rate(list(results.values()), differences),
                      per_category=per_category_win_rates(results, model.categories))


def answer_prompts(label: str, model: str, prompts: str | Path, output_dir: str | Path,
                   settings: SamplingSettings = GREEDY, batch_size: int = 64,
                   backend: BackendSettings = BackendSettings()) -> Path:
    """`model`'s answers to the prompts (wrpo sample), in output_dir/answers, named by the label and a
    fingerprint of the model, prompts, sampling and backend settings: nothing stale is reused."""
    from wrpo.generation.sample import sample  # torch and the engines: not for a reader of results

    # How requests are sent (their concurrency, the key's variable) does not change the answers.
    answering = backend.model_dump(exclude={"concurrency", "api_key_env"})
    key = text_fingerprint(path_fingerprint(str(model)), path_fingerprint(str(prompts)),
                           json.dumps(settings.model_dump(), sort_keys=True), str(batch_size),
                           json.dumps(answering, sort_keys=True))
    return sample(model, prompts, Path(output_dir) / "answers" / f"{label}-{key}.jsonl",
                  settings.model_copy(update={"batch_size": batch_size}), backend=backend, name=label)


def evaluate_model(label: str, model: str, prompts: str | Path, judge: str | None, output_dir: str | Path,
                   settings: SamplingSettings = GREEDY, batch_size: int = 64, trust_remote_code: bool = False,
                   backend: BackendSettings = BackendSettings()) -> ModelResult:
    """Answers the prompts with `model` (answer_prompts) and scores them with `judge` in
    output_dir/scores, named by the answers' content and the judge: a new judge re-scores the same
    answers without generating them again. Without a judge, the answers only (an LLM judge compares
    them: wrpo.evaluation.llm_judge)."""
    from wrpo.reward.score import score

    answers = answer_prompts(label, model, prompts, output_dir, settings, batch_size, backend)
    categories = {row.prompt_id: str(row.meta["category"]) for row in read_prompts(prompts) if "category" in row.meta}
    result = ModelResult(label=label, rewards={}, categories=categories)
    if judge is None:
        result.answers = {str(row["prompt_id"]): row["responses"][0] for _, row in read_rows(answers)}
        return result
    scores_key = text_fingerprint(path_fingerprint(str(answers)), path_fingerprint(judge))
    scored = score([answers], judge, Path(output_dir) / "scores" / f"{label}-{scores_key}.jsonl",
                   batch_size=batch_size, trust_remote_code=trust_remote_code, skip_failures=True)
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


def format_rate(value: float | None) -> str:
    """A rate for a report; a length-controlled rate the fit could not identify is NaN, and a rate of no
    judged prompt None: n/a."""
    return "n/a" if value is None or value != value else f"{value:.3f}"
