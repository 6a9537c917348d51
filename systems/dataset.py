"""netCDF input and output of simulated Datasets (netCDF4/HDF5 engine)."""
from __future__ import annotations

from pathlib import Path

import xarray as xr

__all__ = ["save", "load"]

_ENGINE = "netcdf4"


def save(ds: xr.Dataset, path) -> Path:
    """Write ``ds`` to ``path`` (netCDF4); parent folders are created. Returns the path."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"save expects an xarray.Dataset, got {type(ds).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine=_ENGINE)
    return path


def load(path) -> xr.Dataset:
    """Read a Dataset written by :func:`save` fully into memory (the file is closed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no netCDF file at {str(path)!r}")
    with xr.open_dataset(path, engine=_ENGINE) as ds:
        return ds.load()
