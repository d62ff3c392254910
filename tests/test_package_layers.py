"""The packages of wrpo import each other in one direction only: a cycle makes import order matter and
hides which layer owns what. Function-local imports count too."""

import ast
from pathlib import Path

import wrpo

ROOT = Path(wrpo.__file__).parent
PACKAGES = {path.name for path in ROOT.iterdir() if (path / "__init__.py").exists()}


def imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            found |= {module.split(".")[1] for module in modules
                      if module.startswith("wrpo.") and module.split(".")[1] in PACKAGES}
    return found - {package}


def reachable(package: str) -> set[str]:
    seen, todo = set(), [package]
    while todo:
        for other in imported_packages(todo.pop()) - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_no_package_reaches_itself():
    assert [package for package in sorted(PACKAGES) if package in reachable(package)] == []


def test_data_depends_on_no_stage():
    assert reachable("data") & {"generation", "reward", "training", "evaluation", "pipeline", "demo"} == set()
