"""The default path: polynomial field, derivative pre-fit, continuous strategy, inference
solver, vector-field wrap."""

import math

import numpy as np
import pytest
import torch

import dynfit
from dynfit import strategies
from dynfit.data import Standardizer
from dynfit.nn.fields import PolynomialField, monomial_exponents
from dynfit.prefit import (AUTO_MAX_ORDER, auto_order, derivative_estimates, prefit,
                           resolve_order, stencil)
from dynfit.strategies import ContinuousStrategy, InferenceSolver


def lorenz(t, x):
    return torch.stack(
        [10 * (x[:, 1] - x[:, 0]), x[:, 0] * (28 - x[:, 2]) - x[:, 1],
         x[:, 0] * x[:, 1] - 8 / 3 * x[:, 2]],
        dim=-1,
    )


@pytest.fixture(scope="module")
def data():
    import systems

    return systems.simulate("lorenz63", n_traj=2, n_steps=400, dt=0.01, seed=4, transient=5.0,
                            rtol=1e-12, atol=1e-12)


def test_monomials_and_features():
    e = monomial_exponents(3, 2)
    assert e.shape == (10, 3) and e[0].sum() == 0 and (e.sum(1) <= 2).all()
    assert len({tuple(r) for r in e.tolist()}) == 10
    f = PolynomialField(3, degree=2, width=0, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    feats = f.features(x)
    expect = torch.stack([torch.prod(x**r, dim=1) for r in e.to(torch.float64)], dim=1)
    torch.testing.assert_close(feats, expect, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="degree must be >= 1"):
        PolynomialField(3, degree=0)


def test_mlp_correction_starts_at_zero():
    f = PolynomialField(3, width=8, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64)
    # coefficients and the MLP's output layer start at 0
    assert torch.equal(f(0, x), torch.zeros_like(x))


@pytest.mark.parametrize("order", [2, 4, 6, 8, 12, 16])
def test_derivative_estimates_converge_at_their_order(order):
    # coarser spacings for the high orders, whose error at h = 0.05 is roundoff
    errs, hs = [], np.array([0.2, 0.1, 0.05]) if order <= 8 else np.array([0.6, 0.5, 0.4])
    for h in hs:
        t = np.arange(200) * h
        z = np.sin(t)[None, :, None]  # unit spacing in samples: dz/dsample = h cos(t)
        _, d = derivative_estimates(z, order)
        p = order // 2
        errs.append(np.abs(d[:, 0] / h - np.cos(t[p : len(t) - p])).max())
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert order - 0.5 < slope < order + 0.5


def test_stencils_are_the_classical_central_differences():
    assert stencil(2) == (-0.5, 0.0, 0.5)
    assert np.allclose(stencil(8), (1 / 280, -4 / 105, 1 / 5, -4 / 5, 0.0, 4 / 5, -1 / 5, 4 / 105,
                                    -1 / 280), rtol=1e-15, atol=0)
    for order in (10, 24):  # exact on polynomials of degree <= order: sum_k c_k k^m = [m == 1]
        c, k = np.array(stencil(order)), np.arange(-order // 2, order // 2 + 1)
        for m in range(order + 1):
            terms = c * k.astype(float) ** m
            assert abs(terms.sum() - (m == 1)) < 1e-13 * max(np.abs(terms).sum(), 1.0)
    for bad in (7, 0, 2.5):
        with pytest.raises((ValueError, TypeError), match="derivative order"):
            stencil(bad)


def test_auto_order_takes_the_highest_order_the_data_resolve(data):
    """Lorenz'63 sampled at dt 0.01: the gaps between successive orders fall, the highest order is
    chosen; short trajectories cap it (a stencil spans at most a quarter of one, and fits in a
    single trajectory's last fifth); where the gaps reach roundoff (a sine sampled 600 times a
    period) a lower order is chosen."""
    z = Standardizer.fit(data.x.values).forward(data.x.values)
    order, gaps = auto_order(z)
    assert order == AUTO_MAX_ORDER
    assert gaps[24] < 1e-3 * gaps[8]
    assert auto_order(z[:, :40])[0] == 10
    # one trajectory: its last fifth (the selection's validation part, 20 samples) bounds it
    assert auto_order(z[:1, :100])[0] == 18
    order, gaps = auto_order(np.sin(np.arange(400) * 0.01)[None, :, None])
    assert order < AUTO_MAX_ORDER and gaps[order] < 1e-13
    assert resolve_order("auto", z) == AUTO_MAX_ORDER and resolve_order(6, z) == 6
    with pytest.raises((ValueError, TypeError), match="derivative order"):
        resolve_order("high", z)


def test_prefit_order_setting_takes_auto_or_an_even_integer():
    from dynfit.config import ModelSettings

    assert ModelSettings().prefit_order == "auto"
    assert ModelSettings(prefit_order=12).prefit_order == 12
    with pytest.raises(ValueError, match="must be even"):
        ModelSettings(prefit_order=9)
    with pytest.raises(ValueError, match='"auto" or an even'):
        ModelSettings(prefit_order="best")


def test_prefit_recovers_lorenz_from_samples(data):
    # Lorenz is quadratic: in standardised coordinates and model time the library holds it exactly,
    # so least squares on 8th-order derivatives recovers it to the derivative error (~1e-7).
    scaler = Standardizer.fit(data.x.values)
    z = scaler.forward(data.x.values)
    field = PolynomialField(3, width=8, dtype=torch.float64)
    info = prefit(field, z, iterations=20)
    assert (
        info["field_error_lstsq"] < 1e-5 and info["field_error"] <= info["field_error_lstsq"] * 1.01
    )
    x = torch.as_tensor(data.x.values[0, 100:110])
    exact = lorenz(0, x)
    sur = dynfit.Surrogate(field, scaler, 0.01)
    got = sur.physical_field()(torch.zeros(()), x).detach()
    assert float((got - exact).norm() / exact.norm()) < 1e-5


def test_from_vector_field_and_physical_field_round_trip():
    sur = dynfit.Surrogate.from_vector_field(lorenz, 0.01, dim=3)
    x = torch.tensor([[1.0, 2.0, 20.0], [-3.0, 4.0, 30.0]], dtype=torch.float64)
    torch.testing.assert_close(sur.physical_field()(torch.zeros(()), x), lorenz(0, x))
    x0 = x.numpy()
    out = sur.generate(x0, 11)
    assert out.shape == (2, 11, 3)
    ref = dynfit.odesolve(lorenz, x, torch.linspace(0, 0.1, 11, dtype=torch.float64),
                          control=dynfit.MixedNorm(rtol=1e-12, atol=1e-12))
    np.testing.assert_allclose(out, ref.ys.numpy().transpose(1, 0, 2), rtol=1e-8, atol=1e-8)
    # a scaler changes the coordinates the solver works in, not the answer
    scaler = Standardizer(np.array([0.0, 0.0, 25.0]), np.array([8.0, 9.0, 8.0]))
    scaled = dynfit.Surrogate.from_vector_field(lorenz, 0.01, scaler=scaler)
    np.testing.assert_allclose(scaled.generate(x0, 11), out, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(scaled.physical_field()(torch.zeros(()), x), lorenz(0, x))


def test_physical_field_of_a_model_is_differentiable_and_matches_vector_field():
    torch.manual_seed(0)
    field = PolynomialField(3, width=8, dtype=torch.float64)
    with torch.no_grad():
        field.coef.normal_()
        field.mlp.out.weight.normal_()
    scaler = Standardizer(np.array([1.0, -2.0, 20.0]), np.array([8.0, 9.0, 7.0]))
    sur = dynfit.Surrogate(field, scaler, 0.01)
    x = torch.tensor([[1.0, 2.0, 20.0]], dtype=torch.float64, requires_grad=True)
    f = sur.physical_field()
    np.testing.assert_allclose(sur.vector_field(x.detach().numpy()),
                               f(torch.zeros(()), x).detach().numpy())
    assert torch.autograd.gradcheck(lambda y: f(torch.zeros(()), y), (x,))


def test_inference_solver_record_and_errors():
    s = InferenceSolver()
    assert (s.method, s.rtol, s.atol, s.eps) == ("rkf45", 1e-10, 1e-10, None)
    assert InferenceSolver.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="rtol must be a positive finite"):
        InferenceSolver(rtol=0.0)
    with pytest.raises(ValueError, match="unknown solver settings"):
        InferenceSolver.from_dict({"method": "rkf45", "tol": 1e-3})
    assert strategies.get("fehlberg").inference().eps == 0.1


def test_continuous_schedule_tightens_doubles_and_stops():
    s = ContinuousStrategy(start_horizon=4, max_horizon=8, rtol_max=1e-4, rtol_min=1e-9, patience=2,
                           improvement=0.01)
    rows, hs, tols = [], [], []
    losses = [1.0, 0.5, 0.499, 0.4985, 0.498, 0.4979, 0.4978, 0.4977]
    stop = None
    for epoch, loss in enumerate(losses):
        h = s.horizon(epoch, rows, 1)
        hs.append(h)
        tols.append(s.tolerance())
        rows.append({"loss": loss, "misfit": math.sqrt(loss / 3) * 1e-3, "horizon": h})
        stop = s.finished(rows)
        if stop:
            break
    # doubles once the loss stalls, never shrinks
    assert hs[0] == 4 and 8 in hs and hs == sorted(hs)
    # tightened, never loosened
    assert all(b <= a for a, b in zip(tols, tols[1:])) and tols[-1] < 1e-4
    assert stop is not None and "converged" in stop
    assert s.stride(8, 1) == 8


def test_continuous_bad_settings():
    with pytest.raises(ValueError, match="cannot be met"):
        ContinuousStrategy(rtol_min=1e-4, rtol_max=1e-6)
    with pytest.raises(ValueError, match="rtol_max must be a finite number > 0 and < 1, got 0.0"):
        ContinuousStrategy(rtol_max=0.0)
    with pytest.raises(ValueError, match="start_horizon"):
        ContinuousStrategy(start_horizon=16, max_horizon=8)
    with pytest.raises(ValueError, match="adaptive tableau"):
        ContinuousStrategy(method="rk4")
    with pytest.raises(ValueError, match="max_stride"):
        ContinuousStrategy(max_stride=0)


def test_continuous_windows_overlap_beyond_max_stride():
    """Disjoint windows up to max_stride samples, then a start every max_stride (or the
    user's stride, if larger)."""
    s = ContinuousStrategy(max_stride=8)
    assert [s.stride(h, 1) for h in (1, 4, 8, 16, 128)] == [1, 4, 8, 8, 8]
    assert s.stride(128, 32) == 32 and s.config()["max_stride"] == 8
    assert ContinuousStrategy(max_stride=None).stride(128, 1) == 128
    assert ContinuousStrategy().max_stride is None  # the default: disjoint windows


def test_default_fit_is_the_continuous_path(data, tmp_path):
    """Clean Lorenz'63: the pre-fit's field is below what training resolves, so no epoch runs
    and it is kept; with coarse (order-2) targets the epochs run and record the solver."""
    sur, hist = dynfit.fit(data, epochs=2, progress=False, lbfgs_iterations=3,
                           checkpoint_dir=tmp_path)
    assert hist.attrs["strategy"] == "continuous" and hist.sizes["epoch"] == 0
    assert "at its floor" in hist.attrs["stop_reason"]
    assert "before the first epoch" in hist.attrs["stop_reason"]
    assert hist.attrs["prefit_field_error"] < 1e-8 and hist.attrs["prefit_order"] == 24
    assert sur.solver == InferenceSolver() and sur.strategy["name"] == "continuous"
    _, coarse = dynfit.fit(data, epochs=2, progress=False, lbfgs_iterations=3, prefit_order=2)
    for var in ("rtol", "misfit", "horizon", "accepted_fraction", "mean_steps", "n_f_evals"):
        assert coarse[var].sizes["epoch"] == coarse.sizes["epoch"] >= 1
    assert ((coarse.rtol.values >= 1e-9) & (coarse.rtol.values <= 1e-3)).all()
    assert np.isfinite(coarse.loss).all()
    back = dynfit.Surrogate.load(sur.save(tmp_path / "model.pt"))
    x0 = data.x.values[:, 0]
    np.testing.assert_array_equal(back.generate(x0, 20), sur.generate(x0, 20))
    # before chaos amplifies anything: 0.2 time units from the data's own starts
    np.testing.assert_allclose(sur.generate(x0, 21), data.x.values[:, :21], rtol=1e-3, atol=1e-3)


def test_training_rollouts_stop_at_their_step_limit_per_sample():
    """A field stiff for the training solver fails its windows after ROLLOUT_STEPS_PER_SAMPLE
    steps a sample (NaN rows, an epoch then rolled back) instead of growing the graph without
    bound."""
    from dynfit.strategies import ROLLOUT_STEPS_PER_SAMPLE

    s = ContinuousStrategy()
    s.rtol = 1e-6
    ys, stats = s.rollout(lambda t, y: -1e5 * y, torch.ones(3, 2, dtype=torch.float64), 4)
    assert int(stats.n_steps.max()) == ROLLOUT_STEPS_PER_SAMPLE * 4
    assert not torch.isfinite(ys).any()


class _NaNField(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3, dtype=torch.float64)

    def forward(self, t, x):
        return self.lin(x) * float("nan")


def test_continuous_nan_field_is_rolled_back_reported_and_never_saved(data, tmp_path):
    field = _NaNField()
    before = field.lin.weight.detach().clone()
    with pytest.warns(RuntimeWarning, match="rolled back"):
        sur, hist = dynfit.fit(data, field=field, epochs=2, progress=False, lbfgs_iterations=2,
                               prefit=False, on_nan="stop", checkpoint_dir=tmp_path)
    assert hist.sizes["epoch"] == 0 and "non-finite" in hist.attrs["stop_reason"]
    assert torch.equal(sur.field.lin.weight.detach(), before)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_from_vector_field_with_nothing_but_f_and_dt():
    # the interface outside checks call: from_vector_field(f, dt) with no dim or scaler
    sur = dynfit.Surrogate.from_vector_field(lorenz, 0.01)
    out = sur.generate(np.array([[1.0, 2.0, 20.0]]), 6)
    assert out.shape == (1, 6, 3) and sur.dim == 3 and sur.system == "unknown"
    x = torch.tensor([[1.0, 2.0, 20.0]], dtype=torch.float64)
    torch.testing.assert_close(sur.physical_field()(torch.zeros(()), x), lorenz(0, x))


def test_noisy_data_whose_prefit_is_at_the_noise_floor_train_no_epoch():
    # weak-form pre-fit of the library on 5% noise: the rollouts' misfit is the noise's own, so
    # epochs would fit the noise (measured: they lowered the VPT); fit stops before the first
    import systems

    noisy = systems.simulate("lorenz63", n_traj=3, n_steps=800, dt=0.01, seed=4, noise=0.05)
    # (shooting off: it runs before the floor is judged and is tested in test_shooting.py)
    sur, hist = dynfit.fit(noisy, epochs=3, progress=False, shooting=False)
    reason = hist.attrs["stop_reason"]
    assert "before the first epoch" in reason and "noise" in reason, reason
    assert hist.sizes["epoch"] == 0
    assert np.isfinite(sur.generate(noisy.x.values[:, 0], 50)).all()
