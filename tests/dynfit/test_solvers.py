"""odesolve: API, statistics, controls and bad input."""
import math

import numpy as np
import pytest
import torch

from dynfit.solvers import MixedNorm, PaperRule, Solution, SolverError, Stats, Status, odesolve

torch.set_num_threads(1)
F64 = torch.float64


def decay(t, y):
    return -y


def test_decay_matches_exact_all_modes():
    y0 = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)
    t = torch.linspace(0, 1, 5, dtype=F64)
    exact = torch.exp(-t)[:, None, None] * y0
    cases = [(dict(control=MixedNorm(rtol=1e-9, atol=1e-9)), 1e-8), (dict(control=PaperRule(eps=1e-3)), 1e-4),
             (dict(step_size=0.01, method="rk4"), 1e-9), (dict(method="dopri5", control=MixedNorm(rtol=1e-9, atol=1e-9)), 1e-8)]
    for kw, tol in cases:
        sol = odesolve(decay, y0, t, **kw)
        assert isinstance(sol, Solution) and isinstance(sol.stats, Stats)
        assert sol.ys.shape == (5, 2, 2) and sol.ys.dtype == F64
        assert (sol.ys - exact).abs().max() < tol, (kw, (sol.ys - exact).abs().max())
        assert (sol.stats.status == Status.SUCCESS).all()
