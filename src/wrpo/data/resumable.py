"""Resumable JSONL output for long stages: rows are appended to OUTPUT.partial and flushed per batch;
a rerun after a crash keeps the complete rows (a torn last line is dropped) and skips their keys;
the finished file appears at OUTPUT only when it holds every expected row once, by an atomic rename.
The stages hold OUTPUT's lock (wrpo.locks) while they write, so one run at a time appends.
complete_rows and append_rows are its two halves, also for appended files that are never finished
(the LLM judge's cache of judgements)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from wrpo.data.records import read_rows
from wrpo.errors import InputError
from wrpo.files import write_text_atomically
from wrpo.locks import output_lock


class ResumableJsonl:
    def __init__(self, output: str | Path, key: Callable[[dict], str]):
        self.output = Path(output)
        self.partial = self.output.with_name(self.output.name + ".partial")
        self.key = key

    @property
    def complete(self) -> bool:
        return self.output.exists() and not self.partial.exists()

    def done(self) -> dict[str, dict]:
        """The rows already written, by key; truncates the partial file to its last complete line."""
        return {self.key(row): row for row in complete_rows(self.partial)}

    def append(self, rows: Iterable[dict]) -> None:
        append_rows(self.partial, rows)

    def finish(self, expected: set[str]) -> Path:
        """Moves the rows to OUTPUT once they are exactly the `expected` keys, each once; otherwise
        raises InputError saying what is missing or doubled, and OUTPUT is not written."""
        if not self.partial.exists():  # a stage with nothing to write still leaves its (empty) output
            self.append([])
        first_line: dict[str, int] = {}
        for number, line in enumerate(self.partial.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            key = self.key(json.loads(line))
            if key in first_line:
                raise InputError(f"holds {key!r} twice (lines {first_line[key]} and {number}): another run wrote "
                                 "to it at the same time; delete it and run the stage again", self.partial)
            first_line[key] = number
        missing, unexpected = expected - set(first_line), set(first_line) - expected
        if missing or unexpected:
            example = sorted(missing or unexpected)[0]
            raise InputError(f"holds {len(first_line)} rows where {len(expected)} were expected "
                             f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {example!r})", self.partial)
        self.partial.replace(self.output)
        return self.output


def complete_rows(path: Path) -> list[dict]:
    """The rows of an appended JSONL file (none when it is missing), after cutting it back to its
    last complete line: a line torn by a crash is dropped, and what is appended next starts clean."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)
    return [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]


def append_rows(path: Path, rows: Iterable[dict]) -> None:
    """Appends rows to a JSONL file and flushes them to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        handle.flush()
        os.fsync(handle.fileno())


def write_jsonl_atomically(path: str | Path, rows: Iterable[dict]) -> Path:
    """For outputs written in one go: readers never see half a file."""
    return write_text_atomically(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def model_prompt_key(row: dict) -> str:
    """What identifies a row of `wrpo sample` or `wrpo score`: the model and the prompt."""
    return f"{row.get('model')}\t{row.get('prompt_id')}"


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), 0 <= I < N: the I-th of N processes sharing a stage's rows."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise InputError(f"--shard {text}: I must lie in 0..N-1")
    return index, count


def merge_jsonl(inputs, output: str | Path, key: Callable[[dict], str]) -> Path:
    """Concatenates the shards of a stage (`--shard I/N` outputs) into one file, atomically, under the
    output's lock; a shard still being written (its .partial is there) or a key found in two shards is
    an error naming the place."""
    with output_lock(output):
        seen: dict[str, str] = {}
        rows = []
        for path in inputs:
            if ResumableJsonl(path, key).partial.exists():
                raise InputError("this shard is not finished (its .partial file is there): run its stage to the "
                                 "end first", path)
            for line, row in read_rows(path):
                name = key(row)
                if name in seen:
                    raise InputError(f"{name!r} is also at {seen[name]}", path, line)
                seen[name] = f"{path}:{line}"
                rows.append(row)
        return write_jsonl_atomically(output, rows)
