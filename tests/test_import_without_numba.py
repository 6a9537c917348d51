"""``import dynfit.solvers`` (and a solve) in an interpreter where numba cannot be imported."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_BLOCK = """
import importlib.abc, sys

class _NoNumba(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "numba" or name.startswith("numba."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _NoNumba())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK + code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_the_blocker_blocks_numba():
    out = _run("import systems")
    assert out.returncode != 0 and "blocked by the test" in out.stderr


def test_dynfit_solvers_imports_and_solves_without_numba():
    out = _run("""
import torch
import dynfit.solvers as s
from _dyncore import checks, stats, status, tableaus  # noqa: F401  (the base: no numba)
sol = s.odesolve(lambda t, y: -y, torch.ones(2, 1, dtype=torch.float64),
                 torch.tensor([0.0, 1.0], dtype=torch.float64), control=s.PIController(1e-8, 1e-8))
assert abs(float(sol.ys[-1, 0, 0]) - 0.36787944117144233) < 1e-7
import dynfit
assert dynfit.odesolve is s.odesolve and dynfit.Stats is s.Stats
assert not any(m == "numba" or m.startswith("numba.") for m in sys.modules)
print("ok")
""")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
