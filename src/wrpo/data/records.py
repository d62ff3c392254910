"""Quadruple records: reading them from JSONL, Parquet, a `datasets` folder or rows held in memory (a
`datasets.Dataset`, a list of dicts), and validating each row, the same way whatever they come from.

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
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wrpo.errors import InputError, place

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


@dataclass(frozen=True, eq=False)
class InMemoryRows:
    """Rows held in memory (a `datasets.Dataset` or `IterableDataset`, a list of dicts), read like a file.
    `name` stands for the file in messages, and a row is named by its 0-based index, as Python reads
    it: `train_dataset[3]: missing field 'rejected'`."""

    rows: Iterable
    name: str = "dataset"

    def __str__(self) -> str:
        return self.name

    def place(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def fingerprint(self) -> str:
        """A hash of every row's content."""
        digest = hashlib.sha256()
        for _, row in _read_in_memory(self):
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        return digest.hexdigest()


RowSource = str | Path | InMemoryRows


def row_sources(data, name: str = "dataset") -> list[RowSource]:
    """Where rows are read from: a file path, or each of a list of paths, as it is; rows held in memory
    (a `datasets.Dataset` or `IterableDataset`, a list of dicts) as one InMemoryRows called `name`."""
    if isinstance(data, (str, Path, InMemoryRows)):
        return [data]
    datasets = sys.modules.get("datasets")  # imported wherever a Dataset exists; files alone need not load it
    if datasets is not None:
        if isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            splits = ", ".join(repr(split) for split in data)
            raise InputError(f"a DatasetDict (splits {splits}), not one split: pass one, e.g. dataset['train']", name)
        if isinstance(data, (datasets.Dataset, datasets.IterableDataset)):
            return [InMemoryRows(data, name)]
    if isinstance(data, Mapping) or not isinstance(data, Iterable):
        raise InputError(f"expected a file path, a list of paths, a datasets.Dataset or a list of rows (dicts), "
                         f"got {type(data).__name__}", name)
    items = list(data)
    if items and all(isinstance(item, (str, Path, InMemoryRows)) for item in items):
        return items
    return [InMemoryRows(items, name)]


def read_rows(path: RowSource) -> Iterator[tuple[int, dict]]:
    """(place, row) for a .jsonl/.json file, a .parquet file or a datasets folder (the line or row
    number from 1), or for rows held in memory (the 0-based index)."""
    if isinstance(path, InMemoryRows):
        yield from _read_in_memory(path)
        return
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


def _read_in_memory(source: InMemoryRows) -> Iterator[tuple[int, dict]]:
    for index, row in enumerate(source.rows):
        if not isinstance(row, Mapping):
            raise InputError(f"expected a row of named fields (a dict), got {type(row).__name__}", source, index)
        yield index, dict(row)


def iter_quadruples(path: RowSource) -> Iterator[tuple[int, Quadruple]]:
    """(place, validated Quadruple) for every row of `path` (a file or rows in memory, see read_rows);
    the first bad row raises InputError naming it."""
    empty = True
    for number, row in read_rows(path):
        empty = False
        yield number, parse_quadruple(row, path, number)
    if empty:
        raise InputError("no rows", path)


class FirstSeen:
    """Where each key (a prompt_id) was first read, over one or several files."""

    def __init__(self):
        self.places: dict[str, tuple[RowSource, int]] = {}
        self.repeats = 0

    def refuse_repeat(self, key: str, path: RowSource, line: int) -> None:
        """Raises InputError naming both places when `key` was read before."""
        if self.count_repeat(key, path, line):
            first_path, first_line = self.places[key]
            same_file = not isinstance(path, InMemoryRows) and str(first_path) == str(path)
            where = f"line {first_line}" if same_file else place(first_path, first_line)  # b.jsonl:2, rows[2]
            raise InputError(f"prompt_id {key!r} repeats the one on {where}", path, line)

    def count_repeat(self, key: str, path: RowSource, line: int) -> bool:
        """True (and counted) when `key` was read before; else remembers where it is."""
        if key in self.places:
            self.repeats += 1
            return True
        self.places[key] = (path, line)
        return False


def row_failer(path: RowSource, line: int):
    """fail(message) for the parse_* helpers: raises InputError naming the file and line (or row)."""
    def fail(message: str):
        raise InputError(message, path, line)
    return fail


def parse_quadruple(row: dict, path: RowSource, line: int) -> Quadruple:
    """The row (either format) validated; `path` and `line` name it in errors."""
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
    return Quadruple(prompt_id=stable_prompt_id(prompt) if prompt_id is None else str(prompt_id), prompt=prompt,
                     chosen_source=chosen_source, chosen_target=chosen_target, rejected=rejected,
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
