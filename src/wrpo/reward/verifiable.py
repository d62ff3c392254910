"""Verifiable rewards, FuseChat-3.0's way of scoring math and code prompts without a reward model.
Both read their gold from the prompt row's fields (the sampled row's "meta") and return 1.0, 0.0 or
a fraction in between, never NaN:

    wrpo score --responses S.jsonl --reward-model wrpo.reward.verifiable:math_exact_match ...
    wrpo score --responses S.jsonl --reward-model wrpo.reward.verifiable:code_tests ...

- math_exact_match: the response's final answer (its last \\boxed{...}, else its last number) against
  the row's "answer" (or the \\boxed{} / "#### " answer inside its "solution", as MATH and GSM8K
  write them), equal as normalised text or as numbers.
- code_tests: the response's code (its last ```python block, else its last fenced block, else all of
  it) run with the row's "tests" in a child Python with limits; the fraction of tests that pass.
  The limits stop accidents (endless loops, memory blow-ups, stray files, network calls); they are
  not a security sandbox against hostile code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from fractions import Fraction

from wrpo.data.records import Prompt

# code_tests' wall-clock limit per response, in seconds; set it before scoring to change it.
TIMEOUT_S = 5.0
MEMORY_BYTES = 1 << 30  # address space of the child
FILE_BYTES = 16 << 20  # the largest file the child may write

# ---- math ----------------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?:(?<![\w)])-)?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_FRAC = re.compile(r"\\frac\{([^{}]+)\}\{([^{}]+)\}")


def math_exact_match(prompt: Prompt, response: str, meta: dict) -> float:
    """1.0 when the response's final answer equals the gold answer, else 0.0."""
    gold = gold_answer(meta)  # first: a row without its gold fails whatever the response
    answer = final_answer(response)
    return float(answer is not None and answers_equal(answer, gold))


def final_answer(text: str) -> str | None:
    """The last \\boxed{...} (nested braces kept), else the last number, else None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for position in range(begin, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            if depth == 0:
                return text[begin:position]
            depth -= 1
    return None  # unbalanced: the response was cut off inside its answer


def gold_answer(meta: dict) -> str:
    """The row's "answer" (reduced to its final answer where it is a whole solution, as GSM8K's are),
    else the answer inside its "solution". A missing gold is an error, not a 0: a wrong file must not
    look like a weak model."""
    if meta.get("answer") is not None:
        return stated_answer(str(meta["answer"])) or str(meta["answer"])
    if meta.get("solution") is None:
        raise LookupError("the prompt row has no 'answer' in its fields: math_exact_match needs the gold answer "
                          "there (or a 'solution' with it in \\boxed{} or after '#### ')")
    answer = stated_answer(str(meta["solution"]))
    if answer is None:
        raise LookupError("the prompt row has no 'answer' and its 'solution' has no \\boxed{} or '#### ' answer: "
                          "math_exact_match needs the gold answer there")
    return answer


def stated_answer(solution: str) -> str | None:
    """The answer a worked solution ends with: after GSM8K's '####', else in MATH's last \\boxed{}."""
    if "####" in solution:
        return solution.rpartition("####")[2].strip()
    return last_boxed(solution)


def answers_equal(answer: str, gold: str) -> bool:
    answer, gold = normalise(answer), normalise(gold)
    if answer == gold:
        return True
    a, b = as_number(answer), as_number(gold)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6)


def normalise(text: str) -> str:
    for wrapper in ("\\left", "\\right", "\\!", "$"):
        text = text.replace(wrapper, "")
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\s+", "", text).rstrip(".")
    return re.sub(r"(\d)\.0+(?!\d)", r"\1", text)  # 5.00 -> 5


def as_number(text: str) -> float | None:
    """A normalised answer as a number (1,234; -3; 3.5; 3/4; \\frac{3}{4}), or None."""
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    fraction = _FRAC.fullmatch(text.removeprefix("-"))
    if fraction:
        text = f"{'-' if text.startswith('-') else ''}{fraction[1]}/{fraction[2]}"
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


# ---- code ----------------------------------------------------------------------------------------

