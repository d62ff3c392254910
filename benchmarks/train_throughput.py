"""Training throughput, peak memory and model-FLOP utilisation over a grid of workload shapes: wrpo's
trainer against a naive WRPO trainer and TRL's DPOTrainer.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--points all] [--runners ...] [--repeats 3]
    python benchmarks/train_throughput.py --smoke [--output PATH]

Each grid point is a Llama-architecture model and synthetic quadruples, one token per word. Every trainer
runs one epoch over the same examples with the same batch size, each in a fresh process, interleaved over
repeats; the table reports medians.

--device cpu (the default): 4-layer models of width 256 or 512 and vocabulary 8k, 32k or 128k, 64
quadruples with prompts of 20-80 words and responses of 30-150 words (short) or 150-400 (long), batch 8,
in fp32 (but for the -bf16 runners and TRL's default). Output: benchmarks/train_throughput.json.
--device cuda: bf16 mixed precision (the Trainer's bf16=True over float32 weights) on one GPU, two points:
1.35b-128k (hidden 2048, 16 layers, untied 128k head; 256 quadruples, responses 100-400, batch 16) and
3b-2048 (a 3B-shaped Llama with grouped-query attention at sequence length up to 2048, micro-batch 2,
gradient accumulation 4, 32 quadruples). Output: benchmarks/train_throughput_cuda.json.
--smoke: every runner once on tiny points, two processes at a time (their times mean nothing), in both
modes, the CUDA mode on the CPU (bf16 autocast) where there is no GPU: a check that the code runs. Its
JSON goes to a temporary folder unless --output says where.

  wrpo            wrpo's WRPOTrainer with its defaults (padding-free packed rows, reference log-probs
                  precomputed once, chunked output head, length-grouped batches)
  wrpo-compile    the same with torch_compile=True (not in the default runners: see --runners)
  naive           the same trainer with every technique off: the paper code's way (three padded prompt +
                  response rows, full float32 logits, a reference forward every step, random batches)
  wrpo-bf16       wrpo and naive with bf16=True: bf16 mixed precision (autocast over float32 weights), the
  naive-bf16      CUDA grid's precision, on the CPU grid (not in the default runners; the CUDA grid skips
                  them: its wrpo and naive are these)
  trl-default     TRL's DPOTrainer on (y_ws, y_l) pairs with its defaults (bf16 autocast)
  trl-fast        TRL's DPOTrainer with its fastest CPU settings (fp32; CPU grid)
  trl-precompute  TRL's defaults with precompute_ref_log_probs=True (CUDA grid)
  trl-liger       the same with use_liger_kernel=True: liger-kernel's RMSNorm, RoPE and SwiGLU kernels (TRL
                  keeps its own chunked loss head). CUDA grid; skipped, with the reason, where they cannot run

A runner that crashes or runs out of memory is a row of the table saying so; the exit status is 1 if one
crashed.

whole/s: examples over the whole process, from interpreter start to exit (imports, loading, encoding,
reference pass, training). steady/s: examples per optimizer step (batch x accumulation) over the median
step after the first (CPU) or the first two (CUDA). MFU: the model FLOPs of the steady steps (forward and
backward over each distinct token of the examples they trained once: the prompt once, each response once,
the output head on response tokens only, causal attention pairs) over those steps' time, against the best
matmul rate measured on this machine (fp32 2048x2048 on a CPU, its fastest, for the bf16 rows too: the
rate they could have had; bf16 8192x8192 on a GPU). TRL's examples are pairs (two responses, no y_wt), so
its FLOPs and examples/s count pairs. Memory: the process's maximum resident MB on a CPU,
torch.cuda.max_memory_allocated (GiB) on a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

RUNNERS = ("wrpo", "wrpo-compile", "naive", "wrpo-bf16", "naive-bf16", "trl-default", "trl-fast", "trl-precompute",
           "trl-liger")
DEFAULT_RUNNERS = {"cpu": ("wrpo", "naive", "trl-default", "trl-fast"),
                   "cuda": ("wrpo", "naive", "trl-default", "trl-precompute", "trl-liger")}
OUTPUTS = {"cpu": Path("benchmarks/train_throughput.json"), "cuda": Path("benchmarks/train_throughput_cuda.json")}


@dataclass(frozen=True)
class Point:
    vocab: int
    hidden: int
    response_words: tuple[int, int]
    layers: int = 4
    heads: int | None = None  # default: one per 64 of width
    kv_heads: int | None = None  # default: as many as heads (multi-head attention)
    intermediate: int | None = None  # default: Llama's hidden * 11 // 4
    prompt_words: tuple[int, int] = (20, 80)
    examples: int = 64
    batch_size: int = 8
    gradient_accumulation: int = 1
    max_length: int = 1024
    max_prompt_length: int = 512

    def __post_init__(self):
        heads = self.heads or self.hidden // 64
        # Frozen: the derived defaults are set the way dataclasses set fields.
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "kv_heads", self.kv_heads or heads)
        object.__setattr__(self, "intermediate", self.intermediate or self.hidden * 11 // 4)

    @property
    def step_examples(self) -> int:
        return self.batch_size * self.gradient_accumulation


SHORT, LONG = (30, 150), (150, 400)
POINTS = {
    "cpu": {
        "8k-short-256": Point(8_000, 256, SHORT),
        "8k-long-256": Point(8_000, 256, LONG),
        "32k-short-256": Point(32_000, 256, SHORT),
        "128k-short-256": Point(128_000, 256, SHORT),
        "8k-short-512": Point(8_000, 512, SHORT),
        "32k-short-512": Point(32_000, 512, SHORT),
    },
    "cuda": {
        # shared/GPU.md's point: 1.35B parameters, 0.52B of them in the untied 128k embedding and head.
        "1.35b-128k": Point(128_000, 2048, (100, 400), layers=16, examples=256, batch_size=16),
        # Llama-3.2-3B's layers (with an untied head: 3.6B parameters) at the paper's WRPO lengths, four
        # optimizer steps.
        "3b-2048": Point(128_000, 3072, (400, 1400), layers=28, heads=24, kv_heads=8, intermediate=8192,
                         prompt_words=(200, 600), examples=32, batch_size=2, gradient_accumulation=4,
                         max_length=2048, max_prompt_length=1800),
    },
}
# Every runner once (each process spends about 10 s importing, so two at a time: under a minute on 2 idle
# cores): the CPU mode's own paths (fp32 wrpo, trl-fast) and the CUDA mode's runners.
SMOKE_POINTS = {
    "cpu": {"smoke-cpu": Point(1_000, 64, (5, 30), layers=2, prompt_words=(5, 20), examples=8, batch_size=2)},
    "cuda": {"smoke-cuda": Point(1_000, 64, (5, 30), layers=2, heads=4, kv_heads=2, prompt_words=(5, 20),
                                 examples=12, batch_size=2, gradient_accumulation=2)},
}
SMOKE_RUNNERS = {"cpu": ("wrpo", "trl-fast"), "cuda": DEFAULT_RUNNERS["cuda"]}
SMOKE_JOBS = 2


@dataclass(frozen=True)
class Mode:
    """Where and how a grid trains."""

    device: str  # "cpu" or "cuda"
    bf16: bool  # wrpo's runners in bf16 mixed precision (autocast over float32 weights); TRL keeps its own
    warmup_steps: int  # steps left out of the steady rate: allocations, kernel selection, caches

    @property
    def matmul(self) -> str:
        """The kind of matmul peak MFU is taken against."""
        return f"{'bf16' if self.bf16 else 'fp32'} {self.device}"


MODES = {"cpu": Mode("cpu", bf16=False, warmup_steps=1), "cuda": Mode("cuda", bf16=True, warmup_steps=2)}
BF16 = "-bf16"  # a runner's suffix: its wrpo trainer in bf16 mixed precision, whatever its grid's mode


def runner_mode(runner: str, mode: Mode) -> Mode:
    """The mode a runner's process trains in: its grid's, in bf16 for a -bf16 runner."""
    return replace(mode, bf16=True) if runner.endswith(BF16) else mode


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


def matmul_peak_gflops(mode: Mode, quick: bool = False) -> float:
    """The best matmul rate of several timed windows in the precision the trainers compute in (on a CPU,
    on every thread torch uses)."""
    import torch

    size = 512 if quick else 8192 if mode.device == "cuda" else 2048
    # A GPU's 8192 matmul takes about a millisecond: a second of windows is thousands of them.
    seconds = 0.5 if quick else 1.0 if mode.device == "cuda" else 3.0
    dtype = torch.bfloat16 if mode.bf16 else torch.float32
    a, b = (torch.randn(size, size, dtype=dtype, device=mode.device) for _ in range(2))
    synchronize = torch.cuda.synchronize if mode.device == "cuda" else lambda: None
    torch.mm(a, b)
    best = 0.0
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            torch.mm(a, b)
            count += 1
        synchronize()
        best = max(best, 2 * size**3 * count / (time.perf_counter() - start) / 1e9)
    if mode.device == "cuda":
        del a, b
        torch.cuda.empty_cache()  # the runners get the GPU's memory, less this process's context
    return best


def build(work: Path, point: Point, mode: Mode, seed: int) -> None:
    """The model, tokenizer, quadruples and point every runner loads from disk."""
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
    config = LlamaConfig(vocab_size=point.vocab, hidden_size=point.hidden, intermediate_size=point.intermediate,
                         num_hidden_layers=point.layers, num_attention_heads=point.heads,
                         num_key_value_heads=point.kv_heads, max_position_embeddings=point.max_length,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    # Initialised on the device: a 3B model's random init takes minutes on a CPU, moments on a GPU. Saved in
    # bf16 for a bf16 run (half the bytes each runner reads); the runners load float32 weights from it.
    with torch.device(mode.device):
        LlamaForCausalLM(config).to(torch.bfloat16 if mode.bf16 else torch.float32).save_pretrained(work / "model")
    if mode.device == "cuda":
        torch.cuda.empty_cache()
    (work / "point.json").write_text(json.dumps(asdict(point)))

    rng = random.Random(seed)

    def text(bounds: tuple[int, int]) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(*bounds)))

    with (work / "quadruples.jsonl").open("w") as handle:
        for index in range(point.examples):
            handle.write(json.dumps({"prompt_id": str(index), "prompt": text(point.prompt_words),
                                     "chosen_source": text(point.response_words),
                                     "chosen_target": text(point.response_words),
                                     "rejected": text(point.response_words)}) + "\n")


def load_point(work: Path) -> Point:
    fields = json.loads((work / "point.json").read_text())
    return Point(**{key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()})


def example_flops(work: Path, point: Point, responses: tuple[str, ...]) -> list[float]:
    """Model FLOPs of training on each example (forward + backward = 3 forwards) over the given responses:
    each distinct token once through the layers, response tokens through the output head."""
    hidden, layers = point.hidden, point.layers
    kv_width = point.kv_heads * hidden // point.heads
    layer_params = 2 * hidden * hidden + 2 * hidden * kv_width + 3 * hidden * point.intermediate
    flops = []
    for line in (work / "quadruples.jsonl").read_text().splitlines():
        row = json.loads(line)
        prompt = len(row["prompt"].split())
        lengths = [len(row[key].split()) for key in responses]
        tokens = prompt + sum(lengths)
        # Attention pairs: the prompt causally, each response over the prompt and its own prefix.
        pairs = prompt * (prompt + 1) / 2 + sum(n * prompt + n * (n + 1) / 2 for n in lengths)
        forward = (2 * layer_params * layers * tokens + 2 * point.vocab * hidden * sum(lengths)
                   + 4 * hidden * layers * pairs)
        flops.append(3 * forward)
    return flops


def step_times(device: str):
    """A callback noting each optimizer step's wall time; on a GPU up to the end of its kernels, which run
    asynchronously. Made here, not at import: transformers' callbacks import peft and bitsandbytes, seconds
    the parent process need not spend."""
    import torch
    from transformers import TrainerCallback

    synchronize = torch.cuda.synchronize if device == "cuda" else lambda: None

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            self.times.append(time.perf_counter() - self._start)

    return StepTimes()


class RecordedOrder:
    """The training sampler, noting the indices it yields: optimizer step k trains the k-th slice of
    batch x accumulation of them, which tells MFU the FLOPs of each timed step."""

    def __init__(self, sampler, order: list[int]):
        self.sampler, self.order = sampler, order

    def __iter__(self):
        self.order.clear()
        for index in self.sampler:
            self.order.append(int(index))
            yield index

    def __len__(self):
        return len(self.sampler)


def record_order(trainer) -> list[int]:
    order: list[int] = []
    make_sampler = trainer._get_train_sampler
    trainer._get_train_sampler = lambda *args, **kwargs: RecordedOrder(make_sampler(*args, **kwargs), order)
    return order


def run_wrpo(work: Path, point: Point, mode: Mode, runner: str, phases: dict) -> tuple:
    import torch

    from wrpo.data import QuadrupleEncoder, load_quadruple_dataset
    from wrpo.modeling import load_causal_lm, load_tokenizer
    from wrpo.training import WRPOConfig, WRPOTrainer

    phase(phases, "imports")
    tokenizer = load_tokenizer(str(work / "model"))
    model = load_causal_lm(str(work / "model"), dtype=torch.float32)
    phase(phases, "model loaded")
    dataset = load_quadruple_dataset(work / "quadruples.jsonl",
                                     QuadrupleEncoder(tokenizer, point.max_length, point.max_prompt_length))
    phase(phases, "data encoded")
    switches = {"naive": dict(precompute_ref_logps=False, padding_free=False, share_prompt=False, logps_chunk_size=0,
                              train_sampling_strategy="random"),
                "wrpo-compile": dict(torch_compile=True)}.get(runner.removesuffix(BF16), {})
    args = WRPOConfig(output_dir=str(work / f"out-{runner}"), per_device_train_batch_size=point.batch_size,
                      gradient_accumulation_steps=point.gradient_accumulation, num_train_epochs=1,
                      learning_rate=1e-5, beta=0.1, max_length=point.max_length,
                      max_prompt_length=point.max_prompt_length, bf16=mode.bf16, use_cpu=mode.device == "cpu",
                      save_strategy="no", logging_steps=1000, report_to="none", disable_tqdm=True, **switches)
    steps = step_times(mode.device)
    trainer = WRPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[steps])
    phase(phases, "trainer built")
    return trainer, steps, len(dataset)


def trl_settings(runner: str) -> dict:
    """The DPOConfig fields each TRL runner sets; the rest are TRL's defaults (bf16, gradient checkpointing)."""
    fast = dict(bf16=False, gradient_checkpointing=False)
    precompute = dict(precompute_ref_log_probs=True)
    return {"trl-default": {}, "trl-fast": fast, "trl-precompute": precompute,
            "trl-liger": precompute | dict(use_liger_kernel=True)}[runner]


