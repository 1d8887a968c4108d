"""The shape of the code: who may import whom, no import cycles, no file over 400 lines.

Read from the source (every import statement, those inside functions included), so a new
module that breaks a rule fails here before anyone has to read it.

    mytorch (plain tier: mytorch.nn, mytorch.optim; fast tier: mytorch.fast)   the library
    dataset, fixtures                                                           the data
    models                                                                      the models
    app, bench, train.py                                                        the application
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mytorch", "dataset", "fixtures", "models", "app", "bench")
# package -> packages it must never import (a lower layer never imports a higher one)
FORBIDDEN = {
    "mytorch": {"dataset", "fixtures", "models", "app", "bench", "train"},
    "dataset": {"models", "app", "bench", "train"},
    "fixtures": {"models", "app", "bench", "train"},
    "models": {"app", "bench", "train"},
    "app": {"bench", "train"},
}
PLAIN_TIER = ("mytorch.nn", "mytorch.optim")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))] + [ROOT / "train.py"]
    return {module_name(p): p for p in files}


def imports(name, path):
    """Every module name `name` imports (absolute, relative ones resolved)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            out.add(stem)
            out.update(f"{stem}.{alias.name}" for alias in node.names)
    return out


def local_graph():
    mods = sources()
    return {name: {m for m in imports(name, path) if m in mods and m != name} for name, path in mods.items()}


def test_no_layer_imports_a_higher_one():
    bad = [f"{name} imports {m}" for name, deps in local_graph().items()
           for m in deps if m.split(".")[0] in FORBIDDEN.get(name.split(".")[0], ())]
    assert not bad, bad


def test_the_plain_tier_never_imports_the_fast_tier():
    bad = [f"{name} imports {m}" for name, deps in local_graph().items() if name.startswith(PLAIN_TIER)
           for m in deps if m.startswith("mytorch.fast")]
    assert not bad, bad


def find_cycles(graph):
    """Import cycles of graph {module: {modules it imports}}, a package and its own parts left out
    (a package's __init__ imports its parts)."""
    def related(a, b):
        return a.startswith(b + ".") or b.startswith(a + ".")

    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for dep in graph.get(node, ()):
            if related(dep, node):
                continue
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])
    return cycles


def test_no_import_cycle_between_modules():
    cycles = find_cycles(local_graph())
    assert not cycles, cycles


def test_the_checker_sees_cycles_and_relative_function_level_imports(tmp_path):
    """The rules above can fail: a relative import inside a function is seen, a cycle is found."""
    pkg = tmp_path / "models"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    assert "models.b" in imports("models.a", _write(pkg / "a.py", "def f():\n    from .b import g\n"))
    assert "app.x" in imports("models.c", _write(pkg / "c.py", "from app.x import y\n"))
    graph = {"models.a": {"models.b"}, "models.b": {"models.a"}, "models": {"models.a"}}
    assert find_cycles(graph) == [["models.a", "models.b", "models.a"]]
    assert find_cycles({"models": {"models.a"}, "models.a": {"models"}}) == []


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(n for n in sources()))
def test_no_python_file_outside_tests_is_over_400_lines(name):
    lines = len(sources()[name].read_text().splitlines())
    assert lines <= 400, f"{sources()[name].relative_to(ROOT)} has {lines} lines"
