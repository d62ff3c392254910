"""train(): the library call behind `wrpo train`, resumable from the output folder's last checkpoint; and
what every training stage shares: the output folder's lock, its finished mark, and saving."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.markup import escape
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from wrpo.data.dataset import load_quadruple_dataset
from wrpo.data.records import InMemoryRows, row_sources
from wrpo.data.tokenize import QuadrupleEncoder
from wrpo.files import path_fingerprint, write_text_atomically
from wrpo.locks import output_lock
from wrpo.losses import REFERENCE_FREE
from wrpo.modeling import load_causal_lm, load_tokenizer
from wrpo.progress import is_main_process, is_verbose, say
from wrpo.stop_request import STOP_FILE_VARIABLE, StopRequested
from wrpo.training.callbacks import StopOnRequest, TrainingDisplay
from wrpo.training.checkpoints import last_complete_checkpoint
from wrpo.training.config import WRPOConfig
from wrpo.training.policy import load_policy, peft_reads_old_names
from wrpo.training.speedups import speedups_said
from wrpo.training.trainer import WRPOTrainer


@dataclass(frozen=True)
class TrainingResult:
    output_dir: Path
    already_finished: bool = False  # the folder held this very run, finished: nothing was done to it


def trained(fit: Callable[[], TrainingResult], model: str, again: str = "") -> str:
    """What `wrpo train`, `wrpo sft` and the training stages say of fit()'s run of a `model` ("trained",
    "fine-tuned"), the process group left however it ends (a stop on request too); `again`: how to redo it."""
    try:
        result = fit()
    finally:
        end_distributed()
    if result.already_finished:
        return (f"already finished: {result.output_dir} holds this run (same model, data and settings), "
                f"left as it is{again}")
    return f"saved the {model} model to {result.output_dir}"


def train(model: str, data, config: WRPOConfig, *, ref_model: str | None = None, resume: bool = True,
          callbacks: Sequence = ()) -> TrainingResult:
    """WRPO-trains `model` on the quadruples in `data` (a file, a list of files, a `datasets.Dataset` or a
    list of dict rows; either format) and saves model, tokenizer and metrics.jsonl to config.output_dir.
    With `resume`, continues from the last checkpoint there, and a run that already finished there (same
    model, data and settings) is left as it is. Reference log-probs are cached beside the data file
    (inside the output folder for data in memory) unless config.reference_cache_dir says where."""
    output_dir = Path(config.output_dir)
    sources = row_sources(data, "data")  # once: a generator of rows can be read only once
    if config.reference_cache_dir is None:
        config.reference_cache_dir = str(_reference_cache_dir(sources[0], output_dir))

    def fit() -> None:
        tokenizer = load_tokenizer(model)
        encoder = QuadrupleEncoder(tokenizer, config.max_length, config.max_prompt_length, config.top_k_sources)
        dataset = load_quadruple_dataset(sources, encoder, config.source_weighting)
        say(f"data: {encoder.report.describe()}")
        policy = load_policy(model, config)  # model_dtype (4-bit for QLoRA), with LoRA adapters when asked
        # Not held here: with precomputed reference log-probs the trainer lets go of it once they exist.
        needs_reference = ref_model is not None and config.loss not in REFERENCE_FREE
        trainer = WRPOTrainer(model=policy, args=config, train_dataset=dataset, processing_class=tokenizer,
                              ref_model=ref_model if needs_reference else None,
                              callbacks=list(callbacks))
        fit_and_save(trainer, output_dir, resume)
        if config.merge_lora and trainer.is_world_process_zero():
            merge_saved_adapters(model, output_dir)

    return run_once(output_dir, run_fingerprint(config, model, sources, ref_model), resume, fit)


FINISHED_FILE = "wrpo-finished.json"


def end_distributed() -> None:
    """Leaves the process group before exit. A gloo group still alive when the interpreter shuts down
    aborts the process ("terminate called without an active exception"); the trainer's DDP wrapper holds
    one in reference cycles, so those are collected first, while the interpreter is whole."""
    import gc

    from accelerate import PartialState

    gc.collect()
    PartialState().destroy_process_group()


def run_fingerprint(config, model: str, data, ref_model: str | None = None) -> str:
    """What makes a training run the same run: the starting model's and the data's content, and every
    setting (the process's rank aside)."""
    settings = {key: value for key, value in config.to_dict().items() if key != "local_rank"}
    data_parts = [source.fingerprint() if isinstance(source, InMemoryRows) else path_fingerprint(str(source))
                  for source in row_sources(data)]
    parts = {"model": path_fingerprint(model), "ref_model": ref_model and path_fingerprint(ref_model),
             "data": data_parts, "settings": settings}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def run_once(output_dir: Path, fingerprint: str, resume: bool, fit) -> TrainingResult:
    """Runs fit() into output_dir under its lock (held by the main process of a launch) and marks the
    folder finished with `fingerprint`; with `resume`, a folder already marked with it is left
    untouched (its bytes and times: what is computed from it stays current)."""
    marker = output_dir / FINISHED_FILE
    if resume and marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
        return TrainingResult(output_dir, already_finished=True)
    with output_lock(output_dir) if is_main_process() else contextlib.nullcontext():
        if is_main_process():
            marker.unlink(missing_ok=True)
        fit()
        if is_main_process():
            write_text_atomically(marker, json.dumps({"fingerprint": fingerprint}) + "\n")
    return TrainingResult(output_dir)


def merge_saved_adapters(base_model: str, output_dir: Path) -> None:
    """Replaces the adapters saved in output_dir by the base with them merged in, in float32. Merged
    into a fresh load of the base by this process alone, not into the trained model, whose base
    weights may be 4-bit (the update would be rounded away) or split over processes by ZeRO-3."""
    from peft import PeftModel
    from transformers.integrations import deepspeed as hf_deepspeed

    # from_pretrained under ZeRO-3 splits the weights over all processes, a collective call; transformers
    # has set/unset for that switch but no getter, hence the private name.
    zero3_switch = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        base = load_causal_lm(base_model, dtype=torch.float32)
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = zero3_switch
    with peft_reads_old_names():
        merged = PeftModel.from_pretrained(base, output_dir).merge_and_unload()
    merged.save_pretrained(output_dir)
    (output_dir / "adapter_config.json").unlink(missing_ok=True)
    (output_dir / "adapter_model.safetensors").unlink(missing_ok=True)


def fit_and_save(trainer, output_dir: Path, resume: bool) -> None:
    """Trains (from the output folder's last complete checkpoint when `resume`) and saves model and tokenizer.
    The console shows wrpo's training display, or with --verbose transformers' own bar and log lines."""
    if not is_verbose():
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(TrainingDisplay(output_dir.name))
    say(escape(speedups_said(trainer.args)))  # plain text: [gpu] is no markup
    checkpoint = last_complete_checkpoint(output_dir) if resume and output_dir.is_dir() else None
    if checkpoint:
        say(f"resuming from {checkpoint}")
    stop = StopOnRequest() if STOP_FILE_VARIABLE in os.environ else None
    if stop is not None:
        trainer.add_callback(stop)
    trainer.train(resume_from_checkpoint=checkpoint)
    if stop is not None and stop.stopped_at is not None:
        raise StopRequested(f"stopped on request at step {stop.stopped_at} of {trainer.state.max_steps}, "
                            "with a checkpoint saved there to resume from")
    trainer.save_model(str(output_dir))


def _reference_cache_dir(source, output_dir: Path) -> Path:
    """DATA.wrpo-cache beside the (first) data file, or inside the output folder when that is read-only
    or the data are rows in memory."""
    if isinstance(source, InMemoryRows):
        return output_dir / "reference-cache"
    first = Path(source)
    if os.access(first.parent, os.W_OK):
        return first.parent / f"{first.name}.wrpo-cache"
    return output_dir / "reference-cache"