def run_trl(work: Path, point: Point, mode: Mode, runner: str, phases: dict) -> tuple:
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
    # Its bf16 default refuses a CPU unless use_cpu is set.
    args = DPOConfig(output_dir=str(work / f"out-{runner}"), per_device_train_batch_size=point.batch_size,
                     gradient_accumulation_steps=point.gradient_accumulation, num_train_epochs=1,
                     learning_rate=1e-5, beta=0.1, save_strategy="no", logging_steps=1000, report_to="none",
                     disable_tqdm=True, max_length=point.max_length, use_cpu=mode.device == "cpu",
                     **trl_settings(runner))
    steps = step_times(mode.device)
    trainer = DPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer, callbacks=[steps])
    phase(phases, "trainer built")
    return trainer, steps, len(rows)


def child(runner: str, work: Path, mode: Mode, launched: float) -> None:
    import torch

    phases: dict = {"launched": launched}
    point = load_point(work)
    run = run_trl if runner.startswith("trl") else run_wrpo
    trainer, steps, examples = run(work, point, mode, runner, phases)
    order = record_order(trainer)
    trainer.train()
    phase(phases, "trained")
    phases.pop("launched")
    phases["peak"] = (peak_mb(), phases["trained"][1])
    result = {"examples": examples, "step_s": steps.times, "order": order, "phases": phases}
    if mode.device == "cuda":
        result["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print("RESULT " + json.dumps(result))


def skip_reason(runner: str, mode: Mode) -> str | None:
    """Why a runner cannot run here, or None."""
    if runner.endswith(BF16) and mode.bf16:
        return f"this grid's {runner.removesuffix(BF16)} trains in bf16 already"
    if runner != "trl-liger":
        return None
    if mode.device != "cuda":
        return "liger-kernel's Triton kernels run on CUDA only"
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed (pip install liger-kernel)"
    return None


def measure(runner: str, work: Path, mode: Mode, threads: int | None = None) -> dict:
    """One run in a fresh process: its result, or {"error": the end of what it printed} if it failed."""
    env = os.environ | {"OMP_NUM_THREADS": str(threads)} if threads else None
    bf16 = "--bf16" if runner_mode(runner, mode).bf16 else "--no-bf16"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", runner, "--work", str(work),
                           "--launched", str(time.time()), "--device", mode.device, bf16],
                          capture_output=True, text=True, env=env)
    whole = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": done.stderr[-3000:] or f"exit status {done.returncode}"}
    result = json.loads(lines[-1][len("RESULT "):])
    return result | {"whole_s": whole, "deepspeed_announced": "real_accelerator" in done.stderr}


