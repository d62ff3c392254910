"""The `wrpo` command line: parse, validate, call the library function a Python user would call."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer
from typer.core import TyperCommand, TyperGroup

from wrpo.data.construct import PairSettings, SplitSettings
from wrpo.data.resumable import parse_shard
from wrpo.errors import InputError
from wrpo.evaluation.llm_judge_settings import LLMJudge
from wrpo.flags import model_flags, parse_flag_value
from wrpo.generation.settings import GREEDY, BackendSettings, SamplingSettings
from wrpo.pipeline.executor import StageFailed
from wrpo.reward.settings import RewardSettings
from wrpo.yaml_files import validated


class WRPOGroup(TyperGroup):
    """The `wrpo` command group: every command's InputError becomes one line on stderr and exit
    status 2, here and only here; train and sft are built when asked for (see _training_command)."""

    lazy = {"train": "WRPO-train a model on quadruples (prompt, best source response, best target response, "
                     "worst response).",
            "sft": "Supervised fine-tuning on (prompt, best source response), the loss on response tokens only."}
    listing = False

    def list_commands(self, ctx) -> list[str]:
        return [*self.lazy, *super().list_commands(ctx)]

    def format_commands(self, ctx, formatter) -> None:
        self.listing = True  # `wrpo --help` lists train and sft by their summaries, without building them
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.listing = False

    def get_command(self, ctx, name: str):
        if name in self.lazy:
            return TyperCommand(name, help=self.lazy[name]) if self.listing else _training_command(name)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        from wrpo.progress import configure_console

        # Before the command is resolved: building train and sft imports the libraries.
        configure_console(verbose=bool(ctx.params.get("verbose")))
        try:
            return super().invoke(ctx)
        except InputError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        except StageFailed as failure:
            typer.echo(f"error: {failure}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(help="Implicit model fusion of LLMs by Weighted-Reward Preference Optimization (WRPO).",
                  cls=WRPOGroup, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v",
                                      help="Also show the libraries' own output (transformers, datasets, "
                                           "DeepSpeed...).")) -> None:
    """Implicit model fusion of LLMs by Weighted-Reward Preference Optimization (WRPO)."""


def _with_flags(flags):
    """Adds an option for each settings flag (wrpo.flags.Flag) to the command's own parameters; the
    function takes them as **keyword arguments, None where a flag was not given (so that defaults,
    and a --config file, apply). A dict flag takes JSON text (wrpo.flags.parse_flag_value parses it)."""

    def decorate(function):
        own = [p for p in inspect.signature(function).parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        added = []
        for flag in flags:
            name = "--" + flag.name.replace("_", "-")
            declarations = [f"{name}/--no-{name[2:]}"] if flag.type is bool else [name]
            if len(flag.name) == 1:
                declarations.insert(0, f"-{flag.name}")
            added.append(inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY,
                                           annotation=str if flag.type is dict else flag.type,
                                           default=typer.Option(None, *declarations, help=flag.help)))
        function.__signature__ = inspect.Signature([*own, *added])
        return function

    return decorate


def _training_command(kind: str):
    """`wrpo train` or `wrpo sft`, its flags made from the config class's fields. Built only when
    that command is asked for: the config classes import torch, transformers and TRL (seconds)."""
    from wrpo.flags import Flag
    from wrpo.training.settings import RUN_OPTIONS, flags_of, resolve_settings

    if kind == "train":
        from wrpo.training.config import WRPOConfig as config_class
        from wrpo.training.run import train as fit

        run_keys, model = ("model", "data", "output", "ref_model", "resume"), "trained"
    else:
        from wrpo.training.sft import WRPOSFTConfig as config_class
        from wrpo.training.sft import sft as fit

        run_keys, model = ("model", "data", "output", "resume"), "fine-tuned"

    run_flags = [Flag(key, key, bool if key == "resume" else str, None, RUN_OPTIONS[key]) for key in run_keys]

    @_with_flags(run_flags + flags_of(config_class))
    def command(config: Path = typer.Option(None, help=f"YAML file of settings (flag names or {config_class.__name__} "
                                                          "fields); flags override it."), **values):
        settings = resolve_settings(config_class, values, config)
        extra = {"ref_model": settings.ref_model} if "ref_model" in run_keys else {}
        from wrpo.progress import is_main_process
        from wrpo.training.run import trained

        said = trained(lambda: fit(settings.model, settings.data, settings.config, resume=settings.resume, **extra),
                       model, "; --no-resume trains again")
        if is_main_process():
            typer.echo(said)

    command.__doc__ = (WRPOGroup.lazy[kind]
                       + f"\n\nEvery {config_class.__name__} / TrainingArguments field can be set in --config.")
    single = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    single.command(name=kind)(command)
    return typer.main.get_command(single)


SAMPLE_FLAGS = model_flags(SamplingSettings) + model_flags(BackendSettings)


@app.command()
@_with_flags(SAMPLE_FLAGS)
def sample(
    model: str = typer.Option(..., help="Model folder (or Hub id; openai: the model's name on the server)."),
    prompts: Path = typer.Option(..., help="Prompts: rows with 'prompt' (text or messages) and optionally "
                                           "'prompt_id'."),
    output: Path = typer.Option(..., help="Output JSONL: one row per prompt with its responses."),
    shard: str = typer.Option("0/1", help="I/N: sample only every N-th batch, starting at the I-th (the rows of a "
                                          "whole run, split; wrpo merge joins them)."),
    name: str = typer.Option(None, help="Model name written in the rows [the folder's name]."),
    categories: str = typer.Option(None, help="Answer only the prompts of these categories (comma-separated) [all]."),
    **settings,
):
    """Sample n responses per prompt with the model's chat template; resumable."""
    from wrpo.generation.sample import sample as run_sample

    sampling = _settings_from_flags(SamplingSettings, SAMPLE_FLAGS, settings)
    backend = _settings_from_flags(BackendSettings, SAMPLE_FLAGS, settings)
    written = run_sample(model, prompts, output, sampling, backend=backend, shard=parse_shard(shard), name=name,
                         categories=categories.split(",") if categories else None)
    typer.echo(f"wrote {written}")


