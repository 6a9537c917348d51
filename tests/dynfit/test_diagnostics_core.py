"""Lyapunov spectra, normalised error, VPT and valid ground-truth time."""

import numpy as np
import pytest
import torch

import systems
from dynfit.diagnostics import (
    ExactSurrogate,
    integrate,
    lyapunov_spectrum,
    normalised_error,
    reference_solutions,
    system_lyapunov_spectrum,
    valid_groundtruth_time,
    valid_prediction_time,
)

LORENZ_L1 = 0.9056  # docs/references.md section 4
LORENZ_SUM = -(10 + 1 + 8 / 3)


class LorenzField(torch.nn.Module):
    """The true Lorenz'63 vector field as a torch module field(t, x), x (batch, 3)."""

    def forward(self, t, x):
        s, r, b = 10.0, 28.0, 8.0 / 3.0
        return torch.stack(
            [
                s * (x[..., 1] - x[..., 0]),
                x[..., 0] * (r - x[..., 2]) - x[..., 1],
                x[..., 0] * x[..., 1] - b * x[..., 2],
            ],
            -1,
        )


class LinearField(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = torch.nn.Parameter(torch.as_tensor(a, dtype=torch.float64), requires_grad=False)

    def forward(self, t, x):
        return x @ self.a.T


@pytest.fixture(scope="module")
def lorenz_starts():
    """16 points on the Lorenz attractor: 16 nearby points each carried 5 time units.

    Short runs keep the starts independent of rounding: points 5-40 time units down
    one run move with the CPU's BLAS kernels (scipy's DOP853), and the exponent with them.
    """
    L = systems.get("lorenz63")
    x0 = L.x0 + np.linspace(-2.0, 2.0, 16)[:, None] * np.array([1.0, 1.0, 0.0])
    return integrate(L, x0, dt=0.01, n_steps=501, rtol=1e-10, atol=1e-10)[:, -1]


def test_linear_field_exponents_are_eigenvalues():
    # a triangular matrix with eigenvalues 0.5, -1, -2: exponents are exactly those
    a = np.array([[0.5, 1.0, 0.0], [0.0, -1.0, 0.3], [0.0, 0.0, -2.0]])
    lam = lyapunov_spectrum(LinearField(a), np.ones(3), dt=0.01, n_steps=1000, transient=200)
    np.testing.assert_allclose(lam, [0.5, -1.0, -2.0], atol=1e-3)


def test_lorenz_torch_field_largest_exponent(lorenz_starts):
    # 16 starts x 15 time units after a 5-unit transient: 0.8955 here. Starts moved by
    # 1e-15, or another CPU's rounding (OPENBLAS_CORETYPE=Prescott, ATEN_CPU_CAPABILITY=
    # default) move it by < 2e-4; new samples (starts 1e-12 apart) scatter by ~0.013.
    torch.set_num_threads(1)
    lam = lyapunov_spectrum(LorenzField(), lorenz_starts, dt=0.01, n_steps=2000, transient=500)
    assert lam.shape == (3,) and np.all(np.diff(lam) < 0)
    assert abs(lam[0] - LORENZ_L1) / LORENZ_L1 < 0.03, lam
    assert abs(lam[1]) < 0.05, lam
    # the sum is the (constant) divergence of the field, exact up to RK4 error
    assert abs(lam.sum() - LORENZ_SUM) < 1e-3, lam.sum()


def test_torch_and_numpy_estimators_agree(lorenz_starts):
    torch.set_num_threads(1)
    a = lyapunov_spectrum(LorenzField(), lorenz_starts[:2], dt=0.01, n_steps=300, k=2)
    b = system_lyapunov_spectrum("lorenz63", lorenz_starts[:2], dt=0.01, n_steps=300, k=2)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_lyapunov_float32_field_and_mode_restored(lorenz_starts):
    field = LorenzField().float()
    field.train()
    lam = lyapunov_spectrum(field, lorenz_starts[0], dt=0.01, n_steps=50, k=1)
    assert lam.shape == (1,) and np.isfinite(lam).all()
    assert field.training


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x0=np.ones(2)), "shape"),
        (dict(dt=0.0), "dt"),
        (dict(n_steps=0), "n_steps"),
        (dict(k=4), "k=4"),
    ],
)
def test_lyapunov_bad_input(kwargs, match):
    args = dict(x0=np.ones(3), dt=0.01, n_steps=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        lyapunov_spectrum(LorenzField(), args.pop("x0"), **args)


def test_lyapunov_diverging_field_raises():
    with pytest.raises(FloatingPointError, match="diverges"):
        lyapunov_spectrum(LinearField(np.eye(3) * 2e4), np.ones(3), dt=0.1, n_steps=100)


def test_normalised_error_definition():
    truth = np.zeros((4, 2))
    pred = np.array([[0, 0], [1, 0], [0, 2], [3, 4]], dtype=float)
    std = np.array([1.0, 2.0])
    e = normalised_error(truth, pred, std=std)
    np.testing.assert_allclose(e, np.sqrt([0, 0.5, 0.5, (9 + 4) / 2]))
    pred[2, 0] = np.nan
    assert np.isinf(normalised_error(truth, pred, std=std)[2])


def test_vpt_first_exceedance_in_lyapunov_times():
    n = 100
    truth = np.zeros((n, 3))
    pred = np.zeros((n, 3))
    pred[:, 0] = np.linspace(0, 1.0, n) * np.sqrt(3)  # e(t_k) = k / 99
    v = valid_prediction_time(
        truth, pred, dt=0.1, lyapunov_time=2.0, std=1.0, thresholds=(0.3, 0.5, 1.0)
    )
    k = [30, 50, 99]  # first k with k/99 > thr; never for 1.0 -> horizon
    np.testing.assert_allclose(v, np.array(k) * 0.1 / 2.0)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, (0.3, 2.0), np.nan])
