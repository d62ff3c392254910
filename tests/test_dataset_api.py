"""The Python API a TRL user knows: WRPOTrainer and train() take a `datasets.Dataset` (or a list of
dicts) of native or release-format rows, read through the same parsing and checks as a data file."""

import json

import datasets
import pytest
import torch

from conftest import native_rows, release_rows, write_jsonl
from wrpo.errors import InputError
from wrpo.modeling import load_causal_lm, load_tokenizer
from wrpo.training import WRPOConfig, WRPOTrainer, train


def config(output_dir, **overrides):
    settings = dict(output_dir=str(output_dir), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
                    beta=0.5, alpha=0.6, max_length=48, max_prompt_length=24, warmup_steps=0, save_steps=100,
                    disable_tqdm=True,
                    report_to="none", seed=7)
    return WRPOConfig(**{**settings, **overrides})


def read_metrics(output_dir):
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def trajectory(output_dir):
    """Per-step loss and reward margins: what a changed example, order or batch would move."""
    return [value for m in read_metrics(output_dir) for value in (m["loss"], m["rewards/margins"], m["logps/rejected"])]


def varied_native_rows():
    rows = native_rows()
    rows[0]["meta"]["source_scores"] = [0.9]  # one row only: Arrow gives the others source_scores None
    rows[1]["chosen_source"] = [rows[1]["chosen_source"], "second best"]  # a list in every row below
    for row in rows:
        if not isinstance(row["chosen_source"], list):
            row["chosen_source"] = [row["chosen_source"]]
    return rows


@pytest.mark.parametrize("rows, by_path", [(varied_native_rows, False), (release_rows, True)],
                         ids=["native", "release"])
def test_a_dataset_trains_exactly_as_its_jsonl_file(tiny_model, tmp_path, rows, by_path):
    rows = rows()
    train(str(tiny_model), write_jsonl(tmp_path / "q.jsonl", rows), config(tmp_path / "from-file"))

    if by_path:  # as TRL's trainers take it: the model by its path, the tokenizer loaded from there
        trainer = WRPOTrainer(model=str(tiny_model), args=config(tmp_path / "from-dataset"),
                              train_dataset=datasets.Dataset.from_list(rows))
    else:
        trainer = WRPOTrainer(model=load_causal_lm(str(tiny_model), dtype=torch.float32),
                              args=config(tmp_path / "from-dataset"), train_dataset=datasets.Dataset.from_list(rows),
                              processing_class=load_tokenizer(str(tiny_model)))
    trainer.train()

    from_file, from_dataset = trajectory(tmp_path / "from-file"), trajectory(tmp_path / "from-dataset")
    losses = from_file[::3]
    assert len(losses) == 4 and losses[-1] < losses[1] < losses[0]  # every step learnt: the check is not vacuous
    assert from_dataset == pytest.approx(from_file, abs=1e-6)


def test_train_takes_a_dataset_or_a_list_of_rows(tiny_model, tmp_path):
    rows = native_rows()
    train(str(tiny_model), write_jsonl(tmp_path / "q.jsonl", rows), config(tmp_path / "from-file"))
    expected = trajectory(tmp_path / "from-file")

    result = train(str(tiny_model), datasets.Dataset.from_list(rows), config(tmp_path / "dataset"))
    assert trajectory(tmp_path / "dataset") == pytest.approx(expected, abs=1e-6)
    assert (tmp_path / "dataset" / "reference-cache").is_dir() and (tmp_path / "dataset" / "model.safetensors").exists()
    # The same rows again: the finished run is recognised by their content and left as it is.
    assert train(str(tiny_model), datasets.Dataset.from_list(rows), config(tmp_path / "dataset")).already_finished
    assert not result.already_finished

    train(str(tiny_model), rows, config(tmp_path / "list"))
    assert trajectory(tmp_path / "list") == pytest.approx(expected, abs=1e-6)


def test_eval_datasets_get_reference_logps_and_a_dict_of_them_is_named_in_the_metrics(tiny_model, tmp_path):
    rows = native_rows()
    trainer = WRPOTrainer(model=str(tiny_model), args=config(tmp_path / "out"),
                          train_dataset=datasets.Dataset.from_list(rows[:8]),
                          eval_dataset={"held": datasets.Dataset.from_list(rows[8:]), "seen": rows[:4]})
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_held_rewards/margins"] > 0 and metrics["eval_seen_rewards/margins"] > 0
    assert "eval_held_loss" in metrics and metrics["eval_held_alpha"] == pytest.approx(0.6)


def trainer_on(tiny_model, tmp_path, rows):
    return WRPOTrainer(model=str(tiny_model), args=config(tmp_path / "out"), train_dataset=rows)


def test_a_bad_dataset_row_is_refused_naming_its_index(tiny_model, tmp_path):
    rows = native_rows(5)
    del rows[2]["rejected"]  # Arrow fills the missing column of that row with None
    with pytest.raises(InputError) as raised:
        trainer_on(tiny_model, tmp_path, datasets.Dataset.from_list(rows))
    assert str(raised.value) == "train_dataset[2]: missing field 'rejected'"

    rows = release_rows()[:4]
    rows[3]["chosen"][1]["content"] = "  "
    with pytest.raises(InputError, match=r"^train_dataset\[3\]: 'chosen\[1\]' is an empty response$"):
        trainer_on(tiny_model, tmp_path, datasets.Dataset.from_list(rows))

    rows = native_rows(4)
    rows[3]["prompt_id"] = rows[1]["prompt_id"]
    with pytest.raises(InputError) as raised:
        trainer_on(tiny_model, tmp_path, datasets.Dataset.from_list(rows))
    assert str(raised.value) == "train_dataset[3]: prompt_id 'p1' repeats the one on train_dataset[1]"

    rows = native_rows(3)
    rows[1]["chosen_target"] = ""
    with pytest.raises(InputError, match=r"^data\[1\]: 'chosen_target' is an empty response$"):
        train(str(tiny_model), rows, config(tmp_path / "list"))

    with pytest.raises(InputError, match=r"^train_dataset\[1\]: expected a row of named fields \(a dict\), got str$"):
        trainer_on(tiny_model, tmp_path, [native_rows(1)[0], "not a row"])
    with pytest.raises(InputError, match=r"^train_dataset: a DatasetDict \(splits 'train'\), not one split"):
        trainer_on(tiny_model, tmp_path, datasets.DatasetDict({"train": datasets.Dataset.from_list(native_rows())}))
