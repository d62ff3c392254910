"""Settings of `wrpo train` and `wrpo sft` from three layers: the config class's defaults <
--config YAML < command-line flags.

YAML keys are the flag names (with - or _) or any field of the config class (WRPOConfig, or
WRPOSFTConfig: both are TrainingArguments, so warmup_steps, report_to, deepspeed... work too).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wrpo.errors import InputError
from wrpo.yaml_files import load_yaml

# Flag name -> config field, where they differ.
FLAG_FIELDS = {
    "lr": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "epochs": "num_train_epochs",
    "output": "output_dir",
}


@dataclass(frozen=True)
class RunSettings:
    model: str
    data: str
    ref_model: str | None
    resume: bool
    config: Any  # an instance of the config class


def read_yaml_settings(path: str | Path) -> dict[str, tuple[Any, int]]:
    """{key: (value, line)} of a flat YAML mapping, keys normalised to underscores."""
    values, node = load_yaml(path, "config")
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise InputError("the config must be a mapping of setting: value", path, node.start_mark.line + 1)
    return {key_node.value.replace("-", "_"): (values[key_node.value], key_node.start_mark.line + 1)
            for key_node, _ in node.value}


def resolve_settings(config_class, flags: dict[str, Any], config_path: str | Path | None = None,
                     run_keys: tuple[str, ...] = ("model", "data", "ref_model", "resume")) -> RunSettings:
    """Merges the layers; `flags` holds the command-line values, None where a flag was not given."""
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}

    def field_name(key: str, path=None, line=None) -> str:
        name = FLAG_FIELDS.get(key, key)
        if name not in fields and name not in run_keys:
            raise InputError(f"unknown setting '{key}'", path, line)
        return name

    merged: dict[str, Any] = {}
    if config_path is not None:
        for key, (value, line) in read_yaml_settings(config_path).items():
            name = field_name(key, config_path, line)
            merged[name] = _coerce(key, value, fields.get(name), config_path, line)
    merged.update({field_name(key): value for key, value in flags.items() if value is not None})

    run = {key: merged.pop(key, None) for key in ("model", "data", "ref_model", "resume")}
    for value, flag in ((run["model"], "--model"), (run["data"], "--data"), (merged.get("output_dir"), "--output")):
        if not value:
            raise InputError(f"{flag} is required (on the command line or in --config)")
    try:
        config = config_class(**merged)
    except (ValueError, TypeError) as error:
        raise InputError(str(error).splitlines()[0]) from None
    return RunSettings(model=str(run["model"]), data=str(run["data"]),
                       ref_model=None if run["ref_model"] is None else str(run["ref_model"]),
                       resume=True if run["resume"] is None else bool(run["resume"]), config=config)


def _coerce(key: str, value: Any, field, path, line) -> Any:
    """YAML 1.1 reads 3e-7 as a string: a string given for a numeric field is read as a number."""
    default = None if field is None else field.default
    if not isinstance(value, str) or not isinstance(default, (int, float)) or isinstance(default, bool):
        return value
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"'{key}' must be a number, got {value!r}", path, line) from None
    return int(number) if isinstance(default, int) and number.is_integer() else number
