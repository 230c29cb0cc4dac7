"""The shape of the code: short modules, and packages whose modules import each other without a
cycle (see docs/concepts.md, "How the code is organized")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sagan_ad"
LONGEST = 450


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize(
    "path",
    python_files(PACKAGE) + python_files(ROOT / "benchmarks"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_module_is_longer_than_the_limit(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= LONGEST, f"{path.relative_to(ROOT)} has {lines} lines: split it by idea"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level(tree: ast.Module) -> list[ast.stmt]:
    """The module's own statements, with those under ``if TYPE_CHECKING:``: a cycle of type
    annotations is a cycle of ideas all the same."""
    statements = []
    for node in tree.body:
        statements.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            statements.extend(node.body)
    return statements


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The sagan_ad modules ``path`` imports when it is imported (top-level statements and those
    for type checking: imports inside functions run later and cannot make an import cycle)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in top_level(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def test_modules_import_each_other_without_a_cycle():
    paths = {module_name(p): p for p in python_files(PACKAGE)}
    graph = {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}
    # A package's own __init__ importing its modules is how packages re-export: not a cycle
    # unless a module imports its package back, which the graph keeps.
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_a_private_name_of_another():
    # What a module shares is public; a private name stays in the module that defines it.
    found = []
    for path in python_files(PACKAGE):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sagan_ad"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                private = [name for name in private if not name.startswith("__")]
                found += [f"{path.relative_to(ROOT)}: {node.module}.{n}" for n in private]
    assert not found, "private names imported across modules: " + ", ".join(found)
