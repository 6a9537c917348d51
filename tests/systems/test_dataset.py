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


def test_demo_writes_netcdf_and_png(tmp_path, capsys):
    from systems.demo import run_demo

    res = run_demo(tmp_path / "demo", n_traj=2, n_steps=300)
    assert res["netcdf"].is_file() and res["figure"].is_file()
    assert res["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    xr.testing.assert_identical(systems.load(res["netcdf"]), res["dataset"])
    assert "lorenz63_attractor.png" in capsys.readouterr().out
