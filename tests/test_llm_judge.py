"""The LLM judge's arithmetic and parsing, without a server: verdicts read from replies, a prompt's
preference from its two orders, win rates and the figures of a comparison against hand-computed values,
and the command's checks before anything answers. Against a real server: test_eval_served.py."""

import math

import pytest
from typer.testing import CliRunner

from conftest import WORDS, write_jsonl
from wrpo.cli import app
from wrpo.errors import InputError
from wrpo.evaluation.compare import ModelResult, bootstrap_interval, win_rate_of
from wrpo.evaluation.llm_judge import (
    BASELINE_FIRST,
    MODEL_FIRST,
    check_llm_judge,
    fill,
    parse_verdict,
    preference,
    requests_for,
    summarise,
)
from wrpo.evaluation.llm_judge_settings import TEMPLATE, LLMJudge


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), ("B", "B"), ("[[A]]", "A"), ("Output (a)", "A"), ("Output (b) is better.", "B"), ("**B**", "B"),
    ("A.", "A"), ("The better output is B", "B"), ("Output A, not B", "A"), ("\n\nB\n", "B"), ("(B)", "B"),
    ("a", None), ("b", None), ("Both are fine", None), ("AB", None), ("?", None), ("", None), ("(c)", None),
    ("I cannot tell", None), ("Output_A", "A"),
])
def test_the_verdict_is_the_first_standalone_a_or_b(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize("model_first, baseline_first, expected", [
    ("A", "B", 1.0),    # the model's answer picked in both orders
    ("B", "A", 0.0),    # the baseline's in both
    ("A", "A", 0.5),    # always the first position: the orders cancel
    ("B", "B", 0.5),    # always the second
    ("A", None, 1.0),   # one order parsed: that one
    (None, "A", 0.0),
    (None, None, None),  # none: left out
])
def test_a_prompts_preference_is_the_mean_over_its_parsed_orders(model_first, baseline_first, expected):
    assert preference({MODEL_FIRST: model_first, BASELINE_FIRST: baseline_first}) == expected


def test_the_model_is_output_a_in_model_first_and_a_field_inside_an_answer_stays_as_it_is():
    requests = requests_for("I: {instruction} | A: {output_a} | B: {output_b} | {json}", "p1", "do it",
                            "mine {output_b}", "theirs")
    assert requests[MODEL_FIRST].text == "I: do it | A: mine {output_b} | B: theirs | {json}"
    assert requests[BASELINE_FIRST].text == "I: do it | A: theirs | B: mine {output_b} | {json}"
    assert requests[MODEL_FIRST].pair != requests[BASELINE_FIRST].pair
    assert requests_for(TEMPLATE, "p1", "do it", "mine", "theirs")[MODEL_FIRST].pair != \
        requests_for(TEMPLATE, "p1", "do it", "mine, changed", "theirs")[MODEL_FIRST].pair
    assert fill(TEMPLATE, "x", "y", "z").count("{") == 0


def test_win_rates_count_ties_half_and_a_constant_outcome_has_no_spread():
    rate = win_rate_of([1.0, 0.5, 0.5, 0.0, 1.0])
    assert (rate.rate, rate.wins, rate.ties, rate.losses) == (0.6, 2, 2, 1)
    assert 0.0 <= rate.low <= 0.6 <= rate.high <= 1.0
    assert bootstrap_interval([0.5] * 7) == (0.5, 0.5)
    # Resamples where the statistic cannot tell (NaN) are left out, and all of them NaN is NaN.
    assert bootstrap_interval([1.0, 2.0], lambda sample: math.nan if sample[0] == 1.0 else sample[0]) == (2.0, 2.0)
    assert all(math.isnan(bound) for bound in bootstrap_interval([1.0], lambda sample: math.nan))


def row(verdict, prompt_tokens=10, completion_tokens=2, seconds=0.5):
    return {"reply": f"{verdict}, because" if verdict else "hmm, both are fine", "verdict": verdict,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "seconds": seconds}


def test_a_comparison_from_hand_computed_judgements():
    answers = {p: "same length" for p in ("p1", "p2", "p3", "p4")}
    model, baseline = ModelResult("mine", {}, answers=answers), ModelResult("base", {}, answers=dict(answers))
    judgements = {"p1": {MODEL_FIRST: row("A"), BASELINE_FIRST: row("B")},    # 1
                  "p2": {MODEL_FIRST: row("A"), BASELINE_FIRST: row("A")},    # 0.5
                  "p3": {MODEL_FIRST: row("B"), BASELINE_FIRST: row(None)},   # 0 (one order parsed)
                  "p4": {MODEL_FIRST: row(None), BASELINE_FIRST: row(None, None, None)}}  # left out
    comparison = summarise(model, baseline, judgements)
    assert comparison.overall.rate == 0.5
    assert (comparison.overall.wins, comparison.overall.ties, comparison.overall.losses) == (1, 1, 1)
    assert comparison.judged == 3 and comparison.unjudged == ["p4"]
    assert [(u["prompt_id"], u["order"]) for u in comparison.unparseable] == [
        ("p3", BASELINE_FIRST), ("p4", MODEL_FIRST), ("p4", BASELINE_FIRST)]
    assert comparison.unparseable[0]["reply"] == "hmm, both are fine"
    assert comparison.first_position_share == 3 / 5  # A in p1, p2 (twice); B in p1, p3
    assert comparison.length_controlled == 0.5  # equal lengths everywhere: the plain rate
    assert comparison.lc_ci95[0] <= 0.5 <= comparison.lc_ci95[1]
    # Tokens as the server reported them (none for one request), the requests' seconds summed.
    assert (comparison.prompt_tokens, comparison.completion_tokens, comparison.seconds) == (70, 14, 4.0)
    figures = comparison.as_dict()
    assert figures["unparseable"] == {MODEL_FIRST: 1, BASELINE_FIRST: 2} and figures["judged"] == 3

    assert comparison.per_category == {}  # one category: the overall rate says it all
    by_category = summarise(ModelResult("mine", {}, categories={"p1": "x", "p2": "x", "p3": "y", "p4": "y"},
                                        answers=answers), baseline, judgements)
    assert {c: (w.rate, w.wins, w.ties, w.losses) for c, w in by_category.per_category.items()} == {
        "x": (0.75, 1, 1, 0), "y": (0.0, 0, 0, 1)}
    assert by_category.as_dict()["per_category"]["x"]["ci95"] == [0.5, 1.0]

    nothing = summarise(model, baseline, {"p4": judgements["p4"]})
    assert nothing.overall is None and nothing.judged == 0 and math.isnan(nothing.first_position_share)
    assert nothing.as_dict()["win_rate"] is None


def test_the_llm_judge_is_checked_before_anything_is_asked():
    with pytest.raises(InputError, match=r"lacks \{output_b\}"):
        check_llm_judge(LLMJudge(model="judge", base_url="http://127.0.0.1:1/v1", template="{instruction} {output_a}"))
    with pytest.raises(InputError, match="--judge-base-url"):
        check_llm_judge(LLMJudge(model="judge"))
    with pytest.raises(InputError, match="NO_SUCH_KEY_VARIABLE is not set"):
        check_llm_judge(LLMJudge(model="judge", base_url="http://127.0.0.1:1/v1", api_key_env="NO_SUCH_KEY_VARIABLE"))
    check_llm_judge(LLMJudge(model="judge", base_url="http://127.0.0.1:1/v1"))  # nothing is asked: no server needed
    here = LLMJudge(model="j", base_url="u").cache_file("out")
    assert here == LLMJudge(model="j", base_url="elsewhere").cache_file("out")
    assert here != LLMJudge(model="j", base_url="u", template=TEMPLATE + ".").cache_file("out")


def evaluate(tiny_model, tmp_path, *flags):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"reverse {w}"} for w in WORDS[:3]])
    return CliRunner().invoke(app, ["eval", "--models", f"mine={tiny_model}", "--baseline", "mine", "--prompts",
                                    str(prompts), "--output", str(tmp_path / "out"), *flags])


