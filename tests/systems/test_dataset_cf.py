"""netCDF files the CF way and back: string coordinates as label variables, strings as char
arrays, no fill value on coordinates; files read back as the Dataset written; old files still read.
"""

import netCDF4
import numpy as np
import pytest
import xarray as xr

import systems
from systems.dataset import cf_conventions, cf_decode, cf_encode


def _raw(path) -> dict:
    """{variable: (dims, dtype, attrs)} as netCDF4 sees the file."""
    with netCDF4.Dataset(path) as f:
        return {
            k: (v.dimensions, v.dtype, {a: v.getncattr(a) for a in v.ncattrs()})
            for k, v in f.variables.items()
        }


def _mixed() -> xr.Dataset:
    """String coordinates (non-ASCII, empty, of unequal length), string data, bool, scalars."""
    return xr.Dataset(
        {
            "x": (("case", "component"), np.arange(6.0).reshape(2, 3), {"units": "m"}),
            "status": ("case", np.array(["ok", ""])),
            "capped": ("case", np.array([True, False])),
            "n": ((), 3),
        },
        coords={
            "case": np.array(["first run", "θ-sweep"]),
            "component": np.array(["θ", "omega", "z"]),
            "k": ("case", [1, 2]),
        },
        attrs={"title": "mixed"},
    )


def test_simulated_data_round_trip_with_labels(tmp_path):
    ds = systems.simulate("lorenz63", n_traj=2, n_steps=20, dt=0.01, seed=0)
    ds = ds.assign_coords(component=("component", ["θ", "y", "z"], ds["component"].attrs))
    path = systems.save(ds, tmp_path / "sim.nc")
    raw = _raw(path)
    assert "component" not in raw  # no string coordinate variable
    dims, dtype, attrs = raw["component_label"]
    assert dims[0] == "component" and dtype == np.dtype("S1")  # a char array (CF 6.1 labels)
    assert attrs["label_of"] == "component" and "long_name" in attrs
    assert raw["x"][2]["coordinates"] == "component_label"
    assert "_FillValue" not in raw["time"][2]  # CF 2.5.1
    back = systems.load(path)
    xr.testing.assert_identical(back, ds)
    assert list(back["component"].values) == ["θ", "y", "z"]


def test_written_files_read_back_the_same(tmp_path):
    from dynfit.io import read_netcdf, write_netcdf

    ds = _mixed()
    back = read_netcdf(write_netcdf(ds, tmp_path / "m.nc"))
    xr.testing.assert_identical(back, cf_conventions(ds))
    assert back["case"].values.tolist() == ["first run", "θ-sweep"]
    assert back["status"].values.tolist() == ["ok", ""] and back["capped"].dtype == bool
    raw = _raw(tmp_path / "m.nc")
    assert all(v[1] != str for v in raw.values())  # no variable-length strings
    xr.testing.assert_identical(cf_decode(cf_encode(ds)), cf_conventions(ds))


@pytest.mark.parametrize("kind", ["raw", "conventions"])
def test_files_written_the_old_way_still_read(tmp_path, kind):
    from dynfit.io import read_netcdf, read_trajectories

    ds = systems.simulate("lorenz63", n_traj=1, n_steps=10, dt=0.01, seed=0)
    old = ds if kind == "raw" else cf_conventions(ds)
    old.to_netcdf(tmp_path / "old.nc")  # string component coordinate
    assert _raw(tmp_path / "old.nc")["component"][1] == str
    xr.testing.assert_identical(systems.load(tmp_path / "old.nc"), old)
    xr.testing.assert_identical(read_netcdf(tmp_path / "old.nc"), old)
    assert read_trajectories(tmp_path / "old.nc")["component"].values.tolist() == ["x", "y", "z"]


def test_a_user_label_variable_is_not_taken_for_ours():
    ds = xr.Dataset(
        {"x": ("component", [1.0, 2.0])}, coords={"component_label": ("component", ["a", "b"])}
    )
    out = cf_decode(cf_encode(ds))
    assert "component_label" in out.coords and "component" not in out.coords
