"""Training throughput, peak memory and model-FLOP utilisation over a grid of workload shapes: wrpo's
trainer against a naive WRPO trainer and TRL's DPOTrainer.

    python benchmarks/train_throughput.py [--points all] [--runners ...] [--repeats 3] [--examples 64] [--batch-size 8]

Each grid point is a Llama-architecture model (4 layers; width 256 or 512; vocabulary 8k, 32k or 128k)
and synthetic quadruples: prompts of 20-80 words, responses of 30-150 words (short) or 150-400 (long),
one token per word. Every trainer runs one epoch over the same examples with the same batch size, each
in a fresh process, interleaved over repeats; the table reports medians:

  wrpo          wrpo's WRPOTrainer with its defaults (padding-free packed rows, reference log-probs
                precomputed once, chunked output head, length-grouped batches)
  wrpo-compile  the same with torch_compile=True (not in the default runners: see --runners)
  naive         the same trainer with every technique off: the paper code's way (three padded prompt +
                response rows, full float32 logits, a reference forward every step, random batches)
  trl-default   TRL's DPOTrainer on (y_ws, y_l) pairs with its defaults (bf16 autocast)
  trl-fast      TRL's DPOTrainer with its fastest CPU settings (fp32)

whole/s: examples over the whole process, from interpreter start to exit (imports, loading, encoding,
reference pass, training). steady/s: batch size over the median training step after the first. MFU: the
model FLOPs an epoch needs (forward and backward over each distinct token once: the prompt once, each
response once, the output head on response tokens only, causal attention pairs) over the steady epoch
time, against the fp32 matmul peak this run measures on this machine. TRL's examples are pairs (two
responses, no y_wt), so its FLOPs and examples/s count pairs. peak MB is the process's maximum resident
memory.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import TrainerCallback

RUNNERS = ("wrpo", "wrpo-compile", "naive", "trl-default", "trl-fast")
DEFAULT_RUNNERS = ("wrpo", "naive", "trl-default", "trl-fast")
PROMPT_WORDS = (20, 80)


@dataclass(frozen=True)
class Point:
    vocab: int
    hidden: int
    response_words: tuple[int, int]
    layers: int = 4

    @property
    def heads(self) -> int:
        return self.hidden // 64


SHORT, LONG = (30, 150), (150, 400)
POINTS = {
    "8k-short-256": Point(8_000, 256, SHORT),
    "8k-long-256": Point(8_000, 256, LONG),
    "32k-short-256": Point(32_000, 256, SHORT),
    "128k-short-256": Point(128_000, 256, SHORT),
    "8k-short-512": Point(8_000, 512, SHORT),
    "32k-short-512": Point(32_000, 512, SHORT),
}


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phase(phases: dict, name: str) -> None:
    """Resident memory (MB) and seconds since the parent launched this process, at the end of a phase."""
    phases[name] = (resident_mb(), time.time() - phases["launched"])


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops(size: int = 2048, seconds: float = 3.0) -> float:
    """The best fp32 matmul rate of several timed windows, on every thread torch uses."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    best = 0.0
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            torch.mm(a, b)
            count += 1
        best = max(best, 2 * size**3 * count / (time.perf_counter() - start) / 1e9)
    return best