@pytest.mark.parametrize("flags, expected", [
    ([], "error: no judge: give --judge (a reward model or a Python scorer), --judge-llm (a model on an "
         "OpenAI-compatible server, with --judge-base-url), or both\n"),
    (["--judge", "scorers:reversal_similarity", "--judge-base-url", "http://127.0.0.1:1/v1"],
     "error: --judge-base-url, --judge-template, --judge-api-key-env and --judge-concurrency set the LLM judge: "
     "name its model with --judge-llm\n"),
    (["--judge-llm", "judge"], "error: the LLM judge needs its server: --judge-base-url, e.g. "
                               "http://localhost:8000/v1\n"),
])
def test_a_missing_judge_is_one_line_and_exit_status_2(tiny_model, tmp_path, flags, expected):
    result = evaluate(tiny_model, tmp_path, *flags)
    assert result.exit_code == 2 and result.stderr == expected
    assert not (tmp_path / "out").exists()  # nothing was answered


def test_a_template_without_its_fields_stops_before_any_model_answers(tiny_model, tmp_path):
    (tmp_path / "template.txt").write_text("Which is better, {output_a} or {output_b}?")
    result = evaluate(tiny_model, tmp_path, "--judge-llm", "judge", "--judge-base-url", "http://127.0.0.1:1/v1",
                      "--judge-template", str(tmp_path / "template.txt"))
    assert result.exit_code == 2 and "lacks {instruction}" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
