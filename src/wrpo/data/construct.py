"""The paper's data construction: pick the best source response per prompt, split prompts between
SFT and preference learning, and join the target's own samples into quadruples.

    build_sft:   y_ws = best-scored response over every source; a stable, seeded split by prompt id
                 (default 1/3 SFT); writes the SFT set and the preference prompts (with every source
                 response, best first, for --top-k-sources later).
    build_pairs: for each preference prompt, y_wt = the target's best sample and y_l its worst;
                 prompts whose samples all score the same carry no preference and are dropped.
                 With same_source (FuseChat-3.0's pairs), y_ws and y_l are instead the best and the
                 worst response of one source model, kept when their reward gap lies in a window.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, model_validator
from rich.console import Group
from rich.table import Table

from wrpo.data.prompts import category_of
from wrpo.data.records import field_of, read_rows, row_failer
from wrpo.data.resumable import write_jsonl_atomically
from wrpo.data.samples import read_sample_rows
from wrpo.errors import InputError
from wrpo.settings import Settings


@dataclass(frozen=True)
class Candidate:
    model: str
    text: str
    score: float
    correct: bool | None = None  # what a verifier said (its category has one), else None

    @property
    def rank(self) -> tuple[bool, float]:
        return response_rank(self.score, self.correct)

    def as_row(self) -> dict:
        return {"model": self.model, "text": self.text, "score": self.score,
                **({"correct": self.correct} if self.correct is not None else {})}


def response_rank(score: float, correct: bool | None) -> tuple[bool, float]:
    """What orders responses, best last: a correct one above any incorrect one, then by score (correct None: not
    verified)."""
    return correct is not False, score


def ranked(candidates: list[Candidate]) -> list[Candidate]:
    """Best first; ties keep their order."""
    return sorted(candidates, key=lambda candidate: candidate.rank, reverse=True)


def all_fail_verification(candidates: list[Candidate]) -> bool:
    return bool(candidates) and all(candidate.correct is False for candidate in candidates)


def read_scored(paths: Sequence[str | Path]) -> dict[str, tuple[dict, list[Candidate]]]:
    """prompt_id -> (its first row, its non-empty responses with scores) over `wrpo score` outputs;
    a model scored twice for one prompt is an error naming the second row."""
    by_prompt: dict[str, tuple[dict, list[Candidate]]] = {}
    for path in paths:
        for line, row in read_sample_rows(path):
            fail = row_failer(path, line)
            scores = field_of(row, "scores", fail)
            if not isinstance(scores, list) or len(scores) != len(row["responses"]):
                fail("'scores' must hold one number per response")
            verification = row.get("verification", [None] * len(scores))
            if not isinstance(verification, list) or len(verification) != len(scores) or not all(
                    value is None or isinstance(value, (int, float)) for value in verification):
                fail("'verification' must hold one number per response")
            key = str(row["prompt_id"])
            first_row, candidates = by_prompt.get(key, (row, []))
            if any(c.model == row["model"] for c in candidates):
                fail(f"model {row['model']!r} is scored twice for prompt {key!r}")
            candidates = candidates + [Candidate(row["model"], text, float(score),
                                                 None if verified is None else verified == 1.0)
                                       for text, score, verified in zip(row["responses"], scores, verification,
                                                                        strict=True) if text.strip()]
            by_prompt[key] = (first_row, candidates)
    return by_prompt


def in_sft_split(prompt_id: str, fraction: float, seed: int) -> bool:
    """Stable: the same id, fraction and seed always land on the same side."""
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass
class BuildSummary:
    """What a build step made of its candidates; rendered as a table by rich (`console.print(summary)`)."""

    title: str
    rows_written: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    wins: Counter = field(default_factory=Counter)  # the model whose response was chosen, per prompt
    wins_label: str = "wins"
    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lengths: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def record(self, candidates: list[Candidate]) -> None:
        for candidate in candidates:
            self.scores[candidate.model].append(candidate.score)
            self.lengths[candidate.model].append(len(candidate.text))

    def __rich__(self) -> Group:
        table = Table(title=self.title)
        for column in ("model", "responses", "score p10 / p50 / p90", "length p50 (chars)"):
            table.add_column(column)
        for model in sorted(self.scores):
            table.add_row(model, str(len(self.scores[model])),
                          " / ".join(f"{q:.3g}" for q in _deciles(self.scores[model])),
                          f"{statistics.median(self.lengths[model]):.0f}")
        counts = ", ".join(f"{name}: {count}" for name, count in {**self.rows_written, **self.dropped}.items())
        wins = ", ".join(f"{model} {count}" for model, count in self.wins.most_common())
        return Group(table, f"{self.wins_label}: {wins or 'none'}", counts)


def _deciles(values: list[float]) -> list[float]:
    if len(values) < 2:
        return values * 3
    cuts = statistics.quantiles(values, n=10)
    return [cuts[0], statistics.median(values), cuts[-1]]


class SplitSettings(Settings):
    """How `build sft` splits the prompts: a recipe's `split:` section and the command's flags."""

    ADDED: ClassVar[tuple[str, ...]] = ("sft_fraction_by_category",)

    sft_fraction: float = Field(default=1 / 3, ge=0, le=1, description=(
        "Share of prompts for SFT (a stable split by prompt id)."))
    seed: int = Field(default=42, description="Seed of the split.")
    sft_fraction_by_category: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description='Share for SFT of the prompts of a category: {"chinese": 1.0}.')


def build_sft(scored: Sequence[str | Path], sft_output: str | Path, preference_output: str | Path, *,
              sft_fraction: float = 1 / 3, seed: int = 42,
              sft_fraction_by_category: dict[str, float] | None = None) -> BuildSummary:
    if not 0 <= sft_fraction <= 1:
        raise InputError(f"sft_fraction must lie in [0, 1], got {sft_fraction}")
    summary = BuildSummary("source responses; y_ws = the best-scored over all sources",
                           wins_label="y_ws comes from")
    dropped = Counter()
    sft_rows, preference_rows = [], []
    # In prompt id order: the same SFT set (and so the same training run) however the scores were
    # sharded and merged.
    for prompt_id, (row, candidates) in sorted(read_scored(scored).items()):
        summary.record(candidates)
        if not candidates:
            dropped["prompts without a non-empty source response"] += 1
            continue
        if all_fail_verification(candidates):
            dropped["prompts whose source responses all fail verification"] += 1
            continue
        best_first = ranked(candidates)
        best = best_first[0]
        summary.wins[best.model] += 1
        fraction = (sft_fraction_by_category or {}).get(category_of(row.get("meta") or {}), sft_fraction)
        if in_sft_split(prompt_id, fraction, seed):
            sft_rows.append({"prompt_id": prompt_id, "prompt": row["prompt"], "response": best.text,
                             "meta": {"source_model": best.model, "score": best.score}})
        else:
            # The prompt row's other fields go along: the target is sampled from this file, and a
            # verifiable scorer reads its gold answer or tests from them.
            preference_rows.append({**row.get("meta", {}), "prompt_id": prompt_id, "prompt": row["prompt"],
                                    "source_responses": [c.as_row() for c in best_first]})
    write_jsonl_atomically(sft_output, sft_rows)
    write_jsonl_atomically(preference_output, preference_rows)
    summary.rows_written = {"SFT rows": len(sft_rows), "preference prompts": len(preference_rows)}
    summary.dropped = dict(dropped)
    return summary


def read_preference_prompts(path: str | Path) -> list[tuple[int, dict]]:
    rows = []
    for line, row in read_rows(path):
        fail = row_failer(path, line)
        for name in ("prompt_id", "prompt", "source_responses"):
            field_of(row, name, fail)
        if not row["source_responses"]:
            fail("'source_responses' is empty")
        rows.append((line, row))
    return rows


class PairSettings(Settings):
    """How `build pairs` makes quadruples: a recipe's `pairs:` section and the command's flags."""

    ADDED: ClassVar[tuple[str, ...]] = ("same_source", "min_reward_gap", "max_reward_gap", "target_samples")

    top_k_sources: int = Field(default=1, ge=1, description="Source responses kept per prompt, best first.")
    same_source: bool = Field(default=False, description=(
        "FuseChat-3.0's pairs: y_ws and y_l are the best and worst response of one source model (the one "
        "with the best response among those whose reward gap lies in the window); y_wt stays target-sft's best."))
    min_reward_gap: float = Field(default=0.01, ge=0, description="same_source: smallest best-worst reward gap kept.")
    max_reward_gap: float = Field(default=0.1, ge=0, description="same_source: largest best-worst reward gap kept.")
    target_samples: bool = Field(default=True, description=(
        "Sample target-sft for y_wt; same_source only: false samples no target and sets y_wt = y_ws, so the "
        "loss is plain DPO on the source's pair whatever alpha is (FuseChat-3.0's own setup)."))

    @model_validator(mode="after")
    def consistent(self) -> PairSettings:
        if self.min_reward_gap > self.max_reward_gap:
            raise ValueError(f"min_reward_gap ({self.min_reward_gap}) is above max_reward_gap ({self.max_reward_gap})")
        if self.same_source and self.top_k_sources > 1:
            raise ValueError("same_source pairs hold one source response (y_ws): top_k_sources must be 1")
        if not self.target_samples and not self.same_source:
            raise ValueError("target_samples: false needs same_source: true (y_wt is then y_ws); WRPO's own "
                             "pairs take y_wt and y_l from target-sft's samples")
        return self


def same_source_pair(candidates: list[dict], low: float, high: float) -> tuple[dict, dict] | None:
    """(best, worst) response of the source whose best scores highest among the sources with at least
    two responses and a best-worst reward gap in [low, high]; where they were verified, the best must be
    correct and the worst incorrect (FuseChat-3.0's math and code pairs: the correct answer with the highest
    reward against the incorrect one with the lowest). None when no source qualifies."""
    by_model: dict[str, list[dict]] = defaultdict(list)
    for candidate in candidates:  # best first, so each model's list is too
        by_model[candidate["model"]].append(candidate)
    pairs = [(own[0], own[-1]) for own in by_model.values()
             if len(own) > 1 and low <= own[0]["score"] - own[-1]["score"] <= high
             and own[0].get("correct") is not False and own[-1].get("correct") is not True]
    return max(pairs, key=lambda pair: pair[0]["score"], default=None)


def build_pairs(preference_prompts: str | Path, target_scored: Sequence[str | Path], output: str | Path, *,
                top_k_sources: int = 1, same_source: bool = False, min_reward_gap: float = 0.01,
                max_reward_gap: float = 0.1) -> BuildSummary:
    """Quadruples from the preference prompts and target-sft's scored samples; with same_source and no
    target samples (`target_scored` empty), y_wt is y_ws."""
    if top_k_sources < 1:
        raise InputError(f"top_k_sources must be at least 1, got {top_k_sources}")
    target = read_scored(target_scored)
    if same_source:
        title = (f"source pairs of one model, reward gap in [{min_reward_gap:g}, {max_reward_gap:g}]; "
                 + ("y_wt = target-sft's best sample" if target_scored else "y_wt = y_ws (no target samples)"))
    else:
        title = "target samples; y_wt = the best, y_l = the worst of a prompt's"
    summary = BuildSummary(title, wins_label="y_ws of the quadruples comes from")
    dropped = Counter()
    quadruples = []
    for _, row in read_preference_prompts(preference_prompts):
        _, samples = target.get(str(row["prompt_id"]), (None, []))
        summary.record(samples)
        if same_source:
            quadruple = _same_source_quadruple(row, samples, bool(target_scored), min_reward_gap, max_reward_gap,
                                               dropped)
        else:
            quadruple = _target_quadruple(row, samples, top_k_sources, dropped)
        if quadruple is not None:
            summary.wins[quadruple["meta"]["source_models"][0]] += 1
            quadruples.append(quadruple)
    write_jsonl_atomically(output, quadruples)
    summary.rows_written = {"quadruples": len(quadruples)}
    summary.dropped = dict(dropped)
    return summary


def _target_quadruple(row: dict, samples: list[Candidate], top_k_sources: int, dropped: Counter) -> dict | None:
    # Of verified responses only correct ones are y_ws (build sft dropped prompts with none).
    sources = [source for source in row["source_responses"] if source.get("correct") is not False][:top_k_sources]
    if not sources:  # a restricted set of sources (the ablation's) may hold none
        dropped["prompts without a correct source response"] += 1
        return None
    if len(samples) < 2:
        dropped["prompts with fewer than 2 target samples"] += 1
        return None
    if all_fail_verification(samples):
        dropped["prompts whose target samples all fail verification"] += 1
        return None
    best = max(samples, key=lambda candidate: candidate.rank)  # of equals, the first (as worst is)
    worst = min(samples, key=lambda candidate: candidate.rank)
    if best.rank == worst.rank:
        dropped["prompts whose target samples all score the same"] += 1
        return None
    return {"prompt_id": row["prompt_id"], "prompt": row["prompt"],
            "chosen_source": [s["text"] for s in sources], "chosen_target": best.text, "rejected": worst.text,
            "meta": {"source_models": [s["model"] for s in sources], "source_scores": [s["score"] for s in sources],
                     "target_model": best.model, "chosen_target_score": best.score, "rejected_score": worst.score,
                     **_correctness(sources[0], best.as_row(), worst.as_row())}}


def _same_source_quadruple(row: dict, samples: list[Candidate], with_target: bool, low: float, high: float,
                           dropped: Counter) -> dict | None:
    pair = same_source_pair(row["source_responses"], low, high)
    if pair is None:
        verified = "correct" in row["source_responses"][0]
        dropped[f"prompts without a source {'with a correct and an incorrect response ' if verified else ''}"
                f"whose best-worst reward gap lies in [{low:g}, {high:g}]"] += 1
        return None
    chosen, rejected = pair
    if with_target and not samples:
        dropped["prompts without a target sample"] += 1
        return None
    if with_target and all_fail_verification(samples):
        dropped["prompts whose target samples all fail verification"] += 1
        return None
    y_ws = Candidate(chosen["model"], chosen["text"], chosen["score"], chosen.get("correct"))
    target = max(samples, key=lambda candidate: candidate.rank) if with_target else y_ws
    return {"prompt_id": row["prompt_id"], "prompt": row["prompt"], "chosen_source": [chosen["text"]],
            "chosen_target": target.text, "rejected": rejected["text"],
            "meta": {"source_models": [chosen["model"]], "source_scores": [chosen["score"]],
                     "target_model": target.model, "chosen_target_score": target.score,
                     "rejected_model": rejected["model"], "rejected_score": rejected["score"],
                     "pairing": "same-source", **_correctness(chosen, target.as_row(), rejected)}}


def _correctness(source: dict, target: dict, rejected: dict) -> dict:
    """What verification said of a quadruple's responses, where it was verified."""
    if "correct" not in source:
        return {}
    return {"source_correct": [source["correct"]], "chosen_target_correct": target.get("correct"),
            "rejected_correct": rejected.get("correct")}
