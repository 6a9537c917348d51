"""``systems.simulate``: ensembles of trajectories as an ``xarray.Dataset``."""
from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from _dyncore import checks
from ._version import __version__
from .integrate import IntegrationError, integrate
from _dyncore.tableaus import method_tableau
from .system import System, get, is_catalogued

__all__ = ["simulate", "TooLargeError"]

_PROGRESS_WORK = 5e7  # member-samples x dim above which the progress bar turns on by default
_CHUNK = 128  # trajectories per chunk when a progress bar is shown
# drawn starts: chains of one long spin-up each, sampled at well-separated times
_CHAIN_STARTS = 32  # starts taken from one chain at most
_MIN_CHAINS = 8  # chains when n >= 8
_GAP_LYAPUNOV = 3.0  # shortest gap between two starts of a chain, in Lyapunov times
_SPIN_GRID = 11  # output times of the spin-up (keeps the default step limit generous)
# spawn key of the per-trajectory noise streams (SeedSequence(seed, spawn_key=(1, i)))
_NOISE_STREAM = 1


def spin_up_time(system: System) -> float:
    """Time long enough to forget the initial state: 50 Lyapunov times, else 5000 sampling steps."""
    if system.lyapunov_max and system.lyapunov_max > 0:
        return max(50.0 / system.lyapunov_max, 500.0 * system.dt)
    return 5000.0 * system.dt


def gap_time(system: System) -> float:
    """Shortest time between two starts taken from one chain: 3 Lyapunov times, else 300 sampling
    steps."""
    if system.lyapunov_max and system.lyapunov_max > 0:
        return max(_GAP_LYAPUNOV / system.lyapunov_max, 30.0 * system.dt)
    return 300.0 * system.dt


def n_chains(n: int) -> int:
    """Spin-up chains that give ``n`` starts: at most 32 starts per chain, at least 8 chains (or
    n)."""
    return int(min(n, max(_MIN_CHAINS, math.ceil(n / _CHAIN_STARTS))))


