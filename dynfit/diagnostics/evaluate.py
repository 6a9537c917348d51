"""``evaluate``: a surrogate against the truth, as one ``xarray.Dataset``.

``data`` are any trajectories: a ``systems.simulate`` Dataset, an xarray
Dataset (``x``) or DataArray, a numpy array (N, T, D) or (T, D), or a path
(.npy, .csv, .nc, .zarr), sampled every ``dt`` (the data's attrs or time
coordinate, or the argument). Two modes:

- *known system* (``system`` given, or the data's ``attrs["system"]`` names a
  ``systems`` catalogue entry): the truth is the system itself, as below.
- *data only* (anything else): the free runs are scored against the held-out
  data themselves, each VPT capped at the data's length (``vpt_capped``);
  the Lyapunov time is estimated when not given (``lyapunov_from_data``,
  Rosenstein's method on the data, by default: a unit that does not depend
  on the model scored; the surrogate's own exponent when asked for with
  ``lyapunov_time="surrogate"`` or when the data are too short); the
  climate measures compare the surrogate's long run with the data (or
  ``truth``); no valid ground-truth time (NaN: no equations to re-solve).

What it does, in order (every input is checked before any work starts):

1. ``n_starts`` distinct starts are drawn (seeded, without replacement: one
   per trajectory first, see ``draw_starts``) along the trajectories of
   ``data`` (ideally held out from training), each with ``horizon`` Lyapunov
   times of data after it: the truth. Asking for more starts than the data
   hold, or a surrogate with NaN/inf weights, raises ValueError.
2. The surrogate runs free from each start (``generate``); the normalised
   error, the VPT per threshold (``vpt_capped``: never exceeded within the
   horizon, a lower bound), and the valid ground-truth time (the data and
   scipy reference solvers from the same start, see ``vpt.py``).
3. One long run of ``long_steps`` samples each from the surrogate and from the
   true system (``systems.simulate``, rkf45 at 1e-9) from the first start; the
   first 10% of both is dropped. On them: state-space density divergence,
   per-component Wasserstein distance, power-spectrum distance, correlation
   dimension (see ``measure.py``, ``spectrum.py``, ``dimension.py``).
4. Lyapunov spectra: the truth's (analytic Jacobian) and, when the surrogate
   exposes a torch ``field``, the surrogate's (autograd), both by RK4 + QR at
   the data's sampling step from the first ``lyapunov_starts`` starts.

The surrogate is duck-typed: ``generate(x0 (B, D), n_steps) -> (B, n_steps,
D)`` in physical units with row 0 = x0, ``dt`` and ``dim``; optional
``system`` (name, checked against the data), ``generate(...,
return_stats=True) -> (array, dict)`` (solver statistics: ``accepted`` and
``substeps`` arrays (B, n_steps - 1), ``n_f_evals``), and ``field`` (torch
module on standardised states ``scaler.forward(x)`` in model time, one unit
= ``dt``; without ``scaler`` the field is taken on physical states and
physical time).
"""

from __future__ import annotations

import inspect
import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr

from systems import checks
from ._checks import check_thresholds
from .dimension import correlation_dimension
from ..io import version as _version
from ..solvers import odesolve
from .lyapunov import lyapunov_from_data, lyapunov_spectrum, system_lyapunov_spectrum
from .measure import density_divergence, wasserstein
from .reference import DEFAULT_REFERENCE_SOLVERS, reference_solutions
from .spectrum import spectrum_distance
from .vpt import first_exceedance, normalized_error, valid_groundtruth_time

__all__ = ["evaluate", "load_diagnostics", "summarize", "describe_vpt"]

FORMAT = "dynfit-diagnostics-1"
REQUIRED_VARIABLES = ("error", "vpt", "valid_groundtruth_time", "lyapunov_exponents")
LONG_TRANSIENT = 0.1
LYAPUNOV_SOURCES = ("given", "system", "estimated from data", "estimated from the surrogate")


# ------------------------------------------------------------------ checks
def _check_surrogate(surrogate):
    missing = [a for a in ("generate", "dt", "dim") if not hasattr(surrogate, a)]
    if missing or not callable(getattr(surrogate, "generate", None)):
        raise TypeError(
            f"surrogate must have generate(x0, n_steps), dt and dim (like dynfit.Surrogate); "
            f"{type(surrogate).__name__} lacks {missing or ['a callable generate']}"
        )
    return checks.positive("surrogate.dt", float(surrogate.dt)), int(surrogate.dim)


