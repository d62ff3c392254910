"""Training throughput and peak memory: wrpo's trainer against a naive WRPO trainer and TRL's DPOTrainer.

    python benchmarks/train_throughput.py [--repeats 3] [--examples 64] [--batch-size 8]

One run builds a Llama-architecture model with a 32k vocabulary (sized for 2 CPU cores) and synthetic
quadruples whose prompt and response lengths follow UltraFeedback's shape, scaled down (log-normal,
medians 40 and 80 tokens instead of ~160 and ~320). Every trainer then runs one epoch over the same
examples with the same batch size, each in a fresh process (so peak memory is its own), interleaved
over repeats; the table reports medians:

  wrpo         wrpo's WRPOTrainer with its defaults (reference log-probs precomputed once, shared prompt,
               chunked output head, length-grouped batches)
  naive        the same trainer with every technique off: the paper code's way (three padded prompt +
               response rows, full float32 logits, a reference forward every step, random batches)
  trl-default  TRL's DPOTrainer on (y_ws, y_l) pairs with its defaults (bf16 autocast, gradient checkpointing)
  trl-fast     TRL's DPOTrainer with its fastest CPU settings (fp32, no gradient checkpointing)

examples/s counts training steps only; wrpo's one-time reference pass is reported beside it, and in
"incl. precompute". Peak RSS is the process's maximum resident memory; "training" is that peak minus
the resident memory once the model is loaded, which is what the trainers themselves add.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNNERS = ("wrpo", "naive", "trl-default", "trl-fast")
VOCAB = 32_000


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(work: Path, examples: int, seed: int) -> None:
    """The model, tokenizer and quadruples every runner loads from disk."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(VOCAB - len(specials))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(work / "model")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(work / "model")

    rng = random.Random(seed)

    def text(median: int, cap: int) -> str:
        length = max(4, min(cap, round(rng.lognormvariate(math.log(median), 0.6))))
        return " ".join(f"w{rng.randrange(VOCAB - 4)}" for _ in range(length))

    with (work / "quadruples.jsonl").open("w") as handle:
        for index in range(examples):
            handle.write(json.dumps({"prompt_id": str(index), "prompt": text(40, 200), "chosen_source": text(80, 320),
                                     "chosen_target": text(80, 320), "rejected": text(80, 320)}) + "\n")


def measure(make_trainer, examples: int) -> dict:
    """Times a trainer's construction (setup) and one train() call; notes the memory before them."""
    loaded = resident_mb()
    start = time.perf_counter()
    trainer = make_trainer()
    setup = time.perf_counter() - start
    start = time.perf_counter()
    trainer.train()
    return {"train_s": time.perf_counter() - start, "setup_s": setup, "loaded_mb": loaded, "examples": examples}


def run_wrpo(work: Path, batch_size: int, naive: bool) -> dict:
    import torch

    from wrpo.data import QuadrupleEncoder, load_quadruple_dataset
    from wrpo.modeling import load_causal_lm, load_tokenizer
    from wrpo.training import WRPOConfig, WRPOTrainer

    tokenizer = load_tokenizer(str(work / "model"))
    dataset = load_quadruple_dataset(work / "quadruples.jsonl", QuadrupleEncoder(tokenizer, 1024, 512))
    model = load_causal_lm(str(work / "model"), dtype=torch.float32)
    switches = dict(precompute_ref_logps=False, share_prompt=False, logps_chunk_size=0,
                    train_sampling_strategy="random") if naive else {}
    args = WRPOConfig(output_dir=str(work / "out-wrpo"), per_device_train_batch_size=batch_size,
                      per_device_eval_batch_size=batch_size, num_train_epochs=1, learning_rate=1e-5, beta=0.1,
                      save_strategy="no", logging_steps=1000, report_to="none", disable_tqdm=True, **switches)
    return measure(lambda: WRPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer),
                   len(dataset))


def run_trl(work: Path, batch_size: int, fast: bool) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in (work / "quadruples.jsonl").read_text().splitlines()]
    pairs = datasets.Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen_source"],
                                         "rejected": r["rejected"]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    # Its defaults (bf16 autocast) refuse a CPU unless use_cpu is set.
    settings = dict(bf16=False, gradient_checkpointing=False) if fast else dict(use_cpu=not torch.cuda.is_available())
    args = DPOConfig(output_dir=str(work / "out-trl"), per_device_train_batch_size=batch_size, num_train_epochs=1,
                     learning_rate=1e-5, beta=0.1, save_strategy="no", logging_steps=1000, report_to="none",
                     disable_tqdm=True, max_length=1024, **settings)
    return measure(lambda: DPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer),
                   len(rows))


def child(runner: str, work: Path, batch_size: int) -> None:
    if runner in ("wrpo", "naive"):
        result = run_wrpo(work, batch_size, naive=runner == "naive")
    else:
        result = run_trl(work, batch_size, fast=runner == "trl-fast")
    result["peak_mb"] = peak_mb()
    print("RESULT " + json.dumps(result))


def report(results: dict[str, list[dict]]) -> str:
    rows = {}
    for runner, runs in results.items():
        examples = runs[0]["examples"]
        rows[runner] = {"examples_per_s": statistics.median(examples / r["train_s"] for r in runs),
                        "with_precompute": statistics.median(examples / (r["train_s"] + r["setup_s"]) for r in runs),
                        "setup_s": statistics.median(r["setup_s"] for r in runs),
                        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
                        "training_mb": statistics.median(r["peak_mb"] - r["loaded_mb"] for r in runs)}
    trl = [runner for runner in rows if runner.startswith("trl")]
    fastest_trl = max(trl, key=lambda runner: rows[runner]["examples_per_s"]) if trl else None
    lines = ["| trainer | examples/s | incl. setup | setup s | peak RSS MB | training MB | speed vs naive | "
             f"speed vs {fastest_trl or 'TRL'} | training memory vs naive |", "|---|---|---|---|---|---|---|---|---|"]

    def ratio(row, other, key):
        return f"{row[key] / rows[other][key]:.2f}x" if other in rows else "-"

    for runner, row in rows.items():
        lines.append(f"| {runner} | {row['examples_per_s']:.2f} | {row['with_precompute']:.2f} | "
                     f"{row['setup_s']:.1f} | "
                     f"{row['peak_mb']:.0f} | {row['training_mb']:.0f} | {ratio(row, 'naive', 'examples_per_s')} | "
                     f"{ratio(row, fastest_trl, 'examples_per_s')} | {ratio(row, 'naive', 'training_mb')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/train_throughput.json"))
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work, args.batch_size)
        return

    runners = args.runners.split(",")
    results: dict[str, list[dict]] = {runner: [] for runner in runners}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        build(work, args.examples, args.seed)
        for repeat in range(args.repeats):
            for runner in runners:
                done = subprocess.run([sys.executable, __file__, "--child", runner, "--work", str(work),
                                       "--batch-size", str(args.batch_size)], capture_output=True, text=True)
                lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if done.returncode != 0 or not lines:
                    sys.exit(f"{runner} failed:\n{done.stderr[-3000:]}")
                results[runner].append(json.loads(lines[-1][len("RESULT "):]))
                print(f"repeat {repeat + 1}/{args.repeats} {runner}: {results[runner][-1]}", flush=True)
    table = report(results)
    print(table)
    args.output.write_text(json.dumps({"settings": vars(args) | {"output": str(args.output)}, "results": results,
                                       "table": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
