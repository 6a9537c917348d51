"""The import graph of ``_dyncore``, ``systems`` and ``dynfit``, read from the source with ``ast``.

Checks: no cycle between modules (at import time; and again counting the imports inside
functions, reported apart), ``_dyncore`` imports neither package, ``systems`` does not import
``dynfit``, ``dynfit.solvers`` imports only ``_dyncore``, and dynfit's layers (``LAYERS``, lowest
first; docs/architecture.md) are imported one way only: downwards or within a layer.

Imports inside ``if TYPE_CHECKING:`` never run and are not counted. The package ``dynfit`` (its
``__init__``) imports its public names lazily through its ``_LAZY`` table: those count as lazy
imports of the modules it names. ``python tests/test_imports.py`` prints the graph by layer.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("_dyncore", "systems", "dynfit")

# dynfit's layers, lowest first: a module imports only from its own layer or the ones below it.
# An entry ending in ".*" is a subpackage (its __init__ and every module in it).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("solvers", ("dynfit.solvers.*",)),
    ("base", ("dynfit._settings", "dynfit._threads", "dynfit._history", "dynfit._version",
              "dynfit.data",
              "dynfit.io", "dynfit.distributed", "dynfit.embedding", "dynfit.forecast",
              "dynfit.smoothing", "dynfit.weakform")),
    ("fields", ("dynfit.nn.*", "dynfit.equations")),
    ("diagnostics", ("dynfit.diagnostics.*",)),
    ("training parts", ("dynfit.inference", "dynfit.strategies", "dynfit.prefit", "dynfit.shooting",
                        "dynfit.selection", "dynfit.surrogate", "dynfit._watch")),
    ("settings", ("dynfit.config",)),
    ("fit", ("dynfit.train", "dynfit.estimator")),
    ("application", ("dynfit.sweep", "dynfit.tables", "dynfit.plot", "dynfit.compare")),
    ("public namespace", ("dynfit",)),
    ("clients", ("dynfit.cli", "dynfit.__main__", "dynfit._demo", "dynfit.benchmark.*")),
]

# Known exceptions, (importer, imported) -> why; each one is lazy (inside a function). The owner
# removes the import, then its line here (test_known_exceptions_still_exist says when).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    """One import statement: ``source`` imports ``target`` (at ``path``:``line``)."""

    source: str
    target: str
    lazy: bool  # inside a function body: runs on call, not on import
    path: str
    line: int

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}{', lazy' if self.lazy else ''}"
        return f"{self.source} -> {self.target} ({where})"


def modules(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``packages`` under ``root``."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict) -> str | None:
    """The longest prefix of ``name`` that is a known module (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) or None


def _module_edges(mod: str, path: Path, known: dict, root: Path) -> list[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    typing_only, in_function = set(), set()
    todo = [(tree, False, False)]  # (node, inside a function, inside `if TYPE_CHECKING:`)
    while todo:
        node, lazy, typing = todo.pop()
        if lazy:
            in_function.add(id(node))
        if typing:
            typing_only.add(id(node))
        lazy = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            todo += [(child, lazy, True) for child in node.body]  # never runs: annotations only
            todo += [(child, lazy, typing) for child in node.orelse]
        else:
            todo += [(child, lazy, typing) for child in ast.iter_child_nodes(node)]
    package = mod.split(".") if is_pkg else mod.split(".")[:-1]
    found = []  # (target, lazy, line)
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            src = ".".join(base + ([node.module] if node.module else []))
            names = [f"{src}.{a.name}" if f"{src}.{a.name}" in known else src for a in node.names]
        elif (is_pkg and isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)):
            # the public namespace's lazy table: name -> ".submodule"
            names = [".".join(package) + c.value for c in ast.walk(node.value)
                     if isinstance(c, ast.Constant) and str(c.value).startswith(".")]
            found += [(n, True, node.lineno) for n in names]
            continue
        else:
            continue
        found += [(n, id(node) in in_function, node.lineno) for n in names]
    rel = str(path.relative_to(root))
    edges = []
    for name, lazy, line in found:
        target = _resolve(name, known)
        if target is not None and target != mod:
            edges.append(Edge(mod, target, lazy, rel, line))
    return edges


def import_edges(root: Path = ROOT, packages=PACKAGES) -> list[Edge]:
    """Every import between modules of ``packages`` (TYPE_CHECKING blocks aside)."""
    known = modules(root, packages)
    return [e for mod, path in known.items() for e in _module_edges(mod, path, known, root)]


@functools.lru_cache(maxsize=1)
def _edges() -> tuple[Edge, ...]:
    return tuple(import_edges())


