"""Settings of `wrpo train` and `wrpo sft`, each defined once: as a field of the config dataclass
(WRPOConfig, WRPOSFTConfig) with its help text. The commands' flags, the keys of a --config YAML
and of a recipe's sft:/wrpo: sections, and the README's flag table are all made from those fields.

Three layers, later ones winning: the config class's defaults < YAML < command-line flags. YAML keys
are the flag names (with - or _) or any field of the config class (both are TrainingArguments, so
warmup_steps, report_to, deepspeed... work too).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wrpo.errors import InputError
from wrpo.flags import Flag, plain_type
from wrpo.yaml_files import load_yaml

# Flag name -> config field, where they differ (the short names users of the paper's scripts type).
FLAG_FIELDS = {
    "lr": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "epochs": "num_train_epochs",
    "output": "output_dir",
}
# TrainingArguments fields both commands offer as flags, beside the config class's own fields.
COMMON_FLAGS = ("lr", "batch_size", "grad_accum", "epochs", "max_steps", "max_length", "logging_steps",
                "save_steps", "seed", "bf16")

# What a run needs beside its config: where it starts, its data, and whether it resumes.
RUN_OPTIONS = {
    "model": "Starting model: a folder saved with save_pretrained (or a Hub id).",
    "data": "Training rows: .jsonl, .parquet or a datasets folder.",
    "output": "Output folder: model, tokenizer, metrics.jsonl, checkpoints.",
    "ref_model": "Reference model (default: the starting model, frozen).",
    "resume": "Continue from the last checkpoint in --output [resume].",
}


def flags_of(config_class) -> list[Flag]:
    """The command-line flags of a config class: the fields wrpo's classes declare with help text
    (WRPOConfig's beta, alpha, ...), then COMMON_FLAGS, each with its field's help text and default."""
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
    documented = [name for base in reversed(config_class.__mro__) if base.__module__.startswith("wrpo.")
                  for name in vars(base).get("__annotations__", {})
                  if fields.get(name) and fields[name].metadata.get("help")]
    common = [FLAG_FIELDS.get(flag, flag) for flag in COMMON_FLAGS]
    names = dict.fromkeys([*(name for name in documented if name not in common), *common])
    by_field = {field: flag for flag, field in FLAG_FIELDS.items()}
    return [Flag(name=by_field.get(name, name), field=name, type=plain_type(fields[name].type),
                 default=fields[name].default, help=_help(config_class, fields[name]))
            for name in names if name in fields]


def _help(config_class, field: dataclasses.Field) -> str:
    """The field's help text, from the nearest class that gives one (a subclass that only changes a
    default drops it), cut to its first sentences, and its default."""
    text = next(f.metadata["help"] for base in config_class.__mro__ if dataclasses.is_dataclass(base)
                for f in dataclasses.fields(base) if f.name == field.name and f.metadata.get("help"))
    sentences = [part.strip().rstrip(".") for part in text.replace("\n", " ").split(". ") if part.strip()]
    kept = sentences[:1] + [s for i, s in enumerate(sentences[1:], 1) if len(". ".join(sentences[:i + 1])) < 90]
    default = "" if field.default is None else f" [{field.default}]"
    return ". ".join(kept) + "." + default


def flag_table(config_class) -> str:
    """The flags as a markdown table, for the README (a test keeps it equal to this)."""
    lines = ["| flag | sets | meaning [default] |", "|---|---|---|"]
    lines += [f"| `--{flag.name.replace('_', '-')}` | `{flag.field}` | {flag.help} |"
              for flag in flags_of(config_class)]
    return "\n".join(lines)


@dataclass(frozen=True)
class RunSettings:
    model: str
    data: str
    ref_model: str | None
    resume: bool
    config: Any  # an instance of the config class


def read_yaml_settings(path: str | Path) -> dict[str, tuple[Any, int]]:
    """{key: (value, line)} of a flat YAML mapping."""
    values, node = load_yaml(path, "config")
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise InputError("the config must be a mapping of setting: value", path, node.start_mark.line + 1)
    return {key_node.value: (values[key_node.value], key_node.start_mark.line + 1) for key_node, _ in node.value}


def normalise_settings(config_class, settings: dict[str, tuple[Any, int | None]], path: str | Path | None = None,
                       run_keys: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, int | None], dict[str, Any]]:
    """({field: value}, {field: line}, {run key: value}) from {key: (value, line)}, keys being flag
    names (lr, max-steps) or config fields. An unknown key names its line and the nearest valid key."""
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
    known = sorted({*fields, *FLAG_FIELDS, *run_keys})
    values, lines, run = {}, {}, {}
    for key, (value, line) in settings.items():
        name = FLAG_FIELDS.get(key.replace("-", "_"), key.replace("-", "_"))
        if name in run_keys:
            run[name] = value
            continue
        if name not in fields:
            nearest = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
            raise InputError(f"unknown setting '{key}'" + (f" (did you mean '{nearest[0]}'?)" if nearest else ""),
                             path, line)
        values[name], lines[name] = _coerce(key, value, fields[name], path, line), line
    return values, lines, run


def build_config(config_class, values: dict[str, Any], lines: dict[str, int | None] | None = None,
                 path: str | Path | None = None, section_line: int | None = None):
    """The config from normalised settings. This is where every setting's value is checked, once: a
    bad one names the line of its key (or `section_line`)."""
    try:
        return config_class(**values)
    except (ValueError, TypeError) as error:
        message = str(error).splitlines()[0]
        culprit = next((name for name in sorted(values, key=len, reverse=True) if message.startswith(name)), None)
        raise InputError(message, path, (lines or {}).get(culprit, section_line)) from None


def resolve_settings(config_class, flags: dict[str, Any], config_path: str | Path | None = None) -> RunSettings:
    """Merges the layers; `flags` holds the command-line values, None where a flag was not given."""
    run_keys = tuple(key for key in ("model", "data", "ref_model", "resume") if key in flags)
    settings = read_yaml_settings(config_path) if config_path is not None else {}
    normalised = {FLAG_FIELDS.get(key.replace("-", "_"), key.replace("-", "_")): key for key in settings}
    for key, value in flags.items():
        if value is not None:
            settings.pop(normalised.get(FLAG_FIELDS.get(key, key), ""), None)
            settings[key] = (value, None)
    values, lines, run = normalise_settings(config_class, settings, config_path, run_keys)
    for flag, present in (("--model", run.get("model")), ("--data", run.get("data")),
                          ("--output", "output_dir" in values)):
        if not present:
            raise InputError(f"{flag} is required (on the command line or in --config)")
    config = build_config(config_class, values, lines, config_path)
    return RunSettings(model=str(run["model"]), data=str(run["data"]),
                       ref_model=None if run.get("ref_model") is None else str(run["ref_model"]),
                       resume=True if run.get("resume") is None else bool(run["resume"]), config=config)


def _coerce(key: str, value: Any, field, path, line) -> Any:
    """YAML 1.1 reads 3e-7 as a string: a string given for a numeric field is read as a number."""
    default = field.default
    if not isinstance(value, str) or not isinstance(default, (int, float)) or isinstance(default, bool):
        return value
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"'{key}' must be a number, got {value!r}", path, line) from None
    return int(number) if isinstance(default, int) and number.is_integer() else number
