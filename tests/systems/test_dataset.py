"""netCDF round trip of simulated Datasets."""
import numpy as np
import pytest
import xarray as xr

import systems


def test_round_trip_identical(tmp_path):
    ds = systems.simulate("lorenz63", n_traj=2, n_steps=100, dt=0.01, seed=1, noise=0.05)
    path = systems.save(ds, tmp_path / "sub" / "l63.nc")
    back = systems.load(path)
    xr.testing.assert_identical(ds, back)
    assert back["x"].dtype == np.float64 and back["trajectory"].dtype == np.int64
    assert back.attrs == ds.attrs


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no netCDF file"):
        systems.load(tmp_path / "nope.nc")


def test_save_rejects_non_dataset(tmp_path):
    with pytest.raises(TypeError, match="xarray.Dataset"):
        systems.save(np.zeros(3), tmp_path / "x.nc")


