"""The training set: encoded quadruples from one or more files, and the collator that batches them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.utils.data import Dataset

from wrpo.data.records import iter_quadruples
from wrpo.data.tokenize import EncodedQuadruple, QuadrupleEncoder
from wrpo.errors import InputError
from wrpo.losses import source_weights_from_scores


class QuadrupleDataset(Dataset):
    def __init__(self, examples: Sequence[EncodedQuadruple]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> EncodedQuadruple:
        return self.examples[index]


def load_quadruple_dataset(paths: str | Path | Sequence[str | Path], encoder: QuadrupleEncoder,
                           source_weighting: str = "uniform") -> QuadrupleDataset:
    """Reads, validates and encodes every row; a bad row raises InputError naming its file and line."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    examples = []
    with Progress(TextColumn("encoding {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True) as progress:
        for path in paths:
            task = progress.add_task(str(path), total=None)
            for line, quadruple in iter_quadruples(path):
                if source_weighting == "score" and quadruple.source_scores is None:
                    raise InputError("source_weighting 'score' needs meta 'source_scores'", path, line)
                try:
                    examples.append(encoder.encode(quadruple))
                except InputError as error:
                    raise InputError(error.message, path, line) from None
                progress.advance(task)
    return QuadrupleDataset(examples)


@dataclass
class QuadrupleCollator:
    """Batches B quadruples into B * (K + 2) right-padded sequences, example-major:
    example b owns rows b*(K+2) .. b*(K+2)+K+1 = [source_0 .. source_{K-1}, target, rejected],
    with K the largest number of source responses in the batch. A missing source slot holds the
    prompt alone (no response tokens, weight 0)."""

    pad_token_id: int
    source_weighting: str = "uniform"

    def __call__(self, examples: list[EncodedQuadruple]) -> dict[str, torch.Tensor]:
        num_sources = max(len(example.source_ids) for example in examples)
        sequences, response_starts = [], []
        for example in examples:
            padded_sources = example.source_ids + [[]] * (num_sources - len(example.source_ids))
            for response in (*padded_sources, example.target_ids, example.rejected_ids):
                sequences.append(example.prompt_ids + response)
                response_starts.append(len(example.prompt_ids))
        width = max(len(sequence) for sequence in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        response_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for row, (sequence, start) in enumerate(zip(sequences, response_starts)):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
            response_mask[row, start: len(sequence)] = True

        present = torch.tensor([[k < len(e.source_ids) for k in range(num_sources)] for e in examples])
        scores = torch.tensor([(e.source_scores or []) + [0.0] * (num_sources - len(e.source_scores or []))
                               for e in examples])
        return {
            "input_ids": input_ids,             # [B*(K+2), L]
            "attention_mask": attention_mask,   # [B*(K+2), L]
            "response_mask": response_mask,     # [B*(K+2), L] True on response tokens
            "source_weights": source_weights_from_scores(scores, present, self.source_weighting),  # [B, K]
        }