def chain_states(
    system: System, n: int, rng: np.random.Generator, *, method: str, rtol: float, atol: float,
    max_steps: int | None = None,
) -> np.ndarray:
    """States (c, m, d) of ``c = n_chains(n)`` spin-up chains, ``m = ceil(n / c)`` per chain, in
    time order."""
    x0 = np.asarray(system.x0, dtype=np.float64)
    scale = 1e-3 * (np.abs(x0) + 1.0)
    c = n_chains(n)
    m = -(-n // c)
    starts = x0 + scale * rng.standard_normal((c, system.dim))
    # each in [G, 2G): random phase, never closer than G
    gaps = gap_time(system) * (1.0 + rng.random(m))
    spin = np.linspace(-spin_up_time(system), 0.0, _SPIN_GRID)
    t = np.concatenate([spin, np.cumsum(gaps)])
    # fixed-step methods only
    substeps = max(1, int(math.ceil(float(np.max(np.diff(t))) / system.dt)))
    sol = integrate(system, starts, t, method=method, rtol=rtol, atol=atol, substeps=substeps,
                    max_steps=max_steps)
    return sol.x[:, _SPIN_GRID:]


def sample_initial_conditions(
    system: System,
    n: int,
    rng: np.random.Generator,
    *,
    method: str = "rkf45",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    max_steps: int | None = None,
) -> np.ndarray:
    """n states (n, d) on the attractor, drawn with ``rng`` (the same rng, the same states).

    Autonomous systems: a few chains (:func:`n_chains`; 8 for n <= 256) start
    from ``system.x0`` plus a small Gaussian perturbation, spin up for T
    (:func:`spin_up_time`, 50 Lyapunov times) and run on, giving one state
    after each gap; gaps are drawn uniformly in [G, 2G) (:func:`gap_time`,
    G = 3 Lyapunov times), so two states of a chain are decorrelated and
    differ in phase even where chaos is weak. The states go to the
    trajectories in a random order. The cost is c T + n 1.5 G instead of n T.
    Non-autonomous systems keep one spin-up per trajectory, from t = -T to 0,
    so that every start has the forcing phase of t = 0.
    """
    if system.autonomous:
        states = chain_states(
            system, n, rng, method=method, rtol=rtol, atol=atol, max_steps=max_steps
        )
        states = states.reshape(-1, system.dim)
        return states[rng.permutation(states.shape[0])[:n]].copy()
    x0 = np.asarray(system.x0, dtype=np.float64)
    scale = 1e-3 * (np.abs(x0) + 1.0)
    starts = x0 + scale * rng.standard_normal((n, system.dim))
    T = spin_up_time(system)
    n_grid = 201
    t = np.linspace(-T, 0.0, n_grid)
    substeps = max(1, int(math.ceil(T / (n_grid - 1) / system.dt)))
    sol = integrate(system, starts, t, method=method, rtol=rtol, atol=atol, substeps=substeps,
                    max_steps=max_steps)
    return sol.x[:, -1].copy()


class TooLargeError(MemoryError, ValueError):
    """The requested arrays would not fit in this machine's memory (raised before any work)."""


def _available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    # pragma: no cover - no way to know: do not refuse
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def _check_memory(n_traj: int, n_steps: int, dim: int, chunks, noise: float) -> None:
    """Refuse, before any work, sizes whose arrays would not fit in this machine's memory."""
    avail = _available_memory()
    item = 8  # float64
    rows = n_traj if chunks is None else min(chunks, n_traj)
    parts = {
        "the sample times (n_steps x 8 bytes)": n_steps * item,
        "the initial states (n_traj x dim x 8 bytes)": n_traj * dim * item,
        (
            "the output x (n_traj x n_steps x dim x 8 bytes)"
            if chunks is None
            else "one chunk of x (chunks x n_steps x dim x 8 bytes)"
        ): rows * n_steps * dim * item * (2 if noise > 0 else 1),
    }
    need = sum(parts.values())
    if need > avail:
        what, size = max(parts.items(), key=lambda kv: kv[1])
        lazy = (
            ""
            if chunks is not None
            else ", or pass chunks=K for a lazy ensemble written chunk by chunk"
        )
        raise TooLargeError(
            f"simulate(n_traj={n_traj}, n_steps={n_steps}) for a {dim}-dimensional system needs "
            f"about {_gb(need)} ({what}: {_gb(size)}) but this machine has {_gb(avail)} available; "
            f"use fewer trajectories or steps{lazy}"
        )


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
    chunks: int | None = None,
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

    chunks: None for an in-memory ``x``, or K >= 1 for a lazy one: a dask
    array chunked along ``trajectory`` (K per chunk), each chunk integrated by
    the same numba kernels when it is asked for (``.compute()``,
    ``systems.save(ds, "PATH.zarr")``, a dask.distributed cluster). Starts are
    drawn up front and noise comes from one random stream per trajectory, so
    the numbers equal those of ``chunks=None`` with the same seed. With noise,
    a lazy ensemble is integrated twice (once for the noise's standard
    deviation, chunk by chunk, once for the data).

    Every argument is checked before any work; sizes whose arrays would not
    fit in the memory available raise ``TooLargeError`` (a MemoryError and a
    ValueError) naming the size.
    """
    # --- validation, before any work ---
    if params is not None and not isinstance(params, dict):
        raise TypeError(
            f"params must be a dict of parameter overrides by name, got {type(params).__name__}"
        )
    system = get(system, **(params or {}))
    n_traj = checks.integer("n_traj", n_traj, minimum=1)
    n_steps = checks.integer("n_steps", n_steps, minimum=1)
    dt = checks.positive("dt", dt)
    rtol = checks.positive("rtol", rtol)
    atol = checks.positive("atol", atol)
    transient = checks.real("transient", transient, minimum=0.0)
    noise = checks.real("noise", noise, minimum=0.0)
    substeps = checks.integer("substeps", substeps, minimum=1)
    if max_steps is not None:
        max_steps = checks.integer("max_steps", max_steps, minimum=1)
    method_tableau(method)
    if seed is not None:
        seed = checks.integer("seed", seed, minimum=0)
    if chunks is not None:
        chunks = checks.integer(
            "chunks",
            chunks,
            minimum=1,
            fix="pass the trajectories per chunk of a lazy ensemble, or None for an in-memory "
                "array",
        )
    _check_memory(n_traj, n_steps, system.dim, chunks, noise)
    if x0 is not None:
        x0 = np.array(x0, dtype=np.float64)
        if x0.shape == (system.dim,):
            x0 = np.broadcast_to(x0, (n_traj, system.dim)).copy()
        if x0.shape != (n_traj, system.dim):
            raise ValueError(
                f"x0 must have shape ({system.dim},) or (n_traj, dim) = ({n_traj}, {system.dim}) "
                f"for {system.name!r}, got {x0.shape}; pass one state per trajectory or x0=None to "
                "sample on the attractor"
            )
        if not np.all(np.isfinite(x0)):
            bad = int(np.argwhere(~np.isfinite(x0))[0][0])
            raise ValueError(
                f"x0 contains NaN or inf (trajectory {bad}: {x0[bad]}); give finite initial states"
            )

    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    rng = np.random.default_rng(seed)
    kw = dict(method=method, rtol=rtol, atol=atol, substeps=substeps, max_steps=max_steps)

    if x0 is None:
        x0 = sample_initial_conditions(system, n_traj, rng, max_steps=max_steps)
    t = transient + dt * np.arange(n_steps)
    plan = _Plan(system, t, transient, dt, kw, noise, seed)
    if chunks is None:
        x = plan.clean(x0, progress=progress)
        if noise > 0:
            plan.add_noise(x, 0, _ensemble_std(*_moments(x), n_steps))
    else:
        x = _lazy(plan, x0, chunks)

    return _to_dataset(
        system, x, t, method, rtol, atol, dt, seed, transient, noise, substeps, n_traj
    )


def _run(
    system: System, x0: np.ndarray, t: np.ndarray, kw: dict, progress: bool | None
) -> np.ndarray:
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


class _Plan:
    """Everything one block of trajectories needs (system, times, solver options, noise); picklable.

    A catalogued system travels by name and parameters (a worker process looks
    it up and loads its cached kernels); a user-defined one is pickled whole.
    """

    def __init__(
        self,
        system: System,
        t: np.ndarray,
        transient: float,
        dt: float,
        kw: dict,
        noise: float,
        seed: int,
    ):
        self.system, self.t, self.transient, self.dt = system, t, transient, dt
        self.kw, self.noise, self.seed = kw, noise, seed

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if is_catalogued(self.system):
            state["system"] = (self.system.name, dict(self.system.params))
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["system"], tuple):
            name, params = state["system"]
            state["system"] = get(name, **params)
        self.__dict__.update(state)

    def clean(self, x0: np.ndarray, offset: int = 0, progress: bool | None = False) -> np.ndarray:
        """States (k, T, D) of trajectories ``offset .. offset + k`` from their starts x0 (k, D)."""
        try:
            if self.transient > 0:
                sub = self.kw["substeps"]
                n_sub = max(sub, int(math.ceil(self.transient / self.dt)) * sub)
                x0 = integrate(self.system, x0, np.array([0.0, self.transient]),
                               **{**self.kw, "substeps": n_sub}).x[:, -1]
            return _run(self.system, x0, self.t, self.kw, progress)
        except IntegrationError as err:
            if not offset:
                raise
            i = err.trajectory
            msg = str(err).replace(f"trajectory {i} ", f"trajectory {i + offset} ", 1)
            raise type(err)(msg, i + offset, err.time) from None

    def add_noise(self, x: np.ndarray, offset: int, std: np.ndarray) -> np.ndarray:
        """Add noise * std * N(0, 1) to x (k, T, D) in place; trajectory i draws from its own
        stream."""
        for i in range(x.shape[0]):
            ss = np.random.SeedSequence(self.seed, spawn_key=(_NOISE_STREAM, offset + i))
            x[i] += self.noise * std * np.random.default_rng(ss).standard_normal(x.shape[1:])
        return x

    def block(self, x0: np.ndarray, offset: int, std) -> np.ndarray:
        """One chunk (k, T, D) of the ensemble, noise included."""
        x = self.clean(x0, offset)
        return x if std is None else self.add_noise(x, offset, std)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-trajectory means and summed squared deviations, each (k, D), from x (k, T, D).

    Computed one trajectory at a time, so a chunk gives bit for bit the rows
    the whole ensemble gives.
    """
    means = np.empty((x.shape[0], x.shape[2]))
    m2 = np.empty_like(means)
    for i in range(x.shape[0]):
        means[i] = x[i].mean(axis=0)
        m2[i] = ((x[i] - means[i]) ** 2).sum(axis=0)
    return means, m2


def _ensemble_std(means: np.ndarray, m2: np.ndarray, n_steps: int) -> np.ndarray:
    """Standard deviation (D,) over all trajectories and times from per-trajectory moments (N,
    D)."""
    mean = means.mean(axis=0)
    total = m2.sum(axis=0) + n_steps * ((means - mean) ** 2).sum(axis=0)
    return np.sqrt(total / (means.shape[0] * n_steps))


def _streamed_std(plan: _Plan, x0: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
    """The ensemble's standard deviation (D,), one chunk in memory at a time."""
    parts = [_moments(plan.clean(x0[a:b], a)) for a, b in bounds]
    means = np.concatenate([p[0] for p in parts])
    m2 = np.concatenate([p[1] for p in parts])
    return _ensemble_std(means, m2, plan.t.size)


def _block(plan: _Plan, x0: np.ndarray, offset: int, std) -> np.ndarray:
    return plan.block(x0, offset, std)


def _lazy(plan: _Plan, x0: np.ndarray, chunks: int):
    """x as a dask array (n, T, D) chunked (chunks, T, D) along trajectory; nothing computed yet."""
    import uuid

    import dask
    import dask.array as da

    n, T, D = x0.shape[0], plan.t.size, plan.system.dim
    token = uuid.uuid4().hex[:12]
    p = dask.delayed(plan, name=f"simulate-plan-{token}")
    bounds = [(a, min(a + chunks, n)) for a in range(0, n, chunks)]
    std = None
    if plan.noise > 0:
        std = dask.delayed(_streamed_std)(p, x0, bounds, dask_key_name=f"simulate-std-{token}")
    blocks = [
        da.from_delayed(
            dask.delayed(_block)(p, x0[a:b], a, std, dask_key_name=f"simulate-{token}-{a}"),
            shape=(b - a, T, D),
            dtype=np.float64,
            name=f"simulate-x-{token}-{a}",
        )
        for a, b in bounds
    ]
    return da.concatenate(blocks, axis=0)


def _to_dataset(
    system, x, t, method, rtol, atol, dt, seed, transient, noise, substeps, n_traj
) -> xr.Dataset:
    params = {k: float(v) for k, v in system.params.items()}
    attrs = {
        "system": system.name,
        "parameters": json.dumps(params),
        **{f"param_{k}": v for k, v in params.items()},
        "method": method,
        "adaptive": int(method_tableau(method)[1]),
        "rtol": rtol,
        "atol": atol,
        "substeps": substeps,
        "dt": dt,
        "seed": seed,
        "transient": transient,
        "noise": noise,
        "package": "systems",
        "version": __version__,
        "created_by": f"systems.simulate (systems {__version__})",
    }
    if system.lyapunov_max:
        attrs["lyapunov_max"] = float(system.lyapunov_max)
        attrs["lyapunov_time"] = float(system.lyapunov_time)
        if system.lyapunov_citation:
            attrs["lyapunov_citation"] = system.lyapunov_citation
    if system.metadata.get("source"):  # where the equations come from, e.g. "dysts 0.96"
        attrs["source"] = str(system.metadata["source"])
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
    # units "1": the catalogue's states and times are dimensionless
    from .dataset import cf_conventions

    return cf_conventions(ds)