def test_vpt_threshold_outside_unit_interval_raises(bad):
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        valid_prediction_time(x, x, dt=0.01, lyapunov_time=1.0, std=1.0, thresholds=bad)


def test_vpt_bad_shapes_and_std():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="same shape"):
        valid_prediction_time(x, np.zeros((5, 2)), dt=0.01, lyapunov_time=1.0, std=1.0)
    with pytest.raises(ValueError, match="std"):
        valid_prediction_time(x, x, dt=0.01, lyapunov_time=1.0, std=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="lyapunov_time"):
        valid_prediction_time(x, x, dt=0.01, lyapunov_time=-1.0, std=1.0)


def test_exact_system_vpt_equals_valid_groundtruth_time():
    """The exact system, generated by a reference solver, is valid exactly as long
    as the reference solvers agree with the data (and each other)."""
    L = systems.get("lorenz63")
    dt, n = 0.01, 3000
    starts = integrate(L, L.x0, dt=dt, n_steps=1201, rtol=1e-10, atol=1e-10)[[400, 1200]]
    # the "data": DOP853 at 1e-12, as a careful simulation would give
    data = integrate(L, starts, dt=dt, n_steps=n, method="DOP853", rtol=1e-12, atol=1e-12)
    std = data.reshape(-1, 3).std(0)
    exact = ExactSurrogate(L, dt=dt, method="LSODA", rtol=1e-12)
    pred = exact.generate(starts, n)
    np.testing.assert_array_equal(pred[:, 0], starts)
    lt = L.lyapunov_time
    vpt = valid_prediction_time(data, pred, dt=dt, lyapunov_time=lt, std=std)
    refs = reference_solutions(
        L, starts, dt=dt, n_steps=n, solvers=(("DOP853", 1e-12), ("LSODA", 1e-12))
    )
    vgt = valid_groundtruth_time([data, *refs], dt=dt, lyapunov_time=lt, std=std)
    np.testing.assert_allclose(vpt, vgt)
    # and the agreement is long: > 15 Lyapunov times. Where the references part
    # depends on bit-level rounding (BLAS kernels, FMA, vector width) that chaos
    # amplifies: starts moved by 1e-12 part at 21.8-24.8 LT, or never within the
    # 27.16-LT horizon, which is then reported (first_exceedance), so <= horizon.
    horizon = (n - 1) * dt / lt
    assert np.all(vgt > 15) and np.all(vgt <= horizon + 1e-12), (vgt, horizon)


def test_systems_and_scipy_references_agree():
    L = systems.get("lorenz63")
    a, b = reference_solutions(
        L, L.x0, dt=0.01, n_steps=1000
    )  # the defaults: LSODA, systems.dopri5
    assert a.shape == b.shape == (1000, 3)
    np.testing.assert_array_equal(a[0], L.x0)
    np.testing.assert_array_equal(b[0], L.x0)
    # 10 time units (9 Lyapunov times): still within 1e-6 of each other
    assert np.abs(a - b).max() < 1e-6 * np.abs(a).max()
    with pytest.raises(ValueError, match="unknown method 'euler'.*; expected one of"):
        integrate(L, L.x0, dt=0.01, n_steps=10, method="euler")


def test_valid_groundtruth_needs_two():
    with pytest.raises(ValueError, match="at least 2"):
        valid_groundtruth_time([np.zeros((3, 2))], dt=0.1, lyapunov_time=1.0, std=1.0)
