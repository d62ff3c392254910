"""train(): the library call behind `wrpo train`, resumable from the output folder's last checkpoint; and
what every training stage shares: the output folder's lock, its finished mark, and saving."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint

from wrpo.data.dataset import load_quadruple_dataset
from wrpo.data.tokenize import QuadrupleEncoder
from wrpo.files import path_fingerprint, write_text_atomically
from wrpo.locks import output_lock
from wrpo.losses import REFERENCE_FREE
from wrpo.modeling import load_causal_lm, load_tokenizer
from wrpo.progress import console, is_main_process
from wrpo.training.config import WRPOConfig
from wrpo.training.trainer import WRPOTrainer


@dataclass(frozen=True)
class TrainingResult:
    output_dir: Path
    already_finished: bool = False  # the folder held this very run, finished: nothing was done to it


def train(model: str, data: str | Path | Sequence[str | Path], config: WRPOConfig, *,
          ref_model: str | None = None, resume: bool = True, callbacks: Sequence = ()) -> TrainingResult:
    """WRPO-trains `model` on the quadruples in `data` and saves model, tokenizer and
    metrics.jsonl to config.output_dir. With `resume`, continues from the last checkpoint there, and
    a run that already finished there (same model, data and settings) is left as it is.
    Reference log-probs are cached beside the data unless config.reference_cache_dir says where."""
    output_dir = Path(config.output_dir)
    if config.reference_cache_dir is None:
        config.reference_cache_dir = str(_reference_cache_dir(data, output_dir))

    def fit() -> None:
        tokenizer = load_tokenizer(model)
        encoder = QuadrupleEncoder(tokenizer, config.max_length, config.max_prompt_length, config.top_k_sources)
        dataset = load_quadruple_dataset(data, encoder, config.source_weighting)
        if is_main_process():
            console.print(f"data: {encoder.report.describe()}")
        # Weights stay float32 even with bf16 on: bf16 runs as autocast over float32 master weights,
        # since WRPO's learning rates (3e-7) are below bf16's resolution for the weights themselves.
        # (DeepSpeed with bf16 keeps bf16 weights and float32 master copies in its optimizer instead.)
        policy = load_causal_lm(model, dtype=torch.float32, quantization_config=_four_bit(config))
        if config.lora_r > 0:
            policy = with_lora(policy, config)
        # Not held here: with precomputed reference log-probs the trainer lets go of it once they exist.
        needs_reference = ref_model is not None and config.loss not in REFERENCE_FREE
        trainer = WRPOTrainer(model=policy, args=config, train_dataset=dataset, processing_class=tokenizer,
                              ref_model=load_causal_lm(ref_model, dtype=torch.float32) if needs_reference else None,
                              callbacks=list(callbacks))
        fit_and_save(trainer, output_dir, resume)
        if config.merge_lora and trainer.is_world_process_zero():
            merge_saved_adapters(model, output_dir)

    return run_once(output_dir, run_fingerprint(config, model, data, ref_model), resume, fit)


FINISHED_FILE = "wrpo-finished.json"


def run_fingerprint(config, model: str, data, ref_model: str | None = None) -> str:
    """What makes a training run the same run: the starting model's and the data's content, and every
    setting (the process's rank aside)."""
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    settings = {key: value for key, value in config.to_dict().items() if key != "local_rank"}
    parts = {"model": path_fingerprint(model), "ref_model": ref_model and path_fingerprint(ref_model),
             "data": [path_fingerprint(str(path)) for path in paths], "settings": settings}
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
    with _peft_reads_old_names():
        merged = PeftModel.from_pretrained(base, output_dir).merge_and_unload()
    merged.save_pretrained(output_dir)
    (output_dir / "adapter_config.json").unlink(missing_ok=True)
    (output_dir / "adapter_model.safetensors").unlink(missing_ok=True)


def _four_bit(config):
    """bitsandbytes NF4 settings for a QLoRA base (compute in bf16 when training in bf16), or None."""
    if not config.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if config.bf16 else torch.float32)


def with_lora(model, config):
    """The model with LoRA adapters (peft); only the adapters train. The reference is the model
    with its adapters disabled, so no second copy is kept."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    # Seeded here, not only by Trainer later: the adapters' random start must not depend on what drew
    # random numbers before (a ZeRO-3 load does), so that one seed gives one run on any launcher.
    set_seed(config.seed)
    if config.load_in_4bit:
        # Activation checkpointing (and the input gradients it needs) is the Trainer's to turn on, from
        # config.activation_checkpointing; peft's would call the deprecated gradient_checkpointing_enable.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        for module in model.modules():
            # On CPUs bitsandbytes repacks 4-bit weights for inference at the first eval-mode pass (the
            # reference pass) and keeps them so; its repacked matmul has no gradient for the layer's input.
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    targets = config.lora_target_modules
    modules = targets if targets == "all-linear" else [name.strip() for name in targets.split(",") if name.strip()]
    with _peft_reads_old_names():
        return get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                target_modules=modules, lora_dropout=0.0, task_type="CAUSAL_LM"))


@contextlib.contextmanager
def _peft_reads_old_names():
    """Wrapping a model, peft (up to 0.21 at least) reads its is_gradient_checkpointing, which transformers
    deprecates for is_activation_checkpointing: peft's call, whose warning no wrpo user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def fit_and_save(trainer, output_dir: Path, resume: bool) -> None:
    """Trains (from the output folder's last checkpoint when `resume`) and saves model and tokenizer."""
    checkpoint = get_last_checkpoint(str(output_dir)) if resume and output_dir.is_dir() else None
    if checkpoint and is_main_process():
        console.print(f"resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output_dir))


def _reference_cache_dir(data, output_dir: Path) -> Path:
    """DATA.wrpo-cache beside the (first) data file, or inside the output folder when that is read-only."""
    first = Path(data if isinstance(data, (str, Path)) else data[0])
    if os.access(first.parent, os.W_OK):
        return first.parent / f"{first.name}.wrpo-cache"
    return output_dir / "reference-cache"