def steady_times(run: dict, mode: Mode) -> list[float]:
    """The step times after the warm-up; all of them if the epoch had no more steps."""
    return run["step_s"][mode.warmup_steps:] or run["step_s"]


def steady_mfu(run: dict, flops: list[float], point: Point, mode: Mode, peak_gflops: float) -> float:
    """Model FLOPs of the steps after the warm-up (the examples each trained, in the sampler's order) over
    their time. Length-grouped batches differ in work (the longest comes first, then long and short ones
    by turns), so an epoch's FLOPs over a count of median steps would misstate it."""
    times = steady_times(run, mode)
    skipped = (len(run["step_s"]) - len(times)) * point.step_examples
    work = sum(flops[index] for index in run["order"][skipped:])
    return work / sum(times) / (peak_gflops * 1e9)


def summarise(runs: list[dict], flops: list[float], point: Point, mode: Mode, peak_gflops: float) -> dict:
    examples = runs[0]["examples"]
    steady = statistics.median(point.step_examples / statistics.median(steady_times(r, mode)) for r in runs)
    summary = {"whole_per_s": statistics.median(examples / r["whole_s"] for r in runs), "steady_per_s": steady,
               "peak_mb": statistics.median(r["phases"]["peak"][0] for r in runs),
               "mfu": statistics.median(steady_mfu(r, flops, point, mode, peak_gflops) for r in runs)}
    if "gpu_peak_gib" in runs[0]:
        summary["gpu_peak_gib"] = statistics.median(r["gpu_peak_gib"] for r in runs)
    return summary


