"""The shape of the code, held by tests rather than by review.

- The runtime (``isolate_runtime``) never imports pytest, pluggy or the
  plugin: it is usable, and tested, without them.
- Neither package has an import cycle, counting imports inside functions
  too (moving an import into a function hides a cycle, it does not remove
  it).  Imports under ``if TYPE_CHECKING:`` are annotations only: never run,
  not counted.
- The plugin uses the runtime only through the names the runtime exports.
- pytest's private modules are imported in one place, ``compat.py``.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "runtime" / "isolate_runtime"
PLUGIN = ROOT / "pytest_isolate"


def modules(package_dir: Path, package: str) -> Dict[str, Path]:
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join([package] + parts)] = path
    return found


def imports(path: Path, module: str, is_package: bool) -> Iterator[Tuple[str, List[str], int]]:
    """Every import in the file, at any depth: (absolute module, the names
    imported from it, line)."""
    tree = ast.parse(path.read_text(), str(path))
    base = module.split(".") if is_package else module.split(".")[:-1]
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names], node.lineno


def graph(package_dir: Path, package: str) -> Dict[str, Set[str]]:
    mods = modules(package_dir, package)
    edges: Dict[str, Set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for target, names, _ in imports(path, mod, path.name == "__init__.py"):
            if target not in mods:
                continue
            sub = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
            if sub and len(sub) == len(names):
                edges[mod].update(sub)  # ``from . import a, b``: the modules a and b
            else:
                edges[mod].add(target)
                edges[mod].update(sub)
    for mod in edges:
        edges[mod].discard(mod)
    return edges


def a_cycle(edges: Dict[str, Set[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> Optional[List[str]]:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def without_package_inits(edges: Dict[str, Set[str]], package: str) -> Dict[str, Set[str]]:
    """A package's ``__init__`` re-exports its modules; a module that takes a
    sibling's name through the package (``from . import x``) is counted as
    an edge to ``x`` already.  An edge *to* an ``__init__`` from inside its
    package is what the import system resolves first and is a cycle only
    when the ``__init__`` imports that module at import time, which the
    edges *from* the ``__init__`` say."""
    inits = {m for m in edges if (RUNTIME if m.startswith("isolate_runtime") else PLUGIN).joinpath(
        *m.split(".")[1:], "__init__.py").exists()}
    return {m: {n for n in targets if not (n in inits and m.startswith(n + "."))} for m, targets in edges.items()}


@pytest.mark.parametrize("package_dir,package", [(RUNTIME, "isolate_runtime"), (PLUGIN, "pytest_isolate")],
                         ids=["runtime", "plugin"])
def test_no_import_cycles(package_dir: Path, package: str) -> None:
    edges = without_package_inits(graph(package_dir, package), package)
    assert a_cycle(edges) is None, " -> ".join(a_cycle(edges) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert a_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_runtime_never_imports_pytest_in_its_source() -> None:
    banned = ("pytest", "_pytest", "pluggy", "pytest_isolate")
    found = []
    for mod, path in modules(RUNTIME, "isolate_runtime").items():
        for target, _, line in imports(path, mod, path.name == "__init__.py"):
            if target.split(".")[0] in banned:
                found.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not found


def test_the_runtime_never_imports_pytest_when_it_runs(tmp_path: Path) -> None:
    """Every module imported, a sandbox run: pytest is not in sys.modules."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import isolate_runtime\n"
        "for m in pkgutil.walk_packages(isolate_runtime.__path__, 'isolate_runtime.'):\n"
        "    if m.name.endswith('__main__'):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "r = isolate_runtime.run(isolate_runtime.SandboxSpec(\n"
        "    payload=isolate_runtime.CallablePayload(sum, ([1, 2],)), timeout_seconds=60))\n"
        "print(json.dumps([r.outcome.value, r.value,\n"
        "                  sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest', 'pluggy'))]))\n"
    )
    # (a working directory of its own: an earlier test may have left this
    # process in one that is gone, and the runtime starts a sandbox there)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    outcome, value, loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == []
    assert (outcome, value) == ("ok", 3)


def test_the_plugin_uses_only_the_runtimes_public_names() -> None:
    import isolate_runtime

    public = set(isolate_runtime.__all__)
    found = []
    for mod, path in modules(PLUGIN, "pytest_isolate").items():
        where = path.relative_to(ROOT)
        for target, names, line in imports(path, mod, path.name == "__init__.py"):
            if target.startswith("isolate_runtime."):
                found.append(f"{where}:{line}: imports {target}")
            elif target == "isolate_runtime":
                found += [f"{where}:{line}: imports {n}" for n in names if n not in public]
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "isolate_runtime" and node.attr not in public):
                found.append(f"{where}:{node.lineno}: uses isolate_runtime.{node.attr}")
    assert not found


def test_pytest_internals_are_named_in_one_module() -> None:
    found = []
    for mod, path in modules(PLUGIN, "pytest_isolate").items():
        if path.name == "compat.py":
            continue
        for target, _, line in imports(path, mod, path.name == "__init__.py"):
            if target.split(".")[0] == "_pytest":
                found.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not found
