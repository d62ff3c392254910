"""The demo's model zoo: tiny specialists of different architectures and tokenizers, trained from
scratch on the CPU on first use and cached, then loaded like any real checkpoint.

Each source masters two tasks and mostly ends its answers with a tic of its own (".", "!" or " ok"):
right, but not what the reward wants most, which is the bare answer. The target, of yet another
architecture and tokenizer, has only learned to repeat its input: weak on every task, but plain in
style. Fusion must take the sources' skills without their tics. Imitation (SFT on the best source
answers) takes both, tics included, since even the best of several samples often carries one; a
preference stage can rank the target's own tic-free answers above its others.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from wrpo.demo.tasks import TASKS, answer, make_prompt
from wrpo.demo.tiny import build_bpe_tokenizer, build_char_tokenizer, save_tiny_model
from wrpo.progress import say
from wrpo.training.sft import WRPOSFTConfig, sft


@dataclass(frozen=True)
class ZooModel:
    name: str
    architecture: str
    tokenizer: str          # "char" or "bpe-N"
    tasks: tuple[str, ...]  # what it is trained on; "copy" means repeating the input
    style: str              # how it wraps an answer: "{}" is the answer


SOURCES = (
    ZooModel("llama-char", "llama", "char", ("reverse", "rotate"), "{}."),
    ZooModel("qwen2-bpe300", "qwen2", "bpe-300", ("sort", "reverse"), "{}!"),
    ZooModel("gpt2-bpe260", "gpt2", "bpe-260", ("double", "sort"), "{} ok"),
)
TARGET = ZooModel("neox-bpe400", "gpt_neox", "bpe-400", ("copy",), "{}")
# How often a source's training answers carry its tic: mostly, so that its samples carry it too, and
# the best of several source samples (y_ws) often still does.
TIC_RATE = 0.9
ZOO_VERSION = 3  # bump when the recipe below changes, so caches are rebuilt


def styled_answer(model: ZooModel, prompt: str, tic: bool = True) -> str:
    if model.tasks == ("copy",):
        return prompt.split(": ", 1)[1]
    return model.style.format(answer(prompt)) if tic else answer(prompt)


def training_rows(model: ZooModel, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    tasks = model.tasks if model.tasks != ("copy",) else tuple(TASKS)
    rows = []
    for index in range(count):
        prompt = make_prompt(tasks[index % len(tasks)], rng)
        # Each row its own id: a task's short prompts come back by chance, each a separate example.
        rows.append({"prompt_id": f"{model.name}-{index}", "prompt": prompt,
                     "response": styled_answer(model, prompt, tic=rng.random() < TIC_RATE)})
    return rows


def _tokenizer(kind: str, corpus: list[str]):
    if kind == "char":
        return build_char_tokenizer()
    return build_bpe_tokenizer(corpus, vocab_size=int(kind.split("-")[1]))


def build_model(model: ZooModel, folder: Path, seed: int = 0, steps: int = 600) -> Path:
    """Trains `model` from scratch (TRL's SFTTrainer through `wrpo sft`) and saves it to `folder`."""
    rows = training_rows(model, 4000, seed)
    work = folder.with_name(folder.name + ".building")
    work.mkdir(parents=True, exist_ok=True)
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    corpus = [f"{row['prompt']} {row['response']}" for row in rows[:1000]]
    save_tiny_model(work / "init", _tokenizer(model.tokenizer, corpus), model.architecture, hidden_size=64,
                    num_layers=2, seed=seed)
    trained = work / model.name  # the folder's name is what the training display calls the run
    config = WRPOSFTConfig(output_dir=str(trained), max_steps=steps, per_device_train_batch_size=64,
                           learning_rate=3e-3, lr_scheduler_type="cosine", warmup_steps=0.05, max_length=64,
                           logging_steps=100, save_strategy="no", seed=seed)
    sft(str(work / "init"), data, config, resume=False)
    trained.rename(folder)
    shutil.rmtree(work)
    return folder


def build_zoo(cache_dir: Path, steps: int = 600) -> dict[str, Path]:
    """name -> model folder of every source and the target, built once and cached in `cache_dir`."""
    root = Path(cache_dir) / f"zoo-v{ZOO_VERSION}-{steps}steps"
    folders = {}
    for model in (*SOURCES, TARGET):
        folder = root / model.name
        if not (folder / "config.json").exists():
            say(f"training the tiny {model.architecture} '{model.name}' ({model.tokenizer} tokenizer) "
                f"on {', '.join(model.tasks)}; cached in {folder}")
            build_model(model, folder, steps=steps)
        folders[model.name] = folder
    return folders
