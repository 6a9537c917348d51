"""A digest of Python sources by their code: the syntax tree without docstrings, so reformatting,
comments and documentation do not change it (a benchmark result keyed by it stays reusable)."""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path


def _code(path: Path) -> bytes:
    source = path.read_bytes()
    try:
        tree = ast.parse(source)
    except SyntaxError:  # not Python we can parse: its bytes decide
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body[0].value.value = ""
    return ast.dump(tree).encode()


def code_digest(files, extra: str = "", length: int = 16) -> str:
    """Hex digest (``length`` characters) of ``extra`` and the code of each existing file."""
    h = hashlib.sha256(extra.encode())
    for f in files:
        f = Path(f)
        if f.is_file():
            h.update(f.name.encode())
            h.update(_code(f))
    return h.hexdigest()[:length]