def build(work: Path, point: Point, examples: int, seed: int) -> None:
    """The model, tokenizer and quadruples every runner loads from disk."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    words = [f"w{i}" for i in range(point.vocab - len(specials))]
    backend = Tokenizer(models.WordLevel(vocab={token: i for i, token in enumerate(specials + words)},
                                         unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(work / "model")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=point.vocab, hidden_size=point.hidden, intermediate_size=point.hidden * 11 // 4,
                         num_hidden_layers=point.layers, num_attention_heads=point.heads,
                         num_key_value_heads=point.heads, max_position_embeddings=1024, pad_token_id=0,
                         bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(work / "model")

    rng = random.Random(seed)

    def text(bounds: tuple[int, int]) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(*bounds)))

    with (work / "quadruples.jsonl").open("w") as handle:
        for index in range(examples):
            handle.write(json.dumps({"prompt_id": str(index), "prompt": text(PROMPT_WORDS),
                                     "chosen_source": text(point.response_words),
                                     "chosen_target": text(point.response_words),
                                     "rejected": text(point.response_words)}) + "\n")


def epoch_flops(work: Path, point: Point, responses: tuple[str, ...]) -> float:
    """Model FLOPs of one training epoch (forward + backward = 3 forwards) over the given responses of
    every row: each distinct token once through the layers, response tokens through the output head."""
    hidden, layers = point.hidden, point.layers
    layer_params = 4 * hidden * hidden + 3 * hidden * (hidden * 11 // 4)
    total = 0.0
    for line in (work / "quadruples.jsonl").read_text().splitlines():
        row = json.loads(line)
        prompt = len(row["prompt"].split())
        lengths = [len(row[key].split()) for key in responses]
        tokens = prompt + sum(lengths)
        # Attention pairs: the prompt causally, each response over the prompt and its own prefix.
        pairs = prompt * (prompt + 1) / 2 + sum(n * prompt + n * (n + 1) / 2 for n in lengths)
        forward = (2 * layer_params * layers * tokens + 2 * point.vocab * hidden * sum(lengths)
                   + 4 * hidden * layers * pairs)
        total += 3 * forward
    return total


class StepTimes(TrainerCallback):
    """Each optimizer step's wall time."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def run_wrpo(work: Path, batch_size: int, runner: str, phases: dict) -> tuple:
    import torch

    from wrpo.data import QuadrupleEncoder, load_quadruple_dataset
    from wrpo.modeling import load_causal_lm, load_tokenizer
    from wrpo.training import WRPOConfig, WRPOTrainer

    phase(phases, "imports")
    tokenizer = load_tokenizer(str(work / "model"))
    model = load_causal_lm(str(work / "model"), dtype=torch.float32)
    phase(phases, "model loaded")
    dataset = load_quadruple_dataset(work / "quadruples.jsonl", QuadrupleEncoder(tokenizer, 1024, 512))
    phase(phases, "data encoded")
    switches = {"naive": dict(precompute_ref_logps=False, padding_free=False, share_prompt=False, logps_chunk_size=0,
                              train_sampling_strategy="random"),
                "wrpo-compile": dict(torch_compile=True)}.get(runner, {})
    args = WRPOConfig(output_dir=str(work / f"out-{runner}"), per_device_train_batch_size=batch_size,
                      num_train_epochs=1, learning_rate=1e-5, beta=0.1, save_strategy="no", logging_steps=1000,
                      report_to="none", disable_tqdm=True, **switches)
    steps = StepTimes()
    trainer = WRPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[steps])
    phase(phases, "trainer built")
    return trainer, steps, len(dataset)


def run_trl(work: Path, batch_size: int, fast: bool, phases: dict) -> tuple:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    phase(phases, "imports")
    rows = [json.loads(line) for line in (work / "quadruples.jsonl").read_text().splitlines()]
    pairs = datasets.Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen_source"],
                                         "rejected": r["rejected"]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    phase(phases, "model loaded")
    # Its defaults (bf16 autocast) refuse a CPU unless use_cpu is set.
    settings = dict(bf16=False, gradient_checkpointing=False) if fast else dict(use_cpu=not torch.cuda.is_available())
    args = DPOConfig(output_dir=str(work / "out-trl"), per_device_train_batch_size=batch_size, num_train_epochs=1,
                     learning_rate=1e-5, beta=0.1, save_strategy="no", logging_steps=1000, report_to="none",
                     disable_tqdm=True, max_length=1024, **settings)
    steps = StepTimes()
    trainer = DPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer, callbacks=[steps])
    phase(phases, "trainer built")
    return trainer, steps, len(rows)


def child(runner: str, work: Path, batch_size: int, launched: float) -> None:
    phases: dict = {"launched": launched}
    if runner.startswith("trl"):
        trainer, steps, examples = run_trl(work, batch_size, runner == "trl-fast", phases)
    else:
        trainer, steps, examples = run_wrpo(work, batch_size, runner, phases)
    trainer.train()
    phase(phases, "trained")
    phases.pop("launched")
    phases["peak"] = (peak_mb(), phases["trained"][1])
    print("RESULT " + json.dumps({"examples": examples, "step_s": steps.times, "phases": phases}))


