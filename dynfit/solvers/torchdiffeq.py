"""Register Fehlberg 4(5) ("rkf45") and the paper's Fehlberg 3(2) ("rkf23") with torchdiffeq.

torchdiffeq's adaptive stepper assumes first-same-as-last: it takes the last
stage as f(t1, y1) for the next step and for its dense output. A plain
Fehlberg tableau would silently make it first order (docs/references.md section 3),
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

from _dyncore.tableaus import RKF23, RKF45, Tableau

from .tableau import check_tableau, fsal_extension, midpoint_weights


def _torchdiffeq_tableau(tab: Tableau) -> _ButcherTableau:
    check_tableau(tab)
    a, b, c = fsal_extension(tab)  # b gains a zero weight on the new stage
    f64 = dict(dtype=torch.float64)
    return _ButcherTableau(
        alpha=torch.tensor(c[1:], **f64),
        beta=[torch.tensor(a[i, :i], **f64) for i in range(1, len(c))],
        c_sol=torch.tensor(b, **f64),
        c_error=torch.tensor(b - np.append(tab.b_low, 0.0), **f64),
    )


class RKF45Solver(RKAdaptiveStepsizeODESolver):
    """Runge-Kutta-Fehlberg 4(5), propagating order 5, FSAL-extended (6 evaluations per step)."""

    order = 5
    tableau = _torchdiffeq_tableau(RKF45)
    mid = torch.tensor(midpoint_weights(*fsal_extension(RKF45)[::2], order=4))


class RKF23Solver(RKAdaptiveStepsizeODESolver):
    """The paper's Fehlberg 3(2): RK3 propagated, Heun for the error, FSAL-extended
    (3 evaluations per step)."""

    order = 3
    tableau = _torchdiffeq_tableau(RKF23)
    mid = torch.tensor(midpoint_weights(*fsal_extension(RKF23)[::2], order=3))


def register() -> None:
    """Add "rkf45" and "rkf23" to torchdiffeq's SOLVERS (shared by odeint and odeint_adjoint)."""
    # the module, not the function
    solvers = importlib.import_module("torchdiffeq._impl.odeint").SOLVERS
    solvers["rkf45"] = RKF45Solver
    solvers["rkf23"] = RKF23Solver


register()
