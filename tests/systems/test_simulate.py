"""systems.simulate: the Dataset, seeding, noise, initial conditions and input validation."""
import json

import numpy as np
import pytest
import xarray as xr

import systems
from systems.integrate import BlowUpError, IntegrationError, StepLimitError, integrate


@pytest.fixture(scope="module")
def ds():
    return systems.simulate("lorenz63", n_traj=3, n_steps=400, dt=0.01, seed=7)


def test_dataset_layout_and_attrs(ds):
    assert ds["x"].dims == ("trajectory", "time", "component")
    assert ds["x"].shape == (3, 400, 3)
    np.testing.assert_allclose(ds["time"].values, 0.01 * np.arange(400))
    assert list(ds["component"].values) == ["x", "y", "z"]
    a = ds.attrs
    assert a["system"] == "lorenz63" and a["method"] == "rkf45"
    assert a["rtol"] == 1e-9 and a["atol"] == 1e-9 and a["dt"] == 0.01 and a["seed"] == 7
    assert json.loads(a["parameters"]) == {"sigma": 10.0, "rho": 28.0, "beta": 8 / 3}
    assert a["param_rho"] == 28.0
    assert a["lyapunov_max"] == pytest.approx(0.9056) and a["lyapunov_time"] == pytest.approx(
        1 / 0.9056
    )
    assert a["version"] == systems.__version__ and "systems.simulate" in a["created_by"]
    assert a["noise"] == 0.0 and a["transient"] == 0.0


def test_seed_reproducible(ds):
    again = systems.simulate("lorenz63", n_traj=3, n_steps=400, dt=0.01, seed=7)
    xr.testing.assert_identical(ds, again)  # data and attributes
    other = systems.simulate("lorenz63", n_traj=3, n_steps=400, dt=0.01, seed=8)
    assert not np.allclose(ds["x"].values[:, 0], other["x"].values[:, 0])


def test_no_seed_records_the_seed_used():
    a = systems.simulate("lorenz63", n_traj=2, n_steps=50, dt=0.01)
    b = systems.simulate("lorenz63", n_traj=2, n_steps=50, dt=0.01, seed=int(a.attrs["seed"]))
    np.testing.assert_array_equal(a["x"].values, b["x"].values)


def test_sampled_initial_conditions_lie_on_the_attractor(ds):
    x0 = ds["x"].values[:, 0]
    assert len({tuple(np.round(v, 6)) for v in x0}) == 3  # distinct
    # Lorenz'63 attractor: |x|, |y| < 30, 0 < z < 50, far from the fixed point at the origin
    assert np.all(np.abs(x0[:, :2]) < 30) and np.all((x0[:, 2] > 0) & (x0[:, 2] < 50))
    ds_long = systems.simulate("lorenz63", n_traj=1, n_steps=5000, dt=0.01, seed=1)
    lo, hi = ds_long["x"].values[0].min(0), ds_long["x"].values[0].max(0)
    assert np.all(lo[:2] < -10) and np.all(hi[:2] > 10)  # visits both wings


def test_given_x0_and_transient_match_integrate():
    s = systems.get("lorenz63")
    x0 = np.array([[1.0, 1.0, 20.0], [-5.0, -5.0, 25.0]])
    ds = systems.simulate(
        "lorenz63", n_traj=2, n_steps=11, dt=0.1, x0=x0, transient=0.5, rtol=1e-11, atol=1e-11
    )
    ref = integrate(s, x0, np.linspace(0.0, 1.5, 16), rtol=1e-11, atol=1e-11).x[:, 5:]
    np.testing.assert_allclose(ds["x"].values, ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ds["time"].values, 0.5 + 0.1 * np.arange(11))


def test_single_x0_broadcast_and_methods():
    s = systems.get("lorenz63")
    for method in ("rk4", "rkf45", "dopri5"):
        ds = systems.simulate(s, n_traj=2, n_steps=20, dt=0.01, x0=s.x0, method=method)
        np.testing.assert_array_equal(ds["x"].values[0], ds["x"].values[1])
        np.testing.assert_array_equal(ds["x"].values[0, 0], s.x0)
    rk4 = systems.simulate(s, n_steps=101, dt=0.01, x0=s.x0, method="rk4", substeps=4)
    fine = systems.simulate(s, n_steps=101, dt=0.01, x0=s.x0, rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(rk4["x"].values - fine["x"].values)) < 1e-6


def test_params_override():
    ds = systems.simulate("lorenz63", n_steps=10, dt=0.01, params={"rho": 14.0}, seed=0)
    assert ds.attrs["param_rho"] == 14.0 and json.loads(ds.attrs["parameters"])["rho"] == 14.0


