"""Verifiable rewards: math answers checked against the gold, code run against its tests in a limited child."""

import contextlib
import socket
import time

import psutil
import pytest
from typer.testing import CliRunner

from conftest import gone, read, write_jsonl
from wrpo.cli import app
from wrpo.errors import InputError
from wrpo.reward import verifiable
from wrpo.reward.score import score
from wrpo.reward.scorers import check_scorer
from wrpo.reward.verifiable import code_tests, math_exact_match

MATH = "wrpo.reward.verifiable:math_exact_match"


@pytest.mark.parametrize("response, meta, expected", [
    (r"So the half is $\boxed{\frac{1}{2}}$.", {"answer": "1/2"}, 1.0),
    (r"So the half is $\boxed{\frac{1}{2}}$.", {"answer": "0.5"}, 1.0),
    (r"\boxed{\left( 3, \dfrac{1}{2} \right)}", {"answer": r"(3,\frac{1}{2})"}, 1.0),
    (r"\boxed{\text{(B)}}", {"answer": "(B)"}, 1.0),
    ("First 7 - 10 = -3, so x = -3.", {"answer": -3}, 1.0),
    ("She pays $3.50 in all.", {"answer": "3.5"}, 1.0),
    ("The share is 3/4.", {"answer": "0.75"}, 1.0),
    ("Adding up, we get 1234 apples.", {"answer": "He had 1,000 + 234 = 1,234 apples.\n#### 1,234"}, 1.0),
    ("In total 1,234.", {"answer": "1234.00"}, 1.0),
    ("So it is 12.", {"solution": r"Hence the answer is $\boxed{12}$."}, 1.0),
    ("Two steps: 5, then 13.", {"answer": "12"}, 0.0),
    (r"\boxed{\frac{1}{3}} though 1/2 came first", {"answer": "1/2"}, 0.0),
    ("I cannot tell.", {"answer": "12"}, 0.0),
])
def test_math_exact_match(response, meta, expected):
    assert math_exact_match("a question", response, meta) == expected


@pytest.mark.parametrize("meta, field", [({}, "'answer'"), ({"solution": "no final answer here"}, "'solution'"),
                                         ({"tests": "x"}, "'answer'")])
def test_math_without_a_gold_answer_says_what_the_row_needs(meta, field):
    with pytest.raises(LookupError, match=field):
        math_exact_match("a question", "42", meta)


ADD = "```python\ndef add(a, b):\n    return a + b\n```"


def test_a_correct_solution_passes_every_test():
    assert code_tests("add", f"Here it is:\n{ADD}\nDone.", {"tests": ["assert add(1, 2) == 3",
                                                                    "assert add(-1, 1) == 0"]}) == 1.0


def test_the_score_is_the_fraction_of_tests_passed():
    wrong_on_negatives = "def add(a, b):\n    return abs(a) + b\n"  # no fence: the whole response is the code
    assert code_tests("add", wrong_on_negatives, {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}) == 0.5


def test_the_last_python_block_is_the_code():
    response = f"```text\nnot code\n```\nfirst try:\n```python\ndef add(a, b):\n    return 0\n```\nbetter:\n{ADD}"
    assert code_tests("add", response, {"tests": ["assert add(1, 2) == 3"]}) == 1.0


def test_a_text_of_test_code_with_an_entry_point_is_run_as_humaneval_does():
    check = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n"
    assert code_tests("add", ADD, {"tests": check, "entry_point": "add"}) == 1.0
    assert code_tests("add", ADD.replace("a + b", "a - b"), {"tests": check, "entry_point": "add"}) == 0.0


@pytest.mark.parametrize("code", ["def add(a, b) return a + b", "raise SystemExit(0)", "x = bytearray(2 << 30)"])
def test_a_solution_that_fails_to_run_scores_zero(code):
    assert code_tests("add", code, {"tests": ["assert True"]}) == 0.0


