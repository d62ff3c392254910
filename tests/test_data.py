"""Reading and validating both record formats, tokenising with the chat template, truncation, batching."""

import json

import datasets
import pytest
import torch

from conftest import native_rows, write_jsonl
from wrpo.data import QuadrupleCollator, QuadrupleEncoder, iter_quadruples, load_quadruple_dataset, parse_quadruple
from wrpo.errors import InputError
from wrpo.modeling import load_tokenizer


def quadruples(path):
    return [q for _, q in iter_quadruples(path)]


def test_native_and_release_formats_read_to_the_same_quadruples(native_data, release_data):
    native, release = quadruples(native_data), quadruples(release_data)
    assert len(native) == len(release) == 12
    for a, b in zip(native, release, strict=True):
        assert a.chosen_source == b.chosen_source
        assert a.chosen_target == b.chosen_target and a.rejected == b.rejected
    assert native[0].prompt == "reverse apple" and native[0].prompt_id == "p0"
    assert release[0].prompt == [{"role": "user", "content": "reverse apple"}]
    # Release rows carry no id: a stable one is derived from the prompt.
    assert release[0].prompt_id == quadruples(release_data)[0].prompt_id != release[1].prompt_id


def test_parquet_and_datasets_folder(tmp_path):
    rows = native_rows()
    dataset = datasets.Dataset.from_list(rows)
    dataset.to_parquet(str(tmp_path / "q.parquet"))
    dataset.save_to_disk(str(tmp_path / "folder"))
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "dict"))
    for path in (tmp_path / "q.parquet", tmp_path / "folder", tmp_path / "dict"):
        read = quadruples(path)
        assert [q.chosen_source for q in read] == [[r["chosen_source"]] for r in rows]


def test_several_source_responses_with_scores():
    row = {"prompt": "x", "chosen_source": ["best", "second"], "chosen_target": "t", "rejected": "r",
           "meta": {"source_scores": [0.9, 0.4]}}
    quadruple = parse_quadruple(row, "f.jsonl", 1)
    assert quadruple.chosen_source == ["best", "second"] and quadruple.source_scores == [0.9, 0.4]
    for bad in ([0.9], [float("nan"), 0.4], [float("inf"), 0.4]):
        row["meta"]["source_scores"] = bad
        with pytest.raises(InputError, match=r"f.jsonl:1: meta 'source_scores' must be 2 finite number"):
            parse_quadruple(row, "f.jsonl", 1)


