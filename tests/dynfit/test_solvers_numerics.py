"""dynfit.solvers numerics: convergence orders, agreement with scipy, gradients (odesolve and
torchdiffeq paths)."""
import numpy as np
import pytest
import torch
import torchdiffeq
from scipy.integrate import solve_ivp

import dynfit.solvers  # noqa: F401  (registers rkf45, rkf23 with torchdiffeq)
from dynfit.solvers import MixedNorm, PaperRule, odesolve
from dynfit.solvers.torchdiffeq import RKF45Solver, _torchdiffeq_tableau

torch.set_num_threads(1)
F64 = torch.float64


def lorenz(t, y):
    x, v, z = y.unbind(-1)
    return torch.stack([10.0 * (v - x), x * (28.0 - z) - v, x * v - 8.0 / 3.0 * z], -1)


def lorenz_np(t, y):
    x, v, z = y
    return [10.0 * (v - x), x * (28.0 - z) - v, x * v - 8.0 / 3.0 * z]


def forced(t, y):
    """Non-autonomous: checks that the stage times c_i are used."""
    return torch.cos(t) * y + torch.sin(3.0 * t)


def forced_np(t, y):
    return np.cos(t) * y + np.sin(3.0 * t)


def reference(f_np, y0, t_end):
    """(B, D) DOP853 solution at t_end, rtol = atol = 1e-13."""
    return np.stack(
        [
            solve_ivp(f_np, (0.0, t_end), y, method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
            for y in y0.numpy()
        ]
    )


LORENZ_Y0 = torch.tensor([[1.0, 1.0, 1.0], [-5.0, 3.0, 20.0]], dtype=F64)
FORCED_Y0 = torch.tensor([[1.0, -0.5]], dtype=F64)
# (problem, y0, t_end, method, order, numbers of steps): steps keep errors between ~1e-3 and ~1e-11
CASES = [
    ("lorenz", LORENZ_Y0, 0.5, "rkf45", 5, [40, 80, 160, 320]),
    ("lorenz", LORENZ_Y0, 0.5, "rkf23", 3, [40, 80, 160, 320]),
    ("forced", FORCED_Y0, 2.0, "rkf45", 5, [8, 16, 32, 64]),
    ("forced", FORCED_Y0, 2.0, "rkf23", 3, [16, 32, 64, 128]),
    ("forced", FORCED_Y0, 2.0, "dopri5", 5, [8, 16, 32, 64]),
]
FIELDS = {"lorenz": (lorenz, lorenz_np), "forced": (forced, forced_np)}


def observed_order(errors, ns, t_end):
    return np.polyfit(np.log(t_end / np.asarray(ns)), np.log(errors), 1)[0]


@pytest.mark.parametrize("path", ["odesolve", "torchdiffeq"])
@pytest.mark.parametrize("problem,y0,t_end,method,order,ns", CASES)
def test_fixed_step_convergence_order(path, problem, y0, t_end, method, order, ns):
    f, f_np = FIELDS[problem]
    exact = reference(f_np, y0, t_end)
    t = torch.tensor([0.0, t_end], dtype=F64)
    errors = []
    for n in ns:
        h = t_end / n
        if path == "odesolve":
            y1 = odesolve(f, y0, t, method=method, step_size=h).ys[-1]
        else:  # huge tolerances accept every step; first_step = max_step = h gives a fixed grid
            y1 = torchdiffeq.odeint(f, y0, t, method=method, rtol=1e6, atol=1e6,
                                    options=dict(first_step=h, max_step=h))[-1]
        errors.append(np.abs(y1.numpy() - exact).max())
    assert abs(observed_order(errors, ns, t_end) - order) < 0.2, errors


def test_naive_six_stage_rkf45_in_torchdiffeq_is_first_order(monkeypatch):
    """The pitfall of docs/references.md section 3, and that the FSAL extension removes it."""
    from torchdiffeq._impl.rk_common import _ButcherTableau, RKAdaptiveStepsizeODESolver
    from systems.tableaus import RKF45

    naive = _ButcherTableau(
        alpha=torch.tensor(RKF45.c[1:]), beta=[torch.tensor(RKF45.a[i, :i]) for i in range(1, 6)],
        c_sol=torch.tensor(RKF45.b), c_error=torch.tensor(RKF45.b - RKF45.b_low))

    class Naive(RKAdaptiveStepsizeODESolver):
        order, tableau, mid = 5, naive, RKF45Solver.mid[:6]

    import importlib

    monkeypatch.setitem(
        importlib.import_module("torchdiffeq._impl.odeint").SOLVERS, "naive_rkf45", Naive
    )
    t_end, ns = 0.5, [40, 80, 160, 320]
    exact = reference(lorenz_np, LORENZ_Y0, t_end)
    errs = []
    for n in ns:
        y1 = torchdiffeq.odeint(
            lorenz,
            LORENZ_Y0,
            torch.tensor([0.0, t_end], dtype=F64),
            method="naive_rkf45",
            rtol=1e6,
            atol=1e6,
            options=dict(first_step=t_end / n, max_step=t_end / n),
        )[-1]
        errs.append(np.abs(y1.numpy() - exact).max())
    assert observed_order(errs, ns, t_end) < 1.5
    assert len(_torchdiffeq_tableau(RKF45).beta) == 6  # 6 stages + the FSAL stage f(t1, y1)


@pytest.mark.parametrize("method", ["rkf45", "dopri5"])
def test_lorenz_adaptive_agrees_with_dop853(method):
    y0 = torch.tensor([[1.0, 1.0, 1.0], [-5.0, 3.0, 20.0], [0.1, 0.2, 30.0]], dtype=F64)
    t = torch.linspace(0, 1, 11, dtype=F64)
    ref = np.stack([solve_ivp(lorenz_np, (0, 1), y, method="DOP853", rtol=1e-12, atol=1e-12,
                              t_eval=t.numpy()).y.T for y in y0.numpy()], axis=1)  # (T, B, D)
    sol = odesolve(lorenz, y0, t, method=method, control=MixedNorm(rtol=1e-8, atol=1e-8))
    td = torchdiffeq.odeint(lorenz, y0, t, method=method, rtol=1e-8, atol=1e-8)
    assert np.abs(sol.ys.numpy() - ref).max() < 1e-5
    assert np.abs(td.numpy() - ref).max() < 1e-5


class MLP(torch.nn.Module):
    def __init__(self, d=3, width=16, seed=0, dtype=F64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(d, width, generator=g, dtype=dtype) / d**0.5)
        self.b1 = torch.nn.Parameter(torch.randn(width, generator=g, dtype=dtype) * 0.1)
        self.w2 = torch.nn.Parameter(torch.randn(width, d, generator=g, dtype=dtype) / width**0.5)

    def forward(self, t, y):
        return torch.tanh(y @ self.w1 + self.b1) @ self.w2


def functional_mlp(w1, b1, w2):
    return lambda t, y: torch.tanh(y @ w1 + b1) @ w2


@pytest.mark.parametrize("kw", [
    dict(step_size=0.1, method="rkf45"),
    dict(control=MixedNorm(rtol=1e-10, atol=1e-10), method="rkf45"),
    dict(control=MixedNorm(rtol=1e-10, atol=1e-10), method="dopri5"),
    dict(control=PaperRule(eps=1e-3), method="rkf23"),
], ids=["fixed", "mixednorm", "dopri5", "paperrule"])
def test_gradcheck_through_odesolve(kw):
    m = MLP(d=2, width=4, seed=1)
    y0 = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    params = tuple(p.detach().clone().requires_grad_(True) for p in (m.w1, m.b1, m.w2))

    def fn(y0, w1, b1, w2):
        return odesolve(functional_mlp(w1, b1, w2), y0, t, **kw).ys

    assert torch.autograd.gradcheck(fn, (y0,) + params, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_adjoint_rkf45_matches_direct_backprop():
    m = MLP(seed=2)
    y0 = torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -0.7]], dtype=F64)
    t = torch.linspace(0, 1, 4, dtype=F64)

    def grads(solve):
        m.zero_grad()
        y = y0.clone().requires_grad_(True)
        loss = solve(m, y, t).square().sum()
        loss.backward()
        return torch.cat([y.grad.flatten()] + [p.grad.flatten() for p in m.parameters()])

    tol = dict(rtol=1e-10, atol=1e-10)
    direct = grads(lambda f, y, t: torchdiffeq.odeint(f, y, t, method="rkf45", **tol))
    adjoint = grads(
        lambda f, y, t: torchdiffeq.odeint_adjoint(
            f, y, t, method="rkf45", **tol, adjoint_params=tuple(m.parameters())
        )
    )
    ours = grads(lambda f, y, t: odesolve(f, y, t, method="rkf45", control=MixedNorm(**tol)).ys)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(adjoint, direct) < 1e-5
    assert rel(ours, direct) < 1e-7
