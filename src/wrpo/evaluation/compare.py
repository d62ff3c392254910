"""Reward-judged comparison of models on held-out prompts: answers, rewards, win rates.

Answers come from `wrpo sample` (greedy by default) and rewards from `wrpo score`, so evaluation is
as resumable as the pipeline and a judge is anything `wrpo score` accepts.
"""

from __future__ import annotations

import hashlib
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from wrpo.data.prompts import read_prompts
from wrpo.data.records import read_rows
from wrpo.generation.backends import SamplingSettings
from wrpo.generation.sample import sample
from wrpo.pipeline.fingerprint import path_fingerprint
from wrpo.reward.score import score

GREEDY = SamplingSettings(n=1, temperature=0.0, top_p=1.0, max_new_tokens=512)


@dataclass
class ModelResult:
    label: str
    rewards: dict[str, float]                      # prompt_id -> reward of the (first) answer
    categories: dict[str, str] = field(default_factory=dict)  # prompt_id -> category

    @property
    def mean_reward(self) -> float:
        return statistics.fmean(self.rewards.values())

    @property
    def per_category(self) -> dict[str, float]:
        grouped = defaultdict(list)
        for prompt_id, value in self.rewards.items():
            grouped[self.categories.get(prompt_id, "all")].append(value)
        return {category: statistics.fmean(values) for category, values in sorted(grouped.items())}

    def as_dict(self) -> dict:
        return {"mean_reward": self.mean_reward, "per_task": self.per_category}


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


def win_rate(model: dict[str, float], baseline: dict[str, float], resamples: int = 2000, seed: int = 0,
             tolerance: float = 1e-9) -> WinRate:
    shared = sorted(set(model) & set(baseline))
    if not shared:
        raise ValueError("the two models share no prompt")
    outcomes = [1.0 if model[p] > baseline[p] + tolerance else 0.0 if model[p] < baseline[p] - tolerance else 0.5
                for p in shared]
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(outcomes, k=len(outcomes))) for _ in range(resamples))
    return WinRate(rate=statistics.fmean(outcomes), low=means[int(0.025 * resamples)],
                   high=means[int(0.975 * resamples) - 1], wins=outcomes.count(1.0), ties=outcomes.count(0.5),
                   losses=outcomes.count(0.0))


def evaluate_model(label: str, model: str, prompts: str | Path, judge: str, output_dir: str | Path,
                   settings: SamplingSettings = GREEDY, batch_size: int = 64) -> ModelResult:
    """Answers the prompts with `model`, scores them with `judge`; files go to output_dir/{answers,scores},
    named by the label and a fingerprint of the model, prompts and judge, so a retrained model or a
    changed judge is never judged by stale files."""
    output_dir = Path(output_dir)
    key = hashlib.sha256("".join(path_fingerprint(str(p)) for p in (model, prompts, judge)).encode()).hexdigest()[:12]
    answers = sample(model, prompts, output_dir / "answers" / f"{label}-{key}.jsonl", settings, batch_size=batch_size,
                     name=label)
    scored = score([answers], judge, output_dir / "scores" / f"{label}-{key}.jsonl", batch_size=batch_size)
    categories = {row.prompt_id: str(row.meta["category"]) for row in read_prompts(prompts) if "category" in row.meta}
    rewards = {str(row["prompt_id"]): float(row["scores"][0]) for _, row in read_rows(scored)}
    return ModelResult(label=label, rewards=rewards, categories=categories)