def _as_dataset(data, dt):
    """Any accepted trajectories as (x (N, T, D) float64, dt, components, attrs, time values)."""
    from ..data import as_trajectories

    if isinstance(data, (str, Path)):
        from ..io import read_trajectories

        data = read_trajectories(data, what="data")
    if (
        isinstance(data, xr.Dataset)
        and "x" in data
        and data["x"].dims != ("trajectory", "time", "component")
    ):
        raise ValueError(
            "data must hold a variable 'x' with dims ('trajectory', 'time', 'component') "
            "as systems.simulate writes; got variables "
            f"{ {k: v.dims for k, v in data.data_vars.items()} }"
        )
    if isinstance(data, xr.Dataset) and "x" not in data:
        raise ValueError(
            "data must hold a variable 'x' with dims ('trajectory', 'time', 'component') "
            "as systems.simulate writes; got variables "
            f"{ {k: v.dims for k, v in data.data_vars.items()} }"
        )
    if not isinstance(data, (xr.Dataset, xr.DataArray, np.ndarray, list, tuple)):
        raise TypeError(
            f"data must be trajectories: a numpy array (N, T, D) or (T, D), an xarray Dataset "
            f"or DataArray, or a path (.npy, .csv, .nc, .zarr); got {type(data).__name__}"
        )
    if not isinstance(data, (xr.Dataset, xr.DataArray)) and dt is None:
        raise ValueError(
            "numpy data carry no sampling step: pass dt=<time between samples> (dynfit evaluate: "
            "--dt DT), or pass an xarray Dataset with attrs['dt'] or a time coordinate"
        )
    x, dt, attrs = as_trajectories(data, dt=dt)
    if isinstance(data, (xr.Dataset, xr.DataArray)):
        comps = data["component"].values if "component" in data.coords else np.arange(x.shape[2])
        t = data["time"].values if "time" in data.coords else np.arange(x.shape[1]) * dt
        t = np.asarray(t, dtype=np.float64)
        if t.size == x.shape[1] and not np.allclose(np.diff(t), dt, rtol=1e-6, atol=1e-12):
            raise ValueError("data must be sampled uniformly in time (constant dt)")
    else:
        comps, t = np.array([f"x{i}" for i in range(x.shape[2])]), np.arange(x.shape[1]) * dt
    return x, float(dt), comps, attrs, t


def _system_of(name: str, attrs):
    """The catalogue's system ``name`` with the parameters stored in ``attrs``; None if not
    catalogued."""
    import systems

    if name.lower() not in [n.lower() for n in systems.names()]:
        return None
    params = attrs.get("parameters")
    params = json.loads(params) if isinstance(params, str) else {}
    # systems.simulate stores each parameter as attrs["param_<name>"]
    params.update(
        {
            k[len("param_") :]: float(v)
            for k, v in attrs.items()
            if k.startswith("param_") and isinstance(v, (int, float, np.floating, np.integer))
        }
    )
    try:
        return systems.get(name, **params)
    except ValueError as err:
        raise ValueError(
            f"the data's system {name!r} cannot be rebuilt from its attrs: {err}"
        ) from None


def _known_system(name, attrs, system, surrogate_system):
    """The data's ``systems.System`` (given, or rebuilt from attrs when in the catalogue), or
    None."""
    if (
        surrogate_system not in (None, "", "unknown")
        and name
        and str(surrogate_system).lower() != str(name).lower()
    ):
        raise ValueError(
            f"the data come from system {name!r} but the surrogate models {surrogate_system!r}; "
            "evaluate a surrogate on data of its own system"
        )
    if system is not None:
        if not hasattr(system, "rhs") or not hasattr(system, "lyapunov_time"):
            raise TypeError(f"system must be a systems.System, got {type(system).__name__}")
        return system
    if not name:
        return None
    return _system_of(str(name), attrs)  # None: not catalogued, evaluate against the data alone


# ------------------------------------------------------------------ rollouts
def _generate(surrogate, x0, n_steps: int, k: int):
    """Rollouts (B, n_steps, D) at the data's spacing, and stats dict or None."""
    n_fine = (n_steps - 1) * k + 1
    stats = None
    try:
        accepts_stats = "return_stats" in inspect.signature(surrogate.generate).parameters
    except (TypeError, ValueError):
        accepts_stats = False
    if accepts_stats:
        out = surrogate.generate(x0, n_fine, return_stats=True)
        out, stats = out if isinstance(out, tuple) else (out, None)
    else:
        out = surrogate.generate(x0, n_fine)
    out = np.asarray(out, dtype=np.float64)
    if out.shape != (x0.shape[0], n_fine, x0.shape[1]):
        raise ValueError(
            f"surrogate.generate returned shape {out.shape}, expected "
            f"{(x0.shape[0], n_fine, x0.shape[1])} = (B, n_steps, dim)"
        )
    return out[:, ::k], stats


