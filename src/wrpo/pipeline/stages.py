"""The stages of `wrpo run`, each a `wrpo` command line and the way it is launched: the one place that
turns a recipe and its resources into processes.

    sample/sources/<name>, score/sources/<name>   for every source model
    build-sft        y_ws per prompt; SFT set and preference prompts
    sft              target -> target-sft
    sample/target-sft, score/target-sft
    build-pairs      quadruples (y_ws, y_wt, y_l)
    wrpo             target-sft -> target-sft-wrpo

A stage is a list of steps; the tasks of a step run at once (local: subprocesses; slurm: a job array or
a multi-node job), the next step when all are done. Sampling and scoring are sharded over the devices
(`--shard I/N`, each shard on its own devices, vLLM with the source's tensor parallelism), then merged;
SFT and WRPO run under `accelerate launch` with the recipe's accelerate config. Without a `resources`
section every stage is one process with no launcher.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wrpo.errors import InputError
from wrpo.generation.settings import BackendSettings, SamplingSettings
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.recipe import ModelSpec, Recipe, StageResources, distributed_type, section_setting


@dataclass(frozen=True)
class Task:
    command: tuple[str, ...]        # starts with `wrpo` or `accelerate`
    devices: tuple[int, ...] = ()   # device indexes on its node (local: CUDA_VISIBLE_DEVICES)
    nodes: int = 1                  # > 1: one launcher per node (slurm)


@dataclass(frozen=True)
class Step:
    tasks: tuple[Task, ...]


@dataclass
class Stage:
    name: str
    kind: str                       # sample, score, build, sft, wrpo: its key in resources.stages
    inputs: list[str]               # files, folders or Hub ids whose content decides the result
    settings: dict                  # JSON-able; with the inputs, the stage's fingerprint
    outputs: list[Path]
    steps: list[Step]
    launch: str                     # how it runs, in words
    resources: StageResources = field(default_factory=StageResources)
    files: dict[Path, str] = field(default_factory=dict)  # written before it runs (its settings file)


def plan(recipe: Recipe) -> list[Stage]:
    layout, reward, resources = recipe.layout, recipe.reward, recipe.resources
    stages: list[Stage] = []

    def sampling(spec: ModelSpec, model: str, prompts: Path, output: Path, settings: SamplingSettings) -> Stage:
        name = f"sample/{output.relative_to(layout.root / 'samples').with_suffix('')}"
        backend = BackendSettings(**spec.model_dump(include=set(BackendSettings.model_fields)))
        given = [name for name in backend.options if name in spec.model_fields_set]
        command = ("wrpo", "sample", "--model", model, "--prompts", str(prompts), "--name", output.stem,
                   *as_flags(settings), *as_flags(backend, only=("backend", *given)))
        own = resources.of("sample", name)
        if backend.backend == "openai":  # the server holds the devices; requests run `concurrency` at once
            shards, width = own.shards or 1, 0
            how = f"openai server {backend.base_url}, {backend.concurrency} requests at once"
        else:
            width = backend.tensor_parallel_size if resources.devices_per_node else 0
            if width > max(resources.devices_per_node, 1):
                raise InputError(f"{spec.name}: tensor_parallel_size {width} is more than the "
                                 f"{resources.devices_per_node} devices of a node (resources.devices_per_node)")
            shards = own.shards or max(1, resources.devices_per_node // max(width, 1) * resources.nodes)
            how = backend.backend + (f", tensor parallel {width}" if width > 1 else "")
        return Stage(name, "sample", [model, str(prompts)],
                     {"sampling": settings.model_dump(), "backend": spec.backend, "name": output.stem,
                      **({"options": backend.options} if backend.options else {})},
                     [output], sharded(layout, command, output, shards, width, resources.devices_per_node),
                     with_shards(how, shards, width), own)

    def scoring(samples: Path, output: Path) -> Stage:
        name = f"score/{output.relative_to(layout.root / 'scores').with_suffix('')}"
        command = ("wrpo", "score", "--responses", str(samples), "--reward-model", reward.scorer,
                   "--batch-size", str(reward.batch_size),
                   *(("--trust-remote-code",) if reward.trust_remote_code else ()))
        own = resources.of("score", name)
        width = 1 if resources.devices_per_node else 0
        shards = own.shards or max(1, resources.devices_per_node * resources.nodes)
        return Stage(name, "score", [str(samples), reward.scorer], reward.model_dump(), [output],
                     sharded(layout, command, output, shards, width, resources.devices_per_node),
                     with_shards("reward " + ("model" if reward.model else "function"), shards, width), own)

    def single(name: str, command: tuple[str, ...], inputs: list[str], settings: dict, outputs: list[Path]) -> Stage:
        return Stage(name, "build", inputs, settings, outputs, [Step((Task(command),))], "1 process",
                     resources.of("build", name))

    source_scores = []
    for source in recipe.sources:
        samples, scores = layout.source_samples(source.name), layout.source_scores(source.name)
        stages += [sampling(source, source.model, recipe.prompts, samples, recipe.sampling), scoring(samples, scores)]
        source_scores.append(scores)

    split = recipe.split
    scores_flags = [flag for path in source_scores for flag in ("--scores", str(path))]
    stages.append(single("build-sft", ("wrpo", "build", "sft", *scores_flags, "--sft-output", str(layout.sft_data),
                                       "--preference-output", str(layout.preference_prompts),
                                       "--sft-fraction", str(split.sft_fraction), "--seed", str(split.seed)),
                         [str(p) for p in source_scores], split.model_dump(),
                         [layout.sft_data, layout.preference_prompts]))
    stages.append(training(recipe, "sft", recipe.target.model, layout.sft_data))
    pairs = recipe.pairs
    target_scores = [layout.target_scores] if pairs.target_samples else []
    if pairs.target_samples:
        stages += [sampling(recipe.target, str(layout.target_sft), layout.preference_prompts, layout.target_samples,
                            recipe.target_sampling or recipe.sampling),
                   scoring(layout.target_samples, layout.target_scores)]
    stages.append(single("build-pairs", ("wrpo", "build", "pairs", "--preference-prompts",
                                         str(layout.preference_prompts),
                                         *(flag for path in target_scores for flag in ("--target-scores", str(path))),
                                         "--output", str(layout.quadruples),
                                         *as_flags(pairs, only=PAIR_FLAGS)),
                         [str(layout.preference_prompts), *map(str, target_scores)],
                         # The defaults left out: a recipe without FuseChat's options keeps its fingerprint.
                         {"top_k_sources": pairs.top_k_sources, **pairs.model_dump(exclude_defaults=True)},
                         [layout.quadruples]))
    stages.append(training(recipe, "wrpo", str(layout.target_sft), layout.quadruples))
    return stages


# The PairSettings that `wrpo build pairs` takes as flags (target_samples decides which stages run).
PAIR_FLAGS = ("top_k_sources", "same_source", "min_reward_gap", "max_reward_gap")


def training(recipe: Recipe, section: str, model: str, data: Path) -> Stage:
    """`wrpo sft` or `wrpo train` of a recipe section, launched over the stage's devices."""
    layout, output = recipe.layout, recipe.layout.trained(section)
    settings = getattr(recipe, section)
    return training_stage(section, section, model, data, output, settings, recipe.resources.devices_per_node,
                          recipe.resources.device_type, recipe.resources.of(section, section), layout)


