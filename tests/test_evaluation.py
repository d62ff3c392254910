"""`wrpo eval`: win rates, the length-controlled win rate, per-category figures, reports and exports."""

import json
import math
import random

import pytest
from typer.testing import CliRunner

from conftest import WORDS, write_jsonl
from wrpo.cli import app
from wrpo.demo.tiny import build_bpe_tokenizer, build_char_tokenizer, save_tiny_model
from wrpo.evaluation.length_control import length_controlled_win_rate


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-models")
    corpus = [f"reverse {w} {w[::-1]}" for w in WORDS * 5]
    return {"char": save_tiny_model(root / "char", build_char_tokenizer(), "llama", seed=4),
            "bpe": save_tiny_model(root / "bpe", build_bpe_tokenizer(corpus, 300), "qwen2", seed=5)}


def test_the_length_controlled_win_rate_removes_a_win_explained_by_length():
    rng = random.Random(0)
    differences = [rng.uniform(-100, 100) for _ in range(2000)]
    # Outcomes driven by length alone: the longer answer wins.
    by_length = [1.0 if d > 0 else 0.0 for d in differences]
    assert length_controlled_win_rate(by_length, differences) == pytest.approx(0.5, abs=0.05)
    # Outcomes unrelated to length: the LC rate is the plain rate.
    plain = [1.0 if rng.random() < 0.7 else 0.0 for _ in differences]
    assert length_controlled_win_rate(plain, differences) == pytest.approx(sum(plain) / len(plain), abs=0.04)


def test_the_length_controlled_win_rate_is_not_made_up_where_lengths_cannot_tell():
    rng = random.Random(1)
    wins = [1.0 if rng.random() < 0.6 else 0.0 for _ in range(400)]
    assert math.isnan(length_controlled_win_rate(wins, [3.0] * 400))               # always longer: no crash, n/a
    assert math.isnan(length_controlled_win_rate(wins, [rng.gauss(200, 50) for _ in wins]))  # one-sided
    assert length_controlled_win_rate(wins, [0.0] * 400) == pytest.approx(sum(wins) / 400)  # equal lengths


def prompts_with_categories(path):
    return write_jsonl(path, [{"prompt": f"reverse {w}", "category": "short" if len(w) < 5 else "long"} for w in WORDS])


