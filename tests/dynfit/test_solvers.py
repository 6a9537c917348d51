"""odesolve: API, statistics, per-example control, the paper's rule, references and bad input."""
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
    tight = MixedNorm(rtol=1e-9, atol=1e-9)
    cases = [
        (dict(control=tight), 1e-8),
        (dict(control=PaperRule(eps=1e-3)), 1e-4),
        (dict(step_size=0.01, method="rk4"), 1e-9),
        (dict(method="dopri5", control=tight), 1e-8),
    ]
    for kw, tol in cases:
        sol = odesolve(decay, y0, t, **kw)
        assert isinstance(sol, Solution) and isinstance(sol.stats, Stats)
        assert sol.ys.shape == (5, 2, 2) and sol.ys.dtype == F64
        assert torch.equal(sol.ys[0], y0)
        assert (sol.ys - exact).abs().max() < tol, (kw, (sol.ys - exact).abs().max())
        assert (sol.stats.status == Status.SUCCESS).all() and sol.stats.success


@pytest.mark.parametrize(
    "kw,tol",
    [
        (dict(control=MixedNorm(rtol=1e-9, atol=1e-9)), 1e-8),
        (dict(control=PaperRule(eps=1e-4)), 1e-4),
        (dict(step_size=0.05), 1e-8),
    ],
    ids=["mixednorm", "paper", "fixed"],
)
def test_decreasing_time(kw, tol):
    y1 = torch.tensor([[1.0], [2.0]], dtype=F64)
    t = torch.tensor([1.0, 0.5, 0.0], dtype=F64)
    sol = odesolve(decay, y1, t, **kw)
    assert torch.allclose(sol.ys[-1], y1 * math.e, atol=tol, rtol=0)
    assert torch.allclose(sol.ys[1], y1 * math.exp(0.5), atol=tol, rtol=0)


class Tagged:
    """A field on states (x, id): counts calls, rows per example id, and checks dtypes and t."""

    def __init__(self, inner, dtype=F64):
        self.inner, self.dtype = inner, dtype
        self.calls, self.rows = 0, {}

    def __call__(self, t, y):
        assert y.dtype == self.dtype and t.dtype == self.dtype and t.device == y.device
        assert t.ndim == 0 or t.shape == (y.shape[0], 1)
        self.calls += 1
        for i in y[:, -1].round().long().tolist():
            self.rows[i] = self.rows.get(i, 0) + 1
        x = y[:, :-1]
        return torch.cat([self.inner(t, x), torch.zeros_like(y[:, -1:])], dim=1)


def tagged_y0(x0):
    return torch.cat([x0, torch.arange(len(x0), dtype=x0.dtype)[:, None]], dim=1)


def vdp(t, x):
    """Van der Pol with its stiffness mu carried in the state: (u, v, mu)."""
    u, v, mu = x.unbind(-1)
    return torch.stack([v, mu * (1 - u * u) * v - u, torch.zeros_like(mu)], -1)


# easy, stiff-ish, easy
VDP_Y0 = torch.tensor([[2.0, 0.0, 0.5], [2.0, 0.0, 30.0], [1.0, 1.0, 2.0]], dtype=F64)
# stable for all step rules
VDP_MILD = torch.tensor([[2.0, 0.0, 0.5], [2.0, 0.0, 5.0], [1.0, 1.0, 2.0]], dtype=F64)


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="rkf45", control=MixedNorm(rtol=1e-6, atol=1e-6)),
        dict(method="rkf23", control=MixedNorm(rtol=1e-4, atol=1e-4)),
        dict(method="dopri5", control=MixedNorm(rtol=1e-6, atol=1e-6)),
        dict(method="rkf45", control=MixedNorm(rtol=1e-6, atol=1e-6, per_example=False)),
        dict(method="rkf45", control=MixedNorm(rtol=1e-6, atol=1e-6), h0=0.05),
        dict(method="rkf23", control=PaperRule(eps=0.1)),
        dict(method="rkf23", control=PaperRule(eps=0.1, shared=True)),
        dict(method="rkf45", control=PaperRule(eps=1e-3, max_substeps=4)),
        dict(method="rk4", step_size=0.1),
        dict(method="dopri5", step_size=0.1),
    ],
    ids=[
        "mn-rkf45",
        "mn-rkf23",
        "mn-dopri5",
        "mn-shared",
        "mn-h0",
        "paper",
        "paper-shared",
        "paper-rkf45",
        "rk4",
        "fixed-dopri5",
    ],
)
def test_statistics_are_exact(kw):
    field = Tagged(vdp)
    y0 = tagged_y0(VDP_MILD).requires_grad_(True)
    t = torch.linspace(0, 1, 4, dtype=F64)
    sol = odesolve(field, y0, t, **kw)
    st = sol.stats
    assert st.n_f_evals == field.calls
    assert st.n_f_evals_per_example.tolist() == [field.rows[i] for i in range(3)]
    assert torch.equal(st.n_steps, st.n_accepted + st.n_rejected)
    assert st.n_steps.dtype == torch.int64 and st.status.shape == (3,) and st.h.dtype == F64
    assert torch.equal(st.accepted, st.n_rejected == 0)
    assert st.n_f_evals_backward == 0
    sol.ys.square().sum().backward()
    assert 0 < st.n_f_evals_backward <= st.n_f_evals
    ds = sol.to_xarray()
    assert ds["n_steps"].dims == ("example",) and ds["ys"].dims == ("time", "example", "component")
    assert ds.attrs["n_f_evals"] == field.calls


