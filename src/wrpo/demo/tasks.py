"""The demo's instruction tasks: short string transformations with checkable answers.

A prompt reads "TASK: INPUT"; its answer is a function of the input, so a scorer needs only the
prompt and the response. The reward gives partial credit by position: the share of positions where
the response has the answer's character, over the longer of the two. An exact answer scores 1.0; a
right answer with extra characters after it scores less (5 letters and a "." score 5/6); repeating
the input scores little, since most characters land in the wrong place.
"""

from __future__ import annotations

import random
from collections.abc import Callable

LETTERS = "abcdefghij"
DIGITS = "0123456789"


# name -> (alphabet of inputs, the answer of an input)
TASKS: dict[str, tuple[str, Callable[[str], str]]] = {
    "reverse": (LETTERS, lambda text: text[::-1]),
    "sort": (DIGITS, lambda text: "".join(sorted(text))),
    "double": (LETTERS, lambda text: "".join(c + c for c in text)),
    "rotate": (LETTERS, lambda text: text[1:] + text[:1]),
}


def make_prompt(task: str, rng: random.Random, min_length: int = 3, max_length: int = 6) -> str:
    alphabet, _ = TASKS[task]
    return f"{task}: " + "".join(rng.choice(alphabet) for _ in range(rng.randint(min_length, max_length)))


def answer(prompt) -> str:
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    task, _, argument = text.partition(": ")
    return TASKS[task][1](argument)


def reward(prompt, response: str) -> float:
    """Positional agreement in [0, 1] of the response with the prompt's answer (the demo's Python scorer)."""
    expected, given = answer(prompt), response.strip()
    return sum(a == b for a, b in zip(given, expected, strict=False)) / max(len(given), len(expected), 1)


def prompt_rows(count: int, tasks: list[str], seed: int, prefix: str) -> list[dict]:
    """`count` prompts spread evenly over `tasks`, each row with its task as 'category'."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        task = tasks[index % len(tasks)]
        rows.append({"prompt_id": f"{prefix}-{index}", "prompt": make_prompt(task, rng), "category": task})
    return rows
