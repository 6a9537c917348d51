"""Model and checkpoint files: written atomically, read without running code, checked on load.

- :func:`save_torch` writes a torch blob atomically (temp file beside the
  destination, fsync, rename; see :mod:`systems.files`), after turning numpy
  values and version objects into plain Python values so that it reads back
  with ``weights_only=True``.
- :func:`load_torch` reads one with ``torch.load(weights_only=True)`` only (no
  pickle code ever runs) and turns every failure into :class:`ModelFileError`.
- :func:`check_model_blob` / :func:`check_checkpoint_blob` validate what was
  read (format, keys, shapes, finite weights, positive finite ``dt`` and scale).
- :func:`read_netcdf` reads a netCDF file fully, with errors that say what to pass;
  :func:`version` is dynfit's version, the provenance every written file records.
"""

from __future__ import annotations

import io
import math
import numbers
import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from systems.files import atomic_write_bytes

__all__ = ["ModelFileError", "write_netcdf", "read_netcdf", "read_trajectories"]


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used: missing, damaged, foreign or unsafe."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """The model or checkpoint file does not exist (also a FileNotFoundError)."""


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy values as Python numbers/lists and unknown objects as strings.

    Tensors, dicts, lists, tuples, str, int, float, bool and None come out as
    their plain types (str subclasses such as torch's version object become
    str): this is what ``torch.load(weights_only=True)`` accepts.
    """
    if obj is None or isinstance(obj, (torch.Tensor, torch.dtype)):
        return obj
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, Mapping):
        return {to_plain(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [to_plain(v) for v in obj]
        return out if isinstance(obj, list) else tuple(out)
    return str(obj)


def save_torch(obj: Any, path) -> Path:
    """Write ``obj`` (made plain) to ``path`` atomically; returns the path.

    A full disk raises OSError "no space left on <folder> ..." and leaves no file.
    """
    buf = io.BytesIO()
    torch.save(to_plain(obj), buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_torch(path, *, what: str = "model", fix: str | None = None) -> Any:
    """Read a torch blob with ``weights_only=True``; any failure is a :class:`ModelFileError`.

    ``what`` names the kind of file in messages ("model", "checkpoint"),
    ``fix`` is the advice appended to them.
    """
    path = Path(path)
    fix = fix or (
        "write it again with Surrogate.save / dynfit train"
        if what == "model"
        else "delete it or pass resume=False to start over"
    )
    if not path.exists():
        raise ModelFileNotFoundError(f"no {what} file at {path}; check the path")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a {what} file; give the file inside it")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ModelFileError(f"cannot read {what} file {path}: {err.strerror or err}") from None
    if size == 0:
        raise ModelFileError(f"{what} file {path} is empty (0 bytes; an interrupted write?); {fix}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, OSError, ...
        text = str(err)
        if "Unsupported global" in text or "GLOBAL" in text:
            reason = (
                "it holds Python objects that would run code when read: refused, nothing was run; "
                "only tensors and plain values are read"
            )
            where = "it is not a dynfit"
        elif "zip archive" in text or "central directory" in text or isinstance(err, EOFError):
            reason, where = "truncated or corrupt", "it is damaged, or not a dynfit"
        elif isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in text:
            reason, where = "not a torch weights file; nothing in it was run", "it is not a dynfit"
        else:
            first = (text.strip().splitlines() or [type(err).__name__])[0][:120]
            reason, where = (
                f"{type(err).__name__}: {first}; nothing in it was run",
                "it is not a dynfit",
            )
        raise ModelFileError(
            f"cannot read {what} {path}: {where} {what} file ({reason}); {fix}"
        ) from None


def _need(blob: Mapping, keys, path: Path, what: str, fix: str) -> None:
    missing = [k for k in keys if k not in blob]
    if missing:
        raise ModelFileError(
            f"{what} file {path} lacks {missing} (damaged or from another program); {fix}"
        )


def check_scaler_dict(d: Any, path: Path, what: str = "model", fix: str = "") -> None:
    """Scaler {"mean": [D], "std": [D]}: same length >= 1, finite, std > 0."""
    if not isinstance(d, Mapping) or "mean" not in d or "std" not in d:
        raise ModelFileError(f"{what} file {path} has no valid scaler (mean/std); {fix}")
    try:
        mean = np.asarray(d["mean"], dtype=np.float64).reshape(-1)
        std = np.asarray(d["std"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ModelFileError(
            f"{what} file {path} has a scaler that is not numeric; {fix}"
        ) from None
    if mean.size < 1 or mean.shape != std.shape:
        raise ModelFileError(
            f"{what} file {path} has a scaler with mean {mean.shape} and std {std.shape}; "
            f"they must be equal and non-empty; {fix}"
        )
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ModelFileError(
            f"{what} file {path} has a non-finite mean or a non-positive/non-finite "
            f"scale (std {std.tolist()}); {fix}"
        )


def check_finite_weights(state: Any, path: Path, what: str = "model", fix: str = "") -> None:
    """Every entry a tensor; every floating one finite."""
    if not isinstance(state, Mapping) or not state:
        raise ModelFileError(f"{what} file {path} holds no weights; {fix}")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ModelFileError(
                f"{what} file {path}: weight {name!r} is a {type(value).__name__}, "
                f"not a tensor; {fix}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelFileError(
                f"{what} file {path}: weight {name!r} holds NaN or inf (a diverged "
                f"training?); retrain, or use an earlier checkpoint"
            )


def check_model_blob(blob: Any, path, fmt: str) -> dict:
    """Validate a model blob read by :func:`load_torch`; returns it."""
    path = Path(path)
    fix = "write it again with Surrogate.save / dynfit train"
    if not isinstance(blob, dict):
        raise ModelFileError(
            f"{path} is not a dynfit surrogate (it holds a {type(blob).__name__}, expected a "
            f"dict of format {fmt!r}); {fix}"
        )
    if blob.get("format") != fmt:
        hint = (
            "; a training checkpoint is resumed with dynfit.fit(checkpoint_dir=...)"
            if str(blob.get("format", "")).startswith("dynfit-checkpoint")
            else ""
        )
        raise ModelFileError(
            f"{path} is not a dynfit surrogate (format {blob.get('format')!r}, expected "
            f"{fmt!r}){hint}"
        )
    _need(
        blob,
        (
            "field_config",
            "field_class",
            "state_dict",
            "dtype",
            "scaler",
            "dt",
            "strategy",
            "provenance",
        ),
        path,
        "model",
        fix,
    )
    dt = blob["dt"]
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not math.isfinite(dt) or dt <= 0:
        raise ModelFileError(
            f"model file {path} has dt = {dt!r}; it must be a positive finite number; {fix}"
        )
    if blob["dtype"] not in ("float16", "bfloat16", "float32", "float64"):
        raise ModelFileError(
            f"model file {path} has dtype {blob['dtype']!r}; expected float32 or float64; {fix}"
        )
    if blob["field_config"] is not None and not isinstance(blob["field_config"], dict):
        raise ModelFileError(f"model file {path} has a field_config that is not a dict; {fix}")
    if not isinstance(blob["strategy"], (dict, str)):
        raise ModelFileError(f"model file {path} has a strategy that is not a dict or name; {fix}")
    if not isinstance(blob["provenance"], dict):
        raise ModelFileError(f"model file {path} has provenance that is not a dict; {fix}")
    check_scaler_dict(blob["scaler"], path, "model", fix)
    check_finite_weights(blob["state_dict"], path, "model", fix)
    return blob


def check_checkpoint_blob(blob: Any, path, fmt: str) -> dict:
    """Validate a training checkpoint read by :func:`load_torch`; returns it."""
    path = Path(path)
    fix = "delete it or pass resume=False to start over"
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ModelFileError(
            f"{path} is not a dynfit training checkpoint (format {got!r}, expected "
            f"{fmt!r}); delete it or choose another checkpoint_dir"
        )
    _need(
        blob,
        ("fingerprint", "epoch", "field", "optimizer", "history", "scaler", "rng"),
        path,
        "checkpoint",
        fix,
    )
    epoch = blob["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ModelFileError(f"checkpoint {path} has epoch {epoch!r}; {fix}")
    if not isinstance(blob["fingerprint"], dict) or not isinstance(blob["optimizer"], dict):
        raise ModelFileError(
            f"checkpoint {path} is damaged (fingerprint/optimizer not dicts); {fix}"
        )
    if not isinstance(blob["history"], list) or not all(
        isinstance(r, dict) for r in blob["history"]
    ):
        raise ModelFileError(f"checkpoint {path} has a damaged history; {fix}")
    if not isinstance(blob["rng"], torch.Tensor) or blob["rng"].dtype != torch.uint8:
        raise ModelFileError(f"checkpoint {path} has a damaged random state; {fix}")
    check_scaler_dict(blob["scaler"], path, "checkpoint", fix)
    check_finite_weights(blob["field"], path, "checkpoint", fix)
    return blob


# ------------------------------------------------------------------ other files the package writes
def write_netcdf(ds, path) -> Path:
    """``ds.to_netcdf`` atomically: a full disk or a crash leaves the old file or none, never
    half of one.

    The file follows CF-1.10 (``Conventions``, UDUNITS ``units`` on every
    numeric variable, prose in ``long_name``, string coordinates as label
    variables: :func:`systems.dataset.cf_encode`); :func:`read_netcdf` reads it back.
    """
    from systems.dataset import cf_encode
    from systems.files import atomic_save

    out = cf_encode(ds)
    return atomic_save(path, lambda tmp: out.to_netcdf(tmp))


def write_text(path, text: str) -> Path:
    """A UTF-8 text file (tables, configs) written atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path, **kwargs) -> Path:
    """``fig.savefig(path, **kwargs)`` atomically (the temporary file keeps the suffix, so the
    format)."""
    from systems.files import atomic_save

    return atomic_save(path, lambda tmp: fig.savefig(tmp, **kwargs))


def read_netcdf(path, what: str = "", hint: str = ""):
    """An xarray Dataset read fully from ``path``: FileNotFoundError if it is absent,
    ValueError naming the reader's complaint (and ``hint``) if it is not netCDF."""
    import xarray as xr
    from systems.dataset import cf_decode

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what + ' ' if what else ''}file at {path}")
    try:
        return cf_decode(xr.load_dataset(path))
    except Exception as err:
        first = (str(err).splitlines() or [""])[0][:120]
        raise ValueError(
            f"{path} is not a readable netCDF file ({type(err).__name__}: {first})"
            + (f"; {hint}" if hint else "")
        ) from None


TRAJECTORY_SUFFIXES = (".npy", ".csv", ".nc", ".nc4", ".netcdf", ".zarr")


def read_trajectories(path, *, what: str = "data"):
    """A trajectory file as numpy (T, D) / (N, T, D) or an xarray Dataset with ``x``.

    .npy: a numpy array (no pickle). .csv: one trajectory, a column per
    component, an optional header row naming them and an optional first
    column ``time`` (a Dataset with a time coordinate then, else an array).
    .nc / .zarr: ``systems.load`` (x(trajectory, time, component), attrs).
    Raises FileNotFoundError for a missing path, ValueError for another kind.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in TRAJECTORY_SUFFIXES:
        raise ValueError(
            f"{what} {path} must be a .npy array shaped (T, D) or (N, T, D), a .csv table (a "
            "column per component), or a netCDF (.nc) file / .zarr store from systems.save"
        )
    if suffix in (".nc", ".nc4", ".netcdf", ".zarr"):
        return _read_xarray(path, what)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; pass a {suffix} file")
    import numpy as np

    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (
            Exception
        ) as err:  # numpy raises ValueError, OSError, EOFError, ... for a damaged file
            raise ValueError(
                f"{what} {path} is not a readable .npy array ({type(err).__name__}: "
                f"{str(err)[:120]}); save one with numpy.save"
            ) from None
    return _read_csv(path, what)


def _read_xarray(path: Path, what: str):
    """A netCDF file or zarr store as a Dataset whose ``x`` is (trajectory, time, component).

    ``x`` is the variable named x, else the file's only data variable; (time,
    component) gains a trajectory axis. Any attrs (dt, system, ...) are kept.
    """
    import xarray as xr
    from systems.dataset import cf_decode

    hint = "write one with systems.save or xarray's to_netcdf / to_zarr"
    if suffix_is_zarr := path.suffix.lower() == ".zarr":
        try:
            ds = cf_decode(xr.open_zarr(path, chunks=None, zarr_format=None).load())
        except Exception as err:  # zarr raises many kinds for a damaged store
            raise ValueError(
                f"{what} {path} is not a readable zarr store ({type(err).__name__}: "
                f"{str(err)[:160]}); {hint}"
            ) from None
    else:
        ds = read_netcdf(path, what, hint)
    names = ["x"] if "x" in ds.data_vars else list(ds.data_vars)
    if len(names) != 1 or set(ds[names[0]].dims) not in (
        {"time", "component"},
        {"trajectory", "time", "component"},
    ):
        kind = "store" if suffix_is_zarr else "file"
        raise ValueError(
            f"{what} {path}: the {kind} needs one variable x with dims (trajectory, time, "
            f"component) or (time, component), found "
            f"{ {k: v.dims for k, v in ds.data_vars.items()} }"
        )
    x = ds[names[0]]
    if "trajectory" not in x.dims:
        x = x.expand_dims("trajectory")
    out = x.transpose("trajectory", "time", "component").to_dataset(name="x")
    out.attrs = dict(ds.attrs)
    return out


def _read_csv(path: Path, what: str):
    """One trajectory from a CSV table: (T, D) array, or a Dataset when it names components or
    time."""
    import numpy as np

    try:
        lines = [
            ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")
        ]
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not a text CSV file") from None
    if not lines:
        raise ValueError(f"{what} {path} holds no rows")
    head = [c.strip() for c in lines[0].split(",")]
    try:
        [float(c) for c in head]
        names, rows = None, lines
    except ValueError:
        names, rows = head, lines[1:]
    try:
        arr = np.array([[float(c) for c in ln.split(",")] for ln in rows], dtype=np.float64)
    except ValueError as err:
        raise ValueError(
            f"{what} {path}: every row after the header must be numbers separated by commas "
            f"({err})"
        ) from None
    if arr.ndim != 2 or arr.shape[0] < 2 or (names is not None and len(names) != arr.shape[1]):
        raise ValueError(
            f"{what} {path} must be a table of at least 2 rows with the same number of columns "
            f"in every row (and in the header); got {len(rows)} rows"
        )
    if names is None:
        return arr
    import xarray as xr

    coords, attrs = {}, {}
    if names[0].lower() in ("t", "time"):
        coords["time"] = arr[:, 0]
        arr, names = arr[:, 1:], names[1:]
        steps = np.diff(coords["time"])
        if steps.size and np.allclose(steps, steps[0], rtol=1e-6):
            attrs["dt"] = float(steps[0])
    coords["component"] = names
    return xr.Dataset(
        {"x": (("trajectory", "time", "component"), arr[None])}, coords=coords, attrs=attrs
    )


def version() -> str:
    """dynfit's version (the files' provenance)."""
    from ._version import __version__

    return str(__version__)
