"""The `wrpo` command line: parse, validate, call the library function a Python user would call."""

from __future__ import annotations

from pathlib import Path

import typer

from wrpo.errors import InputError

app = typer.Typer(help="Implicit model fusion of LLMs by Weighted-Reward Preference Optimization (WRPO).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None)


@app.callback()
def main() -> None:
    """Implicit model fusion of LLMs by Weighted-Reward Preference Optimization (WRPO)."""
    import logging as python_logging

    from transformers.utils import logging

    # Loading and saving a checkpoint draw bars of their own; keep the terminal for stage progress.
    logging.disable_progress_bar()
    # peft imports bitsandbytes whenever it is installed, which on a CPU then warns at every command
    # that an optional kernel package is missing.
    python_logging.getLogger("bitsandbytes").setLevel(python_logging.ERROR)


def _shard(text: str) -> tuple[int, int]:
    from wrpo.generation.sample import parse_shard

    try:
        return parse_shard(text)
    except ValueError as error:
        raise InputError(str(error)) from None


def _end_distributed(message: str) -> None:
    """Leave the process group before exit and say what was saved, once: from the main process of a
    multi-process launch. A gloo group still alive when the interpreter shuts down aborts the process
    ("terminate called without an active exception"); the trainer's DDP wrapper holds one in
    reference cycles, so those are collected first, while the interpreter is whole."""
    import gc

    from accelerate import PartialState

    from wrpo.progress import is_main_process

    gc.collect()
    PartialState().destroy_process_group()
    if is_main_process():
        typer.echo(message)


def _fail(error: InputError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2)


@app.command()
def train(
    model: str = typer.Option(None, help="Starting model: a folder saved with save_pretrained (or a Hub id)."),
    data: str = typer.Option(None, help="Quadruples: .jsonl, .parquet or a datasets folder."),
    output: str = typer.Option(None, help="Output folder: model, tokenizer, metrics.jsonl, checkpoints."),
    ref_model: str = typer.Option(None, help="Reference model (default: a frozen copy of --model)."),
    beta: float = typer.Option(None, help="Reward scale beta [0.01]."),
    alpha: float = typer.Option(None, help="alpha_max, the final source weight of the fused chosen reward [0.1]."),
    alpha_schedule: str = typer.Option(None, help="linear (0 -> alpha_max) or constant [linear]."),
    loss: str = typer.Option(None, help="Objective form: dpo, simpo or ipo [dpo]."),
    gamma: float = typer.Option(None, help="Reward margin of the simpo form [0.5]."),
    label_smoothing: float = typer.Option(None, help="Label smoothing of the dpo/simpo forms [0]."),
    lr: float = typer.Option(None, help="Peak learning rate [3e-7]."),
    batch_size: int = typer.Option(None, help="Quadruples per device per step [8]."),
    grad_accum: int = typer.Option(None, help="Gradient accumulation steps [1]."),
    epochs: float = typer.Option(None, help="Epochs [1]."),
    max_steps: int = typer.Option(None, help="Optimizer steps; overrides --epochs when positive."),
    max_length: int = typer.Option(None, help="Prompt + response tokens [2048]."),
    max_prompt_length: int = typer.Option(None, help="Prompt tokens, cut from the left [1800]."),
    top_k_sources: int = typer.Option(None, help="Source responses per prompt [1]."),
    source_weighting: str = typer.Option(None, help="uniform or score [uniform]."),
    logging_steps: int = typer.Option(None, help="Log every N steps [1]."),
    save_steps: int = typer.Option(None, help="Checkpoint every N steps [100]."),
    seed: int = typer.Option(None, help="Random seed [42]."),
    lora_r: int = typer.Option(None, help="LoRA rank (peft); 0 trains every weight [0]."),
    lora_alpha: int = typer.Option(None, help="LoRA alpha [16]."),
    lora_target_modules: str = typer.Option(None, help="'all-linear' or comma-separated module names [all-linear]."),
    load_in_4bit: bool = typer.Option(None, "--load-in-4bit/--no-load-in-4bit",
                                      help="QLoRA: the base in 4-bit NF4 (bitsandbytes); needs --lora-r [no]."),
    merge_lora: bool = typer.Option(None, "--merge-lora/--no-merge-lora", help="Save with adapters merged [no]."),
    resume: bool = typer.Option(None, "--resume/--no-resume", help="Continue from the last checkpoint in --output [resume]."),
    config: Path = typer.Option(None, help="YAML file of settings (flag names or WRPOConfig fields); flags override it."),
):
    """WRPO-train a model on quadruples (prompt, best source response, best target response, worst response)."""
    flags = {name: value for name, value in locals().items() if name != "config"}
    from wrpo.training.config import WRPOConfig
    from wrpo.training.run import train as run_training
    from wrpo.training.settings import resolve_settings

    try:
        settings = resolve_settings(WRPOConfig, flags, config)
        output_dir = run_training(settings.model, settings.data, settings.config,
                                  ref_model=settings.ref_model, resume=settings.resume)
    except InputError as error:
        _fail(error)
    _end_distributed(f"saved the trained model to {output_dir}")


@app.command()
def sft(
    model: str = typer.Option(None, help="Target model: a folder saved with save_pretrained (or a Hub id)."),
    data: str = typer.Option(None, help="SFT rows {prompt, response} (wrpo build sft writes them)."),
    output: str = typer.Option(None, help="Output folder: model, tokenizer, metrics.jsonl, checkpoints."),
    lr: float = typer.Option(None, help="Peak learning rate [7e-6]."),
    batch_size: int = typer.Option(None, help="Examples per device per step [8]."),
    grad_accum: int = typer.Option(None, help="Gradient accumulation steps [1]."),
    epochs: float = typer.Option(None, help="Epochs [1]."),
    max_steps: int = typer.Option(None, help="Optimizer steps; overrides --epochs when positive."),
    max_length: int = typer.Option(None, help="Prompt + response tokens [2048]."),
    save_steps: int = typer.Option(None, help="Checkpoint every N steps [100]."),
    seed: int = typer.Option(None, help="Random seed [42]."),
    resume: bool = typer.Option(None, "--resume/--no-resume", help="Continue from the last checkpoint in --output [resume]."),
    config: Path = typer.Option(None, help="YAML file of settings (flag names or SFTConfig fields); flags override it."),
):
    """Supervised fine-tuning on (prompt, best source response), the loss on response tokens only (TRL's SFTTrainer)."""
    flags = {name: value for name, value in locals().items() if name != "config"}
    from wrpo.training.settings import resolve_settings
    from wrpo.training.sft import WRPOSFTConfig, sft as run_sft

    try:
        settings = resolve_settings(WRPOSFTConfig, flags, config, run_keys=("model", "data", "resume"))
        output_dir = run_sft(settings.model, settings.data, settings.config, resume=settings.resume)
    except InputError as error:
        _fail(error)
    _end_distributed(f"saved the fine-tuned model to {output_dir}")


@app.command()
def sample(
    model: str = typer.Option(..., help="Model folder (or Hub id) to sample from."),
    prompts: Path = typer.Option(..., help="Prompts: rows with 'prompt' (text or messages) and optionally 'prompt_id'."),
    output: Path = typer.Option(..., help="Output JSONL: one row per prompt with its responses."),
    n: int = typer.Option(5, "-n", "--n", help="Responses per prompt."),
    temperature: float = typer.Option(0.8, help="Sampling temperature (0: greedy)."),
    top_p: float = typer.Option(0.95, help="Nucleus sampling probability."),
    max_new_tokens: int = typer.Option(512, help="Longest response, in tokens."),
    backend: str = typer.Option("hf", help="hf (transformers), vllm, or openai (any OpenAI-compatible server)."),
    shard: str = typer.Option("0/1", help="I/N: sample only every N-th prompt, starting at the I-th."),
    batch_size: int = typer.Option(16, help="Prompts per batch (and per flush to disk)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    name: str = typer.Option(None, help="Model name written in the rows [the folder's name]."),
    tensor_parallel_size: int = typer.Option(1, help="vllm: GPUs per model replica."),
    data_parallel_size: int = typer.Option(1, help="vllm: model replicas."),
    base_url: str = typer.Option(None, help="openai: the server's URL, e.g. http://localhost:8000/v1."),
    api_key_env: str = typer.Option(None, help="openai: the environment variable holding the API key."),
    concurrency: int = typer.Option(8, help="openai: requests in flight at once."),
):
    """Sample n responses per prompt with the model's chat template; resumable."""
    from wrpo.generation.backends import BACKENDS, SamplingSettings
    from wrpo.generation.sample import sample as run_sample

    try:
        if backend not in BACKENDS:
            raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        shard_of = _shard(shard)
        options = {"vllm": dict(tensor_parallel_size=tensor_parallel_size, data_parallel_size=data_parallel_size),
                   "openai": dict(base_url=base_url, api_key_env=api_key_env, concurrency=concurrency)}.get(backend, {})
        written = run_sample(model, prompts, output, SamplingSettings(n, temperature, top_p, max_new_tokens, seed),
                             backend=backend, shard=shard_of, batch_size=batch_size, name=name, **options)
    except InputError as error:
        _fail(error)
    typer.echo(f"wrote {written}")


@app.command()
def score(
    responses: list[Path] = typer.Option(..., help="Outputs of wrpo sample (repeat the flag for several)."),
    reward_model: str = typer.Option(..., help="Reward model folder (or Hub id), or a Python scorer pkg.module:function."),
    output: Path = typer.Option(..., help="Output JSONL: the input rows with a 'scores' list."),
    batch_size: int = typer.Option(16, help="Responses per scoring batch."),
    trust_remote_code: bool = typer.Option(False, help="Run the reward model's own code (ArmoRM needs it)."),
    shard: str = typer.Option("0/1", help="I/N: score only every N-th row, starting at the I-th."),
):
    """Score every sampled response with a reward model or a Python function; resumable."""
    from wrpo.reward.score import score as run_score

    try:
        written = run_score(responses, reward_model, output, batch_size=batch_size, trust_remote_code=trust_remote_code,
                            shard=_shard(shard))
    except InputError as error:
        _fail(error)
    typer.echo(f"wrote {written}")


@app.command()
def merge(
    inputs: list[Path] = typer.Argument(..., help="The shards' outputs of wrpo sample or wrpo score."),
    output: Path = typer.Option(..., help="The merged JSONL."),
):
    """Join the outputs of --shard I/N runs of sample or score into one file (no row twice)."""
    from wrpo.data.resumable import merge_jsonl, model_prompt_key

    try:
        written = merge_jsonl(inputs, output, key=model_prompt_key)
    except InputError as error:
        _fail(error)
    typer.echo(f"wrote {written}")


build_app = typer.Typer(help="Build training data from scored samples.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(build_app, name="build")


@build_app.command("sft")
def build_sft_command(
    scores: list[Path] = typer.Option(..., help="Scored source samples (repeat the flag for each source)."),
    sft_output: Path = typer.Option(..., help="SFT rows {prompt_id, prompt, response}."),
    preference_output: Path = typer.Option(..., help="Preference prompts with their source responses, best first."),
    sft_fraction: float = typer.Option(1 / 3, help="Share of prompts for SFT (a stable split by prompt id)."),
    seed: int = typer.Option(42, help="Seed of the split."),
):
    """Pick the best source response per prompt and split prompts between SFT and preference learning."""
    from wrpo.data.construct import build_sft

    try:
        build_sft(scores, sft_output, preference_output, sft_fraction=sft_fraction, seed=seed)
    except InputError as error:
        _fail(error)


@build_app.command("pairs")
def build_pairs_command(
    preference_prompts: Path = typer.Option(..., help="The preference prompts of wrpo build sft."),
    target_scores: list[Path] = typer.Option(..., help="Scored samples of target-sft on those prompts."),
    output: Path = typer.Option(..., help="Quadruples for wrpo train."),
    top_k_sources: int = typer.Option(1, help="Source responses kept per prompt, best first."),
):
    """Join the best source responses with target-sft's best and worst samples into quadruples."""
    from wrpo.data.construct import build_pairs

    try:
        build_pairs(preference_prompts, target_scores, output, top_k_sources=top_k_sources)
    except InputError as error:
        _fail(error)


@app.command()
def run(recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/).")):
    """Run every pipeline stage of a recipe that is not yet done: sample, score, build, SFT, WRPO."""
    from wrpo.pipeline.run import run_recipe

    try:
        statuses = run_recipe(recipe)
    except InputError as error:
        _fail(error)
    typer.echo(", ".join(f"{stage}: {status}" for stage, status in statuses.items()))


@app.command("eval")
def evaluate(
    models: str = typer.Option(..., help="Models to judge: folders or Hub ids, comma-separated; label=path to name one."),
    baseline: str = typer.Option(..., help="The model they are compared with (a folder, Hub id or one of the labels)."),
    prompts: Path = typer.Option(..., help="Prompts (with 'category' for per-category figures), or an MT-Bench / Arena-Hard question file."),
    judge: str = typer.Option(..., help="Reward model folder (or Hub id), or a Python scorer pkg.module:function."),
    output: Path = typer.Option(Path("eval-output"), help="Answers, scores, report.md, report.json, plots, exports."),
    max_new_tokens: int = typer.Option(512, help="Longest answer, in tokens (answers are greedy)."),
    batch_size: int = typer.Option(16, help="Prompts per generation batch, responses per scoring batch."),
    export: str = typer.Option("", help="Also write answers for public judges: alpaca_eval, arena_hard, mt_bench (comma-separated)."),
    trust_remote_code: bool = typer.Option(False, help="Run the judge model's own code (ArmoRM needs it)."),
):
    """Reward-judged win rates (with intervals, length-controlled, per category) against a baseline."""
    from wrpo.evaluation.exports import FORMATS
    from wrpo.evaluation.run import parse_models, run_eval
    from wrpo.generation.backends import SamplingSettings

    try:
        formats = tuple(filter(None, (f.strip() for f in export.split(","))))
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise InputError(f"--export knows {', '.join(FORMATS)}, not {', '.join(unknown)}")
        run_eval(parse_models(models), baseline, prompts, judge, output,
                 SamplingSettings(n=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens), formats,
                 batch_size=batch_size, trust_remote_code=trust_remote_code)
    except InputError as error:
        _fail(error)
    typer.echo(f"report: {output / 'report.md'}")


@app.command()
def demo(
    output: Path = typer.Option(Path("demo-output"), help="Where the runs, report.md, report.json and plots go."),
    seed: int = typer.Option(0, help="Seed of the prompts, the split and the training runs."),
    cache_dir: Path = typer.Option(None, help="Where the tiny model zoo is kept [~/.cache/wrpo]."),
    ablation: bool = typer.Option(False, help="Also run the paper's comparisons over 3 seeds (mean ± std)."),
    prompts: int = typer.Option(None, help="Training prompts, a third of them for SFT [12000]."),
    eval_prompts: int = typer.Option(None, help="Held-out prompts for the evaluation [400]."),
):
    """Fuse three tiny heterogeneous source models into a tiny target with the whole pipeline, and report."""
    from wrpo.demo.run import DemoSize, run_demo

    given = {"prompts": prompts, "eval_prompts": eval_prompts}
    try:
        run_demo(output, seed=seed, cache_dir=cache_dir, ablation=ablation,
                 size=DemoSize(**{name: value for name, value in given.items() if value is not None}))
    except InputError as error:
        _fail(error)
    typer.echo(f"report: {output / 'report.md'}")


if __name__ == "__main__":
    app()
