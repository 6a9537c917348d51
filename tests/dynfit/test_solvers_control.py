"""The controller contract: the loops call error/init/adapt only; PIController; solver options."""
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from dynfit.solvers import Controller, MixedNorm, PaperRule, PIController, odesolve
from dynfit.solvers.control import mixed_rms

torch.set_num_threads(1)
F64 = torch.float64


def vdp(t, y, mu=5.0):
    x, v = y[:, :1], y[:, 1:]
    return torch.cat([v, mu * (1 - x**2) * v - x], 1)


Y0 = torch.tensor([[2.0, 0.0], [0.5, 1.0], [-1.0, 3.0], [0.1, -0.2]], dtype=F64)
T = torch.linspace(0, 4, 9, dtype=F64)


def _same_run(a, b, names=("n_steps", "n_accepted", "n_rejected", "n_f_evals_per_example", "h",
                           "status")):
    assert torch.equal(a.ys, b.ys)
    for name in names:
        assert torch.equal(getattr(a.stats, name), getattr(b.stats, name)), name


@pytest.mark.parametrize("kw", [dict(), dict(per_example=False), dict(norm="batch")],
                         ids=["per-example", "shared", "batch-norm"])
def test_pi_with_alpha_1_and_beta_0_is_the_i_controller_step_for_step(kw):
    """PI's factor err^(-alpha/q) err_prev^(beta/q) is MixedNorm's err^(-1/q) at alpha=1, beta=0."""
    i = odesolve(vdp, Y0, T, control=MixedNorm(1e-7, 1e-7, **kw))
    pi = odesolve(vdp, Y0, T, control=PIController(1e-7, 1e-7, alpha=1.0, beta=0.0, **kw))
    _same_run(pi, i)
    assert int(i.stats.n_rejected.sum()) > 0  # the rejection branch ran too


