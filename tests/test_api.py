"""The packages' shape: no import cycle, docs/api.md names what ``__all__`` exports (and nothing
missing)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"


# ------------------------------------------------------------------ the import graph
def _modules(pkg: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / pkg).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _import_time_nodes(tree: ast.AST) -> list[ast.AST]:
    """The nodes that run when the module is imported: everything outside function bodies."""
    out, todo = [], list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return out


def _import_graph(pkg: str, *, module_level: bool) -> dict[str, set[str]]:
    """Edges module -> module of ``pkg`` its import statements name.

    module_level: only statements run at import time (the module body, not
    functions); else every import statement, except a function-level import of
    the package itself (``import dynfit`` to read ``__version__`` once
    everything is loaded). ``if TYPE_CHECKING:`` blocks never run: not counted.
    """
    mods = _modules(pkg)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"
        top = {id(n) for n in _import_time_nodes(tree)}
        typing_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for n in ast.walk(block)
        }
        for node in _import_time_nodes(tree) if module_level else ast.walk(tree):
            if id(node) in typing_only:  # never runs: annotations only
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                subs = [f"{src}.{a.name}" for a in node.names if f"{src}.{a.name}" in mods]
                targets = subs + ([src] if len(subs) < len(node.names) else [])
            else:
                continue
            for target in targets:
                if target not in mods or target == mod:
                    continue
                if not module_level and target == pkg and id(node) not in top:
                    continue  # a lazy read of the package's own attributes (__version__)
                graph[mod].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                found.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


# Function-level cycles still to be removed (not import-time: the later import sits in a function).
# None left: config.run (config -> train) became dynfit.train.train_from_config.
KNOWN_LAZY_CYCLES: set[tuple[str, ...]] = set()


@pytest.mark.parametrize("pkg", ["systems", "dynfit"])
@pytest.mark.parametrize("module_level", [True, False], ids=["import-time", "all-imports"])
def test_no_import_cycle(pkg, module_level):
    cycles = _cycles(_import_graph(pkg, module_level=module_level))
    if not module_level:
        cycles = [c for c in cycles if tuple(sorted(set(c))) not in KNOWN_LAZY_CYCLES]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_kernel_registry_imports_neither_integrator_nor_lyapunov():
    """systems.kernels sits below both: they register their templates into it, it imports
    neither."""
    graph = _import_graph("systems", module_level=False)
    assert not graph["systems.kernels"] & {"systems.integrate", "systems.lyapunov"}
    assert (
        "systems.kernels" in graph["systems.integrate"]
        and "systems.kernels" in graph["systems.lyapunov"]
    )


# ------------------------------------------------------------------ docs/api.md against __all__
def _code_spans(text: str) -> list[str]:
    """Fenced code blocks and inline code spans of a Markdown text."""
    fenced = re.findall(r"```.*?```", text, flags=re.S)
    inline = re.findall(r"`[^`]+`", re.sub(r"```.*?```", "", text, flags=re.S))
    return fenced + inline


def _dotted_references(text: str) -> set[str]:
    """``systems.X`` / ``dynfit.X.Y`` written in code in the docs (not inside a string literal)."""
    refs = set()
    for span in _code_spans(text):
        for m in re.finditer(r"(?<![\w./\"'])((?:systems|dynfit)(?:\.[A-Za-z_]\w*)+)", span):
            refs.add(m.group(1))
    return refs


def _section(text: str, package: str) -> str:
    start = text.index(f"## `{package}`")
    nxt = text.find("\n## ", start + 1)
    return text[start : nxt if nxt > 0 else len(text)]


def _resolve(ref: str):
    parts = ref.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(ref)


@pytest.mark.parametrize("package", ["systems", "dynfit"])
def test_every_exported_name_is_documented(package):
    """Each name of ``package.__all__`` appears in api.md as ``package.name``, or in code in its
    section."""
    text = API_MD.read_text()
    refs = _dotted_references(text)
    spans = _code_spans(_section(text, package))
    module = importlib.import_module(package)
    missing = [
        name
        for name in module.__all__
        if name != "__version__"
        and f"{package}.{name}" not in refs
        and not any(re.search(rf"(?<![\w.]){re.escape(name)}\b", s) for s in spans)
    ]
    assert not missing, f"in {package}.__all__ but not in docs/api.md: {missing}"


def test_every_documented_name_exists():
    """Each ``systems.X...`` / ``dynfit.X...`` written in code in api.md imports."""
    bad = []
    for ref in sorted(_dotted_references(API_MD.read_text())):
        try:
            _resolve(ref)
        except (ImportError, AttributeError) as err:
            bad.append(f"{ref} ({type(err).__name__}: {err})")
    assert not bad, "documented in docs/api.md but missing: " + "; ".join(bad)


def test_top_level_names_in_api_md_are_exported():
    """``systems.X`` / ``dynfit.X`` in api.md is in ``__all__`` (or a submodule): the docs show
    only the API."""
    bad = []
    for ref in sorted(_dotted_references(API_MD.read_text())):
        package, name = ref.split(".")[:2]
        module = importlib.import_module(package)
        if (
            name not in module.__all__
            and not (ROOT / package / name).is_dir()
            and not (ROOT / package / f"{name}.py").is_file()
        ):
            bad.append(ref)
    assert not bad, "in docs/api.md as top-level names but not in __all__: " + ", ".join(bad)
