"""Python scorers for the pipeline tests, importable as scorers:NAME (pytest puts tests/ on sys.path)."""

import difflib


def _word(prompt) -> str:
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    return text.split()[-1]


def reversal_similarity(prompt, response: str) -> float:
    """Partial credit in [0, 1] for reversing the prompt's last word."""
    return difflib.SequenceMatcher(None, response, _word(prompt)[::-1]).ratio()


def fails_on_grape(prompt, response: str) -> float:
    if _word(prompt) == "grape":
        raise ValueError("cannot score grapes")
    return reversal_similarity(prompt, response)


def nan_on_grape(prompt, response: str) -> float:
    return float("nan") if _word(prompt) == "grape" else reversal_similarity(prompt, response)


def always_nan(prompt, response: str) -> float:
    return float("nan")


def asks_to_stop_on_plum(prompt, response: str) -> float:
    """As a scheduler's warning would: asks the stage to stop (wrpo.stop_request) once it scores a plum."""
    import os
    from pathlib import Path

    if _word(prompt) == "plum":
        Path(os.environ["WRPO_STOP_FILE"]).touch()
    return reversal_similarity(prompt, response)


def even_length(prompt, response: str) -> float:
    """A verifier whose verdicts tiny models' answers split: 1.0 for an answer of even length."""
    return float(len(response) % 2 == 0)