def measure(runner: str, work: Path, batch_size: int) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", runner, "--work", str(work),
                           "--batch-size", str(batch_size), "--launched", str(time.time())],
                          capture_output=True, text=True)
    whole = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{runner} failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    return result | {"whole_s": whole, "deepspeed_announced": "real_accelerator" in done.stderr}


def summarise(runs: list[dict], batch_size: int, flops: float, peak_gflops: float) -> dict:
    examples = runs[0]["examples"]
    steady = statistics.median(batch_size / statistics.median(r["step_s"][1:] or r["step_s"]) for r in runs)
    return {"whole_per_s": statistics.median(examples / r["whole_s"] for r in runs), "steady_per_s": steady,
            "peak_mb": statistics.median(r["phases"]["peak"][0] for r in runs),
            "mfu": flops / (examples / steady) / (peak_gflops * 1e9)}


def table(grid: dict[str, dict[str, dict]]) -> str:
    """Markdown rows per point and runner; ratios against that point's naive and fastest TRL runs. MFU is
    taken against the best matmul peak any run measured: a peak measured while another process held a core
    reads low, and the machine's peak is what the trainers could have had."""
    best_peak = max(row["matmul_peak_gflops"] for rows in grid.values() for row in rows.values())
    lines = ["| point | trainer | whole/s | steady/s | peak MB | MFU | whole vs naive | whole vs best TRL | "
             "memory vs naive |", "|---|---|---|---|---|---|---|---|---|"]
    for point, rows in grid.items():
        trl = [rows[r]["whole_per_s"] for r in rows if r.startswith("trl")]
        for runner, row in rows.items():
            vs_naive = f"{row['whole_per_s'] / rows['naive']['whole_per_s']:.2f}x" if "naive" in rows else "-"
            vs_trl = f"{row['whole_per_s'] / max(trl):.2f}x" if trl else "-"
            memory = f"{row['peak_mb'] / rows['naive']['peak_mb']:.2f}x" if "naive" in rows else "-"
            mfu = row["mfu"] * row["matmul_peak_gflops"] / best_peak
            lines.append(f"| {point} | {runner} | {row['whole_per_s']:.2f} | {row['steady_per_s']:.2f} | "
                         f"{row['peak_mb']:.0f} | {mfu:.0%} | {vs_naive} | {vs_trl} | {memory} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="all", help=f"comma-separated, of: {', '.join(POINTS)}")
    parser.add_argument("--runners", default=",".join(DEFAULT_RUNNERS),
                        help=f"comma-separated, of: {', '.join(RUNNERS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/train_throughput.json"))
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work, args.batch_size, args.launched)
        return

    points = list(POINTS) if args.points == "all" else args.points.split(",")
    runners = args.runners.split(",")
    # Runs add to the output file point by point and runner by runner, so a long grid can be run in parts.
    saved = json.loads(args.output.read_text()) if args.output.exists() else {"points": {}}
    for name in points:
        point = POINTS[name]
        raw: dict[str, list[dict]] = {runner: [] for runner in runners}
        peak = matmul_peak_gflops()
        print(f"fp32 matmul peak: {peak:.1f} GFLOP/s", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            build(work, point, args.examples, args.seed)
            for repeat in range(args.repeats):
                for runner in runners:
                    run = measure(runner, work, args.batch_size)
                    raw[runner].append(run)
                    print(f"{name} repeat {repeat + 1}/{args.repeats} {runner}: whole {run['whole_s']:.1f} s, "
                          f"phases (MB, s) {run['phases']}", flush=True)
            entry = saved["points"].setdefault(name, {"shape": asdict(point), "summary": {}, "runs": {}})
            for runner in runners:
                responses = ("chosen_source", "rejected") if runner.startswith("trl") else (
                    "chosen_source", "chosen_target", "rejected")
                entry["summary"][runner] = summarise(raw[runner], args.batch_size,
                                                     epoch_flops(work, point, responses), peak) | {
                    "matmul_peak_gflops": peak, "repeats": args.repeats, "examples": args.examples,
                    "batch_size": args.batch_size}
                entry["runs"][runner] = raw[runner]
        saved["table"] = table({name: entry["summary"] for name, entry in saved["points"].items()})
        args.output.write_text(json.dumps(saved, indent=1) + "\n")
    print(saved["table"])


if __name__ == "__main__":
    main()
