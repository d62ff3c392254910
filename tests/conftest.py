import json
import os
from pathlib import Path

import pytest

# Nothing may reach a model hub: tiny models are built here and loaded from disk.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from wrpo.demo.tiny import save_tiny_llama  # noqa: E402

WORDS = ["apple", "grape", "melon", "lemon", "peach", "mango", "kiwi", "plum", "fig", "date", "lime", "pear"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny Llama with a character tokenizer and a chat template, saved like a real checkpoint."""
    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def tiny_model_without_template(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-plain", seed=1, chat_template=False)


def native_rows(count: int = len(WORDS)) -> list[dict]:
    return [{"prompt_id": f"p{i}", "prompt": f"reverse {w}", "chosen_source": w[::-1],
             "chosen_target": w[::-1][:-1] + "x", "rejected": w, "meta": {"source_model": "s1"}}
            for i, w in enumerate(WORDS[:count])]


def release_rows() -> list[dict]:
    return [{"prompt": {"role": "user", "content": f"reverse {w}"},
             "chosen": [{"role": "assistant", "content": w[::-1]}, {"role": "assistant", "content": w[::-1][:-1] + "x"}],
             "rejected": [{"role": "assistant", "content": w}]} for w in WORDS]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def native_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "native.jsonl", native_rows())


@pytest.fixture
def release_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "release.jsonl", release_rows())
