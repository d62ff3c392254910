"""Sampling and scoring throughput: `wrpo sample` with the hf and vllm backends, and `wrpo score`.

    python benchmarks/sample_throughput.py [--repeats 3] [--prompts 32] [--max-new-tokens 64] [-n 4]

Run it with a Python that has vLLM (make test-engines builds .venv-engines with vLLM's CPU build), so
that both backends run in one environment; without vLLM, pass --runners hf,reward-model,function.

One run builds the Llama of train_throughput.py (32k vocabulary, hidden 256, 4 layers) with a chat
template, a reward model of the same shape with a one-logit head, prompts whose lengths are log-normal
(median 40 tokens) and, for scoring, synthetic responses (median 80 tokens). Each runner then runs
in a fresh process, interleaved over repeats; the tables report medians and the fastest repeat (the
one other processes on these cores disturbed least):

  hf            wrpo.generation.sample.sample(..., backend hf): transformers' generate, batches of prompts
  vllm          the same with backend vllm: vLLM's offline engine (float32, no compilation, as the tests run it)
  reward-model  wrpo.reward.score.score with the reward model folder
  function      the same with a Python scorer (counts words): what wrpo's reading and writing cost

Both samplers get the same prompts and settings (n samples per prompt at temperature 0.8, top-p 0.95,
max_new_tokens each, batches of --batch-size prompts). Generated tokens are counted by re-encoding
the responses (an answer may stop early at EOS). "setup s" is building the engine or loading the
reward model; the rates (tokens/s, prompts/s, responses/s) count the time after it; "whole process"
counts everything from starting Python to its exit (imports, engine start, vLLM's shutdown). "others'
CPU" is the share of the cores that other processes used while a runner ran.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNNERS = ("hf", "vllm", "reward-model", "function")
SAMPLERS = ("hf", "vllm")
VOCAB = 32_000
PROMPT_CAP = 200  # words, one token each
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds spent since boot by every process on this machine, and by this one's finished children."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), children.ru_utime + children.ru_stime


def words(prompt, response: str) -> float:
    """The function runner's scorer, imported by wrpo as sample_throughput:words."""
    return float(len(response.split()))


