"""``systems.simulate``: ensembles of trajectories as an ``xarray.Dataset``."""
from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from .integrate import METHODS, _check_method, integrate
from .system import System, get

__all__ = ["simulate", "sample_initial_conditions"]

_PROGRESS_WORK = 5e7  # member-samples x dim above which the progress bar turns on by default
_CHUNK = 128  # trajectories per chunk when a progress bar is shown


def _version() -> str:
    from . import __version__

    return __version__


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value, *, positive: bool) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})") from None
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        need = "a positive finite number (> 0)" if positive else "a finite number >= 0"
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return v


def _spin_up_time(system: System) -> float:
    """Time long enough to forget the initial state: 50 Lyapunov times, else 5000 sampling steps."""
    if system.lyapunov_max and system.lyapunov_max > 0:
        return max(50.0 / system.lyapunov_max, 500.0 * system.dt)
    return 5000.0 * system.dt


def sample_initial_conditions(
    system: System, n: int, rng: np.random.Generator, *, method: str = "rkf45", rtol: float = 1e-9, atol: float = 1e-9
) -> np.ndarray:
    """n states (n, d) on the attractor, drawn with ``rng``.

    Each starts from ``system.x0`` plus a small Gaussian perturbation and is
    integrated from t = -T to 0 (T: :func:`_spin_up_time`). For autonomous
    systems each trajectory then takes a random sample of the second half of
    its spin-up, so the states differ in phase even where chaos is weak; for
    non-autonomous ones the state at t = 0 keeps the forcing phase consistent.
    """
    x0 = np.asarray(system.x0, dtype=np.float64)
    scale = 1e-3 * (np.abs(x0) + 1.0)
    starts = x0 + scale * rng.standard_normal((n, system.dim))
    T = _spin_up_time(system)
    n_grid = 201
    t = np.linspace(-T, 0.0, n_grid)
    substeps = max(1, int(math.ceil(T / (n_grid - 1) / system.dt)))
    sol = integrate(system, starts, t, method=method, rtol=rtol, atol=atol, substeps=substeps)
    if not system.autonomous:
        return sol.x[:, -1].copy()
    idx = rng.integers(n_grid // 2, n_grid, size=n)
    return sol.x[np.arange(n), idx].copy()


def simulate(
    system,
    *,
    n_traj: int = 1,
    n_steps: int,
    dt: float,
    method: str = "rkf45",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    transient: float = 0.0,
    x0=None,
    params=None,
    noise: float = 0.0,
    seed: int | None = None,
    substeps: int = 1,
    max_steps: int | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Simulate ``n_traj`` trajectories of ``n_steps`` samples spaced ``dt``.

    system: a name from ``systems.names()`` or a ``systems.System``; params:
    dict of parameter overrides by name. x0: (dim,) or (n_traj, dim) initial
    states, or None to sample them on the attractor from ``seed``. The first
    sample is the state after ``transient`` time units. method: one of
    ``systems.integrate.METHODS``; adaptive methods (rkf45, dopri5, dop853, rkf23) use
    rtol/atol and land on every sample, ``rk4`` takes ``substeps`` steps per
    sample. noise: standard deviation of additive Gaussian observation noise
    as a fraction of each component's standard deviation (over the whole
    ensemble); the clean states are not kept. Returns a Dataset with ``x``
    (trajectory, time, component) and provenance attrs.
    """
    # --- validation, before any work ---
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params must be a dict of parameter overrides by name, got {type(params).__name__}")
    system = get(system, **(params or {}))
    n_traj = _check_int("n_traj", n_traj, 1)
    n_steps = _check_int("n_steps", n_steps, 1)
    dt = _check_float("dt", dt, positive=True)
    rtol = _check_float("rtol", rtol, positive=True)
    atol = _check_float("atol", atol, positive=True)
    transient = _check_float("transient", transient, positive=False)
    noise = _check_float("noise", noise, positive=False)
    substeps = _check_int("substeps", substeps, 1)
    if max_steps is not None:
        max_steps = _check_int("max_steps", max_steps, 1)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    _check_method(method, None)
    if seed is not None:
        seed = _check_int("seed", seed, 0)
    if x0 is not None:
        x0 = np.array(x0, dtype=np.float64)
        if x0.shape == (system.dim,):
            x0 = np.broadcast_to(x0, (n_traj, system.dim)).copy()
        if x0.shape != (n_traj, system.dim):
            raise ValueError(
                f"x0 must have shape ({system.dim},) or (n_traj, dim) = ({n_traj}, {system.dim}) for "
                f"{system.name!r}, got {x0.shape}; pass one state per trajectory or x0=None to sample on the attractor"
            )
        if not np.all(np.isfinite(x0)):
            bad = int(np.argwhere(~np.isfinite(x0))[0][0])
            raise ValueError(f"x0 contains NaN or inf (trajectory {bad}: {x0[bad]}); give finite initial states")

    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    rng = np.random.default_rng(seed)
    kw = dict(method=method, rtol=rtol, atol=atol, substeps=substeps, max_steps=max_steps)

    if x0 is None:
        x0 = sample_initial_conditions(system, n_traj, rng)
    if transient > 0:
        n_sub = max(substeps, int(math.ceil(transient / dt)) * substeps)
        x0 = integrate(system, x0, np.array([0.0, transient]), **{**kw, "substeps": n_sub}).x[:, -1]
    t = transient + dt * np.arange(n_steps)

    x = _run(system, x0, t, kw, progress)
    if noise > 0:
        std = x.reshape(-1, system.dim).std(axis=0)
        x = x + noise * std * rng.standard_normal(x.shape)

    return _to_dataset(system, x, t, method, rtol, atol, dt, seed, transient, noise, substeps, n_traj)


def _run(system: System, x0: np.ndarray, t: np.ndarray, kw: dict, progress: bool | None) -> np.ndarray:
    n = x0.shape[0]
    if t.size == 1:
        return x0[:, None, :].copy()
    if progress is None:
        progress = n * t.size * system.dim > _PROGRESS_WORK and n > _CHUNK
    if not progress:
        return integrate(system, x0, t, **kw).x
    from tqdm.auto import tqdm

    out = np.empty((n, t.size, system.dim))
    with tqdm(total=n, desc=f"simulate {system.name}", unit="traj") as bar:
        for i in range(0, n, _CHUNK):
            out[i : i + _CHUNK] = integrate(system, x0[i : i + _CHUNK], t, **kw).x
            bar.update(min(_CHUNK, n - i))
    return out


def _to_dataset(system, x, t, method, rtol, atol, dt, seed, transient, noise, substeps, n_traj) -> xr.Dataset:
    params = {k: float(v) for k, v in system.params.items()}
    attrs = {
        "system": system.name,
        "parameters": json.dumps(params),
        **{f"param_{k}": v for k, v in params.items()},
        "method": method,
        "adaptive": int(_check_method(method, None)[1]),
        "rtol": rtol,
        "atol": atol,
        "substeps": substeps,
        "dt": dt,
        "seed": seed,
        "transient": transient,
        "noise": noise,
        "package": "systems",
        "version": _version(),
        "created_by": f"systems.simulate (systems {_version()})",
    }
    if system.lyapunov_max:
        attrs["lyapunov_max"] = float(system.lyapunov_max)
        attrs["lyapunov_time"] = float(system.lyapunov_time)
        if system.lyapunov_citation:
            attrs["lyapunov_citation"] = system.lyapunov_citation
    ds = xr.Dataset(
        {"x": (("trajectory", "time", "component"), x)},
        coords={
            "trajectory": np.arange(n_traj, dtype=np.int64),
            "time": t,
            "component": np.array(system.components, dtype=str),
        },
        attrs=attrs,
    )
    ds["x"].attrs["long_name"] = f"state of {system.name}"
    ds["time"].attrs["long_name"] = "time"
    return ds
