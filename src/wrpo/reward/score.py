"""`wrpo score`: a reward for every sampled response, resumable, failing loudly on a bad score."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wrpo.data.prompts import category_of
from wrpo.data.resumable import ResumableJsonl, model_prompt_key
from wrpo.data.samples import read_sample_rows
from wrpo.errors import InputError
from wrpo.locks import output_lock
from wrpo.progress import say, stage_progress
from wrpo.reward.scorers import FunctionScorer, load_scorer
from wrpo.stop_request import stop_if_requested


def score(responses: Sequence[str | Path], scorer: str, output: str | Path, *, batch_size: int = 16,
          trust_remote_code: bool = False, device: str | None = None, skip_failures: bool = False,
          shard: tuple[int, int] = (0, 1), verifiers: dict[str, str] | None = None) -> Path:
    """Writes each input row with "scores" (one per response) to `output`. A scorer that raises or
    returns a non-finite number stops the run with an error naming the row; every row scored before
    it is kept, and a rerun continues from there. With skip_failures, such a row is written with
    "scores": null and its "error" instead, and scoring goes on. `shard` (I, N) scores every N-th
    row of each input, starting at the I-th, for one of N processes; `wrpo merge` joins the shards.
    `verifiers` (category -> "module:function"): the rows of those categories (their meta's "category")
    also get "verification", the verifier's value per response (1.0: correct), checked as scores are.
    Holds OUTPUT's lock while it writes: a second run on the same output stops with an InputError."""
    with output_lock(output):
        return _score(responses, scorer, output, batch_size, trust_remote_code, device, skip_failures, shard,
                      verifiers or {})


def _score(responses: Sequence[str | Path], scorer: str, output: str | Path, batch_size: int, trust_remote_code: bool,
           device: str | None, skip_failures: bool, shard: tuple[int, int], verifiers: dict[str, str]) -> Path:
    writer = ResumableJsonl(output, key=model_prompt_key)
    if writer.complete:
        say(f"{output} is complete: nothing to score")
        return writer.output
    done = writer.done()
    todo, seen = [], {}
    index, count = shard
    for path in responses:
        for position, (line, row) in enumerate(read_sample_rows(path)):
            if position % count != index:
                continue
            key = writer.key(row)
            if key in seen:
                raise InputError(f"model {row['model']!r} and prompt {row['prompt_id']!r} were already read at "
                                 f"{seen[key]}", path, line)
            seen[key] = f"{path}:{line}"
            if key not in done:
                todo.append((path, line, row))
    if todo:
        score_rows = load_scorer(scorer, trust_remote_code=trust_remote_code, device=device)
        verify = {category: FunctionScorer(function) for category, function in verifiers.items()}
        # Verifiers run code in child processes (code_tests) and wait on them: threads keep the cores busy, as
        # many as this process may use (its affinity: what Slurm or a container gives it), so that code_tests'
        # wall-clock limit is not spent queueing for a core.
        with (stage_progress(f"scoring with {score_rows.name}") as progress,
              ThreadPoolExecutor(len(os.sched_getaffinity(0)) if verify else 1) as pool):
            task = progress.add_task("", total=len(todo))

            def flush(batch: list[tuple[Path, int, dict]]) -> None:
                stop_if_requested()
                scored = _score_batch(batch, score_rows)
                verified = _verify_batch(batch, verify, pool)
                rows = []
                for index, (path, line, row) in enumerate(batch):
                    try:
                        rows.append(_with_verification(path, line, scored[index] if scored is not None
                                                       else _score_row(path, line, row, score_rows), verified[index]))
                    except InputError as error:
                        if not skip_failures:
                            writer.append(rows)  # every row before the bad one is kept
                            raise
                        rows.append({**row, "scores": None, "error": str(error)})
                writer.append(rows)
                progress.advance(task, len(batch))

            batch: list[tuple[Path, int, dict]] = []
            for item in todo:
                batch.append(item)
                if sum(len(row["responses"]) for _, _, row in batch) >= batch_size:
                    flush(batch)
                    batch = []
            if batch:
                flush(batch)
    return writer.finish(set(seen))


def _score_batch(batch: list[tuple[Path, int, dict]], score_rows) -> list[dict] | None:
    """The batch's rows with scores, or None when the scorer failed somewhere in it."""
    prompts = [row["prompt"] for _, _, row in batch for _ in row["responses"]]
    texts = [text for _, _, row in batch for text in row["responses"]]
    metas = [_meta(row) for _, _, row in batch for _ in row["responses"]]
    try:
        scores = score_rows(prompts, texts, metas)
    except Exception:  # noqa: BLE001 -- the caller retries row by row to name the failing row
        return None
    if len(scores) != len(texts) or not all(_finite(s) for s in scores):
        return None
    rows, start = [], 0
    for _, _, row in batch:
        rows.append({**row, "scores": [float(s) for s in scores[start:start + len(row["responses"])]]})
        start += len(row["responses"])
    return rows


def _score_row(path, line: int, row: dict, score_rows) -> dict:
    try:
        count = len(row["responses"])
        scores = score_rows([row["prompt"]] * count, row["responses"], [_meta(row)] * count)
    except Exception as error:  # noqa: BLE001 -- a user's scorer may raise anything; name the row
        raise InputError(f"scorer {score_rows.name} failed on prompt {row['prompt_id']!r} "
                         f"({type(error).__name__}: {error})", path, line) from None
    if len(scores) != len(row["responses"]):
        raise InputError(f"scorer {score_rows.name} returned {len(scores)} scores for {len(row['responses'])} "
                         f"responses of prompt {row['prompt_id']!r}", path, line)
    for index, value in enumerate(scores):
        if not _finite(value):
            raise InputError(f"scorer {score_rows.name} returned {value!r} for response {index} of prompt "
                             f"{row['prompt_id']!r}", path, line)
    return {**row, "scores": [float(s) for s in scores]}


def _verify_batch(batch: list[tuple[Path, int, dict]], verify: dict[str, FunctionScorer],
                  pool: ThreadPoolExecutor) -> list[tuple[str, list] | None]:
    """Per row, None when its category has no verifier, else (the verifier's name, per response its value or
    the exception it raised)."""
    def one(verifier: FunctionScorer, row: dict, response: str):
        try:
            return verifier([row["prompt"]], [response], [_meta(row)])[0]
        except Exception as error:  # noqa: BLE001 -- a user's verifier may raise anything; named with its row
            return error

    results: list[tuple[str, list] | None] = []
    for _, _, row in batch:
        verifier = verify.get(category_of(_meta(row)))
        results.append(None if verifier is None else
                       (verifier.name, [pool.submit(one, verifier, row, text) for text in row["responses"]]))
    return [None if result is None else (result[0], [future.result() for future in result[1]])
            for result in results]


def _with_verification(path, line: int, row: dict, verified: tuple[str, list] | None) -> dict:
    if verified is None:
        return row
    name, values = verified
    for index, value in enumerate(values):
        if isinstance(value, Exception):
            raise InputError(f"verifier {name} failed on response {index} of prompt {row['prompt_id']!r} "
                             f"({type(value).__name__}: {value})", path, line)
        if not _finite(value):
            raise InputError(f"verifier {name} returned {value!r} for response {index} of prompt "
                             f"{row['prompt_id']!r}", path, line)
    return {**row, "verification": [float(value) for value in values]}


def _meta(row: dict) -> dict:
    """The prompt row's other fields, which `wrpo sample` carries in "meta" (a verifiable scorer's gold)."""
    return row.get("meta") or {}


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
