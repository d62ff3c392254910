"""Reference log-probs computed once before training and cached on disk, so that the reference
model is neither run every step nor kept in memory while training.

The cache file is keyed by a fingerprint of the reference weights and of the encoded examples
(token ids after truncation), so a changed model, data file or length limit never reuses stale values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import torch

from wrpo.data.dataset import QuadrupleCollator, QuadrupleDataset
from wrpo.data.tokenize import EncodedQuadruple
from wrpo.files import write_text_atomically
from wrpo.progress import stage_progress
from wrpo.training.logps import batch_logps


def model_fingerprint(model) -> str:
    """A hash of the model's config, every parameter's name, shape and a strided sample of its
    values: cheap even for billions of weights, and any training step changes it."""
    unwrapped = getattr(model, "module", model)
    digest = hashlib.sha256(unwrapped.config.to_json_string(use_diff=False).encode())
    for name, parameter in unwrapped.named_parameters():
        flat = parameter.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu()
        digest.update(f"{name}:{tuple(parameter.shape)}:{parameter.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def examples_fingerprint(examples: list[EncodedQuadruple]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.prompt_ids, example.source_ids, example.target_ids,
                                  example.rejected_ids]).encode())
    return digest.hexdigest()


def compute_reference_logps(model, examples: list[EncodedQuadruple], collator: QuadrupleCollator,
                            batch_size: int, device: torch.device, chunk_size: int = 0,
                            autocast=contextlib.nullcontext) -> list[tuple[float, ...]]:
    """Summed log-probs of [sources..., target, rejected] of every example, in batches of similar
    length, with a progress bar. Forward only, in inference mode: no autograd bookkeeping, so batches
    can be several times training's."""
    order = sorted(range(len(examples)), key=lambda index: examples[index].length)
    results: list[tuple[float, ...] | None] = [None] * len(examples)
    was_training = model.training
    model.eval()
    with stage_progress("reference log-probs") as progress, torch.inference_mode(), autocast():
        task = progress.add_task("", total=len(examples))
        for start in range(0, len(order), batch_size):
            indices = order[start: start + batch_size]
            batch = {key: value.to(device) for key, value in collator([examples[i] for i in indices]).items()}
            logps, _ = batch_logps(model, batch, chunk_size)
            per_example = logps.view(len(indices), -1).cpu()
            for row, index in enumerate(indices):
                kept = len(examples[index].source_ids)  # drop the empty slots of shorter source lists
                values = per_example[row].tolist()
                results[index] = (*values[:kept], values[-2], values[-1])
            progress.advance(task, len(indices))
    model.train(was_training)
    return results


def with_reference_logps(dataset: QuadrupleDataset, model, collator: QuadrupleCollator, batch_size: int,
                         device: torch.device, chunk_size: int = 0, cache_dir: str | Path | None = None,
                         autocast=contextlib.nullcontext, precision: str = "") -> QuadrupleDataset:
    """The dataset with each example's reference log-probs, read from the cache when there;
    `precision` (the run's mixed-precision settings) is part of the cache key."""
    examples = dataset.examples
    cache_file, values = None, None
    if cache_dir is not None:
        fingerprint = model_fingerprint(model) + examples_fingerprint(examples) + precision
        key = hashlib.sha256(fingerprint.encode()).hexdigest()
        cache_file = Path(cache_dir) / f"reference-logps-{key[:20]}.json"
        if cache_file.exists():
            values = json.loads(cache_file.read_text())
    if values is None:
        values = compute_reference_logps(model, examples, collator, batch_size, device, chunk_size, autocast)
        if cache_file is not None:  # every process of a launch may write the same entry
            write_text_atomically(cache_file, json.dumps(values))
    return QuadrupleDataset([replace(e, reference_logps=tuple(v)) for e, v in zip(examples, values, strict=True)])