def test_backward_evaluations_are_counted_by_the_vjps():
    calls = []

    class Spy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            calls.append(1)
            return g

    w = torch.tensor(0.7, dtype=F64, requires_grad=True)
    sol = odesolve(
        lambda t, y: Spy.apply(-w * y),
        torch.ones(2, 2, dtype=F64),
        torch.linspace(0, 1, 3, dtype=F64),
        control=PaperRule(eps=1e-3),
    )
    sol.ys.sum().backward()
    assert sol.stats.n_f_evals_backward == len(calls) == sol.stats.n_f_evals


def test_per_example_steps_and_easy_example_unaffected():
    t = torch.linspace(0, 2, 5, dtype=F64)
    ctrl = MixedNorm(rtol=1e-7, atol=1e-7)
    both = odesolve(vdp, VDP_Y0[:2], t, control=ctrl)
    alone = odesolve(vdp, VDP_Y0[:1], t, control=ctrl)
    n = both.stats.n_steps
    assert n[1] > 3 * n[0]
    assert torch.equal(both.ys[:, :1], alone.ys) or (both.ys[:, :1] - alone.ys).abs().max() < 1e-14
    assert n[0] == alone.stats.n_steps[0]
    assert both.stats.n_f_evals_per_example[0] == alone.stats.n_f_evals_per_example[0]
    assert both.stats.n_f_evals > alone.stats.n_f_evals

    # gradients of the easy example are those of the easy example alone
    y_both = VDP_Y0[:2].clone().requires_grad_(True)
    y_alone = VDP_Y0[:1].clone().requires_grad_(True)
    odesolve(vdp, y_both, t, control=ctrl).ys[:, 0].square().sum().backward()
    odesolve(vdp, y_alone, t, control=ctrl).ys[:, 0].square().sum().backward()
    assert torch.allclose(y_both.grad[:1], y_alone.grad, rtol=1e-13, atol=0)
    assert torch.all(y_both.grad[1] == 0)


def test_shared_step_size_mode_gives_equal_counts():
    sol = odesolve(vdp, VDP_Y0, torch.linspace(0, 1, 3, dtype=F64),
                   control=MixedNorm(rtol=1e-6, atol=1e-6, per_example=False))
    assert len(set(sol.stats.n_steps.tolist())) == 1


# ------------------------------------------------------------------------- the paper's rule by hand
def decay_forced(t, y):
    """u' = -a u + sin(t), a' = 0; works with a 0-dim t and with per-example t (B, 1)."""
    u, a = y[:, :1], y[:, 1:]
    return torch.cat([-a * u + torch.sin(t) * torch.ones_like(u), torch.zeros_like(a)], dim=1)


def paper_procedure(y0, t0, H, eps, S, cap, shared):
    """The paper's batch procedure written out in numpy: RK3 kept, Heun for the error."""
    def f(t, x):
        return np.stack([-x[:, 1] * x[:, 0] + np.sin(t), np.zeros(len(x))], axis=1)

    def rk3(t, x, h):
        f1 = f(t, x)
        f2 = f(t + h, x + h * f1)
        f3 = f(t + h / 2, x + h / 4 * (f1 + f2))
        return x + h / 2 * (f1 + f2), x + h / 6 * (f1 + f2 + 4 * f3)

    A1, A2 = rk3(t0, y0, H)
    r = np.abs(A1 - A2).sum(axis=1) / H
    accept = r <= eps
    n = np.minimum(np.ceil(H / (S * H * np.sqrt(eps / r))), cap).astype(int)
    if shared and (~accept).any():
        n[:] = min(math.ceil(H / (S * H * np.sqrt(eps / r[~accept])).min()), cap)
    n[accept] = 1
    out = A2.copy()
    for b in np.flatnonzero(~accept):
        x, h = y0[b:b + 1], H / n[b]
        for k in range(n[b]):
            x = rk3(t0 + k * h, x, h)[1]
        out[b] = x[0]
    return out, r, accept, n


