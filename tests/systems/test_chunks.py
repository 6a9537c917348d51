"""Lazy ensembles: simulate(..., chunks=K) as dask, zarr and netCDF files, dask.distributed."""
import importlib

import numpy as np
import pytest
import xarray as xr

import systems
from systems.dataset import SystemsFileError
from systems.integrate import BlowUpError

# the module (systems.simulate is the function)
simulate_module = importlib.import_module("systems.simulate")

dask = pytest.importorskip("dask")


@pytest.mark.parametrize("kwargs", [
    # drawn starts
    dict(system="lorenz63", n_traj=7, n_steps=60, dt=0.01, seed=4),
    dict(system="lorenz63", n_traj=7, n_steps=60, dt=0.01, seed=4, noise=0.05, transient=0.3),
    dict(system="lorenz96", n_traj=5, n_steps=40, dt=0.01, seed=1, method="rk4", substeps=2),
])
def test_chunked_equals_unchunked(kwargs):
    name = kwargs.pop("system")
    eager = systems.simulate(name, **kwargs)
    for k in (1, 3, 7, 100):
        lazy = systems.simulate(name, chunks=k, **kwargs)
        assert isinstance(lazy["x"].data, dask.array.Array)
        n = kwargs["n_traj"]
        assert (
            lazy["x"].data.chunks[0] == tuple([k] * (n // k) + ([n % k] if n % k else [])) or k > n
        )
        xr.testing.assert_identical(lazy.compute(), eager)  # bit for bit, attrs included


def _count_integrations(monkeypatch) -> list:
    """Record the number of trajectories of every call of the integrator that simulate makes."""
    calls = []
    real = simulate_module.integrate
    monkeypatch.setattr(
        simulate_module,
        "integrate",
        lambda system, x0, *a, **k: calls.append(len(x0)) or real(system, x0, *a, **k),
    )
    return calls


@pytest.fixture(scope="module")
def starts():
    """Given starts (x0), so that every integration counted is one of the data, not of drawing
    starts."""
    return systems.simulate("lorenz63", n_traj=12, n_steps=1, dt=0.01, seed=0)["x"].values[:, 0]


def test_nothing_is_integrated_until_asked(monkeypatch, starts):
    calls = _count_integrations(monkeypatch)
    ds = systems.simulate("lorenz63", n_traj=12, n_steps=30, dt=0.01, x0=starts, chunks=4)
    assert calls == []
    ds.isel(trajectory=slice(4, 8))["x"].values
    assert calls == [4]  # only the chunk asked for


def test_fit_data_loads_only_the_selected_chunks(monkeypatch, starts):
    """dynfit's as_trajectories computes x of what it is given: a selection loads only its
    chunks."""
    from dynfit.data import as_trajectories

    calls = _count_integrations(monkeypatch)
    ds = systems.simulate("lorenz63", n_traj=12, n_steps=30, dt=0.01, x0=starts, chunks=4)
    arr, dt, attrs = as_trajectories(ds.isel(trajectory=slice(0, 4)))
    assert arr.shape == (4, 30, 3) and dt == 0.01 and attrs["system"] == "lorenz63"
    assert calls == [4]


@pytest.mark.parametrize("chunks", [0, -3, 1.5, True, "4"])
def test_bad_chunks(chunks):
    with pytest.raises(
        ValueError,
        match=r"chunks must be (an integer )?>= 1, got .*; pass the trajectories per chunk",
    ):
        systems.simulate("lorenz63", n_traj=4, n_steps=10, dt=0.01, seed=0, chunks=chunks)


def test_failure_in_a_chunk_names_the_ensemble_trajectory(blowup):
    ds = systems.simulate(
        blowup,
        n_traj=5,
        n_steps=30,
        dt=0.1,
        x0=[[0.1], [0.1], [0.2], [1.0], [0.1]],
        method="rk4",
        chunks=2,
    )
    with pytest.raises(BlowUpError, match=r"trajectory 3 blew up") as info:
        ds["x"].values
    assert info.value.trajectory == 3


def test_zarr_round_trip_is_lazy_and_identical(tmp_path):
    ds = systems.simulate("lorenz63", n_traj=6, n_steps=50, dt=0.01, seed=2, chunks=4)
    path = systems.save(ds, tmp_path / "sub" / "l63.zarr")
    assert path.is_dir() and not list((tmp_path / "sub").glob(".dynfit-tmp-*"))
    back = systems.load(path)
    assert isinstance(back["x"].data, dask.array.Array)
    xr.testing.assert_identical(back.compute(), ds.compute())
    # an existing store is refused unless overwrite=True
    with pytest.raises(FileExistsError, match="overwrite=True"):
        systems.save(ds, path)
    other = systems.simulate("lorenz63", n_traj=2, n_steps=5, dt=0.01, seed=3)
    systems.save(other, path, overwrite=True)
    xr.testing.assert_identical(systems.load(path).compute(), other)


def test_lazy_netcdf_and_zarr_to_netcdf(tmp_path):
    ds = systems.simulate("lorenz63", n_traj=5, n_steps=40, dt=0.01, seed=5, noise=0.02, chunks=2)
    nc = systems.save(ds, tmp_path / "a.nc")
    xr.testing.assert_identical(systems.load(nc), ds.compute())
    z = systems.save(ds, tmp_path / "a.zarr")
    nc2 = systems.save(systems.load(z), tmp_path / "a.nc")  # netCDF is replaced, as before
    xr.testing.assert_identical(systems.load(nc2), ds.compute())
    assert not list(tmp_path.glob(".dynfit-tmp-*"))


def test_load_rejects_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not a netCDF file at all")
    with pytest.raises(SystemsFileError, match=r"bad.nc is not a readable netCDF file"):
        systems.load(bad)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"y": ("a", np.arange(3.0))}).to_netcdf(foreign)
    with pytest.raises(ValueError, match=r"holds no systems ensemble.*\['y'\]"):
        systems.load(foreign)
    store = tmp_path / "broken.zarr"
    store.mkdir()
    (store / ".zgroup").write_text("{not json")
    with pytest.raises(SystemsFileError, match=r"broken.zarr is not a readable zarr store"):
        systems.load(store)
    with pytest.raises(FileNotFoundError, match="no netCDF file or zarr store"):
        systems.load(tmp_path / "missing.zarr")


def test_save_refuses_a_folder_for_netcdf(tmp_path):
    (tmp_path / "d.nc").mkdir()
    ds = systems.simulate("lorenz63", n_traj=1, n_steps=5, dt=0.01, seed=0)
    with pytest.raises(FileExistsError, match="is a folder"):
        systems.save(ds, tmp_path / "d.nc", overwrite=True)


def test_under_a_distributed_client(tmp_path):
    """Chunks are integrated by worker processes; zarr written by them; numbers unchanged."""
    distributed = pytest.importorskip("distributed")
    eager = systems.simulate("lorenz63", n_traj=6, n_steps=40, dt=0.01, seed=9, noise=0.01)
    lazy = systems.simulate("lorenz63", n_traj=6, n_steps=40, dt=0.01, seed=9, noise=0.01, chunks=2)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cl,
        distributed.Client(cl) as client,
    ):
        xr.testing.assert_identical(lazy.compute(), eager)
        path = systems.save(lazy, tmp_path / "d.zarr")
        pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert len(pids) == 2
    xr.testing.assert_identical(systems.load(path).compute(), eager)
