"""Resuming from a checkpoint as Trainer wrote it: only from one whose save finished, and with its weights
loaded as from_pretrained loads them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints

from wrpo.training.policy import is_peft_model


def complete_checkpoints(output_dir: Path) -> Iterator[Path]:
    """The output folder's checkpoints whose save finished, newest first, looked at one by one (a resume needs the
    first only). Trainer writes a checkpoint file by file, its trainer_state.json last (and not atomically): a folder
    without that file whole was cut short by a kill mid-save, and Trainer, given it (get_last_checkpoint would),
    fails at every later resume."""
    for checkpoint in reversed(sort_checkpoints(str(output_dir))):
        try:
            json.loads((Path(checkpoint) / TRAINER_STATE_NAME).read_text())
        except (OSError, ValueError):
            continue
        yield Path(checkpoint)


def last_complete_checkpoint(output_dir: Path) -> str | None:
    return next((str(checkpoint) for checkpoint in complete_checkpoints(output_dir)), None)


class LoadsCheckpointWeightsWithFromPretrained:
    """Mixed into a Trainer class (first among its bases): a checkpoint's weights are loaded by from_pretrained.
    save_pretrained writes them in the Hub's layout, reversing transformers' weight conversions (GPT-NeoX's
    lm_head is saved as embed_out, a mixture of experts' fused experts one by one), while Trainer loads them
    back with a plain load_state_dict(strict=False) that leaves each converted weight as the starting model had
    it, saying so only in a log line (huggingface/transformers#43701): the run goes on from a model no
    uninterrupted run had. from_pretrained applies the conversions; the strict copy fails on any weight still
    missing. DeepSpeed, FSDP and peft checkpoints keep Trainer's own loading."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if model is not None or self.is_deepspeed_enabled or self.is_fsdp_enabled or is_peft_model(self.model):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(self.model).from_pretrained(resume_from_checkpoint, dtype=self.model.dtype)
        self.model.load_state_dict(saved.state_dict())
