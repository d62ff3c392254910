"""Quadruple records: reading them from JSONL, Parquet or a `datasets` folder, and validating each row.

Two formats are read as they are:
- native:  {"prompt_id", "prompt", "chosen_source" (text or texts, best first), "chosen_target",
            "rejected", "meta"}; meta["source_scores"] (one per source text) enables score weighting.
- release: the WRPO authors' format: "prompt" (text, message or messages), "chosen" = [y_ws, y_wt]
           and "rejected" = [y_l], each a message {"role", "content"} or a text.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wrpo.errors import InputError

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class Quadruple:
    prompt_id: str
    prompt: Prompt                  # text, or chat messages [{"role", "content"}, ...]
    chosen_source: list[str]        # best first
    chosen_target: str
    rejected: str
    source_scores: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def read_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line or row number from 1, row) for a .jsonl/.json file, a .parquet file or a datasets folder."""
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", path)
    if path.is_dir():
        yield from _read_datasets_folder(path)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        yield from _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        handle = path.open("rb")  # decoded line by line, so that a byte that is not UTF-8 names its line
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror}", path) from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})",
                                 path, number) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"not valid JSON ({error.msg})", path, number) from None
            if not isinstance(row, dict):
                raise InputError(f"expected a JSON object, got {type(row).__name__}", path, number)
            yield number, row


def _read_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"cannot read as Parquet ({error})", path) from None
    yield from enumerate(table.to_pylist(), start=1)


def _read_datasets_folder(path: Path) -> Iterator[tuple[int, dict]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise InputError(f"not a `datasets` folder saved with save_to_disk ({error})", path) from None
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise InputError(f"DatasetDict has no 'train' split (has {', '.join(dataset)})", path)
        dataset = dataset["train"]
    yield from enumerate(dataset, start=1)


def iter_quadruples(path: str | Path) -> Iterator[tuple[int, Quadruple]]:
    """(line, validated Quadruple) for every row of `path`; the first bad row raises InputError naming it."""
    empty = True
    for number, row in read_rows(path):
        empty = False
        yield number, parse_quadruple(row, path, number)
    if empty:
        raise InputError("no rows", path)


class FirstSeen:
    """Where each key (a prompt_id) was first read, over one or several files."""

    def __init__(self):
        self.places: dict[str, tuple[str, int]] = {}
        self.repeats = 0

    def refuse_repeat(self, key: str, path: str | Path, line: int) -> None:
        """Raises InputError naming both places when `key` was read before."""
        if self.count_repeat(key, path, line):
            first_path, first_line = self.places[key]
            where = f"line {first_line}" if first_path == str(path) else f"{first_path}:{first_line}"
            raise InputError(f"prompt_id {key!r} repeats the one on {where}", path, line)

    def count_repeat(self, key: str, path: str | Path, line: int) -> bool:
        """True (and counted) when `key` was read before; else remembers where it is."""
        if key in self.places:
            self.repeats += 1
            return True
        self.places[key] = (str(path), line)
        return False


def row_failer(path: str | Path, line: int):
    """fail(message) for the parse_* helpers: raises InputError naming the file and line."""
    def fail(message: str):
        raise InputError(message, path, line)
    return fail


def parse_quadruple(row: dict, path: str | Path, line: int) -> Quadruple:
    fail = row_failer(path, line)

    if "chosen_source" in row:
        sources = row["chosen_source"]
        sources = [sources] if isinstance(sources, str) else sources
        if not isinstance(sources, list) or not sources:
            fail("'chosen_source' must be a text or a non-empty list of texts")
        chosen_source = [parse_text(s, "chosen_source", fail) for s in sources]
        chosen_target = parse_text(field_of(row, "chosen_target", fail), "chosen_target", fail)
        rejected = parse_text(field_of(row, "rejected", fail), "rejected", fail)
        meta = row.get("meta") or {}
        if not isinstance(meta, dict):
            fail("'meta' must be an object")
    elif "chosen" in row:
        chosen = row["chosen"]
        if not isinstance(chosen, list) or len(chosen) != 2:
            fail("'chosen' must be a list [best source response, best target response]")
        chosen_source = [parse_text(chosen[0], "chosen[0]", fail)]
        chosen_target = parse_text(chosen[1], "chosen[1]", fail)
        rejected_field = field_of(row, "rejected", fail)
        if isinstance(rejected_field, list):
            if len(rejected_field) != 1:
                fail("'rejected' must be a list of one response")
            rejected_field = rejected_field[0]
        rejected = parse_text(rejected_field, "rejected", fail)
        meta = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected", "prompt_id")}
    else:
        fail("missing field 'chosen_source' (native format) or 'chosen' (WRPO release format)")

    prompt = parse_prompt(field_of(row, "prompt", fail), fail)
    prompt_id = row.get("prompt_id")
    return Quadruple(prompt_id=stable_prompt_id(prompt) if prompt_id is None else str(prompt_id), prompt=prompt, chosen_source=chosen_source,
                     chosen_target=chosen_target, rejected=rejected,
                     source_scores=_scores(meta.get("source_scores"), len(chosen_source), fail), meta=meta)


def stable_prompt_id(prompt: Prompt) -> str:
    """An id for rows that carry none: the same prompt always gets the same id."""
    return hashlib.sha1(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]


def field_of(row: dict, name: str, fail):
    if name not in row or row[name] is None:
        fail(f"missing field '{name}'")
    return row[name]


def parse_text(value, name: str, fail) -> str:
    """A response given as text or as a message {"role", "content"}; `fail(message)` raises."""
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str):
        fail(f"'{name}' must be a text or a message with text 'content'")
    if not value.strip():
        fail(f"'{name}' is an empty response")
    return value


def parse_prompt(value, fail) -> Prompt:
    """A prompt given as text, a message or a list of messages; `fail(message)` raises."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, str):
        if not value.strip():
            fail("'prompt' is empty")
        return value
    if not isinstance(value, list) or not value:
        fail("'prompt' must be a text, a message or a non-empty list of messages")
    for message in value:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            fail("every prompt message needs text 'role' and 'content'")
    if not any(message["content"].strip() for message in value):
        fail("'prompt' is empty")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _scores(value, count: int, fail) -> list[float] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == count
            and all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in value)):
        fail(f"meta 'source_scores' must be {count} finite number(s), one per source response")
    return [float(s) for s in value]