def _settings_from_flags(model_class, flags, values: dict, **fixed):
    """`model_class` (SamplingSettings, BackendSettings, ...) from the values of those of `flags` that set
    its fields, and `fixed`; a flag not given (None) leaves its field's default."""
    given = {flag.field: parse_flag_value(flag, values[flag.name]) for flag in flags
             if values[flag.name] is not None and flag.field in model_class.model_fields}
    return validated(model_class, {**given, **fixed}, as_flags=True)


SCORE_FLAGS = model_flags(RewardSettings, skip=("model", "function"))


@app.command()
@_with_flags(SCORE_FLAGS)
def score(
    responses: list[Path] = typer.Option(..., help="Outputs of wrpo sample (repeat the flag for several)."),
    reward_model: str = typer.Option(..., help="Reward model folder (or Hub id), or a Python scorer "
                                               "pkg.module:function."),
    output: Path = typer.Option(..., help="Output JSONL: the input rows with a 'scores' list."),
    shard: str = typer.Option("0/1", help="I/N: score only every N-th row, starting at the I-th."),
    **settings,
):
    """Score every sampled response with a reward model or a Python function; resumable."""
    from wrpo.reward.score import score as run_score

    # A folder or a function alike: score() tells them apart.
    reward = _settings_from_flags(RewardSettings, SCORE_FLAGS, settings, model=reward_model)
    written = run_score(responses, reward.scorer, output, batch_size=reward.batch_size,
                        trust_remote_code=reward.trust_remote_code, shard=parse_shard(shard),
                        verifiers=reward.verifiers)
    typer.echo(f"wrote {written}")


@app.command()
def merge(
    inputs: list[Path] = typer.Argument(..., help="The shards' outputs of wrpo sample or wrpo score."),
    output: Path = typer.Option(..., help="The merged JSONL."),
):
    """Join the outputs of --shard I/N runs of sample or score into one file (no row twice)."""
    from wrpo.data.resumable import merge_jsonl, model_prompt_key

    written = merge_jsonl(inputs, output, key=model_prompt_key)
    typer.echo(f"wrote {written}")


