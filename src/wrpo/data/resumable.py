"""Resumable JSONL output for long stages: rows are appended to OUTPUT.partial and flushed per batch;
a rerun after a crash keeps the complete rows (a torn last line is dropped) and skips their keys;
the finished file appears at OUTPUT only when the stage completes, by an atomic rename."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


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
        if not self.partial.exists():
            return {}
        data = self.partial.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with self.partial.open("r+b") as handle:
                handle.truncate(end)
        rows = [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]
        return {self.key(row): row for row in rows}

    def append(self, rows: Iterable[dict]) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with self.partial.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self) -> Path:
        if not self.partial.exists():  # a stage with nothing to write still leaves its (empty) output
            self.append([])
        self.partial.replace(self.output)
        return self.output


def write_jsonl_atomically(path: str | Path, rows: Iterable[dict]) -> Path:
    """For outputs written in one go: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    temporary.replace(path)
    return path


def model_prompt_key(row: dict) -> str:
    """What identifies a row of `wrpo sample` or `wrpo score`: the model and the prompt."""
    return f"{row.get('model')}\t{row.get('prompt_id')}"


def merge_jsonl(inputs, output: str | Path, key: Callable[[dict], str]) -> Path:
    """Concatenates the shards of a stage (`--shard I/N` outputs) into one file, atomically; a key
    found in two shards is an error naming both places."""
    from wrpo.data.records import read_rows
    from wrpo.errors import InputError

    seen: dict[str, str] = {}
    rows = []
    for path in inputs:
        for line, row in read_rows(path):
            name = key(row)
            if name in seen:
                raise InputError(f"{name!r} is also at {seen[name]}", path, line)
            seen[name] = f"{path}:{line}"
            rows.append(row)
    return write_jsonl_atomically(output, rows)
