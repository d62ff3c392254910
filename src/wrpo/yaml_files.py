"""Reading YAML settings files (configs, recipes) with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wrpo.errors import InputError


def load_yaml(path: str | Path, kind: str) -> tuple[Any, yaml.Node | None]:
    """(the data, its node tree for line numbers) of the YAML file at `path`; `kind` names it in errors."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.safe_load(text), yaml.compose(text)
    except OSError as error:
        raise InputError(f"cannot read {kind} ({error.strerror})", path) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise InputError(f"not valid YAML ({getattr(error, 'problem', error)})", path,
                         mark.line + 1 if mark else None) from None


def line_of(node: yaml.Node | None, location: tuple) -> int | None:
    """The 1-based line of the value at `location` (keys and list indices), as deep as it exists."""
    line = None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            matches = [(key, value) for key, value in node.value if key.value == str(part)]
            if not matches:
                break
            line, node = matches[0][0].start_mark.line + 1, matches[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def validated(model_class, data: Any, path: str | Path | None = None, node: yaml.Node | None = None,
              as_flags: bool = False):
    """`model_class` (a pydantic model) from `data`; the first problem is an InputError naming the
    setting (as a --flag for command-line values) and, for a YAML file, its line."""
    try:
        return model_class.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = first["loc"]
        where = "--" + str(location[0]).replace("_", "-") if as_flags and location else ".".join(map(str, location))
        message = first["msg"].removeprefix("Value error, ")
        raise InputError(f"{where}: {message}" if where else message, path,
                         line_of(node, location) if node is not None else None) from None
