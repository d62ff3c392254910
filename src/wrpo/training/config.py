"""WRPOConfig: the WRPO settings on top of transformers.TrainingArguments.

Defaults that differ from TrainingArguments follow the paper's LLaMA-3-8B-Instruct run:
learning_rate 3e-7 and PaperTrainingDefaults (shared with the SFT stage); plus
remove_unused_columns off (the collator needs every field) and batches grouped by length.
Every setting is checked here, once, when the config is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments
from transformers.utils import logging

from wrpo.losses import LOSSES, SOURCE_WEIGHTINGS
from wrpo.training.compat import checkpointing_for_this_transformers, checkpointing_on
from wrpo.training.schedules import ALPHA_SCHEDULES
from wrpo.training.speedups import LIGER_INSTALLED, liger_by_default

logger = logging.get_logger(__name__)


def apply_cpu_defaults(args: TrainingArguments) -> None:
    """Settings a machine without an accelerator needs, applied before TrainingArguments resolves its device."""
    if torch.accelerator.is_available():
        return
    args.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns on every loader
    # The run is on the CPU anyway; saying so lets bf16 and fp16 autocast run there (transformers refuses them
    # otherwise), and accelerate join several processes (torchrun) over gloo.
    args.use_cpu = True


MODEL_DTYPES = ("float32", "bfloat16")


@dataclass
class PaperTrainingDefaults:
    """What the SFT and WRPO stages share on top of TrainingArguments: the paper's schedule (1 epoch,
    cosine, 10% warmup), logging every step, the last two checkpoints kept, and precision and process
    settings resolved for the hardware. Listed before the Trainer's arguments class in a config's bases,
    so these defaults replace the Trainer's and this __post_init__ runs before its own."""

    num_train_epochs: float = 1.0
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.1
    logging_steps: float = 1
    save_steps: float = 100
    save_total_limit: int | None = 2
    # Every trainable weight of a dense model takes part in every step; transformers' default (True under
    # DDP) costs an extra pass over the autograd graph each step. Mixture-of-experts models, whose
    # unrouted experts get no gradient in a step, need it set to True.
    ddp_find_unused_parameters: bool | None = False
    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 mixed precision; default: on when the GPU supports it."})
    model_dtype: str = field(default="float32", metadata={
        "help": "Dtype the weights are loaded and trained in: float32 (mixed precision autocasts over them) or "
                "bfloat16. bfloat16 halves the weights' memory, but without float32 master weights in the optimizer "
                "updates below its resolution (WRPO's 3e-7 learning rate on most weights) are rounded away."})
    use_liger_kernel: bool | None = field(default=None, metadata={
        "help": "Liger's layer kernels (RMSNorm, SwiGLU, RoPE; not its cross entropy in WRPO, whose chunked head does "
                "that work); default: on where liger-kernel is installed and a CUDA GPU trains."})

    def __post_init__(self):
        if self.model_dtype not in MODEL_DTYPES:
            raise ValueError(f"model_dtype must be one of {', '.join(MODEL_DTYPES)}, got {self.model_dtype!r}")
        if self.model_dtype == "bfloat16" and self.fp16:
            raise ValueError("model_dtype bfloat16 cannot train with fp16 mixed precision (its loss scaler needs "
                             "float32 weights): set bf16 instead of fp16, or model_dtype float32")
        if self.bf16 is None:
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if self.use_liger_kernel is None:
            self.use_liger_kernel = liger_by_default(LIGER_INSTALLED, torch.cuda.is_available())
        elif self.use_liger_kernel and not LIGER_INSTALLED:
            raise ValueError("use_liger_kernel needs liger-kernel (pip install 'wrpo[gpu]'), whose kernels run on "
                             "CUDA GPUs")
        elif self.use_liger_kernel and not torch.cuda.is_available():
            raise ValueError("use_liger_kernel: Liger's kernels (triton) run on CUDA GPUs only, and there is none here")
        apply_cpu_defaults(self)
        checkpointing_for_this_transformers(self)
        super().__post_init__()

    @property
    def weights_dtype(self) -> torch.dtype:
        return getattr(torch, self.model_dtype)


