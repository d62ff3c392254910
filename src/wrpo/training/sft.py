"""`wrpo sft`: supervised fine-tuning of the target on (x, y_ws) with TRL's SFTTrainer, the loss on
the response tokens only (TRL's prompt-completion format with completion_only_loss)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from trl import SFTConfig, SFTTrainer

from wrpo.data.records import field_of, parse_prompt, parse_text, read_rows, row_failer
from wrpo.data.tokenize import as_messages
from wrpo.errors import InputError
from wrpo.modeling import load_causal_lm, load_tokenizer
from wrpo.training.callbacks import MetricsFileCallback
from wrpo.training.config import apply_cpu_defaults
from wrpo.training.run import fit_and_save


@dataclass
class WRPOSFTConfig(SFTConfig):
    """TRL's SFTConfig with the paper's SFT stage as defaults: lr 7e-6, 1 epoch, cosine, 10% warmup,
    max length 2048; plus logging every step, no gradient checkpointing unless asked, and bf16 only
    where the GPU has it (TRL turns it on everywhere, which a CPU refuses)."""

    learning_rate: float = 7e-6
    num_train_epochs: float = 1.0
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.1
    max_length: int | None = 2048
    logging_steps: float = 1
    save_steps: float = 100
    save_total_limit: int | None = 2
    gradient_checkpointing: bool | None = None  # None (not TRL's True): transformers then resolves both to False
    activation_checkpointing: bool | None = None
    completion_only_loss: bool | None = True
    # Every trainable weight of a dense model takes part in every step; transformers' default (True under
    # DDP) costs an extra pass over the autograd graph each step. Mixture-of-experts models, whose
    # unrouted experts get no gradient in a step, need it set to True.
    ddp_find_unused_parameters: bool | None = False
    report_to: str | list[str] | None = "none"
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision; default: on when the GPU supports it."})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        apply_cpu_defaults(self)
        super().__post_init__()


def load_sft_dataset(paths: str | Path | Sequence[str | Path], tokenizer) -> datasets.Dataset:
    """Rows {"prompt", "response"} (as `wrpo build sft` writes them) in TRL's prompt-completion format:
    conversational when the tokenizer has a chat template, plain text otherwise."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    conversational = getattr(tokenizer, "chat_template", None) is not None
    examples = []
    for path in paths:
        for line, row in read_rows(path):
            fail = row_failer(path, line)
            prompt = parse_prompt(field_of(row, "prompt", fail), fail)
            response = parse_text(field_of(row, "response", fail), "response", fail)
            if conversational:
                examples.append({"prompt": as_messages(prompt),
                                 "completion": [{"role": "assistant", "content": response}]})
            else:
                text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
                examples.append({"prompt": text, "completion": response})
    if not examples:
        raise InputError("no rows", paths[0])
    return datasets.Dataset.from_list(examples)


def sft(model: str, data: str | Path | Sequence[str | Path], config: WRPOSFTConfig, *, resume: bool = True,
        callbacks: Sequence = ()) -> Path:
    """Fine-tunes `model` on the (prompt, response) rows of `data`; saves model, tokenizer and
    metrics.jsonl to config.output_dir, continuing from its last checkpoint when `resume`."""
    output_dir = Path(config.output_dir)
    tokenizer = load_tokenizer(model)
    dataset = load_sft_dataset(data, tokenizer)
    trainer = SFTTrainer(model=load_causal_lm(model, dtype=torch.float32), args=config, train_dataset=dataset,
                         processing_class=tokenizer,
                         callbacks=[MetricsFileCallback(output_dir), *callbacks])
    return fit_and_save(trainer, output_dir, resume)
