"""Training windows from trajectories: one-step pairs and multi-step rollouts.

A trajectory source is a ``systems`` Dataset (variable ``x`` with dims
``trajectory, time, component``), any xarray Dataset/DataArray with those dims,
or a numpy array shaped (T, D) (one trajectory, the paper's files) or (N, T, D).

The model works in *steps*: one sampling interval ``dt`` is one unit of model
time (the paper's rescaled time), and states are standardised per component
with a :class:`Standardizer` that is stored with the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from systems import checks


_DIMS = ("trajectory", "time", "component")


@dataclass(frozen=True)
class Standardizer:
    """Per-component affine map z = (x - mean) / std; mean, std shaped (D,)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        """Statistics over every axis but the last of x (..., D).

        Raises ValueError for no samples, NaN/inf, a constant component or a
        scale that overflows float64 (std inf).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 1 or x.shape[-1] < 1 or x.size == 0:
            raise ValueError(f"cannot standardise data of shape {x.shape}: it holds no samples")
        flat = x.reshape(-1, x.shape[-1])
        if not np.isfinite(flat).all():
            raise ValueError(
                "cannot standardise data holding NaN or inf; clean those samples first"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            mean = flat.mean(axis=0)
            std = flat.std(axis=0)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std))).tolist()
            raise ValueError(
                f"the scale of component(s) {bad} overflows float64 (standard deviation "
                f"{std[bad].tolist()}, "
                f"largest magnitude {np.abs(flat[:, bad]).max():.3g}); "
                "divide the data by a constant first"
            )
        if np.any(std == 0):
            raise ValueError(
                f"component(s) {np.flatnonzero(std == 0).tolist()} are constant in the training "
                "data (standard deviation 0); drop them or pass standardize=False"
            )
        return cls(mean, std)

    @classmethod
    def identity(cls, dim: int) -> "Standardizer":
        return cls(np.zeros(dim), np.ones(dim))

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", np.asarray(self.mean, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "std", np.asarray(self.std, dtype=np.float64).reshape(-1))
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"mean {self.mean.shape} and std {self.std.shape} must have the same shape (D,)"
            )

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def forward(self, x):
        """Physical -> standardised; numpy or torch (..., D)."""
        mean, std = self._like(x)
        return (x - mean) / std

    def inverse(self, z):
        """Standardised -> physical; numpy or torch (..., D)."""
        mean, std = self._like(z)
        return z * std + mean

    def _like(self, x):
        if isinstance(x, np.ndarray):
            return self.mean, self.std
        import torch

        return (
            torch.as_tensor(self.mean, dtype=x.dtype, device=x.device),
            torch.as_tensor(self.std, dtype=x.dtype, device=x.device),
        )

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Standardizer":
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]))


@dataclass
class Windows:
    """Training examples cut from trajectories, in standardised units.

    x0 (N, D): start states; targets (N, H, D): the next H observed states;
    horizon H; dt the physical sampling step (one model time unit);
    scaler the Standardizer; attrs provenance (system, params, ...).
    """

    x0: np.ndarray
    targets: np.ndarray
    dt: float
    scaler: Standardizer
    attrs: dict = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return self.targets.shape[1]

    @property
    def dim(self) -> int:
        return self.x0.shape[1]

    def __len__(self) -> int:
        return self.x0.shape[0]

    def tensors(self, dtype=None, device=None):
        """(x0, targets) as torch tensors, targets shaped (H, N, D) like a solver's ys[1:]."""
        import torch

        dtype = dtype or torch.float64
        x0 = torch.as_tensor(self.x0, dtype=dtype, device=device)
        tg = torch.as_tensor(np.ascontiguousarray(self.targets.transpose(1, 0, 2)), dtype=dtype,
                             device=device)
        return x0, tg


# magnitudes beyond this overflow float64 when squared (variances, squared-error losses)
_MAX_MAGNITUDE = 1e150