def _stats_variables(stats, n_starts: int, n_intervals: int = 1):
    out = {}
    if hasattr(stats, "n_steps") and hasattr(
        stats, "n_accepted"
    ):  # the solver's Stats (one per example)
        steps = stats.n_steps.detach().cpu().numpy().astype(float)
        if steps.shape != (n_starts,):
            return out
        acc = stats.n_accepted.detach().cpu().numpy().astype(float)
        out["accepted_fraction"] = (
            ("start",),
            acc / np.maximum(steps, 1.0),
            {"units": "1", "long_name": "fraction of attempted solver steps accepted"},
        )
        out["mean_substeps"] = (
            ("start",),
            steps / max(n_intervals, 1),
            {"units": "1", "long_name": "solver steps attempted per sampling interval"},
        )
        out["n_f_evals"] = (
            (),
            float(stats.n_f_evals_per_example.sum()),
            {
                "units": "1",
                "long_name": "vector-field evaluations of the rollouts (summed " "over starts)",
            },
        )
        return out
    if not isinstance(stats, dict):
        return out
    acc = stats.get("accepted")
    if (
        acc is not None
        and np.ndim(acc) == 2
        and np.shape(acc)[0] == n_starts
        and np.shape(acc)[1] > 0
    ):
        out["accepted_fraction"] = (
            ("start",),
            np.asarray(acc, float).mean(1),
            {"units": "1", "long_name": "fraction of rollout steps accepted at once"},
        )
    sub = stats.get("substeps")
    if (
        sub is not None
        and np.ndim(sub) == 2
        and np.shape(sub)[0] == n_starts
        and np.shape(sub)[1] > 0
    ):
        out["mean_substeps"] = (
            ("start",),
            np.asarray(sub, float).mean(1),
            {"units": "1", "long_name": "mean solver substeps per sampling interval"},
        )
    if np.ndim(stats.get("n_f_evals", None)) == 0 and stats.get("n_f_evals") is not None:
        out["n_f_evals"] = (
            (),
            float(stats["n_f_evals"]),
            {"units": "1", "long_name": "vector-field evaluations of the rollouts"},
        )
    return out


def _surrogate_exponents(surrogate, starts, dt, n_steps, transient, std):
    """The surrogate's exponents per physical time unit, or None without a torch field."""
    import torch

    field = getattr(surrogate, "field", None)
    if not isinstance(field, torch.nn.Module):
        return None
    scaler = getattr(surrogate, "scaler", None)
    if scaler is not None and hasattr(scaler, "forward"):
        z0 = np.asarray(scaler.forward(starts), dtype=np.float64)
        unit = float(surrogate.dt)  # physical time per model time unit
    else:
        z0, unit = starts, 1.0
    # the rollout and a fixed-step run of the field must agree over one sampling step
    one = _generate(surrogate, starts[:1], 2, 1)[0][0, 1]
    dtype = next(field.parameters(), torch.zeros((), dtype=torch.float64)).dtype
    z = torch.as_tensor(z0[:1], dtype=dtype)
    h = float(surrogate.dt) / unit
    was = field.training
    field.eval()
    with torch.no_grad():
        z = odesolve(
            field,
            z,
            torch.tensor([0.0, h], dtype=dtype),
            method="rk4",
            step_size=h / 20,
            raise_on_failure=False,
        ).ys[-1]
    field.train(was)
    z = z.to(torch.float64).numpy()[0]
    x1 = scaler.inverse(z) if scaler is not None and hasattr(scaler, "inverse") else z
    mismatch = float(np.sqrt(np.mean(((x1 - one) / std) ** 2)))
    if mismatch > 0.05:
        warnings.warn(
            f"the surrogate's field integrated over one step differs from its generate() by "
            f"{mismatch:.3g} attractor std: the field's coordinates or time unit may not be the "
            "ones evaluate assumes (scaler.forward, one model time unit = dt); its Lyapunov "
            "exponents may be off",
            RuntimeWarning,
            stacklevel=3,
        )
    try:
        lam = lyapunov_spectrum(field, z0, dt=dt / unit, n_steps=n_steps, transient=transient)
    except FloatingPointError as err:
        warnings.warn(
            f"the surrogate's Lyapunov spectrum could not be computed: {err}",
            RuntimeWarning,
            stacklevel=3,
        )
        return np.full(starts.shape[1], np.nan)
    return lam / unit


def _strategy_name(strategy) -> str:
    """The training strategy's name: a config dict (Surrogate.strategy) or an object with .name."""
    if isinstance(strategy, dict):
        return str(strategy.get("name", ""))
    return str(getattr(strategy, "name", "") or "")


def _check_finite_model(surrogate) -> None:
    """A surrogate whose weights hold NaN/inf would evaluate to meaningless numbers: refuse it."""
    field = getattr(surrogate, "field", None)
    params = getattr(field, "parameters", None)
    if not callable(params):
        return
    import torch

    for name, p in field.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            raise ValueError(
                f"the surrogate's weight {name!r} holds NaN or inf (a diverged training?); "
                "retrain it or load an earlier checkpoint before evaluating"
            )


