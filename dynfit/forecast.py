"""Free runs as data: the failure check of a free run and the forecast Dataset.

- :func:`check_free_run` says which trajectories of a free run failed or
  went non-finite, at which step and time, with the solver's status; it
  warns (RuntimeWarning), raises :class:`dynfit.SolverError` or stays quiet.
- :func:`forecast_dataset` packs a free run (B, T, D) into an xarray Dataset
  with ``x (trajectory, time, component)``, the per-trajectory solver
  ``status`` and CF attributes (units, long names, provenance).
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from systems import checks

from .solvers.solution import _ADVICE, SolverError, Status

ON_FAILURE = ("warn", "raise", "ignore")
_SHOWN = 5  # trajectories named in one message


def _status_codes(stats, n: int) -> np.ndarray:
    if stats is None:
        return np.zeros(n, dtype=np.int8)
    s = stats.status
    s = s.detach().cpu().numpy() if hasattr(s, "detach") else np.asarray(s)
    return s.reshape(-1).astype(np.int8)


def failures(out: np.ndarray, stats) -> list[tuple[int, int, Status]]:
    """(trajectory, first non-finite step (T if none), status) of each failed trajectory of out
    (B, T, D)."""
    codes = _status_codes(stats, out.shape[0])
    finite = np.isfinite(out).all(axis=2)  # (B, T)
    first_bad = np.where(finite.all(axis=1), out.shape[1], np.argmin(finite, axis=1))
    bad = []
    for i in range(out.shape[0]):
        code = Status(int(codes[i]))
        if code != Status.SUCCESS or first_bad[i] < out.shape[1]:
            bad.append((i, int(first_bad[i]), code if code != Status.SUCCESS else Status.NONFINITE))
    return bad


def check_free_run(
    out: np.ndarray,
    stats,
    dt: float,
    on_failure: str = "warn",
    *,
    max_steps: int = 0,
    stacklevel: int = 3,
) -> None:
    """Warn about (or raise for) the failed trajectories of a free run out (B, T, D), row 0 the
    start."""
    checks.choice(
        "on_failure",
        on_failure,
        ON_FAILURE,
        fix="'warn' (a RuntimeWarning), 'raise' (dynfit.SolverError) or 'ignore'",
    )
    if on_failure == "ignore":
        return
    bad = failures(out, stats)
    if not bad:
        return
    parts = []
    for i, step, code in bad[:_SHOWN]:
        where = (
            f"at step {step} (t = {step * dt:.6g})"
            if step < out.shape[1]
            else "before its last step"
        )
        parts.append(f"trajectory {i} stopped {where} with solver status {code.name}")
    more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    codes = sorted({code for _, _, code in bad}, key=int)
    advice = "; ".join(f"{c.name}: {_ADVICE[c].format(max_steps=max_steps)}" for c in codes)
    msg = (
        f"free run: {len(bad)} of {out.shape[0]} trajectories failed ({'; '.join(parts)}{more}); "
        f"their rows are NaN from that step on. {advice}. A surrogate that leaves the attractor "
        "often needs more "
        "training or data near where it went; pass on_failure='ignore' to silence this"
    )
    if on_failure == "raise":
        raise SolverError(msg, stats)
    warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel)


def forecast_dataset(
    out: np.ndarray,
    stats,
    *,
    dt: float,
    t0: float,
    components: list[str],
    state_units: str,
    time_units: str,
    attrs: dict,
):
    """A free run out (B, T, D) as an xarray Dataset (CF-1.10 attributes)."""
    import xarray as xr

    b, t, _ = out.shape
    codes = _status_codes(stats, b)
    finite = np.isfinite(out).all(axis=2)
    n_valid = np.where(finite.all(axis=1), t, np.argmin(finite, axis=1)).astype(np.int64)
    ds = xr.Dataset(
        {
            "x": (("trajectory", "time", "component"), out),
            "status": (("trajectory",), codes),
            "valid_steps": (("trajectory",), n_valid),
        },
        coords={
            "trajectory": np.arange(b, dtype=np.int64),
            "time": t0 + dt * np.arange(t, dtype=np.float64),
            "component": np.array(components, dtype=str),
        },
    )
    ds["x"].attrs.update(long_name="forecast state (surrogate free run)", units=state_units)
    ds["time"].attrs.update(long_name="time", units=time_units)
    if " since " in f" {time_units} ":  # CF 4.4: a time axis needs a reference time
        ds["time"].attrs["axis"] = "T"
    ds["trajectory"].attrs.update(long_name="trajectory index", units="1")
    ds["component"].attrs.update(long_name="state component")
    ds["status"].attrs.update(
        long_name="solver status of the free run",
        units="1",
        flag_values=np.array(
            [
                s.value
                for s in (Status.SUCCESS, Status.MAX_STEPS, Status.STEP_UNDERFLOW, Status.NONFINITE)
            ],
            dtype=np.int8,
        ),
        flag_meanings="success max_steps step_underflow nonfinite",
    )
    ds["valid_steps"].attrs.update(
        long_name="samples from the start before the first non-finite one", units="1"
    )
    clean = {}
    for k, v in attrs.items():
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            clean[k] = v
        elif isinstance(v, (dict, list, tuple)):
            clean[k] = json.dumps(v, default=str)
    ds.attrs.update(clean)
    ds.attrs.update(Conventions="CF-1.10", title="dynfit surrogate forecast", dt=float(dt))
    return ds
