"""The training set: encoded quadruples from one or more files or from rows in memory (a
`datasets.Dataset`, a list of dicts), and the collator that batches them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from wrpo.data.records import FirstSeen, iter_quadruples, row_sources
from wrpo.data.tokenize import EncodedQuadruple, QuadrupleEncoder
from wrpo.errors import InputError
from wrpo.losses import source_weights_from_scores
from wrpo.progress import stage_progress


class QuadrupleDataset(Dataset):
    def __init__(self, examples: Sequence[EncodedQuadruple]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> EncodedQuadruple:
        return self.examples[index]


def load_quadruple_dataset(data, encoder: QuadrupleEncoder, source_weighting: str = "uniform",
                           name: str = "dataset") -> QuadrupleDataset:
    """Reads, validates and encodes every row of `data`: a file path, a list of paths, or rows in memory
    (a `datasets.Dataset`, a list of dicts; `name` stands for them in messages). A bad row, or a
    prompt_id seen before, raises InputError naming its file and line, or its index: `name[3]`."""
    examples = []
    first_seen = FirstSeen()
    with stage_progress("encoding quadruples") as progress:
        for path in row_sources(data, name):
            task = progress.add_task(str(path), total=None)
            for line, quadruple in iter_quadruples(path):
                # One prompt twice in preference data weighs it twice and cannot be meant (rows of the
                # release format without an id are keyed by their prompt's text).
                first_seen.refuse_repeat(quadruple.prompt_id, path, line)
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
    """Batches B quadruples into B * (K + 2) responses, example-major: example b owns rows
    b*(K+2) .. b*(K+2)+K+1 = [source_0 .. source_{K-1}, target, rejected], with K the largest number
    of source responses in the batch. A missing source slot is an empty response with weight 0.

    padding_free: one row [1, T] and no padding: each example's prompt once, then its responses, each
    response positioned right after the prompt (wrpo.training.packing attends it to its own prompt only).
    Otherwise, share_prompt: prompts once, left-padded ([B, P]), and responses alone, right-padded ([N, L]).
    Otherwise: each row is prompt + response, right-padded ([N, L]), the naive layout.
    """

    pad_token_id: int
    source_weighting: str = "uniform"
    share_prompt: bool = True
    padding_free: bool = True

    def __call__(self, examples: list[EncodedQuadruple]) -> dict[str, torch.Tensor]:
        num_sources = max(len(example.source_ids) for example in examples)
        responses = [response for example in examples for response in
                     (*example.source_ids, *[[]] * (num_sources - len(example.source_ids)),
                      example.target_ids, example.rejected_ids)]
        if self.padding_free:
            batch = _packed([e.prompt_ids for e in examples], responses)
        elif self.share_prompt:
            prompt_ids, prompt_mask = self._pad([e.prompt_ids for e in examples], left=True)
            response_ids, response_mask = self._pad(responses)
            batch = {"prompt_ids": prompt_ids,          # [B, P] left-padded
                     "prompt_mask": prompt_mask,        # [B, P]
                     "response_ids": response_ids,      # [B*(K+2), L] right-padded
                     "response_mask": response_mask.bool()}
        else:
            per_example = num_sources + 2
            prompts = [e.prompt_ids for e in examples for _ in range(per_example)]
            input_ids, attention_mask = self._pad([p + r for p, r in zip(prompts, responses, strict=True)])
            response_mask = attention_mask.bool()
            for row, prompt in enumerate(prompts):
                response_mask[row, : len(prompt)] = False
            batch = {"input_ids": input_ids,            # [B*(K+2), L] prompt + response, right-padded
                     "attention_mask": attention_mask,
                     "response_mask": response_mask}    # True on response tokens

        present = torch.tensor([[k < len(e.source_ids) for k in range(num_sources)] for e in examples])
        scores = torch.tensor([_pad_to(e.source_scores or [], num_sources) for e in examples])
        batch["source_weights"] = source_weights_from_scores(scores, present, self.source_weighting)  # [B, K]
        if all(e.reference_logps is not None for e in examples):
            batch["reference_logps"] = torch.tensor(  # [B, K+2], same slot order as the responses
                [_pad_to(list(e.reference_logps[:-2]), num_sources) + list(e.reference_logps[-2:]) for e in examples])
        return batch

    def _pad(self, sequences: list[list[int]], left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(sequence) for sequence in sequences))
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            if sequence:
                span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
                ids[row, span] = torch.tensor(sequence)
                mask[row, span] = 1
        return ids, mask


def _pad_to(values: list[float], length: int) -> list[float]:
    return list(values) + [0.0] * (length - len(values))


def _packed(prompts: list[list[int]], responses: list[list[int]]) -> dict[str, torch.Tensor]:
    """The padding-free layout of B prompts and their N = B * R responses (example-major).

    attention_units [U, 4] tiles the row in order: (prefix_start, prefix_end, start, end) says that tokens
    start..end-1 attend causally to themselves and fully to prefix_start..prefix_end-1 (their prompt; an
    empty prefix for the prompt itself). label_positions [M] are the response tokens, predictor_positions
    [M] the tokens whose logits predict them (a response's first token: its prompt's last),
    token_response [M] the response each belongs to."""
    per_prompt = len(responses) // len(prompts)
    ids: list[int] = []
    positions: list[int] = []
    units: list[tuple[int, int, int, int]] = []
    predictors: list[int] = []
    labels: list[int] = []
    owners: list[int] = []
    for index, prompt in enumerate(prompts):
        prompt_start = len(ids)
        ids += prompt
        positions += range(len(prompt))
        prompt_end = len(ids)
        units.append((prompt_start, prompt_start, prompt_start, prompt_end))
        for response_index in range(index * per_prompt, (index + 1) * per_prompt):
            response = responses[response_index]
            start = len(ids)
            ids += response
            positions += range(len(prompt), len(prompt) + len(response))
            units.append((prompt_start, prompt_end, start, len(ids)))
            predictors += [prompt_end - 1, *range(start, len(ids) - 1)][: len(response)]
            labels += range(start, len(ids))
            owners += [response_index] * len(response)
    return {"packed_ids": torch.tensor([ids]),                    # [1, T]
            "position_ids": torch.tensor([positions]),            # [1, T]
            "attention_units": torch.tensor(units),               # [U, 4]
            "predictor_positions": torch.tensor(predictors, dtype=torch.long),  # [M]
            "label_positions": torch.tensor(labels, dtype=torch.long),          # [M]
            "token_response": torch.tensor(owners, dtype=torch.long),           # [M]
            "response_lengths": torch.tensor([len(r) for r in responses], dtype=torch.float32)}  # [N]