def _checked_edges(*, lazy: bool) -> list[Edge]:
    """The tree's edges less the known exceptions; with ``lazy`` False, import-time ones only."""
    return [e for e in _edges() if (lazy or not e.lazy)
            and (e.source, e.target) not in KNOWN_EXCEPTIONS]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles of a directed graph found by depth-first search (each as [a, b, ..., a])."""
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def _graph(edges) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
    return graph


def _describe(cycle: list[str], edges) -> str:
    """A cycle with the import statement behind each step (lazy ones marked)."""
    by_pair = {}
    for e in edges:
        by_pair.setdefault((e.source, e.target), e)
    return " ; ".join(str(by_pair[a, b]) for a, b in zip(cycle, cycle[1:]))


def layer_of(module: str) -> int | None:
    """The index in LAYERS of a dynfit module, or None where no entry covers it."""
    for i, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if module == entry or (entry.endswith(".*") and (
                    module == entry[:-2] or module.startswith(entry[:-1]))):
                return i
    return None


# ------------------------------------------------------------------ the rules
def test_no_cycle_at_import_time():
    edges = _checked_edges(lazy=False)
    found = cycles(_graph(edges))
    assert not found, "import-time cycles: " + " | ".join(_describe(c, edges) for c in found)


def test_no_cycle_counting_imports_inside_functions():
    """Lazy imports (inside functions) count too: a cycle through one is still a loop of
    concepts, only hidden from import time."""
    edges = _checked_edges(lazy=True)
    found = cycles(_graph(edges))
    assert not found, "cycles through lazy imports: " + " | ".join(
        _describe(c, edges) for c in found)


def test_dyncore_imports_neither_package():
    bad = [str(e) for e in _edges()
           if e.source.split(".")[0] == "_dyncore" and e.target.split(".")[0] != "_dyncore"]
    assert not bad, "_dyncore imports numpy only, neither systems nor dynfit: " + "; ".join(bad)


def test_systems_does_not_import_dynfit():
    bad = [str(e) for e in _edges()
           if e.source.split(".")[0] == "systems" and e.target.split(".")[0] == "dynfit"]
    assert not bad, "systems never imports dynfit: " + "; ".join(bad)


def test_dynfit_solvers_import_only_dyncore():
    """What lets ``import dynfit.solvers`` run without numba (systems' import loads it)."""
    bad = [str(e) for e in _edges() if layer_of(e.source) == 0
           and layer_of(e.target) != 0 and e.target.split(".")[0] != "_dyncore"]
    assert not bad, "dynfit.solvers imports only itself and _dyncore: " + "; ".join(bad)


def test_every_dynfit_module_has_a_layer():
    missing = [m for m in modules() if m.split(".")[0] == "dynfit" and layer_of(m) is None]
    assert not missing, f"add these modules to LAYERS in tests/test_imports.py: {missing}"


def test_dynfit_layers_go_one_way():
    """No dynfit module imports one of a higher layer (known exceptions aside), lazily or not."""
    up = [e for e in _checked_edges(lazy=True)
          if None not in (layer_of(e.source), layer_of(e.target))
          and layer_of(e.target) > layer_of(e.source)]
    eager = [str(e) for e in up if not e.lazy]
    lazy = [str(e) for e in up if e.lazy]
    assert not up, f"upward imports at import time: {eager}; inside functions: {lazy}"


def test_known_exceptions_still_exist():
    """Each known exception is still in the code (remove its entry once the import is gone)."""
    pairs = {(e.source, e.target) for e in _edges()}
    gone = [pair for pair in KNOWN_EXCEPTIONS if pair not in pairs]
    assert not gone, f"fixed: remove these from KNOWN_EXCEPTIONS in tests/test_imports.py: {gone}"


def test_kernel_registry_imports_neither_integrator_nor_lyapunov():
    """systems.kernels sits below both: they register their templates into it."""
    graph = _graph(_edges())
    assert not graph["systems.kernels"] & {"systems.integrate", "systems.lyapunov"}
    assert "systems.kernels" in graph["systems.integrate"]
    assert "systems.kernels" in graph["systems.lyapunov"]


# ------------------------------------------------------------------ the reader itself
def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_reader_counts_lazy_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('_LAZY = {"thing": ".c"}\n')
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import b\nfrom .b import f\n"
        "if TYPE_CHECKING:\n    from .c import T\nelse:\n    from . import c\n"
        "def g():\n    from pkg.c import h\n    return h\n")
    (pkg / "b.py").write_text("def f():\n    import pkg\n")
    (pkg / "c.py").write_text("")
    got = {(e.source, e.target, e.lazy) for e in import_edges(tmp_path, ("pkg",))}
    assert got == {("pkg.a", "pkg.b", False), ("pkg.a", "pkg.c", True), ("pkg.a", "pkg.c", False),
                   ("pkg.b", "pkg", True), ("pkg", "pkg.c", True)}


def test_layer_of():
    assert LAYERS[layer_of("dynfit.solvers.integrate")][0] == "solvers"
    assert LAYERS[layer_of("dynfit.solvers")][0] == "solvers"
    assert LAYERS[layer_of("dynfit")][0] == "public namespace"
    assert layer_of("dynfit.solversx") is None


@pytest.mark.parametrize("module", ["dynfit.train", "dynfit.nn.fields", "systems.simulate"])
def test_reader_sees_known_imports(module):
    assert any(e.source == module for e in _edges())


if __name__ == "__main__":
    edges = _edges()
    for i, (name, _) in enumerate(LAYERS):
        print(f"{i} {name}:")
        for mod in sorted(m for m in modules() if layer_of(m) == i):
            inside = sorted({e.target for e in edges if e.source == mod and not e.lazy
                             and layer_of(e.target) is not None and e.target != mod})
            lazy = sorted({e.target for e in edges if e.source == mod and e.lazy
                           and layer_of(e.target) is not None} - set(inside))
            print(f"    {mod} -> {', '.join(inside) or '-'}"
                  + (f"; lazily {', '.join(lazy)}" if lazy else ""))
