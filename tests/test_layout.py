"""The layers: imports run one way, cli -> deployments -> pipeline -> model (the recipe beside them, on the model
only), and no package's modules import each other in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each package may import of the project's packages, besides itself.
ALLOWED = {
    "model": set(),
    "pipeline": {"model"},
    "deployments": {"model", "pipeline"},
    "recipe": {"model"},
    "cli": {"model", "pipeline", "deployments"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports, wherever in the file (inside functions too): `from package import
    module` depends on that module, `from package import name` on the package's __init__."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in modules else node.module)
    return names & modules


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    paths = {module_name(path): path for package in ALLOWED for path in (ROOT / package).glob("*.py")}
    return {module: imported_modules(path, set(paths)) - {module} for module, path in paths.items()}


@pytest.mark.parametrize("package", ALLOWED)
def test_no_import_runs_up_the_layers(package: str) -> None:
    upward = {
        f"{module} imports {name}"
        for module, names in project_imports().items()
        if module.split(".")[0] == package
        for name in names
        if name.split(".")[0] not in ALLOWED[package] | {package}
    }
    assert not upward


def test_no_import_cycle() -> None:
    graph = project_imports()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in visiting:
            raise AssertionError(f"import cycle: {' -> '.join(visiting[visiting.index(module) :] + [module])}")
        if module in done:
            return
        visiting.append(module)
        for name in sorted(graph[module]):
            visit(name)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