def training_stage(name: str, kind: str, model: str, data: Path, output: Path, settings: dict, devices_per_node: int,
                   device_type: str, resources: StageResources, layout: Workdir) -> Stage:
    """A training stage (kind sft: `wrpo sft`, else `wrpo train`) whose settings are config fields."""
    settings_file = layout.settings(name)
    command = ("sft" if kind == "sft" else "train", "--model", model, "--data", str(data), "--output", str(output),
               "--config", str(settings_file))
    nodes = resources.nodes or 1
    processes = training_processes(devices_per_node, resources)
    config = resources.accelerate_config
    files = {settings_file: yaml.safe_dump(settings, sort_keys=False)}
    if config is None and processes > 1 and device_type == "cpu":
        # accelerate's plain DDP on CPUs (torchrun, gloo) is a config setting: its --cpu and --multi_gpu
        # flags exclude each other.
        config = layout.accelerate_config(name)
        files[config] = yaml.safe_dump({"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU",
                                        "use_cpu": True, "mixed_precision": "no", "num_machines": nodes,
                                        "num_processes": processes, "machine_rank": 0, "rdzv_backend": "static",
                                        "same_network": True})
    if processes == 1 and config is None:
        steps, how = [Step((Task(("wrpo", *command), tuple(range(devices_per_node))),))], "1 process"
    else:
        launcher = ["accelerate", "launch", *(["--config_file", str(config)] if config else ["--multi_gpu"]),
                    "--num_processes", str(processes), "--num_machines", str(nodes)]
        task = Task((*launcher, "-m", "wrpo.cli", *command), tuple(range(devices_per_node)), nodes)
        steps = [Step((task,))]
        launch_type = "MULTI_GPU" if config in files else distributed_type(config)
        engine = "DeepSpeed" if settings.get("deepspeed") else \
            {"DEEPSPEED": "DeepSpeed", "MULTI_GPU": "DDP", None: "DDP"}.get(launch_type, launch_type)
        how = (f"accelerate launch ({engine}{', ' + config.name if config else ''}): {processes} processes on "
               f"{nodes} node{'s' if nodes > 1 else ''}")
    batch, accumulation = _batch_settings(kind, settings)
    how += f"; global batch {batch} × {accumulation} × {processes} = {batch * accumulation * processes}"
    return Stage(name, kind, [model, str(data)], settings, [output], steps, how, resources, files)