@dataclass
class WRPOConfig(PaperTrainingDefaults, TrainingArguments):
    beta: float = field(default=0.01, metadata={"help": "Scale of the internal reward r = beta * log-ratio."})
    alpha: float = field(default=0.1, metadata={
        "help": "alpha_max: the final weight of the source response in the fused chosen reward."})
    alpha_schedule: str = field(default="linear", metadata={
        "help": "linear: alpha ramps 0 -> alpha_max over the run's optimizer steps; constant: alpha_max throughout."})
    loss: str = field(default="dpo", metadata={
        "help": f"Objective form: {', '.join(LOSSES)} (ln_dpo: length-normalised DPO, FuseChat-3.0's; beta about 10)."})
    gamma: float = field(default=0.5, metadata={"help": "Target reward margin of the simpo form."})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "Probability that a preference is flipped (dpo, simpo and ln_dpo forms), in [0, 0.5)."})
    max_length: int = field(default=2048, metadata={
        "help": "Prompt plus response tokens; responses are cut from the right."})
    max_prompt_length: int = field(default=1800, metadata={"help": "Prompt tokens; prompts are cut from the left."})
    top_k_sources: int = field(default=1, metadata={
        "help": "Source responses per prompt used (rows may list several, best first)."})
    source_weighting: str = field(default="uniform", metadata={
        "help": "How several source rewards are averaged: uniform, or score (softmax of meta source_scores)."})

    precompute_ref_logps: bool = field(default=True, metadata={
        "help": "Compute reference log-probs once before training (cached beside the data) instead of "
                "running the reference every step; the reference model is then not kept in memory."})
    padding_free: bool = field(default=True, metadata={
        "help": "Pack each batch in one row without padding: every prompt once, its responses after it, each "
                "response attending to its own prompt only (so the prompt is shared whatever share_prompt says)."})
    reference_batch_size: int | None = field(default=None, metadata={
        "help": "Examples per batch of the precomputed reference pass (forward only, sorted by length); "
                "default: 4 x per_device_train_batch_size."})
    share_prompt: bool = field(default=True, metadata={
        "help": "Encode each prompt once and feed its key/value cache to all its responses."})
    logps_chunk_size: int = field(default=1024, metadata={
        "help": "Tokens per output-head chunk, so no [tokens, vocab] float32 tensor is kept; "
                "0 computes the model's full logits (the naive way)."})
    disable_dropout: bool = field(default=True, metadata={
        "help": "Turn dropout off in the policy, so that its rewards are those of the reference at step 0."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (peft); 0 trains every weight."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "Modules that get adapters: 'all-linear' or comma-separated names (q_proj,v_proj)."})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "Load the base model in 4-bit NF4 (bitsandbytes, QLoRA); needs LoRA, since only adapters train."})
    merge_lora: bool = field(default=False, metadata={
        "help": "Save the model with the adapters merged into its weights instead of the adapters alone."})
    reference_cache_dir: str | None = field(default=None, metadata={
        "help": "Folder for cached reference log-probs; `wrpo train` uses DATA.wrpo-cache beside the data."})

    activation_checkpointing: bool | None = field(default=None, metadata={
        "help": "Recompute each layer's activations in backward instead of keeping them; default: on with a GPU. "
                "As in TRL: on a GPU a batch's activations outgrow the weights and optimizer state."})
    # Where use_liger_kernel is on: every kernel but the two cross entropies, which would replace the model's
    # forward with one that computes a loss from labels (wrpo's log-probs need none).
    liger_kernel_config: dict | None = field(
        default_factory=lambda: {"cross_entropy": False, "fused_linear_cross_entropy": False})

    learning_rate: float = 3e-7
    remove_unused_columns: bool = False
    train_sampling_strategy: str = "group_by_length"

    def __post_init__(self):
        checks = [
            (self.beta > 0, f"beta must be positive, got {self.beta}"),
            (0.0 <= self.alpha <= 1.0, f"alpha must lie in [0, 1], got {self.alpha}"),
            (self.alpha_schedule in ALPHA_SCHEDULES,
             f"alpha_schedule must be one of {', '.join(ALPHA_SCHEDULES)}, got {self.alpha_schedule!r}"),
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"),
            (0.0 <= self.label_smoothing < 0.5, f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}"),
            (self.label_smoothing == 0.0 or self.loss != "ipo",
             "label_smoothing does not apply to the ipo form (a squared loss, no preference to flip): leave it at 0"),
            (self.max_prompt_length >= 1, f"max_prompt_length must be at least 1, got {self.max_prompt_length}"),
            (self.max_prompt_length < self.max_length,
             f"max_prompt_length ({self.max_prompt_length}) must be below max_length ({self.max_length})"),
            (self.top_k_sources >= 1, f"top_k_sources must be at least 1, got {self.top_k_sources}"),
            (self.reference_batch_size is None or self.reference_batch_size >= 1,
             f"reference_batch_size must be at least 1, got {self.reference_batch_size}"),
            (self.lora_r >= 0, f"lora_r must be 0 (no LoRA) or positive, got {self.lora_r}"),
            (self.lora_r > 0 or not self.merge_lora, "merge_lora needs lora_r > 0"),
            (self.lora_r > 0 or not self.load_in_4bit, "load_in_4bit needs lora_r > 0: a 4-bit base cannot train"),
            (self.source_weighting in SOURCE_WEIGHTINGS,
             f"source_weighting must be one of {', '.join(SOURCE_WEIGHTINGS)}, got {self.source_weighting!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            self.activation_checkpointing = torch.cuda.is_available()
        super().__post_init__()
        if self.reference_batch_size is None:
            self.reference_batch_size = 4 * self.per_device_train_batch_size
        if checkpointing_on(self) and self.share_prompt and not self.padding_free:
            # Activation checkpointing turns the key/value cache off, which the shared prompt needs (the
            # padding-free layout shares the prompt without a cache).
            logger.warning("activation_checkpointing is on: share_prompt is turned off")
            self.share_prompt = False
