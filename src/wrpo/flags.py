"""Command-line flags made from the fields of settings classes (config dataclasses and pydantic
models), so that a setting's type, default and help are written once, on its field."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Flag:
    name: str        # as typed, with underscores: lr, max_steps
    field: str       # the field it sets
    type: type
    default: Any
    help: str


def plain_type(annotation) -> type:
    """bool, int, float or str for a field's annotation (`bool | None` -> bool, `str | list[str]` -> str)."""
    if isinstance(annotation, str):  # fields annotated under `from __future__ import annotations`
        annotation = eval(annotation, {**vars(typing), **vars(types)})
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    options = typing.get_args(annotation) if union else (annotation,)
    return next((candidate for candidate in (bool, int, float, str) if candidate in options), str)


def model_flags(model_class, skip: tuple[str, ...] = ()) -> list[Flag]:
    """A flag for each field of a pydantic model whose value is a plain type, with its description
    and default as help."""
    flags = []
    for name, field in model_class.model_fields.items():
        kind = plain_type(field.annotation)
        if name in skip or typing.get_origin(field.annotation) is dict or field.annotation is dict:
            continue
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None else f" [{default}]"
        flags.append(Flag(name=name, field=name, type=kind, default=default, help=f"{field.description}{shown}"))
    return flags
