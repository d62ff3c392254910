"""The policy a WRPO run trains: loaded in config.model_dtype (4-bit NF4 for QLoRA) and given LoRA adapters when
the config asks for them. `train()` and WRPOTrainer (given a model path or object) both build it here."""

from __future__ import annotations

import contextlib
import warnings

import torch
from transformers import set_seed

from wrpo.modeling import load_causal_lm


def load_policy(name_or_path: str, config):
    """The model at `name_or_path` as config says to train it: in config.model_dtype, float32 by default even
    with bf16 on, which then runs as autocast over float32 master weights, since WRPO's learning rates (3e-7)
    are below bf16's resolution for the weights themselves. (DeepSpeed with bf16 keeps bf16 weights and
    float32 master copies in its optimizer instead.)"""
    policy = load_causal_lm(name_or_path, dtype=config.weights_dtype,
                            quantization_config=four_bit_config(config))
    return with_lora(policy, config) if config.lora_r > 0 else policy


def is_peft_model(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def four_bit_config(config):
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
    with peft_reads_old_names():
        return get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                target_modules=modules, lora_dropout=0.0, task_type="CAUSAL_LM"))


@contextlib.contextmanager
def peft_reads_old_names():
    """Wrapping a model, peft (up to 0.21 at least) reads its is_gradient_checkpointing, which transformers
    deprecates for is_activation_checkpointing: peft's call, whose warning no wrpo user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield
