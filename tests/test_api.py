"""The public names: docs/api.md names what ``__all__`` exports, and nothing missing (the import
graph is checked in tests/test_imports.py)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"


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
    """Each name of ``package.__all__`` is in api.md as ``package.name`` or in its section."""
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
    """``systems.X`` / ``dynfit.X`` in api.md is in ``__all__`` or a submodule: only the API."""
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


def _module_alls():
    """(path, names) of every module's literal ``__all__`` in the three packages, but
    ``dynfit/benchmark/`` (its code is frozen: its syntax tree keys stored results)."""
    import ast

    for package in ("_dyncore", "systems", "dynfit"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "benchmark" in path.relative_to(ROOT).parts:
                continue
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.Assign) and any(
                        getattr(t, "id", None) == "__all__" for t in node.targets):
                    yield path.relative_to(ROOT), ast.literal_eval(node.value)


def test_module_all_lists_only_documented_names():
    """Private by default: a module's ``__all__`` holds only names docs/api.md writes in code
    (a helper other modules import stays importable, out of ``__all__``)."""
    spans = " ".join(_code_spans(API_MD.read_text()))
    bad = [f"{path}: {name}" for path, names in _module_alls() for name in names
           if name != "__version__" and not re.search(rf"(?<!\w){re.escape(name)}\b", spans)]
    assert not bad, "in a module's __all__ but not in docs/api.md: " + "; ".join(bad)
