"""Prompt files: the input of sampling. One row per prompt with "prompt" (text, a message or a list
of messages) and optionally "prompt_id"; rows without an id get a stable one from their prompt.
Any other fields (a category, say) are kept in "meta". Benchmark question files (MT-Bench's and
Arena-Hard's "question_id" and "turns") are read as they are: the first turn is the prompt, and
the turns stay in meta for multi-turn answering."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wrpo.data.records import FirstSeen, Prompt, field_of, parse_prompt, read_rows, row_failer, stable_prompt_id
from wrpo.errors import InputError


@dataclass(frozen=True)
class PromptRow:
    prompt_id: str
    prompt: Prompt
    line: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str | None:
        return category_of(self.meta)


def category_of(fields: dict[str, Any]) -> str | None:
    """The category of a prompt row's other fields (a PromptRow's meta, a sampled row's "meta"), which the
    per-category settings go by: sampling, verifiers, the split."""
    category = fields.get("category")
    return None if category is None else str(category)


def read_prompts(path: str | Path) -> list[PromptRow]:
    """Every prompt of `path`, validated; an empty prompt or a repeated id names its line."""
    rows: list[PromptRow] = []
    first_seen = FirstSeen()
    for line, row in read_rows(path):
        fail = row_failer(path, line)
        if "prompt" not in row and isinstance(row.get("turns"), list) and row["turns"]:
            # A benchmark's question file (MT-Bench, Arena-Hard): the first turn is the prompt.
            turns = [t["content"] if isinstance(t, dict) else t for t in row["turns"]]
            row = {**row, "prompt": turns[0], "turns": turns, "prompt_id": row.get("question_id", row.get("prompt_id"))}
        prompt = parse_prompt(field_of(row, "prompt", fail), fail)
        prompt_id = str(row["prompt_id"]) if row.get("prompt_id") is not None else stable_prompt_id(prompt)
        first_seen.refuse_repeat(prompt_id, path, line)
        meta = {key: value for key, value in row.items() if key not in ("prompt", "prompt_id")}
        rows.append(PromptRow(prompt_id=prompt_id, prompt=prompt, line=line, meta=meta))
    if not rows:
        raise InputError("no prompts", path)
    return rows


def check_held_out(training: Path, held_out: Path) -> None:
    """No held-out prompt may be a training prompt, by id or by text: a variant would be judged on
    what it learnt."""
    seen = {}
    for row in read_prompts(training):
        seen[row.prompt_id] = seen[json.dumps(row.prompt, sort_keys=True)] = row.line
    for row in read_prompts(held_out):
        for key in (row.prompt_id, json.dumps(row.prompt, sort_keys=True)):
            if key in seen:
                raise InputError(f"held-out prompt {row.prompt_id!r} is also the training prompt of line "
                                 f"{seen[key]} of {training}: the held-out prompts must be disjoint from training",
                                 held_out, row.line)
