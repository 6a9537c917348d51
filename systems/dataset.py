"""Input and output of simulated Datasets: netCDF (one file) and zarr (a chunked folder).

- ``save(ds, "PATH.nc")`` writes netCDF4/HDF5 (int64, bool and unicode kept).
- ``save(ds, "PATH.zarr")`` streams a lazy ensemble (``simulate(..., chunks=K)``)
  chunk by chunk into a zarr store: only a few chunks are in memory at once,
  and under a dask.distributed client the workers compute and write them.
- ``load`` reads netCDF into memory and opens zarr lazily (dask arrays).

Both formats are written atomically (systems.files): a killed writer leaves
no half-written file or folder under the destination's name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from . import checks
from .files import atomic_path

__all__ = ["save", "load", "cf_conventions", "cf_encode", "cf_decode", "SystemsFileError"]

CONVENTIONS = "CF-1.10"
# words a UDUNITS unit string may hold; any other word of 3+ letters marks prose ("state units")
_UNIT_WORDS = {
    "second",
    "seconds",
    "sec",
    "minute",
    "minutes",
    "min",
    "hour",
    "hours",
    "day",
    "days",
    "meter",
    "meters",
    "metre",
    "metres",
    "kelvin",
    "radian",
    "radians",
    "degree",
    "degrees",
    "gram",
    "grams",
    "kg",
    "since",
    "percent",
    "hertz",
    "Hz",
    "newton",
    "pascal",
    "joule",
    "watt",
    "volt",
    "ampere",
    "mol",
    "mole",
    "rad",
    "sr",
    "deg",
    "year",
    "years",
    "week",
    "weeks",
}

_ENGINE = "netcdf4"
ZARR_CHUNK_BYTES = 16 * 2**20  # largest zarr chunk of x on disk (bytes, before compression)
_LOCAL_WORKERS = (
    1  # chunks computed at once without a distributed client (each one uses every core)
)


class SystemsFileError(ValueError):
    """A path that is not a readable systems file (corrupt, or another kind of data)."""


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or (
        path.is_dir() and any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zmetadata"))
    )


def save(ds: xr.Dataset, path, *, overwrite: bool | None = None, progress: bool = False) -> Path:
    """Write ``ds`` to ``path``: netCDF4, or zarr when the path ends in ``.zarr``. Returns the path.

    Parent folders are created; the write is atomic. overwrite: replace what
    is at ``path``. Its default (None) keeps the old behaviour of netCDF files
    (replaced) and refuses an existing zarr store (a folder: pass
    overwrite=True to replace it). A lazy ``x`` (dask, from
    ``simulate(..., chunks=K)`` or ``load("PATH.zarr")``) is computed chunk by
    chunk as it is written: on the active dask.distributed client if there is
    one (its workers compute and write the chunks; the path must be on a
    file system they share), else one chunk at a time in this process (each
    chunk's integration uses every core), written to zarr in pieces of at most
    ZARR_CHUNK_BYTES, so memory holds about one chunk. progress: a progress
    bar over chunks (local computation only).
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"save expects an xarray.Dataset, got {type(ds).__name__}")
    checks.boolean(
        "overwrite",
        overwrite,
        optional=True,
        fix="pass True (replace), False (refuse an existing path) or None (the default)",
    )
    path = Path(path)
    zarr = path.suffix == ".zarr"
    if path.exists() and not (overwrite if overwrite is not None else not zarr):
        what = "zarr store" if path.is_dir() else "file"
        raise FileExistsError(
            f"{path} exists (a {what}); pass overwrite=True to replace it, or choose another path"
        )
    if path.exists() and path.is_dir() != zarr:
        raise FileExistsError(
            f"{path} exists and is a {'folder' if path.is_dir() else 'file'}; a "
            f"{'zarr store' if zarr else 'netCDF file'} cannot replace it: remove it or "
            "choose another path"
        )
    out = cf_conventions(_plain(ds)) if zarr else cf_encode(_plain(ds))
    with atomic_path(path, directory=zarr) as tmp:
        if zarr:
            # metadata and in-memory variables now; the dask ones (x when lazy) below
            write = out.to_zarr(
                tmp,
                mode="w-",
                encoding=_zarr_encoding(out),
                zarr_format=2,
                consolidated=True,
                compute=False,
            )
            if _distributed_client() is not None:
                import dask

                dask.compute(write)
            else:
                _stream_zarr(out, tmp, progress)
        else:
            write = out.to_netcdf(tmp, engine=_ENGINE, compute=False)
            _compute(write, progress)  # the dask parts, then the file is closed
    return path