@pytest.mark.parametrize("shared", [False, True])
def test_paper_rule_matches_hand_computation(shared):
    # a = 0.5: accepted; 1, 2: a few substeps; 5: capped at 10 (shared: 10 for all rejected)
    y0 = torch.tensor([[1.0, 0.5], [1.0, 1.0], [1.0, 2.0], [1.0, 5.0]], dtype=F64)
    t = torch.tensor([0.5, 1.5], dtype=F64)
    sol = odesolve(decay_forced, y0, t, method="rkf23",
                   control=PaperRule(eps=0.1, safety=0.9, max_substeps=10, shared=shared))
    out, r, accept, n = paper_procedure(y0.numpy(), 0.5, 1.0, 0.1, 0.9, 10, shared)
    assert accept.tolist() == [True, False, False, False]
    assert n[-1] == 10 and len(set(n.tolist())) == (2 if shared else 4)
    st = sol.stats
    np.testing.assert_allclose(sol.ys[-1].numpy(), out, rtol=0, atol=1e-14)
    np.testing.assert_allclose(st.error_rate.numpy(), r, rtol=1e-13)
    assert st.accepted.tolist() == accept.tolist() and st.substeps.tolist() == n.tolist()
    assert st.n_rejected.tolist() == (~accept).astype(int).tolist()
    assert st.n_steps.tolist() == [1 + (0 if a else k) for a, k in zip(accept, n)]
    assert st.n_f_evals_per_example.tolist() == [
        3 if a else 3 + 3 * k - 1 for a, k in zip(accept, n)
    ]
    np.testing.assert_allclose(st.h.numpy(), 1.0 / n)
    assert st.interval_substeps.shape == (1, 4) and st.interval_substeps[0].tolist() == n.tolist()
    assert st.to_xarray()["interval_accepted"].dims == ("interval", "example")


def test_paper_rule_interval_histories():
    y0 = torch.tensor([[1.0, 0.5], [1.0, 3.0]], dtype=F64)
    t = torch.linspace(0, 3, 4, dtype=F64)
    st = odesolve(decay_forced, y0, t, method="rkf23", control=PaperRule(eps=0.1)).stats
    assert (
        st.interval_error_rate.shape
        == st.interval_accepted.shape
        == st.interval_substeps.shape
        == (3, 2)
    )
    assert torch.equal(st.interval_substeps[-1], st.substeps) and torch.equal(
        st.interval_error_rate[-1], st.error_rate
    )
    assert torch.equal(st.interval_accepted.all(0), st.accepted)
    assert torch.equal(st.n_rejected, (~st.interval_accepted).sum(0))


