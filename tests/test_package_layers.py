"""wrpo's modules import each other in one direction only: each package or top-level module sits in a layer and
imports from its own layer or those below, and no module reaches itself (a cycle makes import order matter and
hides which layer owns what). Every module counts, top-level files (cli.py) included, and function-local
imports count too."""

import ast
from pathlib import Path

import wrpo

ROOT = Path(wrpo.__file__).parent
# Top to bottom. The command line on top, which nothing imports; the orchestration (the ablation's planning
# over the pipeline's); the stages' libraries; the data they share; the helpers everything uses.
LAYERS = [
    {"cli"},
    {"demo"},
    {"ablation"},
    {"pipeline"},
    {"evaluation"},
    {"training", "generation", "reward"},
    {"data"},
    {"losses", "modeling", "locks", "flags", "yaml_files", "files", "settings"},
    {"progress", "errors", "stop_request"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def imports(module: str) -> set[str]:
    """The wrpo modules `module` imports (a name imported from a package counts as its module when it is one)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            candidates = [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {name for name in candidates if name in MODULES} or ({node.module} & set(MODULES))
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
    return found - {module}


GRAPH = {module: imports(module) for module in MODULES}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    return next(index for index, names in enumerate(LAYERS) if top in names)


def test_every_module_has_a_layer():
    unplaced = sorted({module.split(".")[1] for module in MODULES if "." in module} - set().union(*LAYERS))
    assert unplaced == []


def test_no_module_imports_from_a_layer_above_its_own():
    upward = sorted(f"{module} -> {other}" for module, others in GRAPH.items() for other in others
                    if "." in module and "." in other and layer(other) < layer(module))
    assert upward == []


def test_no_module_reaches_itself():
    def cycle_through(start: str) -> list[str] | None:
        paths = [[start]]
        seen = set()
        while paths:
            path = paths.pop()
            for other in GRAPH[path[-1]]:
                if other == start:
                    return [*path, start]
                if other not in seen:
                    seen.add(other)
                    paths.append([*path, other])
        return None

    cycles = [cycle for cycle in map(cycle_through, sorted(MODULES)) if cycle]
    assert cycles == []


def test_nothing_imports_the_command_line():
    assert sorted(module for module, others in GRAPH.items() if "wrpo.cli" in others) == []


def test_the_checks_see_a_cycle_through_a_top_level_module(monkeypatch):
    """What the old test missed: a cycle closed by a module outside every package (cli.py)."""
    monkeypatch.setitem(GRAPH, "wrpo.pipeline.local", GRAPH["wrpo.pipeline.local"] | {"wrpo.cli"})
    assert not _passes(test_nothing_imports_the_command_line)
    assert not _passes(test_no_module_reaches_itself)


def _passes(check) -> bool:
    try:
        check()
    except AssertionError:
        return False
    return True