def matmul_kind(row: dict) -> str:
    return row.get("matmul", "fp32 cpu")  # rows written before the CUDA mode are the CPU grid's


def table(grid: dict[str, dict]) -> str:
    """Markdown rows per point and runner; ratios against that point's naive and fastest TRL runs. MFU is
    taken against the best matmul peak of its kind any run measured: a peak measured while another process
    held a core reads low, and the machine's peak is what the trainers could have had. Memory is the GPU's
    peak allocated where every run has one, else the process's peak resident memory."""
    rows_of = [row for entry in grid.values() for row in entry["summary"].values()]
    best_peak: dict[str, float] = {}
    for row in rows_of:
        best_peak[matmul_kind(row)] = max(best_peak.get(matmul_kind(row), 0.0), row["matmul_peak_gflops"])
    on_gpu = bool(rows_of) and all("gpu_peak_gib" in row for row in rows_of)
    memory_key, memory_header, memory_format = ("gpu_peak_gib", "GPU peak GiB", ".1f") if on_gpu else (
        "peak_mb", "peak MB", ".0f")
    lines = [f"| point | trainer | whole/s | steady/s | {memory_header} | MFU | whole vs naive | whole vs best TRL | "
             "memory vs naive |", "|---|---|---|---|---|---|---|---|---|"]
    for point, entry in grid.items():
        rows = entry["summary"]
        trl = [rows[r]["whole_per_s"] for r in rows if r.startswith("trl")]
        for runner, row in rows.items():
            vs_naive = f"{row['whole_per_s'] / rows['naive']['whole_per_s']:.2f}x" if "naive" in rows else "-"
            vs_trl = f"{row['whole_per_s'] / max(trl):.2f}x" if trl else "-"
            memory = f"{row[memory_key] / rows['naive'][memory_key]:.2f}x" if "naive" in rows else "-"
            mfu = row["mfu"] * row["matmul_peak_gflops"] / best_peak[matmul_kind(row)]
            lines.append(f"| {point} | {runner} | {row['whole_per_s']:.2f} | {row['steady_per_s']:.2f} | "
                         f"{row[memory_key]:{memory_format}} | {mfu:.0%} | {vs_naive} | {vs_trl} | {memory} |")
        for runner, reason in entry.get("not_run", {}).items():
            lines.append(f"| {point} | {runner} | {reason} | - | - | - | - | - | - |")
    return "\n".join(lines)