BAD_ROWS = [
    ('{"prompt": "x", "chosen_source": "a", "chosen_target": "b"}', "missing field 'rejected'"),
    ('{"prompt": "x", "chosen_source": "a", "chosen_target": "  ", "rejected": "c"}',
     "'chosen_target' is an empty response"),
    ('{"prompt": "", "chosen_source": "a", "chosen_target": "b", "rejected": "c"}', "'prompt' is empty"),
    ('{"prompt": "x", "chosen_target": "b", "rejected": "c"}', "missing field 'chosen_source'"),
    ('{"prompt": "x", "chosen": [{"role": "assistant", "content": "a"}], "rejected": ["c"]}',
     "'chosen' must be a list"),
    ('{"prompt": [{"content": "x"}], "chosen_source": "a", "chosen_target": "b", "rejected": "c"}',
     "'role' and 'content'"),
    ('{"prompt": "x", "chosen_source": "a", "chosen_target": "b", "rejected": "c"', "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
]


@pytest.mark.parametrize("bad_line, message", BAD_ROWS)
def test_a_bad_row_names_its_file_and_line(tmp_path, bad_line, message):
    good = [json.dumps(row) for row in native_rows(2)]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([good[0], "", good[1], bad_line]) + "\n")
    with pytest.raises(InputError) as raised:
        quadruples(path)
    assert str(raised.value).startswith(f"{path}:4: ")
    assert message in str(raised.value)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        quadruples(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no rows"):
        quadruples(tmp_path / "empty.jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="not a `datasets` folder"):
        quadruples(tmp_path / "folder")


def test_chat_template_encoding_is_the_templated_conversation_split_at_the_generation_prompt(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    encoder = QuadrupleEncoder(tokenizer, max_length=128, max_prompt_length=64)
    quadruple = quadruples_from_rows(native_rows(1))[0]
    encoded = encoder.encode(quadruple)
    for response, ids in ((quadruple.chosen_source[0], encoded.source_ids[0]),
                          (quadruple.chosen_target, encoded.target_ids), (quadruple.rejected, encoded.rejected_ids)):
        full = tokenizer.apply_chat_template([{"role": "user", "content": quadruple.prompt},
                                              {"role": "assistant", "content": response}], tokenize=False)
        assert encoded.prompt_ids + ids == tokenizer(full, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(encoded.prompt_ids) == "<|user|>reverse apple</s><|assistant|>"
    assert tokenizer.decode(encoded.source_ids[0]) == "elppa</s>"


def test_plain_text_fallback_without_a_chat_template(tiny_model_without_template):
    tokenizer = load_tokenizer(str(tiny_model_without_template))
    encoded = QuadrupleEncoder(tokenizer, max_length=128, max_prompt_length=64).encode(
        quadruples_from_rows(native_rows(1))[0])
    assert tokenizer.decode(encoded.prompt_ids) == "reverse apple"
    assert tokenizer.decode(encoded.rejected_ids) == "apple</s>"


def test_truncation_cuts_prompts_from_the_left_and_responses_from_the_right_and_counts_them(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    encoder = QuadrupleEncoder(tokenizer, max_length=16, max_prompt_length=10)
    row = {"prompt": "reverse watermelon", "chosen_source": "nolemretaw", "chosen_target": "ok", "rejected": "no"}
    encoded = encoder.encode(quadruples_from_rows([row])[0])
    # The last 10 tokens: 8 letters, end of turn, generation prompt.
    assert tokenizer.decode(encoded.prompt_ids) == "termelon</s><|assistant|>"
    assert tokenizer.decode(encoded.source_ids[0]) == "nolemr"          # 16 - 10 = 6 tokens kept
    assert tokenizer.decode(encoded.target_ids) == "ok</s>"
    assert (encoder.report.rows, encoder.report.prompts_truncated, encoder.report.responses_truncated,
            encoder.report.responses) == (1, 1, 1, 3)


def collator_examples(tokenizer, tmp_path):
    rows = [{"prompt": "a", "chosen_source": ["xy", "xyz"], "chosen_target": "t", "rejected": "rr",
             "meta": {"source_scores": [1.0, 0.0]}},
            {"prompt": "bb", "chosen_source": "s", "chosen_target": "tt", "rejected": "r",
             "meta": {"source_scores": [3.0]}}]
    encoder = QuadrupleEncoder(tokenizer, max_length=64, max_prompt_length=32, top_k_sources=2)
    dataset = load_quadruple_dataset(write_jsonl(tmp_path / "q.jsonl", rows), encoder, "score")
    return dataset[0], dataset[1]


def responses_in_order(examples):
    """[source_0, source_1 (empty when absent), target, rejected] per example, as the collator lays them out."""
    return [r for e in examples for r in (*e.source_ids, *[[]] * (2 - len(e.source_ids)), e.target_ids, e.rejected_ids)]


def test_naive_layout_rows_are_prompt_plus_response_with_a_response_mask(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    examples = collator_examples(tokenizer, tmp_path)
    batch = QuadrupleCollator(tokenizer.pad_token_id, "score", share_prompt=False, padding_free=False)(list(examples))
    assert batch["input_ids"].shape[0] == 2 * (2 + 2)
    expected_weights = torch.tensor([torch.softmax(torch.tensor([1.0, 0.0]), 0).tolist(), [1.0, 0.0]])
    torch.testing.assert_close(batch["source_weights"], expected_weights)
    for row, response in enumerate(responses_in_order(examples)):
        prompt = examples[row // 4].prompt_ids
        length = len(prompt) + len(response)
        assert batch["input_ids"][row, :length].tolist() == prompt + response
        assert (batch["input_ids"][row, length:] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][row].sum().item() == length
        assert batch["response_mask"][row].nonzero().flatten().tolist() == list(range(len(prompt), length))


def test_shared_prompt_layout_left_pads_prompts_once_and_right_pads_responses(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    examples = collator_examples(tokenizer, tmp_path)
    batch = QuadrupleCollator(tokenizer.pad_token_id, "score", share_prompt=True, padding_free=False)(list(examples))
    width = max(len(e.prompt_ids) for e in examples)
    for row, example in enumerate(examples):
        assert batch["prompt_ids"][row, width - len(example.prompt_ids):].tolist() == example.prompt_ids
        assert batch["prompt_mask"][row].sum().item() == len(example.prompt_ids)
    for row, response in enumerate(responses_in_order(examples)):
        assert batch["response_ids"][row, : len(response)].tolist() == response
        assert batch["response_mask"][row].sum().item() == len(response)
    assert batch["response_mask"][5].sum() == 0  # the second example has one source: slot 1 is empty
    assert "reference_logps" not in batch


def test_padding_free_layout_packs_each_prompt_once_then_its_responses_without_a_pad(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    examples = collator_examples(tokenizer, tmp_path)
    batch = QuadrupleCollator(tokenizer.pad_token_id, "score")(list(examples))
    responses = responses_in_order(examples)
    expected_ids, expected_positions = [], []
    for index, example in enumerate(examples):
        expected_ids += example.prompt_ids + sum(responses[4 * index: 4 * index + 4], [])
        expected_positions += list(range(len(example.prompt_ids)))
        for response in responses[4 * index: 4 * index + 4]:
            expected_positions += list(range(len(example.prompt_ids), len(example.prompt_ids) + len(response)))
    assert batch["packed_ids"][0].tolist() == expected_ids and batch["position_ids"][0].tolist() == expected_positions
    units = batch["attention_units"].tolist()
    ends = [unit[3] for unit in units]
    assert [unit[2:] for unit in units] == [list(bounds) for bounds in zip([0, *ends[:-1]], ends, strict=True)]
    first_prompt, second_prompt = units[0], units[5]
    assert [unit[:2] for unit in units[1:5]] == [first_prompt[2:]] * 4 and units[9][:2] == second_prompt[2:]
    assert batch["response_lengths"].tolist() == [len(response) for response in responses]
    # Every response token is predicted by the token before it, its first by its prompt's last token.
    labels, predictors = batch["label_positions"].tolist(), batch["predictor_positions"].tolist()
    assert labels[0] == units[1][2] and predictors[0] == first_prompt[3] - 1
    first_response = len(responses[0])
    assert all(predictor == label - 1
               for label, predictor in zip(labels[1:first_response], predictors[1:first_response], strict=True))
    assert "reference_logps" not in batch


def test_a_prompt_the_chat_template_rejects_names_its_line(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                               "{{ raise_exception('System role not supported') }}{% endif %}"
                               "{{ m['content'] }}{% endfor %}")
    rows = native_rows(2)
    rows[1]["prompt"] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    encoder = QuadrupleEncoder(tokenizer, max_length=64, max_prompt_length=32)
    with pytest.raises(InputError, match=r"q.jsonl:2: the chat template rejects this conversation "
                                         r"\(System role not supported\)"):
        load_quadruple_dataset(write_jsonl(tmp_path / "q.jsonl", rows), encoder)


def test_score_weighting_without_scores_names_the_line(tiny_model, native_data):
    encoder = QuadrupleEncoder(load_tokenizer(str(tiny_model)), max_length=64, max_prompt_length=32)
    with pytest.raises(InputError, match=r"native.jsonl:1: source_weighting 'score' needs meta 'source_scores'"):
        load_quadruple_dataset(native_data, encoder, "score")


def quadruples_from_rows(rows):
    return [parse_quadruple(row, "rows", index + 1) for index, row in enumerate(rows)]
