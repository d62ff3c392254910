"""Data that cannot be meant is refused with its file and line; data that may be meant is counted."""

import json

import pytest
from typer.testing import CliRunner

from conftest import native_rows, release_rows, write_jsonl
from wrpo.cli import app
from wrpo.data.dataset import load_quadruple_dataset
from wrpo.data.tokenize import QuadrupleEncoder
from wrpo.errors import InputError
from wrpo.modeling import load_tokenizer

TRAIN = ["--max-steps", "1", "--batch-size", "2", "--max-length", "48", "--max-prompt-length", "24"]


def train(tiny_model, data, tmp_path):
    return CliRunner().invoke(app, ["train", "--model", str(tiny_model), "--data", str(data), "--output",
                                    str(tmp_path / "out"), *TRAIN])


def test_a_prompt_id_twice_in_quadruples_is_refused_naming_both_lines(tiny_model, tmp_path):
    rows = native_rows(4)
    rows[3]["prompt_id"] = rows[1]["prompt_id"]
    result = train(tiny_model, write_jsonl(tmp_path / "q.jsonl", rows), tmp_path)
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'q.jsonl'}:4: prompt_id 'p1' repeats the one on line 2\n"


def test_the_same_prompt_twice_in_release_rows_without_ids_is_refused(tiny_model, tmp_path):
    rows = release_rows()[:3] + release_rows()[:1]
    result = train(tiny_model, write_jsonl(tmp_path / "r.jsonl", rows), tmp_path)
    assert result.exit_code == 2 and "r.jsonl:4: prompt_id" in result.stderr and "the one on line 1" in result.stderr


def test_a_repeat_across_files_names_the_first_file(tiny_model, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", native_rows(2))
    second = write_jsonl(tmp_path / "b.jsonl", native_rows(3)[2:] + native_rows(1))
    encoder = QuadrupleEncoder(load_tokenizer(str(tiny_model)), max_length=48, max_prompt_length=24)
    with pytest.raises(InputError) as raised:
        load_quadruple_dataset([first, second], encoder)
    assert str(raised.value) == f"{second}:2: prompt_id 'p0' repeats the one on {first}:1"


def test_sft_rows_repeating_a_prompt_are_trained_on_and_counted(tiny_model, tmp_path):
    rows = [{"prompt_id": "a", "prompt": "reverse abc", "response": "cba"},
            {"prompt_id": "a", "prompt": "reverse abc", "response": "c b a"},
            {"prompt_id": "b", "prompt": "reverse xy", "response": "yx"}]
    result = CliRunner().invoke(app, ["sft", "--model", str(tiny_model),
                                      "--data", str(write_jsonl(tmp_path / "s.jsonl", rows)),
                                      "--output", str(tmp_path / "out"), "--max-steps", "1", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "1 of 3 SFT rows repeat a prompt_id of an earlier row" in result.stderr


def test_a_byte_that_is_not_utf8_names_its_line_and_column(tiny_model, tmp_path):
    lines = [json.dumps(row).encode() for row in native_rows(3)]
    lines[1] = lines[1].replace(b"reverse", b"rev\xffrse")
    (tmp_path / "q.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = train(tiny_model, tmp_path / "q.jsonl", tmp_path)
    assert result.exit_code == 2
    column = lines[1].index(b"\xff") + 1
    assert result.stderr == f"error: {tmp_path / 'q.jsonl'}:2: not UTF-8 text (byte 0xff at column {column})\n"
