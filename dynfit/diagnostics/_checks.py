"""Input checks of the diagnostics' own kinds (thresholds, trajectories, netCDF files).

Numbers, integers and choices are checked with :mod:`systems.checks` (one rule for both packages).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import read_netcdf  # noqa: F401  (owned by dynfit.io; kept here for old imports)


def check_thresholds(thresholds) -> np.ndarray:
    """Thresholds as a float array (n,), each in (0, 1]; raises ValueError otherwise."""
    arr = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"thresholds must be a number or a 1-D sequence of numbers, got {thresholds!r}"
        )
    bad = arr[~((arr > 0) & (arr <= 1))]
    if bad.size:
        raise ValueError(
            f"threshold(s) {bad.tolist()} outside (0, 1]: a threshold is a fraction of the "
            "attractor's standard deviation; use values such as 0.3, 0.4 (Pathak et al. 2018) or "
            "0.5 (Vlachas et al. 2020)"
        )
    return arr


def check_trajectory(x, name: str, *, dim: int | None = None, min_len: int = 2) -> np.ndarray:
    """A float array (..., time, dim) with finite or NaN entries; raises on wrong shape."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (..., time, dim), got {x.shape}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} has dim {x.shape[-1]} in its last axis, expected {dim}")
    if x.shape[-2] < min_len:
        raise ValueError(f"{name} needs at least {min_len} time points, got {x.shape[-2]}")
    return x
