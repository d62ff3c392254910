"""`wrpo sample`: n responses per prompt from one model, resumable without losing or doubling rows.
Responses are written without the white space a chat template makes models put around them."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from wrpo.data.prompts import PromptRow, read_prompts
from wrpo.data.resumable import ResumableJsonl
from wrpo.errors import InputError
from wrpo.generation.backends import make_generator
from wrpo.generation.settings import BackendSettings, SamplingSettings
from wrpo.locks import output_lock
from wrpo.progress import say, stage_progress
from wrpo.stop_request import stop_if_requested


def sample(model: str, prompts: str | Path, output: str | Path, settings: SamplingSettings = SamplingSettings(), *,
           backend: BackendSettings = BackendSettings(), shard: tuple[int, int] = (0, 1),
           name: str | None = None, categories: Collection[str] | None = None) -> Path:
    """Writes one row per prompt: prompt_id, prompt, model, responses, generation settings.

    Prompts are generated longest first in batches of similar length; rows are flushed per batch,
    and a rerun after a crash (with the same settings) continues where the last complete row left
    off. With the hf backend samples depend on the batches, hence on settings.batch_size; not on `shard`,
    which takes every N-th batch of the whole run. `categories`: only the prompts of these categories.
    Holds OUTPUT's lock while it writes: a second run on the same output stops with an InputError."""
    with output_lock(output):
        return _sample(model, prompts, output, settings, backend, shard, name, categories)


def _sample(model: str, prompts: str | Path, output: str | Path, settings: SamplingSettings, backend: BackendSettings,
            shard: tuple[int, int], name: str | None, categories: Collection[str] | None) -> Path:
    writer = ResumableJsonl(output, key=lambda row: row["prompt_id"])
    if writer.complete:
        say(f"{output} is complete: nothing to sample")
        return writer.output
    rows = read_prompts(prompts)
    if categories is not None:
        rows = [row for row in rows if row.category in categories]
        if not rows:
            raise InputError(f"no prompt has one of the categories {', '.join(sorted(categories))}", prompts)
    done = writer.done()
    model_name = name or Path(model).name
    generation = {**settings.model_dump(), "backend": backend.backend}
    for row in done.values():
        if row.get("generation") != generation or row.get("model") != model_name:
            # Samples depend on these settings (hf: on the batches too): mixing runs would be silent.
            raise InputError(f"was written by {row.get('model')} with other settings ({row.get('generation')}); "
                             f"resume with the same settings or delete it", writer.partial)
    generator = make_generator(backend, model)
    ids = {}
    for row in rows:
        try:
            ids[row.prompt_id] = generator.prompt_ids(row.prompt)
        except InputError as error:
            raise InputError(error.message, prompts, row.line) from None
    # Batches are fixed by all the prompts (not by the shard or by what is left), and a shard takes
    # every N-th batch: a resumed or sharded run builds the batches of one whole run and, seeded by
    # their prompts, gives its samples.
    ordered = sorted(rows, key=lambda row: (-len(ids[row.prompt_id]), row.prompt_id))
    size = settings.batch_size
    index, count = shard
    batches = [ordered[start:start + size] for start in range(0, len(ordered), size)][index::count]
    rows = [row for batch in batches for row in batch]
    todo = [row for row in rows if row.prompt_id not in done]
    if todo:
        with stage_progress(f"sampling {model_name}") as progress:
            task = progress.add_task("", total=len(rows), completed=len(rows) - len(todo))
            for batch in batches:
                missing = [row for row in batch if row.prompt_id not in done]
                if not missing:
                    continue
                stop_if_requested()
                responses = {}
                # The prompts of a category with settings of its own are generated apart (a batch of hf's
                # generate has one n, one temperature); the batches stay those of the whole run.
                for group_settings, group in by_settings(batch, settings):
                    texts = generator.generate([ids[row.prompt_id] for row in group],
                                               [row.prompt_id for row in group], group_settings)
                    responses.update(zip((row.prompt_id for row in group), texts, strict=True))
                writer.append({"prompt_id": row.prompt_id, "prompt": row.prompt, "model": model_name,
                               "responses": [normalise_response(text) for text in responses[row.prompt_id]],
                               "generation": generation, **({"meta": row.meta} if row.meta else {})}
                              for row in batch if row.prompt_id not in done)
                progress.advance(task, len(missing))
    return writer.finish({row.prompt_id for row in rows})


def by_settings(batch: list[PromptRow], settings: SamplingSettings) -> list[tuple[SamplingSettings, list[PromptRow]]]:
    """The batch's prompts grouped by the settings their category gives them, in the batch's order."""
    groups: dict[str | None, tuple[SamplingSettings, list[PromptRow]]] = {}
    for row in batch:
        category = row.category if row.category in settings.by_category else None
        groups.setdefault(category, (settings.for_category(category), []))[1].append(row)
    return list(groups.values())


def normalise_response(text: str) -> str:
    """The response without the white space around it. Chat templates that end the generation prompt
    without one (`[/INST]`, `Assistant:`) make models answer with a leading space; kept, SFT on such
    answers teaches the target to answer with one too."""
    return text.strip()