def test_paper_rule_with_reference_uses_the_target():
    y0 = torch.tensor([[1.0, 1.0], [1.0, 0.2]], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    a2 = odesolve(decay_forced, y0, t, method="rkf23", step_size=1.0).ys[-1]
    target = a2 + torch.tensor([[0.0, 0.0], [0.5, 0.0]], dtype=F64)  # second target far from A2
    sol = odesolve(
        decay_forced, y0, t, method="rkf23", control=PaperRule(eps=0.1), reference=target
    )
    np.testing.assert_allclose(sol.stats.error_rate.numpy(), [0.0, 0.5], atol=1e-15)
    assert sol.stats.accepted.tolist() == [True, False]
    # the same through the (T, B, D) form
    sol3 = odesolve(decay_forced, y0, t, method="rkf23", control=PaperRule(eps=0.1),
                    reference=torch.stack([y0, target]))
    assert torch.equal(sol3.ys, sol.ys)


def test_mixednorm_with_reference_judges_the_landing_step_and_terminates():
    y0 = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    exact = odesolve(decay_forced, y0, t, control=MixedNorm(rtol=1e-12, atol=1e-12)).ys
    far = exact + torch.tensor([0.0, 1.0], dtype=F64)[None, :, None] * torch.tensor(
        [1.0, 0.0], dtype=F64
    )
    ctrl = MixedNorm(rtol=1e-3, atol=1e-3)
    sol = odesolve(decay_forced, y0, t, control=ctrl, reference=far, h0=0.5)
    st = sol.stats
    assert st.accepted.tolist() == [True, False] and st.n_rejected[0] == 0 and st.n_rejected[1] >= 2
    assert st.error_rate[1] > 100 and st.error_rate[0] < 1
    # the reference decides refinement, never the solution
    assert (sol.ys - exact).abs().max() < 1e-3


# --------------------------------------------------------------------------- dtypes
def test_float32_never_mixes_dtypes():
    field = Tagged(vdp, dtype=torch.float32)
    y0 = tagged_y0(VDP_MILD.float())
    t64 = torch.linspace(0, 1, 3, dtype=F64)
    for kw in (dict(), dict(control=PaperRule()), dict(step_size=0.1), dict(method="dopri5")):
        sol = odesolve(field, y0, t64, **kw)
        assert (
            sol.ys.dtype == torch.float32
            and sol.ts.dtype == torch.float32
            and sol.stats.h.dtype == torch.float32
        )
        assert torch.isfinite(sol.ys).all()


# --------------------------------------------------------------------------- bad input
Y0 = torch.ones(2, 2, dtype=F64)
T01 = torch.tensor([0.0, 1.0], dtype=F64)


@pytest.mark.parametrize("t,match", [
    ([0.0, 1.0, 1.0, 2.0], "strictly"), ([0.0, 2.0, 1.0], "strictly"), ([0.0], "at least 2"),
    ([[0.0, 1.0]], "1-D"), ([0.0, float("nan")], "finite")])
def test_bad_times(t, match):
    with pytest.raises(ValueError, match=match):
        odesolve(decay, Y0, torch.tensor(t, dtype=F64))


@pytest.mark.parametrize(
    "make",
    [
        lambda: MixedNorm(rtol=0.0, atol=1e-6),
        lambda: MixedNorm(rtol=1e-6, atol=-1.0),
        lambda: MixedNorm(rtol=float("nan"), atol=1e-6),
        lambda: PaperRule(eps=0.0),
        lambda: PaperRule(eps=-0.1),
        lambda: PaperRule(max_substeps=0),
    ],
)
def test_bad_tolerances(make):
    with pytest.raises(ValueError, match="positive|>= 1"):
        make()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown method"):
        odesolve(decay, Y0, T01, method="rk45")
    with pytest.raises(ValueError, match="step_size"):
        odesolve(decay, Y0, T01, method="rk4")
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        odesolve(decay, torch.ones(3, dtype=F64), T01)
    with pytest.raises(TypeError, match="floating"):
        odesolve(decay, torch.ones(2, 2, dtype=torch.int64), T01)
    with pytest.raises(TypeError, match="control"):
        odesolve(decay, Y0, T01, control="mixed")
    with pytest.raises(ValueError, match="step_size"):
        odesolve(decay, Y0, T01, step_size=-0.1)
    with pytest.raises(ValueError, match="max_steps"):
        odesolve(decay, Y0, T01, max_steps=0)
    with pytest.raises(ValueError, match="reference must have shape"):
        odesolve(decay, Y0, T01, reference=torch.ones(3, 2, 2, dtype=F64))
    with pytest.raises(ValueError, match="no effect"):
        odesolve(decay, Y0, T01, step_size=0.1, reference=Y0)
    with pytest.raises(ValueError, match="shaped like y"):
        odesolve(lambda t, y: y[:, :1], Y0, T01)


def test_nonfinite_initial_state_names_examples():
    y0 = torch.ones(5, 2, dtype=F64)
    y0[1, 0], y0[3, 1] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"examples \[1, 3\]"):
        odesolve(decay, y0, T01)


def poisoned(t, y):
    """Example with flag y[:, 1] == 1 gets NaN derivatives; the others decay."""
    bad = (y[:, 1:] == 1.0)
    return torch.where(bad, torch.full_like(y, float("nan")), -y) * torch.tensor(
        [1.0, 0.0], dtype=y.dtype
    )


@pytest.mark.parametrize("kw", [dict(), dict(control=PaperRule()), dict(step_size=0.25)],
                         ids=["mixednorm", "paper", "fixed"])
def test_nan_during_solve_is_reported_per_example(kw):
    y0 = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]], dtype=F64)
    t = torch.linspace(0, 1, 3, dtype=F64)
    with pytest.raises(SolverError, match=r"NONFINITE: examples 1 \(t=0") as info:
        odesolve(poisoned, y0, t, **kw)
    st = info.value.stats
    assert st.status.tolist() == [Status.SUCCESS, Status.NONFINITE, Status.SUCCESS]
    assert "check the vector field" in str(info.value)
    sol = odesolve(poisoned, y0, t, raise_on_failure=False, **kw)
    assert torch.isnan(sol.ys[1:, 1]).all() and torch.isfinite(sol.ys[:, [0, 2]]).all()
    assert torch.allclose(sol.ys[-1, 0, 0], torch.tensor(math.exp(-1.0), dtype=F64), atol=1e-3)