def test_an_endless_solution_is_killed_with_everything_it_started(tmp_path, monkeypatch):
    monkeypatch.setattr(verifiable, "TIMEOUT_S", 1.0)
    pids = tmp_path / "pids"
    code = (f"import os, subprocess\nchild = subprocess.Popen(['sleep', '60'])\n"
            f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\nwhile True:\n    pass\n")
    start = time.monotonic()
    assert code_tests("loop", code, {"tests": ["assert True"]}) == 0.0
    assert time.monotonic() - start < verifiable.TIMEOUT_S + 3
    # Killed: gone or a zombie within a moment (a SIGKILLed process on a loaded machine takes a little to die).
    processes = []
    for pid in map(int, pids.read_text().split()):
        with contextlib.suppress(psutil.NoSuchProcess):
            processes.append(psutil.Process(pid))
    deadline = time.monotonic() + 5
    while not all(map(gone, processes)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(map(gone, processes)), [process.status() for process in processes if not gone(process)]


def test_a_solution_gets_no_network():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        code = (f"import socket\ndef reach():\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                f"    return True\n")
        assert code_tests("net", code, {"tests": ["assert reach()"]}) == 0.0
        with pytest.raises(TimeoutError):
            listener.accept()


def test_a_solution_runs_in_a_folder_of_its_own_without_the_callers_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WRPO_SECRET", "token")
    code = "import os\nopen('out.txt', 'w').write('x')\nsecret = os.environ.get('WRPO_SECRET')\n"
    tests = ["assert open('out.txt').read() == 'x'", "assert secret is None"]
    assert code_tests("files", code, {"tests": tests}) == 1.0
    assert list(tmp_path.iterdir()) == []


def test_a_row_without_tests_says_what_the_row_needs():
    with pytest.raises(LookupError, match="no 'tests' in its fields"):
        code_tests("add", ADD, {"answer": "3"})


def sampled_rows(path, metas, responses):
    return write_jsonl(path, [{"prompt_id": f"q{i}", "prompt": f"question {i}", "model": "m", "responses": texts,
                               **({"meta": meta} if meta is not None else {})}
                              for i, (meta, texts) in enumerate(zip(metas, responses, strict=True))])


def test_score_passes_each_rows_meta_to_a_verifiable_scorer(tmp_path):
    golds = [{"answer": "4"}, {"answer": "#### 1,234"}, {"answer": r"\frac{1}{2}"}]
    samples = sampled_rows(tmp_path / "s.jsonl", golds, [["2 + 2 = 4", "5"], ["1234", "It is 1,234.", "124"],
                                                         [r"\boxed{0.5}"]])
    for batch_size in (16, 1):
        rows = read(score([samples], MATH, tmp_path / f"scored-{batch_size}.jsonl", batch_size=batch_size))
        assert [row["scores"] for row in rows] == [[1.0, 0.0], [1.0, 1.0, 0.0], [1.0]]


def test_a_row_without_its_gold_answer_stops_score_naming_the_file_and_line(tmp_path):
    samples = sampled_rows(tmp_path / "s.jsonl", [{"answer": "4"}, None], [["4"], ["4"]])
    failed = CliRunner().invoke(app, ["score", "--responses", str(samples), "--reward-model", MATH,
                                      "--output", str(tmp_path / "scored.jsonl")])
    assert failed.exit_code == 2 and failed.stderr.count("\n") == 1
    assert failed.stderr.startswith(f"error: {samples}:2: scorer {MATH} failed on prompt 'q1' (LookupError: "
                                    "the prompt row has no 'answer' in its fields")
    # Scored one at a time after the batch failed, the row before it kept its meta and its score.
    assert [row["scores"] for row in read(tmp_path / "scored.jsonl.partial")] == [[1.0]]


def test_check_scorer_calls_a_verifiable_scorer_with_the_first_prompts_meta():
    check_scorer(MATH, "question", False, {"answer": "1"})
    with pytest.raises(InputError, match="fails on a test response .*no 'answer' in its fields"):
        check_scorer(MATH, "question", False, {})