def test_eval_reports_win_rates_per_category_and_writes_plots(models, tmp_path):
    prompts = prompts_with_categories(tmp_path / "p.jsonl")
    result = CliRunner().invoke(app, ["eval", "--models", f"{models['char']},other={models['bpe']}", "--baseline",
                                      "other", "--prompts", str(prompts), "--judge", "scorers:reversal_similarity",
                                      "--output", str(tmp_path / "out"), "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["baseline"] == "other" and set(report["models"]) == {"char", "other"}
    comparison = report["comparisons"]["char"]
    assert 0 <= comparison["ci95"][0] <= comparison["win_rate"] <= comparison["ci95"][1] <= 1
    assert comparison["wins"] + comparison["ties"] + comparison["losses"] == len(WORDS)
    # Tiny random models: one may answer longer every time, which leaves the length control n/a.
    assert math.isnan(comparison["lc_win_rate"]) or 0 < comparison["lc_win_rate"] < 1
    assert set(comparison["per_category"]) == {"short", "long"}
    assert set(report["models"]["char"]["per_category"]) == {"short", "long"}  # mean reward per category
    assert report["models"]["char"]["mean_length"] >= 0
    for picture in ("win_rates.png", "rewards.png", "per_category.png"):
        assert (tmp_path / "out" / picture).read_bytes()[:4] == b"\x89PNG"
    assert "| char |" in (report_md := (tmp_path / "out" / "report.md").read_text())
    assert "(per_category.png)" in report_md and "### char by category" in report_md


@pytest.mark.parametrize("count", [5, 12])  # tab10's colours, then tab20's
def test_no_model_is_drawn_in_the_flag_colour_and_flagged_bars_are(count):
    from matplotlib.colors import to_rgb

    from wrpo.evaluation.plots import FLAG_COLOUR, per_category_figure

    reds = [to_rgb(FLAG_COLOUR), (0.839, 0.153, 0.157), (1.0, 0.596, 0.588)]  # and matplotlib's tab reds

    def reddish(colour) -> bool:
        return any(sum((a - b) ** 2 for a, b in zip(to_rgb(colour), red, strict=True)) < 0.02 for red in reds)

    per_category = {f"model{i}": {"reverse": 0.5, "sort": 0.4} for i in range(count)}
    figure = per_category_figure(per_category, "title", flagged={"model3": {"sort"}})
    bars = figure.axes[0].patches
    assert len(bars) == 2 * count and not any(reddish(bar.get_facecolor()) for bar in bars)
    faces = {to_rgb(bar.get_facecolor()) for bar in bars}
    assert len(faces) == count  # each model its own colour
    flagged = [bar for bar in bars if bar.get_hatch()]
    assert len(flagged) == 1 and reddish(flagged[0].get_edgecolor())


def test_a_judge_that_fails_on_a_row_names_it_and_the_others_are_kept(models, tmp_path):
    prompts = prompts_with_categories(tmp_path / "p.jsonl")
    result = CliRunner().invoke(app, ["eval", "--models", str(models["char"]), "--baseline", str(models["bpe"]),
                                      "--prompts", str(prompts), "--judge", "scorers:fails_on_grape",
                                      "--output", str(tmp_path / "out"), "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["models"]["char"]["judged"] == len(WORDS) - 1
    (failure,) = report["judge_failures"]["char"]
    assert "cannot score grapes" in failure and ".jsonl:" in failure


def test_exports_follow_the_public_judges_formats(models, tmp_path):
    # An MT-Bench question file as FastChat ships it: int ids, two turns.
    questions = write_jsonl(tmp_path / "question.jsonl", [
        {"question_id": 81 + i, "category": "writing", "turns": [f"reverse {w}", f"now reverse {w[::-1]}"]}
        for i, w in enumerate(WORDS[:4])])
    result = CliRunner().invoke(app, ["eval", "--models", str(models["char"]), "--baseline", str(models["bpe"]),
                                      "--prompts", str(questions), "--judge", "scorers:reversal_similarity",
                                      "--output", str(tmp_path / "out"), "--max-new-tokens", "6",
                                      "--export", "alpaca_eval,arena_hard,mt_bench"])
    assert result.exit_code == 0, result.output
    exports = tmp_path / "out" / "exports"

    alpaca = json.loads((exports / "alpaca_eval" / "char.json").read_text())
    assert isinstance(alpaca, list) and len(alpaca) == 4
    for row in alpaca:
        assert set(row) == {"instruction", "output", "generator", "dataset"}
        assert all(isinstance(value, str) for value in row.values()) and row["generator"] == "char"
    assert alpaca[0]["instruction"] == f"reverse {WORDS[0]}"

    for name, turn_type in (("arena_hard", dict), ("mt_bench", str)):
        rows = [json.loads(line) for line in (exports / name / "char.jsonl").read_text().splitlines()]
        assert len(rows) == 4
        for row in rows:
            assert set(row) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
            assert isinstance(row["question_id"], int) and isinstance(row["answer_id"], str)
            assert row["model_id"] == "char" and isinstance(row["tstamp"], float)
            (choice,) = row["choices"]
            assert choice["index"] == 0 and all(isinstance(turn, turn_type) for turn in choice["turns"])
        if name == "arena_hard":
            assert set(rows[0]["choices"][0]["turns"][0]) == {"content", "token_len"}
            assert isinstance(rows[0]["choices"][0]["turns"][0]["token_len"], int)
        else:
            assert all(len(row["choices"][0]["turns"]) == 2 for row in rows)  # both turns answered


def test_every_mt_bench_turn_is_written_as_the_first_is(zoo, models, tmp_path):
    """A GPT-2 that answers with spaces only (its last layer norm gives one direction, in which only the space token
    scores): the first turn's answer comes through `wrpo sample`, which strips it; the later turns must be too."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = (auto.from_pretrained(zoo["gpt2-bpe"]) for auto in (AutoModelForCausalLM, AutoTokenizer))
    (space,) = tokenizer(" ", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[:, 0] = 0.0  # tied to the input embeddings: only their first dimension changes
        model.lm_head.weight[space, 0] = 1.0
    spaces = tmp_path / "spaces"
    model.save_pretrained(spaces)
    tokenizer.save_pretrained(spaces)
    questions = write_jsonl(tmp_path / "question.jsonl", [
        {"question_id": 81 + i, "turns": [f"reverse {w}", f"now reverse {w[::-1]}"]} for i, w in enumerate(WORDS[:3])])
    result = CliRunner().invoke(app, ["eval", "--models", str(spaces), "--baseline", str(models["char"]),
                                      "--prompts", str(questions), "--judge", "scorers:reversal_similarity",
                                      "--output", str(tmp_path / "out"), "--max-new-tokens", "4",
                                      "--export", "mt_bench"])
    assert result.exit_code == 0, result.output
    answers = [json.loads(line)["choices"][0]["turns"]
               for line in (tmp_path / "out" / "exports" / "mt_bench" / "spaces.jsonl").read_text().splitlines()]
    assert answers == [["", ""]] * 3


def test_unknown_export_format_is_a_one_line_error(models, tmp_path):
    result = CliRunner().invoke(app, ["eval", "--models", str(models["char"]), "--baseline", str(models["bpe"]),
                                      "--prompts", str(prompts_with_categories(tmp_path / "p.jsonl")),
                                      "--judge", "scorers:reversal_similarity", "--export", "helm"])
    assert result.exit_code == 2
    assert result.stderr == "error: --export knows alpaca_eval, arena_hard, mt_bench, not helm\n"


def test_models_sharing_a_folder_name_must_be_labelled(models, tmp_path):
    from wrpo.errors import InputError
    from wrpo.evaluation.run import parse_models, resolve_baseline

    with pytest.raises(InputError, match="two models are labelled 'char'"):
        parse_models(f"{models['char']},{tmp_path / 'char'}")
    with pytest.raises(InputError, match="share the label 'char'"):
        resolve_baseline({"char": str(models["char"])}, str(tmp_path / "char"))
    assert resolve_baseline({"mine": str(models["char"])}, str(models["char"])) == ("mine", str(models["char"]))


def test_cached_answers_follow_the_settings_and_a_new_judge_reuses_them(models, tmp_path):
    prompts = prompts_with_categories(tmp_path / "p.jsonl")
    command = ["eval", "--models", str(models["char"]), "--baseline", str(models["bpe"]), "--prompts", str(prompts),
               "--output", str(tmp_path / "out")]
    judge = ["--judge", "scorers:reversal_similarity"]
    assert CliRunner().invoke(app, [*command, *judge, "--max-new-tokens", "2"]).exit_code == 0
    assert CliRunner().invoke(app, [*command, *judge, "--max-new-tokens", "9"]).exit_code == 0
    assert len(list((tmp_path / "out" / "answers").glob("char-*.jsonl"))) == 2  # other settings, other answers
    assert CliRunner().invoke(app, [*command, "--judge", "scorers:nan_on_grape",
                                    "--max-new-tokens", "9"]).exit_code == 0
    assert len(list((tmp_path / "out" / "answers").glob("char-*.jsonl"))) == 2  # a new judge re-scores, no new answers
    assert len(list((tmp_path / "out" / "scores").glob("char-*.jsonl"))) == 3


def test_a_judge_failing_on_the_first_prompt_stops_before_any_answer_with_a_one_line_error(models, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "reverse grape"}])
    result = CliRunner().invoke(app, ["eval", "--models", str(models["char"]), "--baseline", str(models["bpe"]),
                                      "--prompts", str(prompts), "--judge", "scorers:fails_on_grape",
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "scorers:fails_on_grape: the scorer fails on a test response (ValueError: cannot score grapes)" \
        in result.stderr
    assert not (tmp_path / "out").exists()
