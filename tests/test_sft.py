"""`wrpo sft` on tiny local models: the command, its settings, the tokens it trains on."""

import contextlib

import pytest
from typer.testing import CliRunner

from conftest import WORDS, read, write_jsonl
from wrpo.cli import app


def test_sft_through_the_command_line(zoo, tmp_path):
    sft_rows = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": f"reverse {w}", "response": w[::-1]} for w in WORDS])
    result = CliRunner().invoke(app, ["sft", "--model", str(zoo["gpt2-bpe"]), "--data", str(sft_rows), "--output",
                                      str(tmp_path / "sft"), "--max-steps", "2", "--batch-size", "4", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    assert len(read(tmp_path / "sft" / "metrics.jsonl")) == 2
    assert (tmp_path / "sft" / "model.safetensors").exists()


def test_sft_honours_either_name_of_activation_checkpointing(tmp_path):
    """`activation_checkpointing` (wrpo's name, transformers' from 5.2x) and `gradient_checkpointing` (the older
    one, which transformers 5.2x deprecates with a warning) both turn it on, on every transformers supported."""
    from wrpo.training.compat import NAMES_ACTIVATION_CHECKPOINTING, checkpointing_on
    from wrpo.training.sft import WRPOSFTConfig

    assert checkpointing_on(WRPOSFTConfig(output_dir=str(tmp_path), activation_checkpointing=True))
    with pytest.warns(FutureWarning, match="`gradient_checkpointing` is deprecated") if NAMES_ACTIVATION_CHECKPOINTING \
            else contextlib.nullcontext():
        assert checkpointing_on(WRPOSFTConfig(output_dir=str(tmp_path), gradient_checkpointing=True))
    assert not checkpointing_on(WRPOSFTConfig(output_dir=str(tmp_path)))


def test_sft_trains_on_response_tokens_only(zoo, tmp_path):
    from trl import SFTTrainer

    from wrpo.modeling import load_causal_lm, load_tokenizer
    from wrpo.training.sft import WRPOSFTConfig, load_sft_dataset

    tokenizer = load_tokenizer(str(zoo["llama-char"]))
    rows = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "reverse apple", "response": "elppa"}])
    trainer = SFTTrainer(model=load_causal_lm(str(zoo["llama-char"])), processing_class=tokenizer,
                         args=WRPOSFTConfig(output_dir=str(tmp_path / "out")),
                         train_dataset=load_sft_dataset(rows, tokenizer))
    # The collated batch, what the loss sees (TRL puts the labels in the dataset or makes them here).
    batch = trainer.data_collator([trainer.train_dataset[0]])
    tokens, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    trained = [token for token, label in zip(tokens, labels, strict=True) if label != -100]
    untrained = [token for token, label in zip(tokens, labels, strict=True) if label == -100]
    assert tokenizer.decode(trained) == "elppa</s>"
    assert tokenizer.decode(untrained) == "<|user|>reverse apple</s><|assistant|>"