def build(work: Path, prompts: int, n: int, seed: int) -> None:
    """The policy, the reward model, the prompts and the responses to score, all on disk."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerFast

    from wrpo.demo.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + [f"w{i}" for i in range(VOCAB - len(SPECIAL_TOKENS))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    # Heads 64 wide: vLLM's CPU attention refuses narrower ones.
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3, num_labels=1)
    torch.manual_seed(seed)
    for name, model in (("model", LlamaForCausalLM(config)), ("reward", LlamaForSequenceClassification(config))):
        model.save_pretrained(work / name)
        tokenizer.save_pretrained(work / name)

    rng = random.Random(seed)

    def text(median: int, cap: int) -> str:
        length = max(4, min(cap, round(rng.lognormvariate(math.log(median), 0.6))))
        return " ".join(f"w{rng.randrange(VOCAB - len(SPECIAL_TOKENS))}" for _ in range(length))

    rows = [{"prompt_id": str(index), "prompt": text(40, PROMPT_CAP)} for index in range(prompts)]
    (work / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (work / "responses.jsonl").write_text("".join(
        json.dumps({**row, "model": "synthetic", "responses": [text(80, 320) for _ in range(n)]}) + "\n"
        for row in rows))


def engine_kwargs(args) -> dict:
    """As tests/test_vllm_backend.py runs vLLM on a CPU: a fifth of RAM for the KV cache, no compilation
    of the model (a minute on 2 cores), float32 (the dtype the hf backend runs on a CPU); and room for a
    whole batch's prompts in one step. vLLM's CPU build dies (EngineDeadError, "CPU Generator does not
    use offset") when it splits the prefill of a seeded request over steps, and wrpo seeds every request."""
    return {"gpu_memory_utilization": 0.2, "enforce_eager": True, "dtype": "float32",
            "max_num_batched_tokens": args.batch_size * args.n * (PROMPT_CAP + 8)}  # 8: the chat template's tokens


def timed(function, timings: dict):
    """`function`, noting how long its call took in timings["setup_s"]."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        timings["setup_s"] = time.perf_counter() - start
        return result
    return wrapper


def child(runner: str, work: Path, output: Path, args) -> dict:
    """One measurement through wrpo's own entry points; the engine's (or reward model's) construction
    is timed apart by wrapping the factory those entry points call."""
    from wrpo.generation import sample as sampling
    from wrpo.generation.settings import BackendSettings, SamplingSettings
    from wrpo.reward import score as scoring

    timings: dict = {}
    start = time.perf_counter()
    if runner in SAMPLERS:
        sampling.make_generator = timed(sampling.make_generator, timings)
        settings = SamplingSettings(n=args.n, temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens,
                                    batch_size=args.batch_size, seed=args.seed)
        backend = BackendSettings(backend=runner, engine_kwargs=engine_kwargs(args) if runner == "vllm" else {})
        sampling.sample(str(work / "model"), work / "prompts.jsonl", output, settings, backend=backend)
    else:
        scoring.load_scorer = timed(scoring.load_scorer, timings)
        scorer = str(work / "reward") if runner == "reward-model" else "sample_throughput:words"
        scoring.score([work / "responses.jsonl"], scorer, output, batch_size=args.batch_size)
    return {"setup_s": timings["setup_s"], "steady_s": time.perf_counter() - start - timings["setup_s"]}


def measure(runner: str, work: Path, repeat: int, args, tokenizer) -> dict:
    output = work / f"{runner}-{repeat}.jsonl"
    command = [sys.executable, __file__, "--child", runner, "--work", str(work), "--child-output", str(output),
               "-n", str(args.n), "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
               "--seed", str(args.seed)]
    start, before = time.perf_counter(), cpu_seconds()
    # The models are local: nothing may reach a hub, nor may vLLM send usage statistics anywhere.
    offline = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | offline)
    # vLLM kills its engine process without waiting for it; this process, their subreaper, does, so
    # that none outlives its run and their CPU time counts as the run's own, not as others'.
    with contextlib.suppress(ChildProcessError):
        while True:
            os.waitpid(-1, 0)
    process_s, after = time.perf_counter() - start, cpu_seconds()
    # The share of the cores that other processes used meanwhile: they slow a run down.
    others_cpu = (after[0] - before[0] - (after[1] - before[1])) / (process_s * os.cpu_count())
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{runner} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    responses = [text for row in rows for text in row["responses"]]
    return {**json.loads(lines[-1][len("RESULT "):]), "process_s": process_s, "others_cpu": others_cpu,
            "prompts": len(rows), "responses": len(responses),
            "tokens": sum(len(ids) for ids in tokenizer(responses, add_special_tokens=False).input_ids)}


def rates(runs: list[dict], count: str, seconds: str) -> list[float]:
    return [run[count] / run[seconds] for run in runs]


def report(results: dict[str, list[dict]]) -> str:
    """A table for the samplers and one for the scorers: medians over the repeats, the fastest repeat
    (the one other processes on these cores disturbed least), and the share of the cores those others took."""
    median = statistics.median
    tables = []

    def others(runs: list[dict]) -> str:
        return f"{median(run['others_cpu'] for run in runs):.0%}"

    samplers = [runner for runner in results if runner in SAMPLERS]
    if samplers:
        hf = results.get("hf")

        def versus_hf(runs: list[dict], seconds: str) -> str:
            # Per repeat, then the median: the two ran back to back, under much the same load.
            if hf is None:
                return "-"
            pairs = zip(rates(runs, "tokens", seconds), rates(hf, "tokens", seconds), strict=True)
            return f"{median(mine / theirs for mine, theirs in pairs):.2f}x"

        lines = ["| backend | tokens/s | prompts/s | fastest repeat, tokens/s | setup s | whole process s | "
                 "tokens/s vs hf | fastest vs hf's fastest | whole process vs hf | others' CPU |", "|---" * 10 + "|"]
        for runner in samplers:
            runs = results[runner]
            tokens = rates(runs, "tokens", "steady_s")
            fastest = f"{max(tokens) / max(rates(hf, 'tokens', 'steady_s')):.2f}x" if hf else "-"
            lines.append(f"| {runner} | {median(tokens):.0f} | {median(rates(runs, 'prompts', 'steady_s')):.2f} | "
                         f"{max(tokens):.0f} | {median(r['setup_s'] for r in runs):.1f} | "
                         f"{median(r['process_s'] for r in runs):.1f} | {versus_hf(runs, 'steady_s')} | {fastest} | "
                         f"{versus_hf(runs, 'process_s')} | {others(runs)} |")
        tables.append("\n".join(lines))
    scorers = [runner for runner in results if runner not in SAMPLERS]
    if scorers:
        lines = ["| scorer | responses/s | fastest repeat, responses/s | setup s | whole process s | "
                 "responses/s whole process | others' CPU |", "|---" * 7 + "|"]
        for runner in scorers:
            runs = results[runner]
            responses = rates(runs, "responses", "steady_s")
            lines.append(f"| {runner} | {median(responses):.1f} | {max(responses):.1f} | "
                         f"{median(r['setup_s'] for r in runs):.1f} | {median(r['process_s'] for r in runs):.1f} | "
                         f"{median(rates(runs, 'responses', 'process_s')):.1f} | {others(runs)} |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("-n", type=int, default=4, help="samples per prompt; responses per prompt to score")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per batch (scoring: responses)")
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/sample_throughput.json"))
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.work, args.child_output, args)))
        return

    from transformers import AutoTokenizer

    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1)
    runners = args.runners.split(",")
    results: dict[str, list[dict]] = {runner: [] for runner in runners}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        build(work, args.prompts, args.n, args.seed)
        tokenizer = AutoTokenizer.from_pretrained(work / "model")
        for repeat in range(args.repeats):
            for runner in runners:
                results[runner].append(measure(runner, work, repeat, args, tokenizer))
                print(f"repeat {repeat + 1}/{args.repeats} {runner}: {results[runner][-1]}", flush=True)
    table = report(results)
    print(table)
    args.output.write_text(json.dumps({"settings": vars(args) | {"output": str(args.output)}, "results": results,
                                       "table": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
