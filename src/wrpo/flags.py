"""Command-line flags made from the fields of settings classes (config dataclasses and pydantic
models), so that a setting's type, default and help are written once, on its field."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from wrpo.errors import InputError


@dataclass(frozen=True)
class Flag:
    name: str        # as typed, with underscores: lr, max_steps
    field: str       # the field it sets
    type: type       # bool, int, float, str, or dict (typed as a JSON object)
    default: Any
    help: str


def plain_type(annotation) -> type:
    """bool, int, float or str for a field's annotation (`bool | None` -> bool, `str | list[str]` -> str)."""
    if isinstance(annotation, str):  # fields annotated under `from __future__ import annotations`
        annotation = eval(annotation, {**vars(typing), **vars(types)})
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    options = typing.get_args(annotation) if union else (annotation,)
    return next((candidate for candidate in (bool, int, float, str) if candidate in options), str)


def model_flags(model_class, skip: tuple[str, ...] = (), prefix: str = "",
                names: dict[str, str] | None = None) -> list[Flag]:
    """A flag for each field of a pydantic model whose value is a plain type or a dict (given as a
    JSON object), with its description and default as help; named prefix + field, or as `names` says."""
    flags = []
    for name, field in model_class.model_fields.items():
        if name in skip:
            continue
        mapping = typing.get_origin(field.annotation) is dict or field.annotation is dict
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        shown = "" if default is None or default == {} else f" [{default}]"
        flags.append(Flag(name=(names or {}).get(name, prefix + name), field=name,
                          type=dict if mapping else plain_type(field.annotation), default=default,
                          help=f"{field.description}{' (JSON)' if mapping else ''}{shown}"))
    return flags


def parse_flag_value(flag: Flag, value: Any) -> Any:
    """A flag's value as its field takes it: a dict flag's JSON text parsed, the others as given."""
    if flag.type is not dict or not isinstance(value, str):
        return value
    option = "--" + flag.name.replace("_", "-")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise InputError(f"{option} is not valid JSON ({error}): {value!r}") from None
    if not isinstance(parsed, dict):
        raise InputError(f"{option} must be a JSON object ({{...}}), got {value!r}")
    return parsed
