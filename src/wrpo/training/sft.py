"""`wrpo sft`: supervised fine-tuning of the target on (x, y_ws) with TRL's SFTTrainer, the loss on
the response tokens only (TRL's prompt-completion format with completion_only_loss)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
from trl import SFTConfig, SFTTrainer

from wrpo.data.records import FirstSeen, field_of, parse_prompt, parse_text, read_rows, row_failer, stable_prompt_id
from wrpo.data.tokenize import as_messages, plain_prompt
from wrpo.errors import InputError
from wrpo.modeling import load_causal_lm, load_tokenizer
from wrpo.progress import warn
from wrpo.training.callbacks import MetricsFileCallback
from wrpo.training.checkpoints import LoadsCheckpointWeightsWithFromPretrained
from wrpo.training.config import PaperTrainingDefaults
from wrpo.training.run import TrainingResult, fit_and_save, run_fingerprint, run_once


@dataclass
class WRPOSFTConfig(PaperTrainingDefaults, SFTConfig):
    """TRL's SFTConfig with the paper's SFT stage as defaults: lr 7e-6, max length 2048 and
    PaperTrainingDefaults (shared with the WRPO stage; bf16 only where the GPU has it, where TRL turns
    it on everywhere, which a CPU refuses); no gradient checkpointing unless asked."""

    learning_rate: float = 7e-6
    max_length: int | None = 2048
    gradient_checkpointing: bool | None = None  # None (not TRL's True): transformers then resolves both to False
    activation_checkpointing: bool | None = None
    completion_only_loss: bool | None = True


class ResumingSFTTrainer(LoadsCheckpointWeightsWithFromPretrained, SFTTrainer):
    """TRL's SFTTrainer, resuming with a checkpoint's weights as saved (wrpo.training.checkpoints)."""


def load_sft_dataset(paths: str | Path | Sequence[str | Path], tokenizer) -> datasets.Dataset:
    """Rows {"prompt", "response"} (as `wrpo build sft` writes them) in TRL's prompt-completion format:
    conversational when the tokenizer has a chat template, plain text otherwise. A prompt may come
    back with other responses (several good answers to learn from); that is counted in a warning."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    conversational = getattr(tokenizer, "chat_template", None) is not None
    examples = []
    first_seen = FirstSeen()
    for path in paths:
        for line, row in read_rows(path):
            fail = row_failer(path, line)
            prompt = parse_prompt(field_of(row, "prompt", fail), fail)
            response = parse_text(field_of(row, "response", fail), "response", fail)
            first_seen.count_repeat(str(row["prompt_id"]) if row.get("prompt_id") is not None
                                    else stable_prompt_id(prompt), path, line)
            if conversational:
                examples.append({"prompt": as_messages(prompt),
                                 "completion": [{"role": "assistant", "content": response}]})
            else:
                examples.append({"prompt": plain_prompt(prompt), "completion": response})
    if not examples:
        raise InputError("no rows", paths[0])
    if first_seen.repeats:
        warn(f"{first_seen.repeats} of {len(examples)} SFT rows repeat a prompt_id of an earlier row; "
             "all are trained on")
    return datasets.Dataset.from_list(examples)


def sft(model: str, data: str | Path | Sequence[str | Path], config: WRPOSFTConfig, *, resume: bool = True,
        callbacks: Sequence = ()) -> TrainingResult:
    """Fine-tunes `model` on the (prompt, response) rows of `data`; saves model, tokenizer and
    metrics.jsonl to config.output_dir, continuing from its last checkpoint when `resume`; a run that
    already finished there (same model, data and settings) is left as it is."""
    output_dir = Path(config.output_dir)

    def fit() -> None:
        tokenizer = load_tokenizer(model)
        dataset = load_sft_dataset(data, tokenizer)
        trainer = ResumingSFTTrainer(model=load_causal_lm(model, dtype=config.weights_dtype), args=config,
                                     train_dataset=dataset, processing_class=tokenizer,
                                     callbacks=[MetricsFileCallback(output_dir), *callbacks])
        fit_and_save(trainer, output_dir, resume)

    return run_once(output_dir, run_fingerprint(config, model, data), resume, fit)