@pytest.mark.parametrize("rtol", [1e-5, 1e-8])
def test_pi_meets_the_tolerance_against_scipy(rtol):
    """Van der Pol mu=5: the PI solve's global error at t=4 stays within 50 rtol of DOP853's
    (rtol 1e-13), as the I controller's does: PI changes the steps, not the accuracy promised."""
    ref = np.stack([solve_ivp(lambda t, y: [y[1], 5.0 * (1 - y[0]**2) * y[1] - y[0]], (0, 4), y0,
                              method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
                    for y0 in Y0.numpy()])
    for ctrl in (PIController(rtol, rtol), MixedNorm(rtol, rtol)):
        sol = odesolve(vdp, Y0, T, control=ctrl)
        err = np.abs(sol.ys[-1].numpy() - ref).max() / (1 + np.abs(ref).max())
        assert err < 50 * rtol, (ctrl, err)


def test_each_example_takes_the_steps_it_takes_alone():
    """Per-example PI state follows its example when finished ones leave the batch: a batch takes,
    per example, the same steps as each example alone (and reading every 4 steps changes nothing
    but the evaluations counted: frozen rows stay in the batch until a read)."""
    ctrl = PIController(1e-6, 1e-6)
    t = torch.tensor([0.0, 3.0], dtype=F64)
    batch = odesolve(vdp, Y0, t, control=ctrl)
    assert len(set(batch.stats.n_steps.tolist())) > 1  # examples finish at different iterations
    for b in range(Y0.shape[0]):
        alone = odesolve(vdp, Y0[b:b + 1], t, control=ctrl)
        assert int(alone.stats.n_steps[0]) == int(batch.stats.n_steps[b])
        assert int(alone.stats.n_rejected[0]) == int(batch.stats.n_rejected[b])
        torch.testing.assert_close(alone.ys[:, 0], batch.ys[:, b], rtol=1e-13, atol=1e-13)
    lazy = odesolve(vdp, Y0, t, control=ctrl, sync_every=4)
    _same_run(lazy, batch, names=("n_steps", "n_accepted", "n_rejected", "h", "status"))


def test_pi_gradients_match_finite_differences():
    y0 = Y0[:2].clone().requires_grad_(True)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    sol = odesolve(vdp, y0, t, control=PIController(1e-10, 1e-10))
    (g,) = torch.autograd.grad(sol.ys[-1].sum(), y0)
    eps = 1e-6
    for b in range(2):
        for d in range(2):
            dy = torch.zeros_like(Y0[:2])
            dy[b, d] = eps
            ctrl = PIController(1e-10, 1e-10)
            f = [odesolve(vdp, Y0[:2] + s * dy, t, control=ctrl).ys[-1, b].sum() for s in (1, -1)]
            assert abs(float(g[b, d]) - float(f[0] - f[1]) / (2 * eps)) < 1e-4


@dataclass(frozen=True)
class Doubling:
    """A controller written against the contract alone: accept err <= 1, then double or halve."""

    driver: ClassVar[str] = "step"
    rtol: float = 1e-6
    atol: float = 1e-6
    norm: str = "example"
    per_example: bool = True

    def init(self, n, dtype, device):
        return (torch.zeros(n, dtype=torch.int64, device=device),)  # rejections so far

    def error(self, err, y0, y1, h=None, finite=None):
        return mixed_rms(err, y0, y1, finite, self.rtol, self.atol, self.norm, self.per_example)

    def adapt(self, err, h, state, order):
        accept = err <= 1.0
        return accept, torch.where(accept, 2 * h, h / 2), (state[0] + ~accept,)


def test_a_new_controller_needs_only_the_contract():
    ctrl = Doubling()
    assert isinstance(ctrl, Controller) and isinstance(PIController(1e-6, 1e-6), Controller)
    assert isinstance(MixedNorm(1e-6, 1e-6), Controller) and isinstance(PaperRule(), Controller)
    sol = odesolve(lambda t, y: -y, Y0, T, control=ctrl)
    torch.testing.assert_close(sol.ys[-1], Y0 * np.exp(-4.0), rtol=1e-5, atol=1e-5)
    assert str(ctrl) in sol.stats.control and int(sol.stats.n_rejected.sum()) > 0


def test_bad_controllers_and_options_are_refused():
    with pytest.raises(TypeError, match=r"control must be a step-size controller .*got str"):
        odesolve(vdp, Y0, T, control="pi")
    with pytest.raises(ValueError, match="PIController: beta must be"):
        PIController(1e-6, 1e-6, alpha=0.3, beta=0.4)
    with pytest.raises(ValueError, match="PIController: alpha"):
        PIController(1e-6, 1e-6, alpha=-1.0)
    with pytest.raises(ValueError, match="shares one step"):
        PIController(1e-6, 1e-6, norm="batch", per_example=True)
    with pytest.raises(ValueError, match="sync_every must be >= 1"):
        odesolve(vdp, Y0, T, sync_every=0)
    with pytest.raises(TypeError, match="fused must be True or False"):
        odesolve(vdp, Y0, T, fused="yes")


def test_paper_rule_adapt_gives_uniform_substeps():
    """h_next = |H| / n, n = min(ceil(|H| / (safety |H| sqrt(eps / r))), max_substeps);
    n = 1 if r <= eps."""
    rule = PaperRule(eps=0.1, safety=0.9, max_substeps=10)
    r = torch.tensor([0.05, 0.2, 1.0, 1e6, float("inf")], dtype=F64)
    accept, h_next, _ = rule.adapt(r, 2.0, (), 2)
    n = np.ceil(1 / (0.9 * np.sqrt(0.1 / r[1:3].numpy())))
    assert accept.tolist() == [True, False, False, False, False]
    torch.testing.assert_close(h_next, torch.tensor([2.0, *(2.0 / n), 0.2, 0.2], dtype=F64))
    shared = PaperRule(eps=0.1, shared=True).adapt(r[:3], 2.0, (), 2)[1]
    assert shared[0] == 2.0 and shared[1] == shared[2] == 2.0 / n.max()  # the smallest h'


def test_the_loop_state_has_declared_fields():
    from dynfit.solvers.integrate import _Rows, _Tracker

    assert not hasattr(_Tracker(Y0, 3), "__dict__")
    with pytest.raises(TypeError, match="unknown fields"):
        _Rows(idx=torch.arange(2), acc_prev=None)
