"""Surrogate.forecast (a Dataset with time, names, units, status), the free-run failure warning,
the (N, D, T) refusal and component names from the data."""

import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import dynfit
from dynfit.data import Standardizer, as_trajectories, component_names
from dynfit.surrogate import Surrogate


def _linear(dim=2, rate=-0.5):
    """A physical field dx/dt = rate x (exact solution x0 exp(rate t))."""
    return Surrogate.from_vector_field(lambda t, x: rate * x, 0.1, dim=dim)


def test_forecast_dataset_matches_generate_and_the_exact_solution(one_thread):
    sur = _linear()
    x0 = np.array([[1.0, 2.0], [-1.0, 0.5]])
    ds = sur.forecast(x0, 11, t0=2.0)
    arr = sur.generate(x0, 11)
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 11, 2)
    assert ds["x"].dims == ("trajectory", "time", "component")
    np.testing.assert_array_equal(ds["x"].values, arr)
    np.testing.assert_allclose(ds["time"].values, 2.0 + 0.1 * np.arange(11))
    exact = x0[:, None, :] * np.exp(-0.5 * 0.1 * np.arange(11))[None, :, None]
    np.testing.assert_allclose(ds["x"].values, exact, rtol=1e-8)
    assert list(ds["component"].values) == ["x0", "x1"]
    assert (ds["status"].values == int(dynfit.Status.SUCCESS)).all()
    assert (ds["valid_steps"].values == 11).all()
    assert ds.attrs["Conventions"] == "CF-1.10"
    for name in ("x", "time", "status", "valid_steps", "trajectory"):
        assert ds[name].attrs["units"], name


def _blowup():
    """dx/dt = x^2: from x0 = 1 it leaves every finite value at t = 1 (10 steps of dt = 0.1)."""
    return Surrogate.from_vector_field(
        lambda t, x: x * x, 0.1, dim=1, solver={"rtol": 1e-6, "atol": 1e-6, "max_steps": 2000}
    )


def test_a_free_run_that_blows_up_warns_with_where_and_why(one_thread):
    sur = _blowup()
    x0 = np.array([[0.1], [1.0]])
    with pytest.warns(
        RuntimeWarning, match=r"trajectory 1 stopped at step \d+ \(t = [\d.]+\) with solver status"
    ):
        out = sur.generate(x0, 20)
    assert np.isfinite(out[0]).all() and np.isnan(out[1, -1]).all()
    with pytest.warns(RuntimeWarning):
        ds = sur.forecast(x0, 20)
    assert ds["status"].values[0] == 0 and ds["status"].values[1] != 0
    assert 5 <= ds["valid_steps"].values[1] <= 11  # the exact solution 1 / (1 - t) ends at t = 1
    with pytest.raises(dynfit.SolverError, match="trajectory 1"):
        sur.forecast(x0, 20, on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sur.generate(x0, 20, on_failure="ignore")
    with pytest.raises(ValueError, match="on_failure"):
        sur.generate(x0, 20, on_failure="loud")


def test_a_field_that_returns_nan_is_refused_before_the_run(one_thread):
    sur = Surrogate.from_vector_field(lambda t, x: x * float("nan"), 0.1, dim=2)
    with pytest.raises(ValueError, match=r"returns NaN or inf at the start state of trajectory 0"):
        sur.generate(np.ones((1, 2)), 5)


def test_n_d_t_data_are_refused_with_the_fix():
    x = np.zeros((4, 6, 200))  # 4 trajectories of 200 samples of a 6-dim state, passed as (N, D, T)
    with pytest.raises(ValueError, match=r"did you pass \(N, D, T\)\? transpose to \(N, T, D\)"):
        as_trajectories(x, dt=0.1)
    as_trajectories(np.random.default_rng(0).standard_normal((4, 6, 3)), dt=0.1)  # T >= D: fine


def test_component_names_flow_from_the_data_into_the_surrogate_and_back(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    t = np.arange(120) * 0.05
    x = np.stack([np.sin(t), np.cos(t)], axis=1)[None] + 0.001 * rng.standard_normal((1, 120, 2))
    da = xr.DataArray(
        x,
        dims=("trajectory", "time", "component"),
        coords={"component": ["theta", "omega"], "time": t},
        attrs={"units": "rad"},
    )
    da["time"].attrs["units"] = "s"
    assert component_names(da, 2) == ["theta", "omega"]
    assert component_names(x, 2) == ["x0", "x1"]
    sur, _ = dynfit.fit(
        da,
        field={"kind": "mlp", "width": 4, "depth": 1},
        epochs=1,
        lbfgs_iterations=2,
        progress=False,
        prefit=False,
    )
    assert sur.components == ["theta", "omega"]
    sur.save(tmp_path / "m.pt")
    back = Surrogate.load(tmp_path / "m.pt")
    assert back.components == ["theta", "omega"]
    ds = back.forecast(x[0, 0], 3, on_failure="ignore")
    assert list(ds["component"].values) == ["theta", "omega"]
    assert ds["x"].attrs["units"] == "rad" and ds["time"].attrs["units"] == "s"


def test_forecast_writes_a_cf_netcdf(tmp_path, one_thread):
    from dynfit.io import write_netcdf

    ds = _linear().forecast(np.ones((2, 2)), 4)
    path = write_netcdf(ds, tmp_path / "forecast.nc")
    back = xr.open_dataset(path)
    assert back.attrs["Conventions"] == "CF-1.10"
    np.testing.assert_array_equal(back["x"].values, ds["x"].values)
    back.close()


def test_standardised_surrogate_forecast_keeps_physical_units(one_thread):
    torch.manual_seed(0)
    field = dynfit.MLPField(2, width=4, depth=1, dtype=torch.float64)
    sur = Surrogate(
        field,
        Standardizer(np.array([1.0, -1.0]), np.array([2.0, 3.0])),
        0.1,
        provenance={"components": ["a", "b"], "state_units": "m"},
    )
    ds = sur.forecast(np.array([1.0, -1.0]), 2)
    np.testing.assert_allclose(ds["x"].values[0, 0], [1.0, -1.0])
    assert list(ds["component"].values) == ["a", "b"] and ds["x"].attrs["units"] == "m"
