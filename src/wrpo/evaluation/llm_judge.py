"""An LLM judge behind any OpenAI-compatible server (vllm serve, SGLang, a hosted API): each model's
answer is compared with the baseline's answer to the same prompt.

What is asked: TEMPLATE (or the user's, with {instruction}, {output_a} and {output_b}), in the spirit
of AlpacaEval 2's: the instruction and two outputs labelled A and B, answered with the better one's
letter; greedy (temperature 0), a few tokens. Each pair is asked in both orders, the model's answer
as A and then as B, because judges favour a position. The verdict is the reply's first standalone A
or B ("A", "[[B]]", "Output (a)"); any other reply is unparseable: counted and listed, never dropped
silently.

A prompt's preference for the model is the mean, over the orders whose verdict parsed, of "the
model's answer was picked": 0, 0.5 or 1 with both, 0 or 1 with one; a prompt with neither is left
out of the rates and named. The win rate is the mean preference (0.5 is a tie) with a bootstrap
interval over prompts; the length-controlled win rate is length_control's fit of the same
preferences on the answers' length difference, with a bootstrap interval of its own.

Judgements are cached in OUTPUT/judgements/, a JSONL file per judge model and template (not per
server: the same model elsewhere gives the same judgements), a row per (prompt, order, texts judged)
appended as each request returns: a rerun asks only what is missing, and a changed answer anew.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from wrpo.data.prompts import PromptRow
from wrpo.data.records import Prompt
from wrpo.data.resumable import append_rows, complete_rows
from wrpo.data.tokenize import as_messages
from wrpo.errors import InputError
from wrpo.evaluation.compare import ModelResult, WinRate, bootstrap_interval, per_category_win_rates, win_rate_of
from wrpo.evaluation.length_control import length_controlled_win_rate
from wrpo.evaluation.llm_judge_settings import LLMJudge
from wrpo.files import text_fingerprint
from wrpo.generation.backends import openai_client, with_retries
from wrpo.locks import output_lock
from wrpo.progress import stage_progress

FIELDS = ("instruction", "output_a", "output_b")
MODEL_FIRST, BASELINE_FIRST = "model_first", "baseline_first"  # which answer is output A
ORDERS = (MODEL_FIRST, BASELINE_FIRST)

_FIELD = re.compile(r"\{(instruction|output_a|output_b)\}")
# An upper-case A or B standing alone ("A", "[[B]]", "Output (A).") or a lower-case one in brackets
# ("Output (a)"): a lone lower-case "a" is an article.
_VERDICT = re.compile(r"(?<![A-Za-z0-9])([AB])(?![A-Za-z0-9])|\(([ab])\)")


def read_template(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"the judge's template cannot be read ({error.__class__.__name__})", path) from None


def check_llm_judge(judge: LLMJudge) -> None:
    """What can be checked before anything is asked: the server given, the template's fields, the
    concurrency, and the client (openai installed, the key's variable set)."""
    if not judge.base_url:
        raise InputError("the LLM judge needs its server: --judge-base-url, e.g. http://localhost:8000/v1")
    missing = [f"{{{name}}}" for name in FIELDS if f"{{{name}}}" not in judge.template]
    if missing:
        raise InputError(f"the judge's template lacks {', '.join(missing)} (it needs {{instruction}}, {{output_a}} "
                         "and {output_b})")
    if judge.concurrency < 1:
        raise InputError(f"--judge-concurrency must be at least 1, got {judge.concurrency}")
    openai_client(judge.base_url, judge.api_key_env)


def instruction_text(prompt: Prompt) -> str:
    """What the judge reads as the instruction: a single turn as it is, a conversation turn by turn."""
    messages = as_messages(prompt)
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{message['role']}: {message['content']}" for message in messages)


def fill(template: str, instruction: str, output_a: str, output_b: str) -> str:
    values = {"instruction": instruction, "output_a": output_a, "output_b": output_b}
    # One pass: other braces in the template, and a field's name inside an answer, stay as they are.
    return _FIELD.sub(lambda match: values[match.group(1)], template)


def parse_verdict(reply: str) -> str | None:
    """'A' or 'B': the reply's first standalone A or B; None when it has none."""
    match = _VERDICT.search(reply)
    return (match.group(1) or match.group(2)).upper() if match else None


def picked_model(order: str, verdict: str) -> float:
    """1.0 when `verdict` picked the model's answer, which is output A in MODEL_FIRST; else 0.0."""
    return 1.0 if (verdict == "A") == (order == MODEL_FIRST) else 0.0


def preference(verdicts: dict[str, str | None]) -> float | None:
    """The model's preference on one prompt from its verdicts by order: the mean of picked_model over
    the parsed ones; None when none parsed."""
    picked = [picked_model(order, verdict) for order, verdict in verdicts.items() if verdict is not None]
    return statistics.fmean(picked) if picked else None


@dataclass(frozen=True)
class Request:
    prompt_id: str
    order: str
    text: str  # the filled template
    pair: str  # a fingerprint of the instruction and the two outputs as placed

    @property
    def key(self) -> tuple[str, str, str]:
        return self.prompt_id, self.order, self.pair


def requests_for(template: str, prompt_id: str, instruction: str, model_answer: str,
                 baseline_answer: str) -> dict[str, Request]:
    """The prompt's two requests, by order."""
    requests = {}
    for order in ORDERS:
        a, b = (model_answer, baseline_answer) if order == MODEL_FIRST else (baseline_answer, model_answer)
        requests[order] = Request(prompt_id, order, fill(template, instruction, a, b),
                                  text_fingerprint(json.dumps([instruction, a, b])))
    return requests


def _row_key(row: dict) -> tuple[str, str, str]:
    return row["prompt_id"], row["order"], row["pair"]


@dataclass(frozen=True)
class LLMComparison:
    """One model against the baseline, by the LLM judge. Named like compare.Comparison's fields so
    that plots.win_rate_bars draws either."""

    model: str
    baseline: str
    overall: WinRate | None          # None when no prompt could be judged
    judged: int                      # prompts in the rates
    length_controlled: float         # NaN where the fit cannot tell (length_control)
    lc_ci95: tuple[float, float]
    unjudged: list[str]              # prompts without a parsed verdict, left out of the rates
    unparseable: list[dict]          # {"prompt_id", "order", "reply": its first 200 characters}
    first_position_share: float      # of the parsed verdicts, the share that picked output A
    prompt_tokens: int               # as the server reports them, over the judgements used
    completion_tokens: int
    seconds: float                   # the requests' own times, summed (concurrent requests overlap)
    per_category: dict[str, WinRate]  # where the prompts have several categories

    def as_dict(self) -> dict:
        rates = self.overall.as_dict() if self.overall else {"win_rate": None, "ci95": None, "wins": 0, "ties": 0,
                                                              "losses": 0}
        return {**rates, "per_category": {c: w.as_dict() for c, w in self.per_category.items()},
                "lc_win_rate": self.length_controlled, "lc_ci95": list(self.lc_ci95),
                "judged": self.judged, "unjudged": self.unjudged,
                "unparseable": {order: sum(u["order"] == order for u in self.unparseable) for order in ORDERS},
                "first_position_share": self.first_position_share, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "seconds": round(self.seconds, 3)}


def _length_controlled(pairs: list[tuple[float, float]]) -> float:
    return length_controlled_win_rate([outcome for outcome, _ in pairs], [difference for _, difference in pairs])


def summarise(model: ModelResult, baseline: ModelResult, judgements: dict[str, dict[str, dict]],
              lc_resamples: int = 200) -> LLMComparison:
    """`model` against `baseline` from the judgements of each prompt (prompt_id -> order -> cached row)."""
    preferences: dict[str, float] = {}
    unparseable, first_position = [], []
    for prompt_id, by_order in judgements.items():
        for order, row in by_order.items():
            if row["verdict"] is None:
                unparseable.append({"prompt_id": prompt_id, "order": order, "reply": row["reply"][:200]})
            else:
                first_position.append(row["verdict"] == "A")
        value = preference({order: row["verdict"] for order, row in by_order.items()})
        if value is not None:
            preferences[prompt_id] = value
    # (preference, length difference in characters, as compare.py measures it) per judged prompt
    pairs = [(value, len(model.answers[p]) - len(baseline.answers[p])) for p, value in preferences.items()]
    rows = [row for by_order in judgements.values() for row in by_order.values()]
    return LLMComparison(
        model=model.label, baseline=baseline.label,
        overall=win_rate_of([value for value, _ in pairs]) if pairs else None, judged=len(pairs),
        length_controlled=_length_controlled(pairs) if pairs else math.nan,
        lc_ci95=bootstrap_interval(pairs, _length_controlled, lc_resamples) if pairs else (math.nan, math.nan),
        unjudged=sorted(set(judgements) - set(preferences)), unparseable=unparseable,
        first_position_share=statistics.fmean(first_position) if first_position else math.nan,
        prompt_tokens=_total(rows, "prompt_tokens"), completion_tokens=_total(rows, "completion_tokens"),
        seconds=_total(rows, "seconds"), per_category=per_category_win_rates(preferences, model.categories))


def _total(rows: list[dict], field: str) -> float:
    """A field summed over cached rows; a server that reports no usage leaves its tokens None: 0."""
    return sum(row[field] or 0 for row in rows)


@dataclass(frozen=True)
class LLMJudgeResult:
    judge: LLMJudge
    comparisons: list[LLMComparison]
    cache: Path
    asked: int              # requests sent by this run; the others' judgements came from the cache
    cached: int
    seconds: float          # this run's time spent asking
    prompt_tokens: int      # this run's requests
    completion_tokens: int

    def as_dict(self) -> dict:
        return {"model": self.judge.model, "base_url": self.judge.base_url, "template": self.judge.template,
                "cache": str(self.cache), "asked": self.asked, "from_cache": self.cached,
                "seconds": round(self.seconds, 3), "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "comparisons": {c.model: c.as_dict() for c in self.comparisons},
                "unparseable": [{"model": c.model, **item} for c in self.comparisons for item in c.unparseable]}


def judge_with_llm(judge: LLMJudge, models: list[ModelResult], baseline: ModelResult, prompts: list[PromptRow],
                   output_dir: str | Path) -> LLMJudgeResult:
    """Each model's answers against the baseline's, on the prompts both answered, in both orders;
    what the cache lacks is asked, `judge.concurrency` requests at a time, each written as it returns."""
    instructions = {row.prompt_id: instruction_text(row.prompt) for row in prompts}
    planned = {model.label: {p: requests_for(judge.template, p, instructions[p], model.answers[p], baseline.answers[p])
                             for p in sorted(set(model.answers) & set(baseline.answers))}
               for model in models}
    wanted = {request.key: request for by_prompt in planned.values() for by_order in by_prompt.values()
              for request in by_order.values()}
    cache = judge.cache_file(output_dir)
    with output_lock(cache):
        rows = {_row_key(row): row for row in complete_rows(cache)}
        todo = [request for key, request in wanted.items() if key not in rows]
        started = time.perf_counter()
        asked = _ask_missing(judge, todo, cache, total=len(wanted))
        seconds = time.perf_counter() - started
    rows.update((_row_key(row), row) for row in asked)
    comparisons = [summarise(model, baseline, {p: {order: rows[request.key] for order, request in by_order.items()}
                                               for p, by_order in planned[model.label].items()})
                   for model in models]
    return LLMJudgeResult(judge=judge, comparisons=comparisons, cache=cache, asked=len(asked),
                          cached=len(wanted) - len(asked), seconds=seconds,
                          prompt_tokens=_total(asked, "prompt_tokens"),
                          completion_tokens=_total(asked, "completion_tokens"))


def _ask_missing(judge: LLMJudge, requests: list[Request], cache: Path, total: int) -> list[dict]:
    if not requests:
        return []
    client = openai_client(judge.base_url, judge.api_key_env)
    rows = []
    with stage_progress(f"judging with {judge.model}") as progress, ThreadPoolExecutor(judge.concurrency) as pool:
        task = progress.add_task("", total=total, completed=total - len(requests))
        futures = [pool.submit(_ask, client, judge, request) for request in requests]
        try:
            for future in as_completed(futures):
                rows.append(future.result())
                append_rows(cache, rows[-1:])  # as each returns: a crash loses only the requests in flight
                progress.advance(task)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # a failure (or ^C) drops the queued requests at once
            raise
    return rows


def _ask(client, judge: LLMJudge, request: Request) -> dict:
    started = time.perf_counter()
    # Only parameters that servers honour (transformers serve ignores some, such as n and logprobs,
    # and refuses ones it does not know): greedy, short, seeded.
    response = with_retries(lambda: client.chat.completions.create(
        model=judge.model, messages=[{"role": "user", "content": request.text}], temperature=0,
        max_tokens=judge.max_tokens, seed=0))
    reply = response.choices[0].message.content or ""
    usage = response.usage
    return {"prompt_id": request.prompt_id, "order": request.order, "pair": request.pair, "reply": reply,
            "verdict": parse_verdict(reply), "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "seconds": round(time.perf_counter() - started, 3)}
