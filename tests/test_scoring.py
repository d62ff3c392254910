"""`wrpo score` on tiny local models: Python scorers, reward-model folders, failures named by row."""

import pytest
from typer.testing import CliRunner

from conftest import TINY, WORDS, prompts_file, read
from wrpo.cli import app
from wrpo.errors import InputError
from wrpo.generation.sample import sample
from wrpo.reward.score import score


def test_a_prompt_scored_twice_is_an_error(zoo, tmp_path):
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", TINY)
    with pytest.raises(InputError, match=r"s.jsonl:1: model 'llama-char' and prompt '.*' were already read at"):
        score([samples, samples], "scorers:reversal_similarity", tmp_path / "scored.jsonl")


def test_score_with_a_python_scorer(zoo, tmp_path):
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", TINY)
    rows = read(score([samples], "scorers:reversal_similarity", tmp_path / "scored.jsonl", batch_size=5))
    assert len(rows) == len(WORDS)
    for row in rows:
        word = row["prompt"].split()[-1]
        assert row["scores"] == [pytest.approx(__import__("difflib").SequenceMatcher(None, r, word[::-1]).ratio())
                                 for r in row["responses"]]


@pytest.mark.parametrize("scorer, message", [
    ("scorers:fails_on_grape", "failed on prompt 'w1' (ValueError: cannot score grapes)"),
    ("scorers:nan_on_grape", "returned nan for response 0 of prompt 'w1'")])
def test_a_failing_scorer_names_the_row_and_keeps_every_row_scored_before_it(zoo, tmp_path, scorer, message):
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", TINY)
    order = [row["prompt_id"] for row in read(samples)]
    with pytest.raises(InputError) as raised:
        score([samples], scorer, tmp_path / "scored.jsonl", batch_size=1)
    grape_line = order.index("w1") + 1
    assert str(raised.value) == f"{samples}:{grape_line}: scorer {scorer} {message}"
    kept = read(tmp_path / "scored.jsonl.partial")
    assert [row["prompt_id"] for row in kept] == order[: grape_line - 1]
    # A fixed scorer continues from there.
    rows = read(score([samples], "scorers:reversal_similarity", tmp_path / "scored.jsonl", batch_size=1))
    assert [row["prompt_id"] for row in rows] == order


def test_score_through_the_command_line_names_a_bad_score(zoo, tmp_path):
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", TINY)
    failed = CliRunner().invoke(app, ["score", "--responses", str(samples), "--reward-model", "scorers:nan_on_grape",
                                      "--output", str(tmp_path / "scored.jsonl")])
    assert failed.exit_code == 2 and failed.stderr.count("\n") == 1
    assert failed.stderr.startswith(f"error: {samples}:") and "returned nan" in failed.stderr


def test_a_reward_model_folder_scores_with_its_own_chat_template(zoo, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification

    from wrpo.demo.tiny import tiny_config
    from wrpo.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(zoo["llama-char"]))
    torch.manual_seed(0)
    reward_dir = tmp_path / "reward"
    config = tiny_config("llama", tokenizer)
    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(reward_dir)
    tokenizer.save_pretrained(reward_dir)
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl", WORDS[:3]), tmp_path / "s.jsonl", TINY)
    rows = read(score([samples], str(reward_dir), tmp_path / "scored.jsonl", batch_size=4))

    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    for row in rows:
        for response, value in zip(row["responses"], row["scores"], strict=True):
            text = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                                  {"role": "assistant", "content": response}], tokenize=False)
            with torch.no_grad():
                expected = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0]
            assert value == pytest.approx(expected.item(), abs=1e-4)