def test_noise_level(ds):
    clean = systems.simulate("lorenz63", n_traj=4, n_steps=3000, dt=0.01, seed=3)
    noisy = systems.simulate("lorenz63", n_traj=4, n_steps=3000, dt=0.01, seed=3, noise=0.1)
    diff = (noisy["x"] - clean["x"]).values.reshape(-1, 3)
    std = clean["x"].values.reshape(-1, 3).std(axis=0)
    np.testing.assert_allclose(diff.std(axis=0) / std, 0.1, rtol=0.05)
    np.testing.assert_allclose(diff.mean(axis=0) / std, 0.0, atol=0.01)
    assert noisy.attrs["noise"] == 0.1


def test_user_defined_system(blowup):
    ds = systems.simulate(blowup, n_steps=5, dt=0.1, x0=[0.1], params={"k": 1.0})
    u = 0.1 / (1 - 0.1 * ds["time"].values)
    np.testing.assert_allclose(ds["x"].values[0, :, 0], u, rtol=1e-8)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(system="lorenz36"), ValueError, r"unknown system 'lorenz36'.*lorenz63"),
        (dict(params={"rhoo": 1.0}), ValueError, r"unknown parameter.*rhoo.*rho"),
        (dict(dt=0.0), ValueError, r"dt must be .*> 0.*got 0.0"),
        (dict(dt=-0.01), ValueError, r"dt must be"),
        (dict(n_steps=0), ValueError, r"n_steps must be >= 1, got 0"),
        (dict(n_traj=0), ValueError, r"n_traj must be >= 1, got 0"),
        (dict(n_steps=2.5), TypeError, r"n_steps must be an integer"),
        (dict(x0=[1.0, 2.0]), ValueError, r"x0 must have shape \(3,\).*got \(2,\)"),
        (
            dict(x0=np.zeros((2, 3)), n_traj=3),
            ValueError,
            r"x0 must have shape.*\(3, 3\).*got \(2, 3\)",
        ),
        (dict(x0=[1.0, np.nan, 2.0]), ValueError, r"NaN or inf"),
        (dict(x0=[1.0, np.inf, 2.0]), ValueError, r"NaN or inf"),
        (dict(rtol=0.0), ValueError, r"rtol"),
        (dict(atol=-1e-9), ValueError, r"atol"),
        (dict(method="rk45"), ValueError, r"unknown method 'rk45'.*rkf45"),
        (dict(noise=-0.1), ValueError, r"noise"),
        (dict(transient=-1.0), ValueError, r"transient"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = dict(system="lorenz63", n_steps=10, dt=0.01, seed=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        systems.simulate(args.pop("system"), **args)


def test_blow_up_names_trajectory_and_time(blowup):
    with pytest.raises(BlowUpError, match=r"trajectory 2 blew up .*t=") as info:
        systems.simulate(
            blowup, n_traj=3, n_steps=30, dt=0.1, x0=[[0.1], [0.2], [1.0]], method="rk4"
        )
    assert info.value.trajectory == 2 and 0.9 < info.value.time < 1.6
    with pytest.raises(IntegrationError, match=r"trajectory 2 "):
        systems.simulate(blowup, n_traj=3, n_steps=30, dt=0.1, x0=[[0.1], [0.2], [1.0]])


def test_step_limit():
    with pytest.raises(StepLimitError, match=r"trajectory 0 .*max_steps=20.*increase max_steps"):
        systems.simulate("lorenz63", n_steps=100, dt=0.1, x0=[1.0, 1.0, 20.0], max_steps=20)


def test_progress_bar_path(capsys):
    ds = systems.simulate("lorenz63", n_traj=130, n_steps=5, dt=0.01, seed=0, progress=True)
    assert ds["x"].shape == (130, 5, 3) and np.all(np.isfinite(ds["x"].values))


def test_non_autonomous_system_starts_in_phase():
    """Sampled starts of a forced system are states at t = 0 of a spin-up from t < 0."""
    s = systems.get("duffing")
    assert not s.autonomous
    ds = systems.simulate(s, n_traj=2, n_steps=50, dt=s.dt, seed=0)
    x = ds["x"].values
    assert np.all(np.isfinite(x)) and not np.allclose(x[0, 0], x[1, 0])
    # continuing from the first sample with the same clock reproduces the trajectory
    again = systems.simulate(s, n_traj=2, n_steps=50, dt=s.dt, x0=x[:, 0])
    np.testing.assert_allclose(again["x"].values, x, atol=1e-7)