def as_trajectories(
    data: Any, *, dt: float | None = None, require_dt: bool = True
) -> tuple[np.ndarray, float, dict]:
    """Array (N, T, D) float64, sampling step and attrs from any accepted source.

    Raises ValueError for no trajectories, fewer than 2 samples, fewer samples
    than components (an (N, D, T) array passed for (N, T, D)), non-numeric
    values, NaN/inf, magnitudes beyond 1e150 (they overflow float64 when
    squared), wrong dims, a missing dt (numpy data carry none: pass ``dt``), an
    invalid dt, or a ``dt`` that contradicts the data's own (attrs or time
    coordinate). ``require_dt=False`` returns dt = 1.0 when none is known.
    """
    attrs: dict = {}
    arr = None
    own_dt, own_from = None, None
    if dt is not None:
        dt = checks.positive("dt", dt, fix="dt is the time between samples")
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover - xarray is a dependency
        xr = None
    if xr is not None and isinstance(data, xr.Dataset):
        if "x" not in data:
            raise ValueError(
                f"Dataset has no variable 'x' (variables: {list(data.data_vars)}); "
                "expected a systems.simulate() Dataset with x(trajectory, time, component)"
            )
        attrs = dict(data.attrs)
        data = data["x"]
    from_xarray = xr is not None and isinstance(data, xr.DataArray)
    if from_xarray:
        attrs = {**dict(data.attrs), **attrs}
        dims = tuple(data.dims)
        if set(dims) == set(_DIMS):
            arr = data.transpose(*_DIMS).values
        elif set(dims) == {"time", "component"}:
            arr = data.transpose("time", "component").values[None]
        else:
            raise ValueError(
                f"DataArray dims {dims} do not match {_DIMS} (or ('time', 'component'))"
            )
        if "dt" in attrs:
            own_dt, own_from = attrs["dt"], "attrs['dt']"
        elif "time" in data.coords and data.sizes["time"] > 1:
            try:
                own_dt = float(data["time"].values[1] - data["time"].values[0])
            except (TypeError, ValueError):  # e.g. datetime coordinates
                own_dt = None
            own_from = "its time coordinate"
    elif arr is None:
        if isinstance(data, (str, bytes)) or data is None or isinstance(data, (dict, set)):
            raise TypeError(
                f"data must be an array (T, D) or (N, T, D), an xarray Dataset or DataArray, got "
                f"{type(data).__name__}"
            )
        arr = np.asarray(data)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(
                f"array of shape {arr.shape} has {arr.ndim} dims; expected (T, D) for one "
                "trajectory or (N, T, D) for N trajectories"
            )
    if np.iscomplexobj(arr):
        raise ValueError(
            "data are complex numbers; pass real and imaginary parts as separate components"
        )
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"data must hold numbers, got an array of {np.asarray(arr).dtype}"
        ) from None
    if arr.shape[0] < 1:
        raise ValueError(
            f"data hold no trajectories (shape {arr.shape}, expected (N, T, D) with N >= 1)"
        )
    if arr.shape[-1] < 1 or arr.shape[1] < 2:
        raise ValueError(
            f"trajectories of shape {arr.shape} (N, T, D) need T >= 2 samples and D >= 1 components"
        )
    if arr.shape[1] < arr.shape[2]:
        n, t, d = arr.shape
        how = (
            "x.transpose(0, 2, 1)"
            if not from_xarray
            else "name the dims ('trajectory', 'time', 'component') to match the axes"
        )
        raise ValueError(
            f"data of shape {arr.shape} read as (N, T, D) has fewer time samples (T = {t}) than "
            f"components (D = {d}): did you pass (N, D, T)? transpose to (N, T, D) "
            f"({how}); a surrogate needs more samples than components"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        n, t, d = np.argwhere(bad)[0]
        raise ValueError(
            f"data holds {int(bad.sum())} NaN/inf value(s), first at trajectory {n}, time index "
            f"{t}, component {d}; clean or drop those samples before training"
        )
    big = float(np.abs(arr).max())
    if big > _MAX_MAGNITUDE:
        raise ValueError(
            f"data hold values as large as {big:.3g}, beyond {_MAX_MAGNITUDE:g}: their squares "
            "overflow float64 (standard deviation and loss "
            "become inf); divide the data by a constant first"
        )
    if own_dt is not None:
        own = checks.positive(f"the data's step ({own_from})", own_dt,
                              fix="dt is the time between samples")
        if dt is None:
            dt = own
        elif abs(dt - own) > 1e-9 * max(dt, own):
            raise ValueError(
                f"dt = {dt:g} was given but the data say dt = {own:g} ({own_from}); drop the "
                "dt argument, or resample the data at the step you want"
            )
    if dt is None:
        if require_dt:
            raise ValueError(
                "numpy data carry no sampling step: pass dt=<time between samples> (e.g. "
                "fit(x, dt=0.01)), or pass an xarray Dataset with attrs['dt'] or a time coordinate"
            )
        dt = 1.0
    return arr, float(dt), attrs


def component_names(data: Any, dim: int) -> list[str]:
    """The names of the ``dim`` components of a source: its ``component`` coordinate (xarray), or
    ``x0, x1, ...`` (numpy, or a coordinate that does not hold ``dim`` distinct names)."""
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover - xarray is a dependency
        xr = None
    if xr is not None and isinstance(data, xr.Dataset) and "x" in data:
        data = data["x"]
    if xr is not None and isinstance(data, xr.DataArray) and "component" in data.coords:
        names = [str(v) for v in np.asarray(data["component"].values).reshape(-1)]
        if len(names) == dim and len(set(names)) == dim and all(names):
            return names
    return [f"x{i}" for i in range(dim)]


def data_attrs(data: Any, dim: int) -> dict:
    """What a surrogate keeps of its data's description: component names and units.

    ``components`` (:func:`component_names`), ``state_units`` (the ``units``
    attribute of x, else "1": dimensionless, the catalogue's convention) and
    ``time_units`` (the ``units`` attribute of the time coordinate, else "1").
    """
    state_units, time_units = "1", "1"
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover - xarray is a dependency
        xr = None
    x = data["x"] if xr is not None and isinstance(data, xr.Dataset) and "x" in data else data
    if xr is not None and isinstance(x, xr.DataArray):
        state_units = str(x.attrs.get("units", "1")) or "1"
        if "time" in x.coords:
            time_units = str(x["time"].attrs.get("units", "1")) or "1"
    return {"components": component_names(data, dim), "state_units": state_units,
            "time_units": time_units}


def make_windows(
    data: Any,
    *,
    horizon: int = 1,
    stride: int = 1,
    standardize: bool = True,
    scaler: Standardizer | None = None,
    dt: float | None = None,
) -> Windows:
    """Cut every window of horizon+1 consecutive samples (start every ``stride``).

    horizon=1 gives the paper's one-step pairs (x_{i-1}, x_i). With ``scaler``
    given (e.g. the training set's) the same standardisation is reused; with
    ``standardize=False`` states stay in physical units (the paper's setting).
    """
    horizon = checks.integer("horizon", horizon, minimum=1)
    stride = checks.integer("stride", stride, minimum=1)
    arr, dt, attrs = as_trajectories(data, dt=dt)
    n, t, d = arr.shape
    if t < horizon + 1:
        raise ValueError(
            f"trajectories have {t} samples but a window of horizon {horizon} needs {horizon + 1}; "
            "use a shorter horizon or longer trajectories"
        )
    if scaler is None:
        scaler = Standardizer.fit(arr) if standardize else Standardizer.identity(d)
    if scaler.dim != d:
        raise ValueError(f"scaler is for {scaler.dim} components but the data has {d}")
    z = scaler.forward(arr)
    starts = np.arange(0, t - horizon, stride)
    idx = starts[:, None] + np.arange(horizon + 1)[None, :]  # (S, H+1)
    win = z[:, idx, :].reshape(n * len(starts), horizon + 1, d)  # (N*S, H+1, D)
    keep = {k: v for k, v in attrs.items() if isinstance(v, (str, int, float, np.number))}
    return Windows(np.ascontiguousarray(win[:, 0]), np.ascontiguousarray(win[:, 1:]), dt, scaler,
                   keep)


def split(data: Any, *, by: str = "trajectory", fraction: float = 0.8):
    """Split a source in two: the first ``fraction`` of trajectories (or of time) and the rest.

    Returns two sources of the same kind as ``data`` (xarray stays xarray,
    numpy stays numpy (N, T, D)).
    """
    checks.choice("by", by, ("trajectory", "time"),
                  fix="split along whole trajectories or along time")
    fraction = checks.real("fraction", fraction, above=0.0, below=1.0,
                           fix="pass the share of the first part, e.g. fraction=0.8")
    import xarray as xr

    if isinstance(data, (xr.Dataset, xr.DataArray)):
        size = data.sizes[by]
        cut = int(round(fraction * size))
        if not 0 < cut < size:
            raise ValueError(
                f"cannot split {size} {by} samples at fraction {fraction}: one side would be empty"
            )
        return data.isel({by: slice(0, cut)}), data.isel({by: slice(cut, None)})
    arr, _, _ = as_trajectories(data, require_dt=False)
    axis = 0 if by == "trajectory" else 1
    size = arr.shape[axis]
    cut = int(round(fraction * size))
    if not 0 < cut < size:
        raise ValueError(
            f"cannot split {size} {by} samples at fraction {fraction}: one side would be empty"
        )
    return np.split(arr, [cut], axis=axis)