def test_step_underflow_is_a_solver_error_with_stats():
    # y' = y^2 blows up at t = 1 for y0 = 1
    y0 = torch.tensor([[1.0], [0.1]], dtype=F64)
    with pytest.raises(SolverError, match="STEP_UNDERFLOW: examples 0 .*loosen") as info:
        odesolve(lambda t, y: y * y, y0, torch.tensor([0.0, 2.0], dtype=F64))
    st = info.value.stats
    assert st.status.tolist() == [Status.STEP_UNDERFLOW, Status.SUCCESS]
    assert st.n_steps[0] > 10 and info.value.stats is info.value.solution.stats
    assert isinstance(info.value, RuntimeError)


def test_step_limit_is_a_solver_error_with_stats():
    with pytest.raises(SolverError, match="max_steps=20; raise max_steps") as info:
        odesolve(
            vdp,
            torch.tensor([[2.0, 0.0, 30.0], [2.0, 0.0, 0.1]], dtype=F64),
            torch.tensor([0.0, 1.0], dtype=F64),
            control=MixedNorm(rtol=1e-6, atol=1e-6),
            max_steps=20,
        )
    st = info.value.stats
    assert st.status.tolist() == [Status.MAX_STEPS, Status.SUCCESS] and st.n_steps[0] == 20
    assert (
        torch.isnan(info.value.solution.ys[-1, 0]).all()
        and torch.isfinite(info.value.solution.ys[-1, 1]).all()
    )
    # the paper's rule: the limit counts attempts and substeps
    with pytest.raises(SolverError, match="MAX_STEPS") as info:
        odesolve(
            vdp,
            VDP_MILD,
            torch.linspace(0, 1, 6, dtype=F64),
            control=PaperRule(eps=1e-9),
            max_steps=15,
        )
    assert (info.value.stats.status == Status.MAX_STEPS).all()


def test_dense_output_is_exact_for_a_quartic():
    """y' = 4 t^3: the steps and the quartic dense output are exact, so are outputs between
    steps."""
    t = torch.tensor([0.0, 0.13, 0.5, 0.77, 1.0, 1.9, 2.0], dtype=F64)
    for method in ("rkf45", "dopri5"):
        sol = odesolve(
            lambda t, y: 4 * t**3 * torch.ones_like(y),
            torch.zeros(2, 1, dtype=F64),
            t,
            method=method,
            control=MixedNorm(rtol=1.0, atol=1.0),
            h0=1.5,
        )
        assert sol.stats.n_steps.max() < len(t) - 1  # outputs between steps come from dense output
        torch.testing.assert_close(
            sol.ys[:, :, 0], (t**4)[:, None].expand(-1, 2), rtol=0, atol=1e-13
        )


def test_tableau_checks():
    from types import SimpleNamespace

    from dynfit.solvers import check_tableau, torch_tableau
    from systems.tableaus import RKF45

    good = dict(name="x", a=RKF45.a, b=RKF45.b, c=RKF45.c, b_low=RKF45.b_low)
    check_tableau(SimpleNamespace(**good))
    for bad, match in (
        (dict(c=RKF45.c + 0.01), "sum to c"),
        (dict(b=RKF45.b * 1.01), "sum to 1"),
        (dict(b_low=RKF45.b_low * 1.01), "sum to 0"),
        (dict(a=RKF45.a + np.eye(6)), "lower triangular"),
    ):
        with pytest.raises(ValueError, match=match):
            check_tableau(SimpleNamespace(**{**good, **bad}))
    with pytest.raises(ValueError, match="unknown"):
        torch_tableau("rk45")
    assert (
        torch_tableau("rkf45", fsal=True).stages == 7
        and torch_tableau("dopri5", fsal=True).stages == 7
    )


@pytest.mark.parametrize(
    "kw",
    [
        dict(control=MixedNorm(rtol=1e-8, atol=1e-8), h0=10.0),
        dict(control=MixedNorm(rtol=1e-8, atol=1e-8, per_example=False), h0=10.0),
        dict(control=PaperRule(eps=1e-3, max_substeps=1000)),
    ],
    ids=["mixednorm", "shared", "paper"],
)
def test_overflow_in_a_rejected_attempt_keeps_gradients_finite(kw):
    """y' = -y^3: a first attempt with a huge step overflows; the solve recovers and d y(1) / d y0
    is exact."""
    field = Tagged(lambda t, x: -x**3)
    y0 = tagged_y0(torch.tensor([[10.0], [1.0]], dtype=F64)).requires_grad_(True)
    sol = odesolve(field, y0, torch.tensor([0.0, 1.0], dtype=F64), **kw)
    assert sol.stats.success and (sol.stats.n_rejected >= 1).all()
    assert sol.stats.n_f_evals == field.calls
    assert sol.stats.n_f_evals_per_example.tolist() == [field.rows[0], field.rows[1]]
    (g,) = torch.autograd.grad(sol.ys[-1, :, 0].sum(), y0)
    x0 = y0.detach()[:, 0]
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g[:, 0], (1 + 2 * x0**2) ** -1.5, rtol=1e-3, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kw", [dict(), dict(control=PaperRule(eps=0.1)), dict(step_size=0.1),
                                dict(control=PaperRule(eps=0.1), reference=VDP_MILD)],
                         ids=["mixednorm", "paper", "fixed", "reference"])
