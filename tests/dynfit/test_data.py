"""Windows, standardisation, splits and input validation of dynfit.data."""
import numpy as np
import pytest
import xarray as xr

from dynfit.data import Standardizer, as_trajectories, make_windows, split


def _dataset(n=2, t=30, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, t, d)).cumsum(axis=1)
    return xr.Dataset({"x": (("trajectory", "time", "component"), x)},
                      coords={"time": np.arange(t) * 0.01}, attrs={"system": "toy", "dt": 0.01})


def test_one_step_pairs_match_paper_layout():
    arr = np.arange(30.0).reshape(10, 3)
    w = make_windows(arr, standardize=False, dt=1.0)
    assert len(w) == 9 and w.horizon == 1
    np.testing.assert_array_equal(w.x0, arr[:-1])
    np.testing.assert_array_equal(w.targets[:, 0], arr[1:])


def test_multistep_windows_and_stride():
    ds = _dataset()
    w = make_windows(ds, horizon=5, stride=3)
    x = w.scaler.forward(ds.x.values)
    starts = np.arange(0, 30 - 5, 3)
    assert len(w) == 2 * len(starts) and w.targets.shape[1:] == (5, 3)
    np.testing.assert_allclose(w.x0[1], x[0, starts[1]])
    np.testing.assert_allclose(w.targets[len(starts) + 2], x[1, starts[2] + 1: starts[2] + 6])
    assert w.dt == 0.01 and w.attrs["system"] == "toy"
    x0, tg = w.tensors()
    assert tuple(tg.shape) == (5, len(w), 3)


def test_standardizer_round_trip_and_reuse():
    ds = _dataset()
    w = make_windows(ds)
    z = w.scaler.forward(ds.x.values)
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1, atol=1e-12)
    np.testing.assert_allclose(w.scaler.inverse(z), ds.x.values)
    again = Standardizer.from_dict(w.scaler.to_dict())
    w2 = make_windows(_dataset(seed=1), scaler=again)
    assert w2.scaler is again


def test_split_by_trajectory_and_time():
    ds = _dataset(n=5, t=20)
    a, b = split(ds, by="trajectory", fraction=0.6)
    assert a.sizes["trajectory"] == 3 and b.sizes["trajectory"] == 2
    a, b = split(ds.x.values, by="time", fraction=0.5)
    assert a.shape == (5, 10, 3) and b.shape == (5, 10, 3)
    with pytest.raises(
        ValueError,
        match=r"unknown by 'space'; expected one of \['trajectory', 'time'\]; split along",
    ):
        split(ds, by="space")


def test_nan_is_rejected_with_its_position():
    arr = np.ones((10, 3))
    arr[4, 2] = np.nan
    with pytest.raises(ValueError, match="time index 4, component 2"):
        make_windows(arr)


def test_too_few_samples_for_the_window():
    with pytest.raises(ValueError, match="needs 11"):
        make_windows(np.random.default_rng(0).standard_normal((6, 3)), horizon=10, dt=1.0)


def test_mismatched_dims():
    with pytest.raises(ValueError, match="expected \\(T, D\\)"):
        make_windows(np.zeros((2, 3, 4, 5)))
    bad = xr.DataArray(np.zeros((4, 5)), dims=("time", "space"))
    with pytest.raises(ValueError, match="do not match"):
        as_trajectories(bad)
    w = make_windows(_dataset())
    with pytest.raises(ValueError, match="scaler is for 3 components"):
        make_windows(np.random.default_rng(0).standard_normal((10, 2)), scaler=w.scaler, dt=1.0)
    with pytest.raises(ValueError, match="horizon must be"):
        make_windows(_dataset(), horizon=0)