_FENCE = re.compile(r"```([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)

# Runs in the child: reads {"code", "tests", limits} from stdin, runs the code, then each test on its
# own, and writes {"passed": count, or null when the code itself failed} to the real stdout.
_HARNESS = r"""
import json, os, resource, socket, sys

case = json.load(sys.stdin)
# Limits set here rather than in a preexec_fn: code between fork and exec is unsafe in a parent
# with threads (torch's), and none of these limits matter before the user's code runs.
cpu = int(case["timeout"]) + 1
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (case["memory"], case["memory"]))
resource.setrlimit(resource.RLIMIT_FSIZE, (case["file_size"], case["file_size"]))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
# No network, by replacing the socket entry points. Not a network namespace: unprivileged
# `unshare --net` is refused in many containers and clusters, and this is meant to stop accidents
# (a solution that downloads something), not an attacker, who can still reach _socket.
def _no_network(*args, **kwargs):
    raise OSError("network disabled")
socket.socket = socket.create_connection = socket.getaddrinfo = _no_network
# What the code prints goes nowhere, so that it can neither flood the parent nor fake the result.
result = os.fdopen(os.dup(1), "w")
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)
os.dup2(devnull, 2)
namespace = {"__name__": "solution"}  # not __main__: a demo under `if __name__ == "__main__"` stays out
try:
    exec(compile(case["code"], "solution.py", "exec"), namespace)
    passed = 0
    for test in case["tests"]:
        try:
            exec(compile(test, "test.py", "exec"), namespace)
            passed += 1
        except BaseException:
            pass
except BaseException:
    passed = None
result.write(json.dumps({"passed": passed}) + "\n")
result.flush()
os._exit(0)  # now: not after the code's own threads or exit handlers, which could outlive the limit
"""


def code_tests(prompt: Prompt, response: str, meta: dict) -> float:
    """The fraction of the row's tests the response's code passes; 0.0 when the code itself fails
    or runs out of time."""
    tests = test_cases(meta)
    passed = run_tests(extract_code(response), tests)
    return (passed or 0) / len(tests)


def extract_code(response: str) -> str:
    blocks = _FENCE.findall(response)
    python = [code for language, code in blocks if language.lower() in ("python", "py", "python3")]
    if python or blocks:
        return (python or [code for _, code in blocks])[-1]
    return response


def test_cases(meta: dict) -> list[str]:
    """The row's "tests": a list of assert statements (each a test), or one text of test code (one
    test; with an "entry_point" and a `check` function, HumanEval's form, check(entry_point) is called)."""
    tests = meta.get("tests")
    if tests is None:
        raise LookupError("the prompt row has no 'tests' in its fields: code_tests needs them there "
                          "(a list of assert statements, or a text of test code)")
    if isinstance(tests, str):
        if meta.get("entry_point") and re.search(r"^def check\(", tests, re.MULTILINE):
            tests += f"\ncheck({meta['entry_point']})\n"
        tests = [tests]
    if not isinstance(tests, list) or not tests or not all(isinstance(test, str) for test in tests):
        raise ValueError("the prompt row's 'tests' must be a non-empty list of assert statements "
                         "or a text of test code")
    return tests


def run_tests(code: str, tests: list[str]) -> int | None:
    """How many tests pass after `code` ran, in a fresh isolated Python (-I: no user site, no PYTHON*
    variables) in an empty temporary folder with only PATH in its environment; None when the code
    fails, crashes or outlives TIMEOUT_S. The child's whole process group is killed at the end, so
    that nothing it started survives it."""
    case = json.dumps({"code": code, "tests": tests, "timeout": TIMEOUT_S, "memory": MEMORY_BYTES,
                       "file_size": FILE_BYTES})
    # ignore_cleanup_errors: a file the code made undeletable must not stop the scoring.
    with (tempfile.TemporaryDirectory(prefix="wrpo-code-", ignore_cleanup_errors=True) as folder,
          subprocess.Popen([sys.executable, "-I", "-c", _HARNESS], cwd=folder, env={"PATH": os.environ.get("PATH", "")},
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           start_new_session=True) as child):
        try:
            output, _ = child.communicate(case.encode(), timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            output = b""
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
    lines = output.decode(errors="replace").splitlines()
    return json.loads(lines[-1])["passed"] if child.returncode == 0 and lines else None