def test_cuda_matches_cpu(kw):
    t = torch.linspace(0, 1, 2, dtype=F64)
    cpu = odesolve(vdp, VDP_MILD, t, **kw)
    kw = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    y0 = VDP_MILD.cuda().requires_grad_(True)
    gpu = odesolve(vdp, y0, t, **kw)
    assert gpu.ys.device.type == "cuda" and gpu.stats.n_steps.device.type == "cuda"
    torch.testing.assert_close(gpu.ys.cpu(), cpu.ys, rtol=1e-10, atol=1e-12)
    assert torch.equal(gpu.stats.n_steps.cpu(), cpu.stats.n_steps)
    gpu.ys.sum().backward()
    assert torch.isfinite(y0.grad).all()


def test_one_status_enum_and_one_set_of_controller_defaults():
    import systems
    import systems.integrate as si
    from systems.status import FAC_MAX, FAC_MIN, SAFETY, SAFETY_PI

    assert Status is systems.Status
    assert [(s.name, int(s)) for s in Status] == [
        ("SUCCESS", 0),
        ("MAX_STEPS", 1),
        ("STEP_UNDERFLOW", 2),
        ("NONFINITE", 3),
    ]
    assert Status.OK is Status.SUCCESS and Status.UNDERFLOW is Status.STEP_UNDERFLOW
    assert (si.SUCCESS, si.MAX_STEPS, si.STEP_UNDERFLOW, si.NONFINITE) == (0, 1, 2, 3)
    ctrl = MixedNorm(rtol=1e-6, atol=1e-6)
    assert (ctrl.safety, ctrl.fmin, ctrl.fmax) == (SAFETY, FAC_MIN, FAC_MAX) == (0.9, 0.2, 10.0)
    assert PaperRule().safety == SAFETY
    assert (si.SAFETY, si.FAC_MIN, si.FAC_MAX) == (SAFETY_PI, FAC_MIN, FAC_MAX)


def _hermite_quartic(y0, y1, ks, h, tab, theta):
    """y at t + theta h from the quartic through y0, y1 and y_mid = y0 + h mid.k with slopes
    ks[0] and ks[-1] (FSAL tableau with midpoint weights), written out term by term."""
    F0, F1 = ks[0] * h, ks[-1] * h
    d = y1 - y0
    r1, r2 = d - F0, F1 - F0
    r3 = 16.0 * (sum(w * ks[j] for j, w in tab.mid) * h) - 8.0 * F0
    b = -5.0 * r1 + r2 + r3
    c = 14.0 * r1 - 3.0 * r2 - 2.0 * r3
    e = -8.0 * r1 + 2.0 * r2 + r3
    return y0 + theta * (F0 + theta * (b + theta * (c + theta * e)))


def test_dense_coefficients_give_the_quartic_of_dense_output():
    """y0 + h P(theta) . K (the one contraction odesolve uses) equals the Hermite-Birkhoff
    quartic."""
    from dynfit.solvers.tableau import torch_tableau

    g = torch.Generator().manual_seed(0)
    for name in ("rkf45", "rkf23", "dopri5"):
        tab = torch_tableau(name, fsal=True)
        ks = [torch.randn(4, 3, generator=g, dtype=F64) for _ in range(tab.stages)]
        h = torch.rand(4, 1, generator=g, dtype=F64)
        y0 = torch.randn(4, 3, generator=g, dtype=F64)
        y1 = y0 + h * sum(w * ks[j] for j, w in tab.rows[-1])
        theta = torch.rand(4, 1, generator=g, dtype=F64)
        C = torch.tensor(tab.dense, dtype=F64)
        P = torch.cat([theta, theta**2, theta**3, theta**4], 1) @ C  # (4, S)
        ours = y0 + h * torch.einsum("bs,sbd->bd", P, torch.stack(ks))
        torch.testing.assert_close(ours, _hermite_quartic(y0, y1, ks, h, tab, theta), rtol=0,
                                   atol=1e-13)


