"""Answers in the formats public judges read, so a model judged here can be judged there.

- AlpacaEval: a JSON list of {"instruction", "output", "generator", "dataset"} (`alpaca_eval
  evaluate --model_outputs FILE`).
- Arena-Hard (v0.1 answer files, data/arena-hard-v0.1/model_answer/MODEL.jsonl): one JSON object a
  line, {"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [{"content",
  "token_len"}]}], "tstamp"}; token_len counts the model's tokens, or words for a server's model
  (no local tokenizer).
- MT-Bench (FastChat llm_judge, data/mt_bench/model_answer/MODEL.jsonl): {"question_id",
  "answer_id", "model_id", "choices": [{"index": 0, "turns": [answer to turn 1, turn 2, ...]}],
  "tstamp"}; questions with several turns are answered turn by turn, each turn seeing the
  conversation so far, through the backend that answered the first.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from wrpo.data.prompts import PromptRow
from wrpo.data.resumable import write_jsonl_atomically
from wrpo.evaluation.compare import ModelResult
from wrpo.generation.backends import make_generator
from wrpo.generation.sample import normalise_response
from wrpo.generation.settings import GREEDY, BackendSettings, SamplingSettings

FORMATS = ("alpaca_eval", "arena_hard", "mt_bench")


def _instruction(row: PromptRow) -> str:
    return row.prompt if isinstance(row.prompt, str) else row.prompt[-1]["content"]


def _answer_id(label: str, prompt_id: str) -> str:
    return hashlib.sha1(f"{label}:{prompt_id}".encode()).hexdigest()[:22]


def _question_id(prompt_id: str) -> int | str:
    """MT-Bench's and Arena-Hard's ids as they were: ints stay ints."""
    return int(prompt_id) if prompt_id.isdigit() else prompt_id


def export_alpaca_eval(result: ModelResult, prompts: list[PromptRow], path: str | Path) -> Path:
    rows = [{"instruction": _instruction(row), "output": result.answers[row.prompt_id], "generator": result.label,
             "dataset": str(row.meta.get("dataset", "wrpo"))} for row in prompts if row.prompt_id in result.answers]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    temporary.replace(path)
    return path


def export_arena_hard(result: ModelResult, prompts: list[PromptRow], path: str | Path, tokenizer=None) -> Path:
    def token_len(text: str) -> int:
        if tokenizer is None:
            return len(text.split())
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return write_jsonl_atomically(path, [
        {"question_id": _question_id(row.prompt_id), "answer_id": _answer_id(result.label, row.prompt_id),
         "model_id": result.label,
         "choices": [{"index": 0, "turns": [{"content": result.answers[row.prompt_id],
                                             "token_len": token_len(result.answers[row.prompt_id])}]}],
         "tstamp": time.time()}
        for row in prompts if row.prompt_id in result.answers])


def export_mt_bench(result: ModelResult, prompts: list[PromptRow], path: str | Path, model: str,
                    settings: SamplingSettings, backend: BackendSettings = BackendSettings()) -> Path:
    """Later turns are answered here through `backend`, the one that answered the first, greedy like it."""
    generator = None
    rows = []
    for row in prompts:
        if row.prompt_id not in result.answers:
            continue
        turns = row.meta.get("turns") or [_instruction(row)]
        answers = [result.answers[row.prompt_id]]
        conversation = [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": answers[0]}]
        for question in turns[1:]:
            generator = generator or make_generator(backend, model)
            conversation.append({"role": "user", "content": question})
            (reply,), = generator.generate([generator.prompt_ids(conversation)], [row.prompt_id],
                                           GREEDY.model_copy(update={"max_new_tokens": settings.max_new_tokens}))
            answers.append(normalise_response(reply))  # as the first turn's answer was (wrpo sample)
            conversation.append({"role": "assistant", "content": answers[-1]})
        rows.append({"question_id": _question_id(row.prompt_id), "answer_id": _answer_id(result.label, row.prompt_id),
                     "model_id": result.label, "choices": [{"index": 0, "turns": answers}], "tstamp": time.time()})
    return write_jsonl_atomically(path, rows)