build_app = typer.Typer(help="Build training data from scored samples.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(build_app, name="build")


SPLIT_FLAGS = model_flags(SplitSettings)


@build_app.command("sft")
@_with_flags(SPLIT_FLAGS)
def build_sft_command(
    scores: list[Path] = typer.Option(..., help="Scored source samples (repeat the flag for each source)."),
    sft_output: Path = typer.Option(..., help="SFT rows {prompt_id, prompt, response}."),
    preference_output: Path = typer.Option(..., help="Preference prompts with their source responses, best first."),
    **settings,
):
    """Pick the best source response per prompt and split prompts between SFT and preference learning."""
    from wrpo.data.construct import build_sft
    from wrpo.progress import console

    split = _settings_from_flags(SplitSettings, SPLIT_FLAGS, settings)
    console.print(build_sft(scores, sft_output, preference_output, **split.model_dump()))


PAIR_FLAGS = model_flags(PairSettings, skip=("target_samples",))


@build_app.command("pairs")
@_with_flags(PAIR_FLAGS)
def build_pairs_command(
    preference_prompts: Path = typer.Option(..., help="The preference prompts of wrpo build sft."),
    target_scores: list[Path] = typer.Option(None, help="Scored samples of target-sft on those prompts (optional "
                                                        "with --same-source: y_wt is then y_ws)."),
    output: Path = typer.Option(..., help="Quadruples for wrpo train."),
    **settings,
):
    """Join the best source responses with target-sft's best and worst samples into quadruples (or, with
    --same-source, FuseChat-3.0's best and worst responses of one source)."""
    from wrpo.data.construct import build_pairs
    from wrpo.progress import console

    given = {flag.field: settings[flag.name] for flag in PAIR_FLAGS if settings[flag.name] is not None}
    if not target_scores and not given.get("same_source"):
        raise InputError("--target-scores is required (without it, only --same-source pairs can be built)")
    pairs = validated(PairSettings, {**given, "target_samples": bool(target_scores)}, as_flags=True)
    console.print(build_pairs(preference_prompts, target_scores or [], output,
                              **pairs.model_dump(exclude={"target_samples"})))


def _echo_statuses(statuses: dict[str, str]) -> None:
    typer.echo(", ".join(f"{stage}: {status}" for stage, status in statuses.items()))


def _executor_option(what: str):
    from wrpo.pipeline.run import EXECUTORS

    executors = "; ".join(f"{name}: {executor.description}" for name, executor in EXECUTORS.items())
    return typer.Option("local", help=f"Where {what} run ({executors}).")


@app.command()
def run(recipe: Path = typer.Argument(..., help="Recipe YAML (see recipes/)."),
        executor: str = _executor_option("the stages"),
        plan: bool = typer.Option(False, "--plan", help="Print every stage (settings, launcher, devices, inputs, "
                                                        "outputs, the processes or jobs it would start, whether it "
                                                        "would be skipped) and run nothing.")):
    """Run every pipeline stage of a recipe that is not yet done: sample, score, build, SFT, WRPO."""
    from wrpo.pipeline.run import executor_named, plan_recipe, run_recipe
    from wrpo.pipeline.show import show_plan

    if plan:
        show_plan(plan_recipe(recipe, executor_named(executor)))
        return
    _echo_statuses(run_recipe(recipe, executor_named(executor)))


@app.command()
def ablate(recipe: Path = typer.Argument(..., help="Recipe YAML with an ablation: section (its held-out prompts)."),
           seeds: str = typer.Option(None, help="Training seeds, comma-separated [the recipe's ablation.seeds]."),
           variants: str = typer.Option(None, help="Variants, comma-separated [all]: wrpo, dpo, hybrid, "
                                                   "constant-alpha, linear-alpha, sft-continued, rft, sources-K "
                                                   "(K < the sources)."),
           executor: str = _executor_option("the runs and the report (slurm: after the pipeline has run)")):
    """Train the paper's comparisons from the recipe's target-sft and quadruples, judge them on held-out
    prompts, and report mean ± std over seeds, paired differences from WRPO and losses below the start."""
    from wrpo.ablation import ablate as run_ablation
    from wrpo.evaluation.ablation_report import show
    from wrpo.pipeline.run import executor_named

    try:
        chosen_seeds = [int(seed) for seed in seeds.split(",")] if seeds else None
    except ValueError:
        raise InputError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    names = [name.strip() for name in variants.split(",") if name.strip()] if variants else None
    outcome = run_ablation(recipe, chosen_seeds, names, executor_named(executor))
    if outcome.result is None:  # submitted: the report comes from the last job
        _echo_statuses(outcome.statuses)
        return
    show(outcome.result.report)
    typer.echo(f"report: {outcome.result.folder / 'report.md'}")


@app.command()
def status(recipe: Path = typer.Argument(..., help="Recipe YAML.")):
    """Each stage of a recipe: done, running (and where), queued, failed (with its log) or pending."""
    from wrpo.pipeline.run import recipe_status
    from wrpo.pipeline.show import show_status

    show_status(recipe_status(recipe))


# eval has no shards to spread vLLM replicas over: no --data-parallel-size.
EVAL_FLAGS = model_flags(BackendSettings, skip=("data_parallel_size",))
# The LLM judge's --judge-* flags; its template is read from a file (--judge-template).
JUDGE_FLAGS = model_flags(LLMJudge, skip=("template", "max_tokens"), prefix="judge_", names={"model": "judge_llm"})


@app.command("eval")
@_with_flags(EVAL_FLAGS + JUDGE_FLAGS)
def evaluate(
    models: str = typer.Option(..., help="Models to judge: folders or Hub ids (openai: names on the server), "
                                         "comma-separated; label=path to name one."),
    baseline: str = typer.Option(..., help="The model they are compared with: one of the labels, a folder or Hub id, "
                                           "or label=path."),
    prompts: Path = typer.Option(..., help="Prompts (with 'category' for per-category figures), or an MT-Bench / "
                                           "Arena-Hard question file."),
    judge: str = typer.Option(None, help="Reward judge: a reward model folder (or Hub id), or a Python scorer "
                                         "pkg.module:function (--judge, --judge-llm or both)."),
    judge_template: Path = typer.Option(None, help="The LLM judge's prompt: a text file with {instruction}, "
                                                   "{output_a} and {output_b} "
                                                   "[wrpo.evaluation.llm_judge_settings.TEMPLATE]."),
    output: Path = typer.Option(Path("eval-output"), help="Answers, scores, judgements, report.md, report.json, "
                                                          "plots, exports."),
    max_new_tokens: int = typer.Option(GREEDY.max_new_tokens, help="Longest answer, in tokens (answers are greedy)."),
    batch_size: int = typer.Option(16, help="Prompts per generation batch, responses per scoring batch."),
    export: str = typer.Option("", help="Also write answers for public judges: alpaca_eval, arena_hard, mt_bench "
                                        "(comma-separated)."),
    trust_remote_code: bool = typer.Option(False, help="Run the judge model's own code (ArmoRM needs it)."),
    **settings,
):
    """Win rates (with intervals, length-controlled, per category) against a baseline, judged by a reward model,
    an LLM or both."""
    from wrpo.evaluation.llm_judge import read_template
    from wrpo.evaluation.run import parse_models, run_eval, show

    given = {flag.field: settings[flag.name] for flag in JUDGE_FLAGS if settings[flag.name] is not None}
    if "model" not in given and (given or judge_template):
        raise InputError("--judge-base-url, --judge-template, --judge-api-key-env and --judge-concurrency set the "
                         "LLM judge: name its model with --judge-llm")
    if judge_template:
        given["template"] = read_template(judge_template)
    llm_judge = validated(LLMJudge, given, as_flags=True) if "model" in given else None
    formats = tuple(filter(None, (f.strip() for f in export.split(","))))
    show(run_eval(parse_models(models), baseline, prompts, judge, output,
                  GREEDY.model_copy(update={"max_new_tokens": max_new_tokens}), formats,
                  batch_size=batch_size, trust_remote_code=trust_remote_code,
                  backend=_settings_from_flags(BackendSettings, EVAL_FLAGS, settings), llm_judge=llm_judge))
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
    from wrpo.demo.run import DemoSize, run_demo, show

    given = {"prompts": prompts, "eval_prompts": eval_prompts}
    show(run_demo(output, seed=seed, cache_dir=cache_dir, ablation=ablation,
                  size=DemoSize(**{name: value for name, value in given.items() if value is not None})))
    typer.echo(f"report: {output / 'report.md'}")


if __name__ == "__main__":
    app()
