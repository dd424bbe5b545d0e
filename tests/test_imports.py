"""The import graph of atssrepro: no cycle anywhere (lazy imports inside functions included), and
each layer imports only from the layers below it (README, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "atssrepro"
LAYERS = {
    "cli": 6,
    "harness": 5,
    "engine": 4,
    "analysis": 4,
    "model": 3,
    "data": 3,
    "distributed": 2,
    "config": 2,
    "schema": 1,
    "tomlfile": 1,
    "fileio": 1,
    "terminal": 1,
    "errors": 0,
}
"""Rank of each top-level part of the package: a part imports only parts of a lower rank (or itself)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The atssrepro modules that ``path`` imports anywhere, ``if TYPE_CHECKING:`` blocks aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, set(known)) - {name} for name, path in known.items()}


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(edges[name]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])


def test_layers_import_only_downwards() -> None:
    wrong = []
    for name, targets in graph().items():
        part = name.split(".")[1] if "." in name else None
        if part not in LAYERS:  # the package itself and __main__: the entry points
            continue
        for target in targets:
            if target == "atssrepro":  # the package itself (its path, its version): no code of a layer
                continue
            other = target.split(".")[1]
            if other != part and (other not in LAYERS or LAYERS[other] >= LAYERS[part]):
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the layers: " + ", ".join(sorted(wrong))


def test_every_module_is_seen() -> None:
    names = set(graph())
    assert {"atssrepro.cli", "atssrepro.config.layers", "atssrepro.model.official", "atssrepro.harness.runner"} <= names
    assert {name.split(".")[1] for name in names if "." in name} <= {*LAYERS, "__main__"}