def draw_starts(n_traj: int, n_positions: int, n_starts: int, rng, n_h: int | None = None):
    """``n_starts`` distinct (trajectory, time index) starts, drawn without replacement.

    Spread over the trajectories first (a fresh permutation per round, so with
    n_starts <= n_traj every start lies on its own trajectory), then over
    distinct start times within each. ``n_positions`` start times per
    trajectory leave room for the rollout. Raises ValueError when the data
    hold fewer distinct starts than asked.
    """
    capacity = n_traj * n_positions
    if n_starts > capacity:
        room = f" that leave room for {n_h} samples after them" if n_h else ""
        raise ValueError(
            f"n_starts = {n_starts} but the data hold only {capacity} distinct starts ({n_traj} "
            f"trajectories x {n_positions} start times{room}); lower n_starts or pass more or "
            "longer trajectories"
        )
    rounds = -(-n_starts // n_traj)
    traj_idx = np.concatenate([rng.permutation(n_traj) for _ in range(rounds)])[:n_starts]
    time_idx = np.empty(n_starts, dtype=np.int64)
    for i in np.unique(traj_idx):
        where = np.flatnonzero(traj_idx == i)
        time_idx[where] = rng.choice(n_positions, size=where.size, replace=False)
    return traj_idx, time_idx


# ------------------------------------------------------------------ evaluate
# dynfit.evaluate's defaults (its signature reads them from here), also those of `dynfit evaluate`,
# `dynfit compare` and dynfit.compare. horizon_lt: Lyapunov times.
EVALUATE_DEFAULTS = {
    "n_starts": 20,
    "horizon_lt": 15.0,
    "thresholds": (0.3, 0.4, 0.5),
    "long_steps": 20000,
    "lyapunov_steps": 2000,
    "lyapunov_starts": 4,
    "seed": 0,
}
_E = EVALUATE_DEFAULTS  # the one set of evaluate's defaults, also the commands'


def _spread_starts(x: np.ndarray, n: int) -> np.ndarray:
    """n samples (n, D) spread over the trajectories and along them (starts for Lyapunov runs)."""
    n_traj, n_time, _ = x.shape
    i = np.arange(n)
    return x[i % n_traj, (n_time - 1) * (i // n_traj + 1) // (n // n_traj + 2)]


def _lyapunov_time(choice, system, attrs, x, dt, surrogate, std, steps, n_starts, seed):
    """(Lyapunov time, its source, lambda_1 from the data or NaN, surrogate exponents or None)."""
    if choice is not None and not isinstance(choice, str):
        return (
            checks.positive(
                "lyapunov_time",
                choice,
                fix="the Lyapunov time is 1 / lambda_1, in the data's "
                "time unit; or pass 'data' / 'surrogate' to estimate it",
            ),
            "given",
            np.nan,
            None,
        )
    if choice is not None:
        checks.choice(
            "lyapunov_time",
            choice,
            ("data", "surrogate"),
            fix="pass a number (1 / lambda_1 in the data's time unit), 'data' or 'surrogate'",
        )
    if choice is None and system is not None:
        lt = attrs.get("lyapunov_time") or system.lyapunov_time
        if not lt:  # none recorded: the system's own largest exponent (QR, analytic Jacobian)
            lam = system_lyapunov_spectrum(
                system, x[0, 0], dt=dt, n_steps=max(steps, 5000), transient=500, k=1
            )[0]
            if not lam > 0:
                raise ValueError(
                    f"no Lyapunov time known for {system.name!r} and its largest exponent "
                    f"{lam:.3g} is not positive; VPT is measured in Lyapunov times: pass "
                    "lyapunov_time"
                )
            lt = 1.0 / lam
        return float(lt), "system", np.nan, None
    if choice is None and attrs.get("lyapunov_time"):
        return (
            checks.positive("data.attrs['lyapunov_time']", attrs["lyapunov_time"]),
            "given",
            np.nan,
            None,
        )
    reasons = []
    lam_data = np.nan
    if choice in (None, "data"):
        try:
            lam_data = lyapunov_from_data(x, dt=dt, seed=seed)
            if lam_data > 0:
                return 1.0 / lam_data, "estimated from data", lam_data, None
            reasons.append(f"the data's estimate lambda_1 = {lam_data:.3g} is not positive")
        except ValueError as err:
            reasons.append(f"from the data: {err}")
    if choice in (None, "surrogate"):
        n_steps = max(steps, 1000)
        sur = _surrogate_exponents(
            surrogate, _spread_starts(x, n_starts), dt, n_steps, n_steps // 10, std
        )
        if sur is None:
            reasons.append("the surrogate has no torch field to take exponents of")
        elif np.isfinite(sur[0]) and sur[0] > 0:
            return 1.0 / float(sur[0]), "estimated from the surrogate", lam_data, (sur, n_steps)
        else:
            reasons.append(f"the surrogate's lambda_1 = {sur[0]:.3g} is not positive")
    raise ValueError(
        "no Lyapunov time could be estimated (" + "; ".join(reasons) + "); VPT is measured in "
        "Lyapunov times: pass lyapunov_time=<1 / largest exponent, in the data's time unit>"
    )


def _longest(x: np.ndarray, n: int) -> np.ndarray:
    """The first n samples of the first trajectory (all trajectories have one length)."""
    return x[0, :n]


def evaluate(
    surrogate,
    data,
    *,
    dt: float | None = None,
    lyapunov_time=None,
    truth=None,
    n_starts: int = _E["n_starts"],
    horizon_lt: float = _E["horizon_lt"],
    thresholds=_E["thresholds"],
    long_steps: int = _E["long_steps"],
    lyapunov_steps: int = _E["lyapunov_steps"],
    lyapunov_starts: int = _E["lyapunov_starts"],
    reference_solvers=DEFAULT_REFERENCE_SOLVERS,
    groundtruth: bool = True,
    seed: int = _E["seed"],
    system=None,
    horizon: float | None = None,
) -> xr.Dataset:
    """Evaluate a surrogate against the truth; returns a diagnostics Dataset.

    surrogate: anything with ``generate``, ``dt``, ``dim`` (module docstring).
    data: trajectories (N, T, D) or (T, D): numpy, xarray Dataset (``x``) or
        DataArray, or a path (.npy, .csv, .nc, .zarr), sampled at an integer
        multiple of ``surrogate.dt``. dt: their step (needed for numpy data;
        otherwise it must agree with the data's attrs or time coordinate).
    lyapunov_time: the time unit of the VPT, in the data's time unit. None:
        the known system's; for other data their ``attrs["lyapunov_time"]``,
        else estimated (from the data, falling back on the surrogate); "data"
        or "surrogate" picks the estimate. ``attrs["lyapunov_time_source"]``
        says which: "given", "system", "estimated from data" or "estimated
        from the surrogate".
    truth: optional long trajectories of the true dynamics (any form ``data``
        takes, same dt) for the climate measures, instead of a new simulation
        of the known system or the data's first trajectory.
    n_starts: rollouts; horizon_lt: their length in Lyapunov times (each start
        needs that much data after it; data-only: capped at the data's
        length, with a warning; ``horizon``: its old name, deprecated); thresholds: VPT
        thresholds in (0, 1].
    long_steps: samples of the long runs (>= 1000; data-only: at most the
        data's length) for the distances.
    lyapunov_steps / lyapunov_starts: averaging steps and starts of the
        Lyapunov spectra (0 steps: skip, NaN). reference_solvers: scipy
        (method, tol) pairs for the valid ground-truth time (needs >= 1; the
        noise-free data count as one more); groundtruth=False skips it (NaN;
        always NaN without a known system).
    seed: draws the starts and the subsamples. system: the ``systems.System``
        the data come from (default: rebuilt from the data's attrs, name and
        ``param_*`` values, when the catalogue has it); pass it for a
        user-defined system to get the known-system diagnostics.

    Returns a Dataset with dims start, time (Lyapunov times), threshold,
    component, source (truth, surrogate), exponent, long_time; variables
    error, truth, prediction, vpt, vpt_capped, valid_groundtruth_time,
    lyapunov_exponents, density_divergence, wasserstein, spectrum_distance,
    correlation_dimension, long_run, std, and solver statistics when the
    surrogate reports them; each with attrs["units"]; provenance in attrs.
    """
    thr = check_thresholds(thresholds)
    x, dt, comps, attrs, times = _as_dataset(data, dt)
    scaler = getattr(surrogate, "scaler", None)
    if getattr(scaler, "dim", 0) is None and hasattr(scaler, "set_dim"):
        scaler.set_dim(x.shape[2])  # a wrapped vector field takes the data's dimension
    sdt, dim = _check_surrogate(surrogate)
    system = _known_system(attrs.get("system"), attrs, system, getattr(surrogate, "system", None))
    if x.shape[2] != dim:
        raise ValueError(
            f"the data have {x.shape[2]} components but the surrogate has dim {dim}; "
            "evaluate a surrogate on data of its own system and dimension"
        )
    n_starts = checks.integer("n_starts", n_starts, minimum=1)
    _check_finite_model(surrogate)
    if horizon is not None:  # the old name (dynfit.fit's horizon counts samples)
        warnings.warn(
            "evaluate(horizon=...) is deprecated: pass horizon_lt (Lyapunov times)",
            DeprecationWarning,
            stacklevel=2,
        )
        horizon_lt = horizon
    horizon = checks.positive("horizon_lt", horizon_lt)
    long_steps = checks.integer("long_steps", long_steps, minimum=1000)
    lyapunov_steps = checks.integer("lyapunov_steps", lyapunov_steps, minimum=0)
    lyapunov_starts = checks.integer("lyapunov_starts", lyapunov_starts, minimum=1)
    seed = checks.integer("seed", seed, minimum=0)
    ratio = dt / sdt
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > 1e-6 * ratio:
        raise ValueError(
            f"the data's step {dt:g} is not an integer multiple of surrogate.dt = {sdt:g}; "
            "simulate evaluation data at the surrogate's step (or a multiple of it)"
        )
    if groundtruth and system is not None and len(reference_solvers) < 1:
        raise ValueError("reference_solvers must name at least one (scipy method, tolerance) pair")
    long_given = None
    if truth is not None:
        long_given, tdt, _, _, _ = _as_dataset(truth, dt)
        if long_given.shape[2] != dim or long_given.shape[1] < 100:
            raise ValueError(
                f"truth must be long trajectories of {dim} components (>= 100 samples), got shape "
                f"{long_given.shape}"
            )
    name = str(attrs.get("system") or (system.name if system is not None else "") or "user data")
    std = x.reshape(-1, dim).std(0)
    if np.any(std == 0):
        raise ValueError(
            f"component(s) {np.flatnonzero(std == 0).tolist()} of the data are constant; "
            "evaluate needs data that move"
        )

    lt, lt_source, lam_data, sur_early = _lyapunov_time(
        lyapunov_time, system, attrs, x, dt, surrogate, std, lyapunov_steps, lyapunov_starts, seed
    )
    n_h = int(round(horizon * lt / dt)) + 1
    n_traj, n_time, _ = x.shape
    if n_time < n_h:
        if system is not None:
            raise ValueError(
                f"a horizon of {horizon} Lyapunov times needs {n_h} samples per trajectory, the "
                f"data have {n_time}; simulate longer trajectories or lower horizon_lt"
            )
        warnings.warn(
            f"a horizon of {horizon} Lyapunov times needs {n_h} samples per trajectory, the data "
            f"have {n_time}: the free runs stop at the data's end "
            f"({(n_time - 1) * dt / lt:.3g} Lyapunov times) and a VPT that reaches it is flagged "
            "in vpt_capped",
            RuntimeWarning,
            stacklevel=2,
        )
        n_h = n_time

    traj_idx, time_idx = draw_starts(
        n_traj, n_time - n_h + 1, n_starts, np.random.default_rng(seed), n_h
    )
    truth_runs = np.stack([x[i, j : j + n_h] for i, j in zip(traj_idx, time_idx)])
    starts = truth_runs[:, 0]

    # --- short rollouts: error, VPT (capped where never exceeded), valid ground-truth time
    pred, stats = _generate(surrogate, starts, n_h, k)
    err = normalized_error(truth_runs, pred, std=std)
    vpt = first_exceedance(err, thr, dt=dt) / lt
    capped = ~(err[:, None, :] > thr[None, :, None]).any(-1)
    if groundtruth and system is not None:
        refs = reference_solutions(system, starts, dt=dt, n_steps=n_h, solvers=reference_solvers)
        sols = refs + ([truth_runs] if float(attrs.get("noise", 0.0)) == 0.0 else [])
        if len(sols) < 2:
            raise ValueError(
                "the valid ground-truth time needs two solutions: with noisy data pass two "
                "reference_solvers"
            )
        vgt = valid_groundtruth_time(sols, dt=dt, lyapunov_time=lt, std=std, thresholds=thr)
    else:
        vgt = np.full_like(vpt, np.nan)

    # --- long runs: attractor statistics
    if long_given is not None:
        long_true, truth_source = _longest(long_given, long_steps), "the truth argument"
    elif system is not None:
        import systems

        long_true = systems.simulate(
            system,
            n_traj=1,
            n_steps=long_steps,
            dt=dt,
            x0=starts[0],
            seed=seed,
            method="rkf45",
            rtol=1e-9,
            atol=1e-9,
            progress=False,
        )["x"].values[0]
        truth_source = "systems.simulate rkf45 rtol=atol=1e-9"
    else:
        long_true, truth_source = _longest(x, long_steps), "the data"
    n_long = long_true.shape[0]
    long_pred = _generate(surrogate, long_true[:1], n_long, k)[0][0]
    cut = int(LONG_TRANSIENT * n_long)
    lt_, lp_ = long_true[cut:], long_pred[cut:]
    pool = (
        x.reshape(-1, dim) if long_given is None and system is None else lt_
    )  # data: every sample
    dens = density_divergence(pool, lp_, seed=seed)
    wass = wasserstein(pool, lp_)
    spec = spectrum_distance(lt_, lp_, dt=dt)
    cdim = [_dimension(lt_, seed), _dimension(lp_, seed)]

    # --- Lyapunov spectra
    lam = np.full((2, dim), np.nan)
    ly_n = lyapunov_steps
    if system is not None:
        ly_starts = starts[:lyapunov_starts]
        if lyapunov_steps > 0:
            lam[0] = system_lyapunov_spectrum(
                system, ly_starts, dt=dt, n_steps=lyapunov_steps, transient=lyapunov_steps // 10
            )
    else:
        ly_starts = _spread_starts(x, lyapunov_starts)
        if np.isnan(lam_data) and lyapunov_steps > 0:
            try:
                lam_data = lyapunov_from_data(x, dt=dt, seed=seed)
            except ValueError:
                pass
        lam[0, 0] = lam_data
    if sur_early is not None:
        lam[1], ly_n = sur_early
    elif lyapunov_steps > 0:
        sur = _surrogate_exponents(
            surrogate, ly_starts, dt, lyapunov_steps, lyapunov_steps // 10, std
        )
        if sur is not None:
            lam[1] = sur

    tl = np.arange(n_h) * dt / lt
    ds = xr.Dataset(
        {
            "error": (
                ("start", "time"),
                err,
                {
                    "units": "1",
                    "long_name": "normalised error " "sqrt(mean_i ((y_i - yhat_i) / std_i)^2)",
                },
            ),
            "truth": (
                ("start", "time", "component"),
                truth_runs,
                {"units": "state units", "long_name": "truth"},
            ),
            "prediction": (
                ("start", "time", "component"),
                pred,
                {"units": "state units", "long_name": "surrogate free run"},
            ),
            "start_trajectory": (("start",), traj_idx.astype(np.int64), {"units": "1"}),
            "start_time": (("start",), times[time_idx], {"units": "time units"}),
            "vpt": (
                ("start", "threshold"),
                vpt,
                {"units": "Lyapunov times", "long_name": "valid prediction time"},
            ),
            "vpt_capped": (
                ("start", "threshold"),
                capped,
                {
                    "units": "1",
                    "long_name": "the error never "
                    "exceeded the threshold within the horizon: vpt is a lower bound",
                },
            ),
            "valid_groundtruth_time": (
                ("start", "threshold"),
                vgt,
                {
                    "units": "Lyapunov times",
                    "long_name": "valid ground-truth time",
                    "solvers": (
                        json.dumps([list(s) for s in reference_solvers])
                        if system is not None
                        else "[]"
                    ),
                    "includes_data": int(float(attrs.get("noise", 0.0)) == 0.0),
                },
            ),
            "lyapunov_exponents": (
                ("source", "exponent"),
                lam,
                {
                    "units": "1 / time unit",
                    "long_name": "Lyapunov exponents (QR, RK4)",
                    "truth_method": (
                        "systems.lyapunov_spectrum (QR, analytic Jacobian)"
                        if system is not None
                        else "Rosenstein et al. 1993 on the data (largest exponent only)"
                    ),
                    "n_steps": ly_n,
                    "n_starts": min(lyapunov_starts, n_starts),
                },
            ),
            "density_divergence": (
                (),
                dens,
                {
                    "units": "nats",
                    "long_name": "KL(truth || surrogate) of " "state-space densities",
                    "method": "bins 30, smoothing 1 (dim <= 3); knn k=5",
                },
            ),
            "wasserstein": (
                ("component",),
                wass,
                {"units": "attractor std", "long_name": "1-D Wasserstein distance / truth std"},
            ),
            "spectrum_distance": (
                (),
                spec,
                {"units": "1", "long_name": "Hellinger distance of power spectra"},
            ),
            "correlation_dimension": (
                ("source",),
                np.array(cdim),
                {"units": "1", "long_name": "Grassberger-Procaccia correlation dimension"},
            ),
            "long_run": (
                ("source", "long_time", "component"),
                np.stack([long_true, long_pred]),
                {"units": "state units", "long_name": "long free runs"},
            ),
            "std": (
                ("component",),
                std,
                {"units": "state units", "long_name": "attractor standard deviation"},
            ),
        },
        coords={
            "start": np.arange(n_starts, dtype=np.int64),
            "time": ("time", tl, {"units": "Lyapunov times"}),
            "threshold": ("threshold", thr, {"units": "attractor std"}),
            "component": comps,
            "source": np.array(["truth", "surrogate"]),
            "exponent": np.arange(1, dim + 1, dtype=np.int64),
            "long_time": ("long_time", np.arange(n_long) * dt, {"units": "time units"}),
        },
    )
    for var, (dims, val, vattrs) in _stats_variables(stats, n_starts, (n_h - 1) * k).items():
        ds[var] = xr.Variable(dims, val, vattrs)
    ds.attrs.update(
        {
            "format": FORMAT,
            "system": name,
            "mode": "known system" if system is not None else "data only",
            "dim": dim,
            "dt": dt,
            "surrogate_dt": sdt,
            "lyapunov_time": lt,
            "lyapunov_time_source": lt_source,
            "thresholds": thr,
            "n_starts": n_starts,
            "horizon": horizon,
            "horizon_used": (n_h - 1) * dt / lt,
            "long_steps": n_long,
            "long_transient": LONG_TRANSIENT,
            "long_truth": truth_source,
            "seed": seed,
            "surrogate": repr(surrogate)[:500],
            "surrogate_strategy": _strategy_name(getattr(surrogate, "strategy", None)),
            "surrogate_solver": str(getattr(surrogate, "solver", "")),
            "data_method": str(attrs.get("method", "")),
            "data_rtol": float(attrs.get("rtol", np.nan)),
            "data_noise": float(attrs.get("noise", 0.0)),
            "dynfit_version": _version(),
            "created_by": f"dynfit.evaluate (dynfit {_version()})",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    return ds


def _dimension(x: np.ndarray, seed: int) -> float:
    """The correlation dimension, NaN where the run is too short or not finite."""
    try:
        return correlation_dimension(x, seed=seed)
    except ValueError:
        return float("nan")


def load_diagnostics(path) -> xr.Dataset:
    """Read a Dataset written by ``evaluate(...).to_netcdf(path)``; checks it is one.

    Raises FileNotFoundError for a missing file and ValueError for a file that
    is not netCDF or not a dynfit diagnostics Dataset.
    """
    from ..io import read_netcdf

    ds = read_netcdf(
        path, "diagnostics", "pass a file written by dynfit.evaluate(...).to_netcdf(path)"
    )
    fmt = ds.attrs.get("format")
    missing = [v for v in REQUIRED_VARIABLES if v not in ds]
    if fmt != FORMAT or missing:
        raise ValueError(
            f"{path} is not a dynfit diagnostics Dataset (attrs['format'] = {fmt!r}, expected "
            f"{FORMAT!r}; missing variables {missing}); make one with dynfit.evaluate"
        )
    return ds


def summarize(ds: xr.Dataset) -> dict:
    """Scalar summary of an ``evaluate`` Dataset, for tables: {name: float}.

    Per threshold h: vpt_mean_h, vpt_median_h, vpt_min_h, vpt_max_h and
    vgt_median_h (Lyapunov times), vpt_capped_h (the fraction of starts
    whose VPT reached the horizon: a lower bound, not a measurement; the
    median is capped when it is >= 0.5); lyapunov_max_truth / _surrogate;
    density_divergence, wasserstein_mean, spectrum_distance,
    correlation_dimension_truth / _surrogate; solver statistics when present.
    """
    missing = [v for v in REQUIRED_VARIABLES if v not in ds]
    if not isinstance(ds, xr.Dataset) or missing:
        raise ValueError(
            f"summarize needs a Dataset from dynfit.evaluate; missing variables {missing}"
        )
    out = {}
    for h in ds["threshold"].values:
        v = ds["vpt"].sel(threshold=h).values
        g = ds["valid_groundtruth_time"].sel(threshold=h).values
        key = f"{float(h):g}"
        out.update(
            {
                f"vpt_mean_{key}": float(np.mean(v)),
                f"vpt_median_{key}": float(np.median(v)),
                f"vpt_min_{key}": float(np.min(v)),
                f"vpt_max_{key}": float(np.max(v)),
                f"vgt_median_{key}": float(np.median(g)) if np.isfinite(g).any() else float("nan"),
            }
        )
        if "vpt_capped" in ds:
            out[f"vpt_capped_{key}"] = float(np.mean(ds["vpt_capped"].sel(threshold=h).values))
    lam = ds["lyapunov_exponents"]
    out["lyapunov_max_truth"] = float(lam.sel(source="truth")[0])
    out["lyapunov_max_surrogate"] = float(lam.sel(source="surrogate")[0])
    for name in ("density_divergence", "spectrum_distance", "n_f_evals"):
        if name in ds:
            out[name] = float(ds[name])
    if "wasserstein" in ds:
        out["wasserstein_mean"] = float(ds["wasserstein"].mean())
    if "correlation_dimension" in ds:
        out["correlation_dimension_truth"] = float(ds["correlation_dimension"].sel(source="truth"))
        out["correlation_dimension_surrogate"] = float(
            ds["correlation_dimension"].sel(source="surrogate")
        )
    for name in ("accepted_fraction", "mean_substeps"):
        if name in ds:
            out[name] = float(ds[name].mean())
    return out


def describe_vpt(ds: xr.Dataset, threshold: float) -> str:
    """The median VPT at ``threshold`` as text: "3.20", or ">= 15.00 (capped)" when at least
    half the starts never exceeded the threshold within the horizon (the median is then a lower
    bound)."""
    i = int(np.argmin(np.abs(ds["threshold"].values - threshold)))
    v = ds["vpt"].isel(threshold=i).values
    capped = (
        ds["vpt_capped"].isel(threshold=i).values if "vpt_capped" in ds else np.zeros(v.shape, bool)
    )
    median = float(np.median(v))
    return f">= {median:.2f} (capped)" if np.mean(capped) >= 0.5 else f"{median:.2f}"
