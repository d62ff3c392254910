"""`wrpo demo` (first version): a short WRPO run on a tiny built-in model, rewards before and after.

The task is reversing a word. Each training quadruple holds a correct reversal as the source
response (what a specialist source model would answer), a near miss with one wrong letter as the
target's best response, and the word copied unchanged as its worst. The target is a tiny Llama with
a character tokenizer, saved and loaded back through save_pretrained/from_pretrained. Its held-out
reward (difflib similarity of its greedy answer to the correct reversal, in [0, 1]) is measured
before and after WRPO. Real source and target sampling arrives with the pipeline; this run shows
the trainer end to end in under a minute on a laptop CPU.
"""

from __future__ import annotations

import difflib
import json
import random
from pathlib import Path

from rich.console import Console
from rich.table import Table

from wrpo.demo.tiny import save_tiny_llama
from wrpo.generation.backends import HFGenerator, SamplingSettings
from wrpo.training import WRPOConfig, train

LETTERS = "abcdefghij"
console = Console()


def reversal_prompt(word: str) -> str:
    return f"reverse {word}"


def reversal_reward(answer: str, word: str) -> float:
    """Partial credit: 1.0 for the exact reversal, less the further the answer is from it."""
    return difflib.SequenceMatcher(None, answer, word[::-1]).ratio()


def write_quadruples(path: Path, words: list[str], rng: random.Random) -> None:
    def near_miss(word: str) -> str:
        letters = list(word[::-1])
        position = rng.randrange(len(letters))
        letters[position] = rng.choice(LETTERS.replace(letters[position], ""))
        return "".join(letters)

    with path.open("w") as handle:
        for index, word in enumerate(words):
            handle.write(json.dumps({"prompt_id": f"reverse-{index}", "prompt": reversal_prompt(word),
                                     "chosen_source": word[::-1], "chosen_target": near_miss(word),
                                     "rejected": word}) + "\n")


def mean_reward(model_dir: Path, words: list[str]) -> float:
    generator = HFGenerator(str(model_dir))
    prompts = [generator.prompt_ids(reversal_prompt(word)) for word in words]
    answers = generator.generate(prompts, words, SamplingSettings(n=1, temperature=0.0, max_new_tokens=12))
    return sum(reversal_reward(answer, word) for (answer,), word in zip(answers, words)) / len(words)


def run_demo(output_dir: Path, seed: int = 0, cache_dir: Path | None = None, steps: int = 300,
             train_words: int = 600, eval_words: int = 100) -> dict:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir or Path.home() / ".cache" / "wrpo") / f"demo-target-seed{seed}"
    rng = random.Random(seed)
    words = ["".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6))) for _ in range(train_words + eval_words)]
    train_set, eval_set = words[:train_words], words[train_words:]

    if not (cache_dir / "config.json").exists():
        save_tiny_llama(cache_dir, hidden_size=64, num_layers=2, seed=seed)
    data_path = output_dir / "quadruples.jsonl"
    write_quadruples(data_path, train_set, rng)

    console.print(f"[bold]target[/] tiny Llama at {cache_dir}; reward before WRPO on {eval_words} held-out words…")
    before = mean_reward(cache_dir, eval_set)
    config = WRPOConfig(output_dir=str(output_dir / "target-wrpo"), max_steps=steps, per_device_train_batch_size=16,
                        learning_rate=2e-3, beta=0.5, alpha=0.5, max_length=64, max_prompt_length=32,
                        logging_steps=25, save_steps=steps, seed=seed, report_to="none")
    train(str(cache_dir), data_path, config, resume=False)
    after = mean_reward(output_dir / "target-wrpo", eval_set)

    report = {"models": {"target": {"mean_reward": before}, "target-wrpo": {"mean_reward": after}},
              "task": "reverse a word", "train_quadruples": train_words, "eval_prompts": eval_words,
              "steps": steps, "seed": seed}
    (output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title="held-out reward (1.0 = exact reversal)")
    table.add_column("model")
    table.add_column("mean reward", justify="right")
    table.add_row("target (before WRPO)", f"{before:.3f}")
    table.add_row("target + WRPO", f"{after:.3f}")
    console.print(table)
    console.print(f"report: {output_dir / 'report.json'}; training metrics: {output_dir / 'target-wrpo' / 'metrics.jsonl'}")
    return report
