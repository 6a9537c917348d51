"""Register Fehlberg 4(5) ("rkf45") and the paper's Fehlberg 3(2) ("rkf23") with torchdiffeq.

torchdiffeq's adaptive stepper assumes first-same-as-last: it takes the last
stage as f(t1, y1) for the next step and for its dense output. A plain
Fehlberg tableau would silently make it first order (REFERENCES.md section 3),
so each tableau gets one extra stage at c = 1 whose row is the propagated
weights b (zero weight in the solution and error rows). The midpoint weights
for torchdiffeq's quartic dense output solve the order conditions of the
extended tableau at theta = 1/2 (order 4 for rkf45, 3 for rkf23) and are
checked at import.

After ``import dynfit.solvers``, ``torchdiffeq.odeint(f, y0, t, method="rkf45")``
and ``odeint_adjoint`` accept both names.
"""
from __future__ import annotations

import importlib

import numpy as np
import torch
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _ButcherTableau

from systems.tableaus import RKF23, RKF45, Tableau

from .tableau import check_tableau

__all__ = ["RKF45Solver", "RKF23Solver", "fsal_extension", "register"]


def fsal_extension(tab: Tableau) -> tuple[np.ndarray, np.ndarray]:
    """(a (s+1, s+1), c (s+1,)) with a last stage at c = 1 whose row is b."""
    s = tab.stages
    a = np.zeros((s + 1, s + 1))
    a[:s, :s] = tab.a
    a[s, :s] = tab.b
    return a, np.append(tab.c, 1.0)


def _midpoint_weights(tab: Tableau, order: int, theta: float = 0.5) -> np.ndarray:
    """Weights w with y0 + h * sum w_i k_i = y(t0 + theta h) + O(h^(order+1)) on the extended tableau."""
    a, c = fsal_extension(tab)
    rows = [np.ones_like(c), c, c**2, a @ c, c**3, c * (a @ c), a @ c**2, a @ (a @ c)]
    rhs = [theta, theta**2 / 2, theta**3 / 3, theta**3 / 6, theta**4 / 4, theta**4 / 8, theta**4 / 12, theta**4 / 24]
    n = {1: 1, 2: 2, 3: 4, 4: 8}[order]
    A, r = np.array(rows[:n]), np.array(rhs[:n])
    w = np.linalg.lstsq(A, r, rcond=None)[0]
    res = np.abs(A @ w - r).max()
    if res > 1e-13:
        raise ValueError(f"tableau {tab.name!r}: no order-{order} midpoint weights (residual {res:.2e})")
    return w


def _torchdiffeq_tableau(tab: Tableau) -> _ButcherTableau:
    check_tableau(tab)
    a, c = fsal_extension(tab)
    s = tab.stages
    f64 = dict(dtype=torch.float64)
    return _ButcherTableau(
        alpha=torch.tensor(c[1:], **f64),
        beta=[torch.tensor(a[i, :i], **f64) for i in range(1, s + 1)],
        c_sol=torch.tensor(np.append(tab.b, 0.0), **f64),
        c_error=torch.tensor(np.append(tab.b - tab.b_low, 0.0), **f64),
    )


class RKF45Solver(RKAdaptiveStepsizeODESolver):
    """Runge-Kutta-Fehlberg 4(5), propagating order 5, FSAL-extended (6 evaluations per step)."""

    order = 5
    tableau = _torchdiffeq_tableau(RKF45)
    mid = torch.tensor(_midpoint_weights(RKF45, 4), dtype=torch.float64)


class RKF23Solver(RKAdaptiveStepsizeODESolver):
    """The paper's Fehlberg 3(2): RK3 propagated, Heun for the error, FSAL-extended (3 evaluations per step)."""

    order = 3
    tableau = _torchdiffeq_tableau(RKF23)
    mid = torch.tensor(_midpoint_weights(RKF23, 3), dtype=torch.float64)


def register() -> None:
    """Add "rkf45" and "rkf23" to torchdiffeq's SOLVERS (shared by odeint and odeint_adjoint)."""
    solvers = importlib.import_module("torchdiffeq._impl.odeint").SOLVERS  # the module, not the function
    solvers["rkf45"] = RKF45Solver
    solvers["rkf23"] = RKF23Solver


register()
