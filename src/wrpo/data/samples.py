"""Rows of a `wrpo sample` output, read by `wrpo score` and by `wrpo build` alike."""

from __future__ import annotations

from pathlib import Path

from wrpo.data.records import field_of, parse_prompt, read_rows, row_failer


def read_sample_rows(path: str | Path) -> list[tuple[int, dict]]:
    """(line, row) of a `wrpo sample` output, validated."""
    rows = []
    for line, row in read_rows(path):
        fail = row_failer(path, line)
        row = {**row, "prompt": parse_prompt(field_of(row, "prompt", fail), fail)}
        for name in ("prompt_id", "model"):
            field_of(row, name, fail)
        responses = field_of(row, "responses", fail)
        if not isinstance(responses, list) or not responses or not all(isinstance(r, str) for r in responses):
            fail("'responses' must be a non-empty list of texts")
        rows.append((line, row))
    return rows