def failure(error: str) -> str:
    """Running out of GPU memory is a result of the workload (the table says so); any other failure is
    an error of a trainer or of this benchmark."""
    return "out of memory" if "OutOfMemoryError" in error or "CUDA out of memory" in error else "failed"


def last_line(error: str) -> str:
    """The exception line of a traceback (its last non-empty line), for the table."""
    lines = [line for line in error.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "failed"


def runnable(name: str, runners: list[str], mode: Mode, not_run: dict) -> list[str]:
    """The runners that can run here; the others noted in `not_run` with the reason, and printed."""
    ready = []
    for runner in runners:
        not_run.pop(runner, None)
        reason = skip_reason(runner, mode)
        if reason:
            print(f"{name} {runner}: skipped: {reason}", flush=True)
            not_run[runner] = f"skipped: {reason}"
        else:
            ready.append(runner)
    return ready


@dataclass(frozen=True)
class Schedule:
    repeats: int
    # Runs started at once. Above 1 they share the cores (one thread each, or their OpenMP threads spin
    # against each other) and their times mean nothing: for smoke runs only.
    jobs: int = 1
    quick: bool = False  # a small, short matmul peak measurement


def run_all(name: str, runners: list[str], work: Path, mode: Mode, schedule: Schedule, not_run: dict) -> dict:
    """Each runner's runs, interleaved over the repeats. A runner that fails is noted in `not_run` and not
    run again: its failures (a crash, running out of memory) do not come and go."""
    raw: dict[str, list[dict]] = {runner: [] for runner in runners}
    threads = max(1, (os.cpu_count() or 1) // schedule.jobs) if schedule.jobs > 1 else None
    for repeat in range(schedule.repeats):
        todo = [runner for runner in runners if runner not in not_run]
        with ThreadPoolExecutor(schedule.jobs) as pool:
            runs = list(pool.map(lambda runner: measure(runner, work, mode, threads), todo))
        for runner, run in zip(todo, runs, strict=True):
            if "error" in run:
                print(f"{name} {runner} failed:\n{run['error']}", flush=True)
                not_run[runner] = f"{failure(run['error'])}: {last_line(run['error'])}"
                continue
            raw[runner].append(run)
            print(f"{name} repeat {repeat + 1}/{schedule.repeats} {runner}: whole {run['whole_s']:.1f} s, "
                  f"phases (MB, s) {run['phases']}", flush=True)
    return {runner: runs for runner, runs in raw.items() if runner not in not_run}


def run_point(name: str, point: Point, mode: Mode, runners: list[str], schedule: Schedule, seed: int,
              entry: dict) -> bool:
    """Runs the point's runners and records them in `entry`; False if one failed, other than by running
    out of memory."""
    # Measured before and after the runs, the better kept: another process on the machine lowers one.
    peak = matmul_peak_gflops(mode, schedule.quick)
    not_run = entry.setdefault("not_run", {})
    ready = runnable(name, runners, mode, not_run)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        build(work, point, mode, seed)
        raw = run_all(name, ready, work, mode, schedule, not_run)
        peak = max(peak, matmul_peak_gflops(mode, schedule.quick))
        print(f"{mode.matmul} matmul peak: {peak:.1f} GFLOP/s", flush=True)
        for runner in ready:
            entry["summary"].pop(runner, None)
            entry["runs"].pop(runner, None)
        for runner, runs in raw.items():
            responses = ("chosen_source", "rejected") if runner.startswith("trl") else (
                "chosen_source", "chosen_target", "rejected")
            entry["summary"][runner] = summarise(runs, example_flops(work, point, responses), point, mode, peak) | {
                "matmul_peak_gflops": peak, "matmul": mode.matmul, "repeats": schedule.repeats,
                "examples": point.examples, "batch_size": point.batch_size,
                "gradient_accumulation": point.gradient_accumulation, "warmup_steps": mode.warmup_steps}
            entry["runs"][runner] = runs
    return not any(not_run.get(runner, "").startswith("failed") for runner in ready)


def grid_mode(device: str, smoke: bool) -> Mode:
    """The mode of a grid; a smoke run without a GPU runs the CUDA mode's code on the CPU, bf16 included."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        if not smoke:
            sys.exit("--device cuda needs a CUDA GPU and a CUDA build of torch")
        print("no CUDA GPU: the cuda mode's smoke point runs on the CPU (bf16 autocast)", flush=True)
        return replace(MODES["cuda"], device="cpu")
    return MODES[device]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--points", default="all", help="comma-separated, of: "
                        + "; ".join(f"{device}: {', '.join(points)}" for device, points in POINTS.items()))
    parser.add_argument("--runners", help=f"comma-separated, of: {', '.join(RUNNERS)} (default: "
                        + "; ".join(f"{device}: {','.join(r)}" for device, r in DEFAULT_RUNNERS.items()) + ")")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, help="instead of each point's own")
    parser.add_argument("--batch-size", type=int, help="instead of each point's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="every runner once on tiny points, in both modes")
    parser.add_argument("--output", type=Path, help=f"default: {OUTPUTS['cpu']} or {OUTPUTS['cuda']}; "
                        "with --smoke, a temporary folder")
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.runners = args.runners.split(",") if args.runners else None
    unknown = [name for name in args.runners or [] if name not in RUNNERS]
    if args.points != "all" and not args.smoke:
        unknown += [name for name in args.points.split(",") if name not in POINTS[args.device]]
    if unknown:
        parser.error(f"unknown for --device {args.device}: {', '.join(unknown)}")
    return args


def grids(args: argparse.Namespace) -> list[tuple[Mode, dict[str, Point], list[str]]]:
    """Each grid's mode, points (with --examples and --batch-size applied) and runners."""
    overrides = {key: value for key, value in (("examples", args.examples), ("batch_size", args.batch_size))
                 if value}
    if args.smoke:
        plan = [(grid_mode(device, smoke=True), SMOKE_POINTS[device], SMOKE_RUNNERS[device])
                for device in ("cpu", "cuda")]
    else:
        points = POINTS[args.device]
        names = list(points) if args.points == "all" else args.points.split(",")
        plan = [(grid_mode(args.device, smoke=False), {name: points[name] for name in names},
                 DEFAULT_RUNNERS[args.device])]
    return [(mode, {name: replace(point, **overrides) for name, point in points.items()}, args.runners or list(runners))
            for mode, points, runners in plan]


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child, args.work, replace(MODES[args.device], device=args.device, bf16=args.bf16), args.launched)
        return

    schedule = Schedule(1, jobs=SMOKE_JOBS, quick=True) if args.smoke else Schedule(args.repeats)
    output = args.output or (Path(tempfile.mkdtemp()) / "train_throughput.json" if args.smoke else OUTPUTS[args.device])
    # Runs add to the output file point by point and runner by runner, so a long grid can be run in parts.
    saved = json.loads(output.read_text()) if output.exists() else {"points": {}}
    succeeded = True
    for mode, points, runners in grids(args):
        for name, point in points.items():
            entry = saved["points"].setdefault(name, {"shape": asdict(point), "summary": {}, "runs": {}})
            entry["device"], entry["bf16"] = mode.device, mode.bf16
            succeeded &= run_point(name, point, mode, runners, schedule, args.seed, entry)
            saved["table"] = table(saved["points"])
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(saved, indent=1) + "\n")
    print(saved["table"])
    print(f"written: {output}")
    if not succeeded:
        sys.exit("a runner failed: see its row and what it printed")


if __name__ == "__main__":
    main()
