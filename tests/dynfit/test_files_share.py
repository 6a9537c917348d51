"""Files a team can share: the umask's permissions, no lock left behind, CF-1.10 netCDF."""
import os
import stat

import numpy as np
import pytest
import xarray as xr

import systems
from dynfit.io import save_torch, write_netcdf, write_text
from systems.dataset import _is_udunits, cf_conventions
from systems.files import FolderLock, FolderLockedError, atomic_write_bytes


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_umask_permissions(tmp_path, mask, expected):
    old = os.umask(mask)
    try:
        ds = xr.Dataset({"a": ("t", np.arange(3.0))})
        paths = [atomic_write_bytes(tmp_path / "b.bin", b"x"), write_text(tmp_path / "t.txt", "x"),
                 write_netcdf(ds, tmp_path / "d.nc"), save_torch({"a": 1}, tmp_path / "m.pt")]
        for p in paths:
            assert _mode(p) == expected, (p, oct(_mode(p)))
        os.chmod(paths[0], 0o600)  # a replaced file gets the umask's mode too
        assert _mode(atomic_write_bytes(tmp_path / "b.bin", b"y")) == expected
    finally:
        os.umask(old)


def test_the_lock_file_goes_when_the_run_ends(tmp_path):
    with FolderLock(tmp_path):
        assert (tmp_path / FolderLock.NAME).exists()
        with pytest.raises(FolderLockedError):
            FolderLock(tmp_path).acquire()
    assert not (tmp_path / FolderLock.NAME).exists()
    with pytest.raises(RuntimeError, match="boom"):
        with FolderLock(tmp_path):
            raise RuntimeError("boom")
    assert not (tmp_path / FolderLock.NAME).exists()
    # left by a killed run: taken over, then removed
    (tmp_path / FolderLock.NAME).write_text("12345")
    with FolderLock(tmp_path):
        pass
    assert not (tmp_path / FolderLock.NAME).exists()


def test_fit_leaves_no_lock_after_success_or_failure(tmp_path, one_thread):
    from dynfit import fit

    data = systems.simulate("lorenz63", n_traj=1, n_steps=40, dt=0.01, seed=0)
    kw = dict(field={"kind": "mlp", "width": 4, "depth": 1}, epochs=1, lbfgs_iterations=2,
              progress=False, prefit=False)
    fit(data, checkpoint_dir=tmp_path / "ok", **kw)
    assert (tmp_path / "ok" / "checkpoint.pt").exists()
    assert not (tmp_path / "ok" / FolderLock.NAME).exists()

    def fail(epoch, row):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        fit(data, checkpoint_dir=tmp_path / "bad", callback=fail, **kw)
    assert not (tmp_path / "bad" / FolderLock.NAME).exists()


def _check_cf(path) -> None:
    """The conventions dynfit writes: Conventions CF-1.10; every numeric variable with UDUNITS units
    (checked with cfunits when it is installed, else by the writer's own rule), prose in
    long_name."""
    try:
        from cfunits import Units
    except Exception:  # cfunits needs the udunits2 C library
        Units = None
    with xr.open_dataset(path) as ds:
        assert ds.attrs["Conventions"] == "CF-1.10"
        for name, var in ds.variables.items():
            if var.dtype.kind in "USO":
                continue
            units = var.attrs.get("units")
            assert units is not None, name
            assert _is_udunits(units), (name, units)
            if Units is not None:
                assert Units(units).isvalid, (name, units)


def test_netcdf_outputs_follow_cf(tmp_path, one_thread):
    sim = systems.simulate("lorenz63", n_traj=2, n_steps=30, dt=0.01, seed=0)
    assert sim["x"].attrs["units"] == "1" and sim.attrs["Conventions"] == "CF-1.10"
    _check_cf(systems.save(sim, tmp_path / "sim.nc"))
    diag = xr.Dataset(
        {"vpt": ("start", np.ones(2), {"units": "Lyapunov times"}),
         "std": ("component", np.ones(3), {"units": "state units", "long_name": "spread"}),
         "n": ((), 3)},
        attrs={"state_units": "m"},
    )
    out = cf_conventions(diag)
    assert out["vpt"].attrs == {"units": "1", "long_name": "vpt (in Lyapunov times)"}
    assert out["std"].attrs == {"units": "m", "long_name": "spread (in state units)"}
    _check_cf(write_netcdf(diag, tmp_path / "diag.nc"))
    from dynfit import fit

    sur, hist = fit(sim, field={"kind": "mlp", "width": 4, "depth": 1}, epochs=1,
                    lbfgs_iterations=2, progress=False, prefit=False)
    assert all(hist[v].attrs["units"] in ("1", "s") for v in hist.data_vars)
    _check_cf(write_netcdf(hist, tmp_path / "history.nc"))
    _check_cf(
        write_netcdf(sur.forecast(sim.x.values[:, 0], 3, on_failure="ignore"), tmp_path / "f.nc")
    )


@pytest.mark.parametrize(
    "units, ok",
    [("1", True), ("s", True), ("m s-1", True), ("days since 2000-01-01", True),
     ("state units", False), ("Lyapunov times", False), ("nats", False), ("1 / time unit", False),
     ("", False)],
)
def test_udunits_rule(units, ok):
    assert _is_udunits(units) == ok