def _is_udunits(units: str) -> bool:
    """Whether ``units`` reads as a UDUNITS unit ("1", "s", "m s-1", "days since 2000-01-01"),
    not prose."""
    import re

    if not units or not re.fullmatch(r"[A-Za-z0-9_ .*/^()+:\-]+", units):
        return False
    words = re.findall(r"[A-Za-z]{3,}", units)
    return all(w in _UNIT_WORDS for w in words)


def cf_conventions(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy of ``ds`` following CF-1.10: ``Conventions``, and every numeric variable with
    UDUNITS ``units``.

    Missing units become "1" (dimensionless, or undeclared: the catalogue's
    states and times are dimensionless); prose in ``units`` ("state units",
    "Lyapunov times") moves into ``long_name`` and the units become the
    Dataset's ``state_units``/``time_units`` attrs for "state units"/"time
    units", else "1". String variables get no units. A variable without
    ``long_name`` or ``standard_name`` gets its name as ``long_name``.
    """
    out = ds.copy(deep=False)
    for name, var in out.variables.items():
        if "long_name" not in var.attrs and "standard_name" not in var.attrs:
            var.attrs = {**var.attrs, "long_name": str(name).replace("_", " ")}
        if var.dtype.kind in "USO":  # names and labels carry no units
            continue
        attrs = dict(var.attrs)
        units = attrs.get("units")
        if units is None:
            attrs["units"] = "1"
        elif not _is_udunits(str(units)):
            prose = str(units)
            long_name = str(attrs.get("long_name", name))
            attrs["long_name"] = f"{long_name} (in {prose})"
            if prose in ("state units", "time units"):
                attrs["units"] = str(ds.attrs.get(prose.replace(" ", "_"), "1"))
            else:
                attrs["units"] = "1"
        var.attrs = attrs
    out.attrs["Conventions"] = CONVENTIONS
    return out


LABEL_OF = "label_of"  # attribute of a label variable written for a string dimension coordinate


def cf_encode(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as it is written to netCDF: :func:`cf_conventions`, and strings stored the CF way.

    A coordinate variable must be numeric (CF 5), so a string dimension
    coordinate ``d`` (``component`` names) becomes the auxiliary label
    variable ``d_label(d)`` (CF 6.1; attrs ``long_name`` and ``label_of = d``)
    and ``d`` keeps no coordinate. Every string variable is written as a char
    array (netCDF-4 variable-length strings are not CF-1.10 data).
    :func:`cf_decode` turns the file back into ``ds``.
    """
    out = cf_conventions(ds)
    for dim in [d for d in out.dims if d in out.coords and out[d].dtype.kind not in "USO"]:
        out[dim].encoding = {
            **out[dim].encoding,
            "_FillValue": None,
        }  # CF 2.5.1: none for coordinates
    for dim in [d for d in out.dims if d in out.coords and out[d].dtype.kind in "USO"]:
        label = f"{dim}_label"
        while label in out.variables:
            label += "_"
        var = out[dim].variable.to_base_variable()
        var.attrs = {**var.attrs, LABEL_OF: dim}
        if var.attrs.get("long_name") in (None, dim):
            var.attrs["long_name"] = f"{dim} label"
        out = out.drop_vars(dim).assign_coords({label: var})
    for name, var in out.variables.items():
        if var.dtype.kind in "USO":
            if (
                var.dtype.kind == "O"
            ):  # xarray writes object strings as char arrays only from str dtype
                out[name] = var.copy(data=np.asarray(var.values, dtype=str))
            out[name].encoding = {**out[name].encoding, "dtype": "S1"}
    return out


def cf_decode(ds: xr.Dataset) -> xr.Dataset:
    """The Dataset that :func:`cf_encode` wrote: label variables back as string dimension
    coordinates.

    Files without label variables (written before) come back unchanged.
    """
    out = ds
    for name in list(ds.variables):
        var = ds.variables[name]
        dim = var.attrs.get(LABEL_OF)
        if not isinstance(dim, str) or var.dims != (dim,) or dim in ds.coords:
            continue
        attrs = {k: v for k, v in var.attrs.items() if k != LABEL_OF}
        if attrs.get("long_name") == f"{dim} label":
            attrs["long_name"] = dim  # cf_conventions' default
        values = np.asarray(var.values, dtype=str)
        out = out.drop_vars(name).assign_coords({dim: (dim, values, attrs)})
        out[dim].encoding = {}
    return out


def _stream_zarr(ds: xr.Dataset, store: Path, progress: bool) -> None:
    """Compute the dask variables of ``ds`` one chunk at a time into the zarr ``store`` made by
    to_zarr."""
    import dask
    import zarr

    lazy = {k: v for k, v in ds.variables.items() if v.chunks is not None}
    if not lazy:
        return
    group = zarr.open_group(store, mode="r+", zarr_format=2)
    total = sum(int(np.prod(v.data.numblocks)) for v in lazy.values())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"save {store.name}", unit="chunk")
    try:
        for name, var in lazy.items():
            target = group[name]
            edges = [np.concatenate([[0], np.cumsum(c)]) for c in var.data.chunks]
            step = target.chunks[0] if var.ndim else 1
            parts = (
                var.data.to_delayed()
            )  # one Delayed per chunk: its result is the chunk itself, not a copy
            for idx in np.ndindex(*var.data.numblocks):
                region = tuple(slice(int(e[i]), int(e[i + 1])) for e, i in zip(edges, idx))
                block = np.asarray(dask.compute(parts[idx], scheduler="sync")[0])
                if var.ndim == 0:
                    target[...] = block
                else:  # in pieces of zarr chunks: zarr's encoding buffers stay small
                    for a in range(0, block.shape[0], step):
                        target[
                            (slice(region[0].start + a, region[0].start + a + step),) + region[1:]
                        ] = block[a : a + step]
                del block
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _plain(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy without encodings carried from the file it was read from."""
    out = ds.copy(deep=False)
    for v in out.variables.values():
        v.encoding = {}
    return out


def _zarr_encoding(ds: xr.Dataset) -> dict:
    """Chunks of x on disk: whole dask chunks split into pieces of at most ZARR_CHUNK_BYTES."""
    if "x" not in ds or ds["x"].ndim != 3:
        return {}
    n, t, d = ds["x"].shape
    per_traj = max(1, t * d * ds["x"].dtype.itemsize)
    chunks = ds["x"].chunks
    k = int(chunks[0][0]) if chunks else n
    if per_traj > ZARR_CHUNK_BYTES:  # one trajectory is already too large: split time
        return {"x": {"chunks": (1, max(1, ZARR_CHUNK_BYTES // (d * ds["x"].dtype.itemsize)), d)}}
    fit = max(1, ZARR_CHUNK_BYTES // per_traj)
    kz = max(q for q in range(1, min(k, fit) + 1) if k % q == 0)  # a divisor of the dask chunk
    return {"x": {"chunks": (kz, t, d)}}


def _compute(delayed, progress: bool) -> None:
    """Run a delayed write on the active dask.distributed client if there is one, else one chunk
    at a time."""
    import dask

    if _distributed_client() is not None:
        dask.compute(delayed)
        return
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            dask.compute(delayed, scheduler="threads", num_workers=_LOCAL_WORKERS)
    else:
        dask.compute(delayed, scheduler="threads", num_workers=_LOCAL_WORKERS)


def _distributed_client():
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


def load(path) -> xr.Dataset:
    """Read a Dataset written by :func:`save`.

    netCDF: read fully into memory (the file is closed). zarr (a ``.zarr``
    folder): opened lazily, ``x`` a dask array in the chunks on disk; take
    what you need with ``isel`` / ``sel`` before ``.values`` or ``.load()``.
    Raises FileNotFoundError for a missing path and SystemsFileError (a
    ValueError) for a corrupt file or one that holds no systems ensemble.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path must be a file path (str or pathlib.Path) of a .nc file or .zarr store, "
            f"got {type(path).__name__}"
        )
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no netCDF file or zarr store at {str(path)!r}")
    hint = "write one with systems.save(systems.simulate(...), path)"
    if _is_zarr(path):
        try:
            ds = xr.open_zarr(path, chunks={}, zarr_format=None)
        except Exception as err:  # zarr raises many kinds for a damaged store
            raise SystemsFileError(
                f"{path} is not a readable zarr store ({type(err).__name__}: "
                f"{str(err)[:200]}); {hint}"
            ) from None
    else:
        if path.is_dir():
            raise SystemsFileError(
                f"{path} is a folder but not a zarr store; pass a .nc file or a .zarr store"
            )
        try:
            with xr.open_dataset(path, engine=_ENGINE) as f:
                ds = cf_decode(f.load())
        except Exception as err:  # netCDF4 raises OSError "NetCDF: HDF error" and similar
            raise SystemsFileError(
                f"{path} is not a readable netCDF file ({type(err).__name__}: "
                f"{str(err)[:200]}); {hint}"
            ) from None
    if (
        "x" not in ds
        or ds["x"].dims != ("trajectory", "time", "component")
        or not ds.attrs.get("system")
    ):
        raise SystemsFileError(
            f"{path} holds no systems ensemble (need variable x(trajectory, time, component) "
            f"and attrs['system'], found variables {list(ds.data_vars)}); {hint}"
        )
    return ds
