"""Where a stage runs, decided in one place from a recipe's `resources`: how many shards (sampling and
scoring: processes each on its own devices, vLLM with the source's tensor parallelism, then a merge),
which devices of its node each holds, how many nodes, and whether it runs under `accelerate launch`
(SFT and WRPO, with the recipe's accelerate config). Without a `resources` section every stage is one
process with no launcher. The executors turn a Placement into processes (steps()) and nothing else does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

# sbatch options as `key: value` (time: "24:00:00", partition: gpu, mem: 200G, ...), written --key=value.
SlurmOptions = dict[str, str | int | bool]


class Placement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shards: int = 1                     # processes sharing the rows, merged after (shard kinds)
    devices: int = 0                    # devices each process is pinned to (0: none)
    devices_per_node: int = 0
    device_type: Literal["gpu", "cpu"] = "gpu"
    nodes: int = 1
    launcher: Literal["none", "accelerate"] = "none"
    processes: int = 1                  # accelerate: processes of the launch, every node's together
    accelerate_config: Path | None = None
    generated_config: dict | None = None  # the accelerate config to write at accelerate_config first
    slurm: SlurmOptions = {}
    warning_seconds: int = 0            # Slurm warns the job this long before its time limit (0: never)
    description: str = "1 process"     # how it runs, in words


@dataclass(frozen=True)
class Process:
    """One process of a stage: the worker's own arguments beside the stage file, the devices of its node it
    is pinned to, and for a launch, accelerate's arguments (one launcher per node)."""

    worker_args: tuple[str, ...] = ()
    devices: tuple[int, ...] = ()
    launch: tuple[str, ...] = ()
    nodes: int = 1


def steps(placement: Placement) -> list[tuple[Process, ...]]:
    """The processes of a stage, step by step: the processes of a step run at once, the next step when all
    have ended. Shard I runs on the I-th devices of its node; more shards than a node holds wait their turn."""
    if placement.launcher == "accelerate":
        config = ["--config_file", str(placement.accelerate_config)] if placement.accelerate_config else ["--multi_gpu"]
        launch = (*config, "--num_processes", str(placement.processes), "--num_machines", str(placement.nodes))
        return [(Process(devices=tuple(range(placement.devices_per_node)), launch=launch, nodes=placement.nodes),)]
    width = placement.devices
    if placement.shards == 1:
        return [(Process(devices=tuple(range(width))),)]
    per_node = max(1, placement.devices_per_node // width) if width else 1
    shards = tuple(Process(("--shard", f"{index}/{placement.shards}"),
                           tuple(range(index % per_node * width, index % per_node * width + width)))
                   for index in range(placement.shards))
    return [shards, (Process(("--merge",)),)]


def place(stage_kind, spec, name: str, resources, generated_config_path: Path) -> Placement:
    """The placement of a stage of `stage_kind` (wrpo.pipeline.kinds.StageKind) under the recipe's resources
    (wrpo.pipeline.recipe.Resources); `generated_config_path`: where an accelerate config written for it goes."""
    own = resources.of(stage_kind.resources, name)
    common = {"devices_per_node": resources.devices_per_node, "device_type": resources.device_type,
              "slurm": own.slurm, "warning_seconds": own.warning_seconds}
    if stage_kind.placement == "launch":
        return _launched(spec, stage_kind, own, resources, generated_config_path, common)
    if stage_kind.placement == "one":
        return Placement(**common)
    if stage_kind.placement == "one-device":
        devices = 1 if resources.devices_per_node else 0
        return Placement(devices=devices, description=_with_shards("", 1, devices).removeprefix(", "), **common)
    return _sharded(spec, own, resources, name, common)


def _sharded(spec, own, resources, name: str, common: dict) -> Placement:
    from wrpo.errors import InputError

    backend = getattr(spec, "backend", None)
    if backend is not None and backend.backend == "openai":  # the server holds the devices
        shards, width = own.shards or 1, 0
        how = f"openai server {backend.base_url}, {backend.concurrency} requests at once"
    else:
        width = spec.devices() if resources.devices_per_node else 0
        if width > max(resources.devices_per_node, 1):
            raise InputError(f"{name}: tensor_parallel_size {width} is more than the {resources.devices_per_node} "
                             "devices of a node (resources.devices_per_node)")
        shards = own.shards or max(1, resources.devices_per_node // max(width, 1) * resources.nodes)
        how = (f"{backend.backend}" + (f", tensor parallel {width}" if width > 1 else "") if backend is not None
               else "reward " + ("model" if spec.reward.model else "function"))
    return Placement(shards=shards, devices=width, description=_with_shards(how, shards, width), **common)


def _with_shards(how: str, shards: int, width: int) -> str:
    if shards == 1:
        return f"{how}, 1 process" + (f" on {width} device{'s' if width > 1 else ''}" if width else "")
    each = f" of {width} device{'s' if width > 1 else ''} each" if width else ""
    return f"{how}, {shards} shards{each}, then merge"


def _launched(spec, stage_kind, own, resources, generated_config_path: Path, common: dict) -> Placement:
    nodes = own.nodes or 1
    processes = training_processes(resources.devices_per_node, nodes)
    config, generated = own.accelerate_config, None
    if config is None and processes > 1 and resources.device_type == "cpu":
        # accelerate's plain DDP on CPUs (torchrun, gloo) is a config setting: its --cpu and --multi_gpu
        # flags exclude each other.
        config, generated = generated_config_path, {
            "compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU", "use_cpu": True,
            "mixed_precision": "no", "num_machines": nodes, "num_processes": processes, "machine_rank": 0,
            "rdzv_backend": "static", "same_network": True}
    if processes == 1 and config is None:
        how, launcher = "1 process", "none"
    else:
        launch_type = "MULTI_GPU" if generated else distributed_type(config)
        engine = "DeepSpeed" if spec.settings.get("deepspeed") else \
            {"DEEPSPEED": "DeepSpeed", "MULTI_GPU": "DDP", None: "DDP"}.get(launch_type, launch_type)
        how, launcher = (f"accelerate launch ({engine}{', ' + config.name if config else ''}): {processes} processes "
                         f"on {nodes} node{'s' if nodes > 1 else ''}"), "accelerate"
    defaults = stage_kind.config_class().__dataclass_fields__
    batch, accumulation = (spec.settings.get(name, defaults[name].default)
                           for name in ("per_device_train_batch_size", "gradient_accumulation_steps"))
    how += f"; global batch {batch} × {accumulation} × {processes} = {batch * accumulation * processes}"
    return Placement(devices=resources.devices_per_node, nodes=nodes, launcher=launcher, processes=processes,
                     accelerate_config=config, generated_config=generated, description=how, **common)


def training_processes(devices_per_node: int, nodes: int) -> int:
    """The processes a training stage runs on: one per device of each of its nodes (one without devices)."""
    return max(devices_per_node, 1) * nodes


def distributed_type(accelerate_config: Path | None) -> str | None:
    """An accelerate config's distributed_type (DEEPSPEED, MULTI_GPU, FSDP, ...), None without one."""
    if accelerate_config is None:
        return None
    return (yaml.safe_load(accelerate_config.read_text()) or {}).get("distributed_type")