def training_processes(devices_per_node: int, resources: StageResources) -> int:
    """The processes a training stage runs on: one per device of each of its nodes (one without devices)."""
    return max(devices_per_node, 1) * (resources.nodes or 1)


def _batch_settings(kind: str, settings: dict) -> tuple[int, int]:
    return (section_setting(kind, settings, "per_device_train_batch_size"),
            section_setting(kind, settings, "gradient_accumulation_steps"))


def sharded(layout: Workdir, command: tuple[str, ...], output: Path, shards: int, width: int,
            devices_per_node: int) -> list[Step]:
    """`command` on `shards` processes of `width` devices each (shard I on the I-th devices of its node),
    then `wrpo merge`; one process writing `output` itself when shards is 1."""
    if shards == 1:
        return [Step((Task((*command, "--output", str(output)), tuple(range(width))),))]
    parts = [layout.shard(output, index, shards) for index in range(shards)]
    tasks = []
    per_node = max(1, devices_per_node // width) if width else 1
    for index, part in enumerate(parts):
        first = index % per_node * width
        tasks.append(Task((*command, "--shard", f"{index}/{shards}", "--output", str(part)),
                          tuple(range(first, first + width))))
    return [Step(tuple(tasks)), Step((Task(("wrpo", "merge", *map(str, parts), "--output", str(output))),))]


def with_shards(how: str, shards: int, width: int) -> str:
    if shards == 1:
        return f"{how}, 1 process" + (f" on {width} device{'s' if width > 1 else ''}" if width else "")
    each = f" of {width} device{'s' if width > 1 else ''} each" if width else ""
    return f"{how}, {shards} shards{each}, then merge"


def as_flags(settings, only: tuple[str, ...] | None = None) -> list[str]:
    """The command-line flags that give a settings model's values (dicts as JSON)."""
    flags = []
    for name in only or tuple(settings.model_fields):
        value, flag = getattr(settings, name), "--" + name.replace("_", "-")
        if isinstance(value, dict):
            if value:
                flags += [flag, json.dumps(value, sort_keys=True)]
        elif isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        elif value is not None:
            flags += [flag, str(value)]
    return flags
