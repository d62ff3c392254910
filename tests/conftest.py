import json
import os
from pathlib import Path

import psutil
import pytest

# Nothing may reach a model hub: tiny models are built here and loaded from disk. Nor may vLLM send
# its usage statistics anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["VLLM_NO_USAGE_STATS"] = "1"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from slurm_cluster import slurm_cluster, slurm_env  # noqa: E402, F401  (fixtures of the slurm tier)
from wrpo.demo.run import DemoSize, run_demo  # noqa: E402
from wrpo.demo.tiny import (  # noqa: E402
    build_bpe_tokenizer,
    build_char_tokenizer,
    save_tiny_llama,
    save_tiny_model,
    tiny_config,
)
from wrpo.generation.settings import SamplingSettings  # noqa: E402

WORDS = ["apple", "grape", "melon", "lemon", "peach", "mango", "kiwi", "plum", "fig", "date", "lime", "pear"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny Llama with a character tokenizer and a chat template, saved like a real checkpoint."""
    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def engine_model(tmp_path_factory) -> Path:
    """A tiny Llama for vLLM: heads 64 wide (hidden size 256, 4 heads; vLLM's CPU attention refuses
    tiny_model's 8), its weights drawn wider than transformers' default (std 0.5, not 0.02) so that
    its greedy answers differ from prompt to prompt (with 0.02 most are 'dddddddd')."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = build_char_tokenizer()
    config = tiny_config("llama", tokenizer, hidden_size=256)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-llama-64"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_without_template(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-plain", seed=1, chat_template=False)


def native_rows(count: int = len(WORDS)) -> list[dict]:
    return [{"prompt_id": f"p{i}", "prompt": f"reverse {w}", "chosen_source": w[::-1],
             "chosen_target": w[::-1][:-1] + "x", "rejected": w, "meta": {"source_model": "s1"}}
            for i, w in enumerate(WORDS[:count])]


def release_rows() -> list[dict]:
    return [{"prompt": {"role": "user", "content": f"reverse {w}"},
             "chosen": [{"role": "assistant", "content": w[::-1]},
                        {"role": "assistant", "content": w[::-1][:-1] + "x"}],
             "rejected": [{"role": "assistant", "content": w}]} for w in WORDS]


def scorers_env(env: dict) -> dict:
    """`env` with tests/ first on PYTHONPATH, for a wrpo process that a test starts with --judge scorers:NAME."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))}


def gone(process: psutil.Process) -> bool:
    """Dead: ended, or a zombie not yet reaped by its new parent."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def native_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "native.jsonl", native_rows())


@pytest.fixture
def release_data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "release.jsonl", release_rows())


TINY = SamplingSettings(n=3, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=1)


def prompts_file(path, words=WORDS):
    return write_jsonl(path, [{"prompt_id": f"w{i}", "prompt": f"reverse {w}"} for i, w in enumerate(words)])


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """Two sources and a target of three architectures and three tokenizers."""
    root = tmp_path_factory.mktemp("zoo")
    corpus = [f"reverse {w} {w[::-1]}" for w in WORDS * 5]
    return {
        "llama-char": save_tiny_model(root / "llama-char", build_char_tokenizer(), "llama", seed=1),
        "gpt2-bpe": save_tiny_model(root / "gpt2-bpe", build_bpe_tokenizer(corpus, 300), "gpt2", seed=2),
        "qwen2-bpe": save_tiny_model(root / "qwen2-bpe", build_bpe_tokenizer(corpus, 280), "qwen2", seed=3),
    }



# `wrpo demo` at a size a test can run: 60 training prompts, 16 held out, a few steps of everything.
SMALL_DEMO = DemoSize(prompts=60, eval_prompts=16, zoo_steps=30, sft_steps=10, wrpo_epochs=1)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """The demo at SMALL_DEMO, run once from a folder of its own with a relative output (as `make demo`
    gives it): (that folder, its output, the report). The ablation tests start from its recipe."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        report = run_demo(Path("demo"), seed=0, cache_dir=root / "cache", size=SMALL_DEMO)
    return root, root / "demo", report