@pytest.mark.parametrize("every", [1, 8])
def test_adaptive_solve_reads_the_device_once_per_step(every):
    """Decisions stay on the device: one host read per step on a CPU, one per 8 steps on a GPU
    (plus a few before the loop and when examples stop)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Reads(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                Reads.n += 1
            return func(*args, **(kwargs or {}))

    y0 = VDP_MILD.clone().requires_grad_(True)
    t = torch.linspace(0, 2, 41, dtype=F64)
    with Reads():
        sol = odesolve(vdp, y0, t, control=MixedNorm(rtol=1e-8, atol=1e-8), sync_every=every)
    n_iter = int(sol.stats.n_steps.max())
    assert n_iter > 20 and Reads.n <= n_iter // every + 16, (Reads.n, n_iter)


def test_compile_flag_is_checked():
    with pytest.raises(TypeError, match="compile must be True or False"):
        odesolve(
            decay, torch.ones(2, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), compile="yes"
        )


@pytest.mark.parametrize("kw", [dict(control=MixedNorm(rtol=1e-8, atol=1e-8)),
                                dict(control=MixedNorm(rtol=1e-6, atol=1e-6, per_example=False)),
                                dict(control=MixedNorm(rtol=1e-6, atol=1e-6), reference="targets"),
                                dict(control=MixedNorm(rtol=1e-8, atol=1e-8), max_steps=25,
                                     raise_on_failure=False),
                                dict(control=MixedNorm(rtol=1e-6, atol=1e-6, norm="batch"))],
                         ids=["mixednorm", "shared", "reference", "max-steps", "batch-norm"])
def test_reading_the_device_every_few_steps_changes_nothing(kw):
    """The GPU schedule (host read every k steps, stopped rows frozen in between) gives the same
    outputs, gradients and step statistics as reading every step; frozen rows count as evaluated."""
    t = torch.linspace(0, 2, 21, dtype=F64)
    if kw.get("reference") == "targets":
        exact = odesolve(
            Tagged(vdp), tagged_y0(VDP_MILD), t, control=MixedNorm(rtol=1e-9, atol=1e-9)
        ).ys
        kw = {**kw, "reference": exact + 1e-4}
    runs = {}
    for k in (1, 4):
        field = Tagged(vdp)
        y0 = tagged_y0(VDP_MILD).requires_grad_(True)
        sol = odesolve(field, y0, t, sync_every=k, **kw)
        (g,) = torch.autograd.grad(torch.nan_to_num(sol.ys).square().sum(), y0)
        runs[k] = (sol, g, field)
        assert sol.stats.n_f_evals == field.calls
        assert sol.stats.n_f_evals_per_example.tolist() == [field.rows[i] for i in range(3)]
    (a, ga, _), (b, gb, _) = runs[1], runs[4]
    torch.testing.assert_close(b.ys, a.ys, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(gb, ga, rtol=0, atol=0)
    for name in ("n_steps", "n_accepted", "n_rejected", "status", "substeps", "h", "accepted"):
        assert torch.equal(getattr(b.stats, name), getattr(a.stats, name)), name
    torch.testing.assert_close(
        b.stats.error_rate, a.stats.error_rate, rtol=0, atol=0, equal_nan=True
    )


@pytest.mark.parametrize("method", ["rkf45", "dopri5", "rkf23"])
@pytest.mark.parametrize("per_example", [True, False])
def test_the_gpu_schedule_runs_on_the_cpu(method, per_example):
    """The branches only a GPU takes - stage sums as one contraction over the stacked stages, a host
    read every 8 steps - forced on the CPU: the solution and its gradients match the CPU schedule
    to rounding (the contraction adds in another order; the step decisions stay the same here)."""
    t = torch.linspace(0, 2, 21, dtype=F64)
    ctrl = MixedNorm(rtol=1e-8, atol=1e-8, per_example=per_example)
    runs = []
    for gpu in (False, True):
        w = torch.tensor(1.0, dtype=F64, requires_grad=True)
        field = Tagged(lambda t, x: w * vdp(t, x))
        y0 = tagged_y0(VDP_MILD).requires_grad_(True)
        sol = odesolve(field, y0, t, method=method, control=ctrl, fused=gpu,
                       sync_every=8 if gpu else 1)
        grads = torch.autograd.grad(sol.ys.square().sum(), (y0, w))
        assert sol.stats.success and sol.stats.n_f_evals == field.calls
        runs.append((sol, grads))
    (a, ga), (b, gb) = runs
    assert torch.equal(b.stats.n_steps, a.stats.n_steps) and torch.equal(
        b.stats.n_rejected, a.stats.n_rejected
    )
    torch.testing.assert_close(b.ys, a.ys, rtol=1e-12, atol=1e-12)
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_overflow_between_reads_redoes_the_solve():
    """Reading every k steps, an overflow is found late: the solve is redone reading every step
    (so the overflowing step is retaken before autograd sees it); gradients stay exact."""
    field = Tagged(lambda t, x: -x**3)
    y0 = tagged_y0(torch.tensor([[10.0], [1.0]], dtype=F64)).requires_grad_(True)
    sol = odesolve(field, y0, torch.tensor([0.0, 1.0], dtype=F64),
                   control=MixedNorm(rtol=1e-8, atol=1e-8), h0=10.0, sync_every=4)
    assert sol.stats.success and sol.stats.n_f_evals == field.calls
    assert sol.stats.n_f_evals_per_example.tolist() == [field.rows[0], field.rows[1]]
    (g,) = torch.autograd.grad(sol.ys[-1, :, 0].sum(), y0)
    x0 = y0.detach()[:, 0]
    torch.testing.assert_close(g[:, 0], (1 + 2 * x0**2) ** -1.5, rtol=1e-3, atol=1e-9)


def _lorenz(t, y):
    x, v, z = y.unbind(-1)
    return torch.stack([10.0 * (v - x), x * (28.0 - z) - v, x * v - 8.0 / 3.0 * z], -1)


def test_batch_norm_is_one_rms_over_the_batch():
    """norm="batch" (torchdiffeq's norm): copies of one example take the steps that example takes
    alone (the RMS over identical rows is the row's RMS); on a batch mixing easy and hard examples
    the hard one's error is averaged with the easy ones', so the shared step is longer than under
    the largest per-example error, and the hard example ends less accurate."""
    t = torch.linspace(0, 0.5, 6, dtype=F64)
    one = torch.tensor([[1.0, 1.0, 20.0]], dtype=F64)
    alone = odesolve(_lorenz, one, t, method="dopri5", control=MixedNorm(rtol=1e-6, atol=1e-8))
    copies = odesolve(_lorenz, one.repeat(4, 1), t, method="dopri5",
                      control=MixedNorm(rtol=1e-6, atol=1e-8, norm="batch"))
    assert copies.stats.n_steps.tolist() == [int(alone.stats.n_steps)] * 4
    assert copies.stats.n_f_evals == alone.stats.n_f_evals
    torch.testing.assert_close(copies.ys, alone.ys.expand(-1, 4, -1), rtol=1e-12, atol=1e-12)

    lam = torch.tensor([[1.0]] * 7 + [[40.0]], dtype=F64)
    field = lambda t, y: -lam * y  # noqa: E731
    y0 = torch.ones(8, 2, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    exact = torch.exp(-lam * t[-1]) * y0
    tol = dict(rtol=1e-6, atol=1e-9)
    batch = odesolve(field, y0, t, method="dopri5", control=MixedNorm(**tol, norm="batch"))
    largest = odesolve(field, y0, t, method="dopri5", control=MixedNorm(**tol, per_example=False))
    assert batch.stats.n_steps.unique().numel() == 1  # one shared step
    assert int(batch.stats.n_steps[0]) < int(largest.stats.n_steps[0])
    err_b, err_l = ((s.ys[-1] - exact).abs().max(1).values[-1] for s in (batch, largest))
    assert err_b > err_l


def test_mixednorm_norm_argument():
    assert MixedNorm(1e-6, 1e-6).norm == "example" and MixedNorm(1e-6, 1e-6).per_example is True
    assert MixedNorm(1e-6, 1e-6, norm="batch").per_example is False
    assert MixedNorm(1e-6, 1e-6, per_example=False).norm == "example"
    with pytest.raises(
        ValueError, match=r"unknown MixedNorm: norm 'max'; expected one of \['example', 'batch'\]"
    ):
        MixedNorm(1e-6, 1e-6, norm="max")
    with pytest.raises(ValueError, match="shares one step"):
        MixedNorm(1e-6, 1e-6, norm="batch", per_example=True)
    with pytest.raises(TypeError, match="per_example"):
        MixedNorm(1e-6, 1e-6, per_example="yes")
    e = MixedNorm(1.0, 1.0, norm="batch").error(
        torch.tensor([[3.0, 0.0], [0.0, 0.0]], dtype=F64),
        torch.zeros(2, 2, dtype=F64),
        torch.zeros(2, 2, dtype=F64),
    )
    torch.testing.assert_close(e, torch.full((2,), 1.5, dtype=F64))  # sqrt(9 / 4)
