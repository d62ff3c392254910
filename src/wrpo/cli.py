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
    from transformers.utils import logging

    # Loading and saving a checkpoint draw bars of their own; keep the terminal for stage progress.
    logging.disable_progress_bar()


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
    resume: bool = typer.Option(None, "--resume/--no-resume", help="Continue from the last checkpoint in --output [resume]."),
    config: Path = typer.Option(None, help="YAML file of settings (flag names or WRPOConfig fields); flags override it."),
):
    """WRPO-train a model on quadruples (prompt, best source response, best target response, worst response)."""
    flags = {name: value for name, value in locals().items() if name != "config"}
    from wrpo.training.run import train as run_training
    from wrpo.training.settings import resolve_train_settings

    try:
        settings = resolve_train_settings(flags, config)
        output_dir = run_training(settings.model, settings.data, settings.config,
                                  ref_model=settings.ref_model, resume=settings.resume)
    except InputError as error:
        _fail(error)
    typer.echo(f"saved the trained model to {output_dir}")


@app.command()
def demo(
    output: Path = typer.Option(Path("demo-output"), help="Where the data, the trained model and report.json go."),
    seed: int = typer.Option(0, help="Seed of the words, the model and the training run."),
    cache_dir: Path = typer.Option(None, help="Where the tiny built-in model is kept [~/.cache/wrpo]."),
    steps: int = typer.Option(300, help="WRPO optimizer steps."),
):
    """Fuse a correct source answer into a tiny built-in target with a short WRPO run; print its reward before and after."""
    from wrpo.demo.run import run_demo

    run_demo(output, seed=seed, cache_dir=cache_dir, steps=steps)


if __name__ == "__main__":
    app()
