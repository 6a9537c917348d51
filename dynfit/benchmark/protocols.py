"""Benchmark protocols: how a forecasting problem is made from a flow (data, noise, held-out truth).

A :class:`Problem` holds what every method sees and what it is scored against:
``train`` (N, T, D) observations (noisy when asked), ``dt``, held-out
``starts`` (B, D) with their clean ``truth`` (B, n_forecast, D) and the clean
``history`` (B, W, D) that ends at each start (for reservoir models' warm-up),
the attractor's per-component ``std``, the ``lyapunov_time`` (and where it comes
from), and two clean long runs for the climate scores.

Protocols (docs/benchmark.md):

- ``gilpin`` (Gilpin 2023): one trajectory sampled at 100 points per period of
  the flow; the first 10 periods (1000 samples) are the training data, the
  forecasts start from points that follow them on the same trajectory.
- ``ensemble``: several training trajectories from starts drawn on the
  attractor, many held-out starts on other trajectories of the attractor.

Observation noise is Gaussian with standard deviation ``noise`` times each
component's standard deviation, added to the training data only. The truth
comes from an adaptive integration (DOP853 at 1e-12); a second one at 1e-10
from the same starts gives the reference's own valid time, recorded beside it.
Where a switching right-hand side defeats 1e-12 (stick-slip friction), the pair
1e-10 / 1e-8 is used instead and named in the attrs (``REFERENCE_LADDER``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from systems import checks

__all__ = [
    "PROTOCOLS",
    "Problem",
    "ProtocolSettings",
    "make_problem",
    "resolve_system",
    "sampling_period",
]

PROTOCOLS = ("gilpin", "ensemble")
POINTS_PER_PERIOD = 100
REFERENCE = {"method": "dop853", "rtol": 1e-12, "atol": 1e-12}
CHECK = {"method": "dop853", "rtol": 1e-10, "atol": 1e-10}
# per trajectory: the reference integrations of stiff flows take many tiny steps
MAX_STEPS = 10_000_000
# (reference, check) pairs tried in order: a flow whose right-hand side switches (a stick-slip
# friction law slides along the switching surface) cannot be followed at 1e-12; the first pair
# whose spin-up finishes within PROBE_STEPS a trajectory is used and recorded in the attrs
REFERENCE_LADDER = (
    (REFERENCE, CHECK),
    (
        {"method": "dop853", "rtol": 1e-10, "atol": 1e-10},
        {"method": "dop853", "rtol": 1e-8, "atol": 1e-8},
    ),
)
PROBE_STEPS = 1_000_000
MAX_EFOLDINGS_PER_PERIOD = 50.0  # a stored exponent above this many e-foldings a period is not used


@dataclass(frozen=True)
class ProtocolSettings:
    """Sizes of a protocol's data, in samples (forecast and climate lengths in Lyapunov times)."""

    n_train: int  # training trajectories
    train_len: int  # samples per training trajectory
    n_starts: int  # held-out starts
    warmup: int  # samples of clean history before each start
    forecast_lt: float  # forecast length in Lyapunov times (capped by max_forecast samples)
    max_forecast: int
    climate_len: int  # samples of each long run for the climate scores


SETTINGS = {
    "gilpin": ProtocolSettings(
        n_train=1,
        train_len=10 * POINTS_PER_PERIOD,
        n_starts=5,
        warmup=100,
        forecast_lt=20.0,
        max_forecast=3000,
        climate_len=3000,
    ),
    "ensemble": ProtocolSettings(
        n_train=8,
        train_len=2000,
        n_starts=20,
        warmup=100,
        forecast_lt=20.0,
        max_forecast=3000,
        climate_len=3000,
    ),
}
QUICK = ProtocolSettings(
    n_train=2,
    train_len=300,
    n_starts=3,
    warmup=30,
    forecast_lt=3.0,
    max_forecast=300,
    climate_len=400,
)


@dataclass
class Problem:
    """One forecasting problem (see the module docstring); arrays in physical units, float64."""

    system: str
    protocol: str
    noise: float
    seed: int
    dt: float
    train: np.ndarray  # (N, T, D), with observation noise
    starts: np.ndarray  # (B, D)
    history: np.ndarray  # (B, W, D), clean, history[:, -1] == starts
    truth: np.ndarray  # (B, n_forecast, D), clean, truth[:, 0] == starts
    std: np.ndarray  # (D,) attractor standard deviation per component (clean data)
    lyapunov_time: float
    lyapunov_source: str
    # LT over which the reference agrees with a second solver (median, threshold 0.4)
    reference_valid_time: float
    climate: tuple  # two clean long runs (L, D) from different starts
    climate_history: np.ndarray  # (W, D) clean samples ending at climate[0][0]
    components: tuple = ()
    attrs: dict = field(default_factory=dict)

    @property
    def n_forecast(self) -> int:
        return self.truth.shape[1]


def resolve_system(name: str):
    """A ``systems.System`` from a catalogue name (``lorenz63``, ``lorenz96:N=10``) or a dysts name
    (``Lorenz``, ``ArnoldBeltramiChildress``). Parameters after a colon:
    ``name:key=value,key=value``.
    """
    import systems

    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"system name must be a non-empty string such as 'lorenz63' or 'Lorenz', got {name!r}"
        )
    base, _, rest = name.strip().partition(":")
    params = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            eq = ""
        if not eq:
            raise ValueError(
                f"system {name!r}: parameters go as name:key=value,key=value (numbers), "
                f"got {part!r}"
            )
    if base in systems.names():
        return systems.get(base, **params)
    try:
        dysts_names = systems.dysts_names()
    except ImportError:
        dysts_names = []
    if base in dysts_names:
        return systems.from_dysts(base, **params)
    if base.lower() in systems.names():
        return systems.get(base.lower(), **params)
    import difflib

    close = difflib.get_close_matches(
        base, list(systems.names()) + list(dysts_names), n=5, cutoff=0.5
    )
    raise ValueError(
        f"unknown system {name!r}: neither a catalogue name (systems.names()) nor a dysts flow "
        f"(systems.dysts_names()); close names: {close or 'none'}"
    )


def sampling_period(system) -> tuple[float, str]:
    """(period, source): dysts' metadata period, else the period of the dominant frequency of a
    simulated trajectory (the way dysts computes its own)."""
    meta = getattr(system, "metadata", {}) or {}
    period = meta.get("period")
    if period is not None and math.isfinite(float(period)) and float(period) > 0:
        return float(period), "dysts metadata"
    import systems

    dt = float(system.dt)
    ds = systems.simulate(
        system, n_traj=1, n_steps=2**14, dt=dt, seed=12345, progress=False, max_steps=MAX_STEPS
    )
    x = ds.x.values[0]
    x = x - x.mean(axis=0)
    power = (np.abs(np.fft.rfft(x, axis=0)) ** 2).sum(axis=1)
    freqs = np.fft.rfftfreq(x.shape[0], d=dt)
    k = 1 + int(np.argmax(power[1:]))
    return float(1.0 / freqs[k]), "dominant frequency of a simulated trajectory"


def _lyapunov(system, dt: float) -> tuple[float, str]:
    """(largest exponent, source): the catalogue's reference value, our stored estimate for a dysts
    flow,
    else a QR run of our own."""
    import systems

    meta = getattr(system, "metadata", {}) or {}
    ours = meta.get("lyapunov_max_computed")
    period = dt * POINTS_PER_PERIOD
    if ours is not None and float(ours) * period > MAX_EFOLDINGS_PER_PERIOD:
        ours = None  # a blown-up estimate (ArnoldWeb's: 6e4 e-foldings a period)
    if meta.get("source", "").startswith("dysts"):
        if ours is not None and float(ours) > 0:
            return float(ours), "systems estimate (examples/dysts_lyapunov.py)"
    elif system.lyapunov_max is not None and float(system.lyapunov_max) > 0:
        return float(system.lyapunov_max), "catalogue reference value"
    if system.jac is not None:
        try:
            lam = float(systems.lyapunov_spectrum(system, n_steps=20000, dt=dt, k=1)[0])
        except systems.IntegrationError:  # a stiff flow's tangent run blew up at this dt
            lam = math.nan
        if lam > 0:
            return lam, "QR run (systems.lyapunov_spectrum, 20000 steps)"
    if system.lyapunov_max is not None and float(system.lyapunov_max) > 0:
        return float(system.lyapunov_max), "dysts metadata estimate"
    raise ValueError(
        f"system {system.name!r} has no positive largest Lyapunov exponent (reference, estimate or "
        "QR run): it is not chaotic at these parameters and a VPT in Lyapunov times is undefined"
    )


def _simulate(system, x0, n_steps: int, dt: float, solver: dict) -> np.ndarray:
    import systems

    ds = systems.simulate(
        system,
        n_traj=x0.shape[0],
        x0=x0,
        n_steps=n_steps,
        dt=dt,
        progress=False,
        max_steps=MAX_STEPS,
        **solver,
    )
    return np.asarray(ds.x.values, dtype=np.float64)


def make_problem(
    system_name: str,
    protocol: str,
    *,
    noise: float = 0.0,
    seed: int = 0,
    quick: bool = False,
    cache=None,
) -> Problem:
    """The problem of ``protocol`` for one flow, noise level and seed (deterministic in all three).

    cache: a folder where the clean problem of (flow, protocol, seed) is kept (``.npz``, no
    pickle) and reused by every method and noise level; its name carries a digest of the code
    that makes it (this module, ``systems`` and the common base), so a change recomputes it.
    """
    checks.choice("protocol", protocol, PROTOCOLS)
    noise = checks.real(
        "noise", noise, minimum=0.0, fix="noise is a fraction of each component's std, e.g. 0.01"
    )
    seed = checks.integer("seed", seed, minimum=0)
    path = None
    if cache is not None:
        from pathlib import Path

        name = f"{system_name}-seed{seed}{'-quick' if quick else ''}-{_problem_digest()}.npz"
        path = (
            Path(cache) / protocol / "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)
        )
    clean = _read_problem(path) if path is not None and path.is_file() else None
    if clean is None:
        clean = _clean_problem(system_name, protocol, seed, quick)
        if path is not None:
            _write_problem(path, clean)
    return _with_noise(clean, noise)


_DIGEST: list[str] = []


def _problem_digest() -> str:
    """A digest of the code that makes a problem (this module, systems, the common base)."""
    if not _DIGEST:
        from pathlib import Path

        from ._digest import code_digest

        root = Path(__file__).resolve().parents[2]
        files = [Path(__file__).resolve(), *sorted((root / "systems").rglob("*.py")),
                 *sorted((root / "_dyncore").rglob("*.py"))]
        _DIGEST.append(code_digest(files, length=12))
    return _DIGEST[0]


_ARRAYS = (
    "train",
    "starts",
    "history",
    "truth",
    "std",
    "climate_a",
    "climate_b",
    "climate_history",
)


def _write_problem(path, problem: Problem) -> None:
    import io
    import json

    from systems.files import atomic_write_bytes

    meta = {
        k: getattr(problem, k)
        for k in (
            "system",
            "protocol",
            "noise",
            "seed",
            "dt",
            "lyapunov_time",
            "lyapunov_source",
            "reference_valid_time",
        )
    }
    meta.update(components=list(problem.components), attrs=problem.attrs)
    arrays = {k: getattr(problem, k) for k in _ARRAYS if hasattr(problem, k)}
    arrays["climate_a"], arrays["climate_b"] = problem.climate
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def _read_problem(path) -> Problem | None:
    """The cached clean problem at ``path``, or None when it is unreadable (then it is remade)."""
    import json

    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: np.asarray(f[k], dtype=np.float64) for k in _ARRAYS}
    except (OSError, ValueError, KeyError):
        return None
    climate = (arrays.pop("climate_a"), arrays.pop("climate_b"))
    return Problem(
        **{
            k: meta[k]
            for k in (
                "system",
                "protocol",
                "noise",
                "seed",
                "dt",
                "lyapunov_time",
                "lyapunov_source",
                "reference_valid_time",
            )
        },
        climate=climate,
        components=tuple(meta["components"]),
        attrs=meta["attrs"],
        **arrays,
    )


def _with_noise(clean: Problem, noise: float) -> Problem:
    """``clean`` with observation noise of ``noise`` x each component's std on the training data."""
    import dataclasses

    if noise == 0:
        return clean
    rng = np.random.default_rng([clean.seed, 104729])
    train = clean.train + noise * clean.std * rng.standard_normal(clean.train.shape)
    return dataclasses.replace(clean, train=train, noise=float(noise))


def _clean_problem(system_name: str, protocol: str, seed: int, quick: bool) -> Problem:
    system = resolve_system(system_name)
    s = QUICK if quick else SETTINGS[protocol]
    period, period_source = sampling_period(system)
    dt = period / POINTS_PER_PERIOD
    lam, lam_source = _lyapunov(system, dt)
    lt = 1.0 / lam
    n_forecast = max(10, min(s.max_forecast, int(math.ceil(s.forecast_lt * lt / dt)) + 1))
    rng = np.random.default_rng([seed, 7919])
    import systems

    # starts on the attractor: a long transient from drawn initial states (systems.simulate draws
    # them)
    n_traj = s.n_train + (1 if protocol == "gilpin" else s.n_starts) + 2
    spin_seed = int(rng.integers(2**31))
    for rung, (reference, check_solver) in enumerate(REFERENCE_LADDER):
        try:
            spin = systems.simulate(
                system,
                n_traj=n_traj,
                n_steps=2,
                dt=dt,
                seed=spin_seed,
                transient=max(20.0 * lt, 50.0 * period) if not quick else 5.0 * period,
                progress=False,
                max_steps=PROBE_STEPS if rung + 1 < len(REFERENCE_LADDER) else MAX_STEPS,
                **reference,
            )
            break
        except systems.IntegrationError:
            if rung + 1 == len(REFERENCE_LADDER):
                raise
    x0 = np.asarray(spin.x.values[:, -1], dtype=np.float64)
    if protocol == "gilpin":
        # one trajectory: training, then the forecast starts on its continuation, spaced one period
        # apart
        gap = POINTS_PER_PERIOD
        total = s.train_len + (s.n_starts - 1) * gap + n_forecast
        traj = _simulate(system, x0[:1], total, dt, reference)[0]
        clean_train = traj[None, : s.train_len]
        idx = s.train_len - 1 + gap * np.arange(s.n_starts)
        warm = min(s.warmup, s.train_len)
        history = np.stack([traj[i - warm + 1 : i + 1] for i in idx])
        truth = np.stack([traj[i : i + n_forecast] for i in idx])
        check = _simulate(system, truth[:, 0], n_forecast, dt, check_solver)
    else:
        clean_train = _simulate(system, x0[: s.n_train], s.train_len, dt, reference)
        held = _simulate(
            system, x0[s.n_train : s.n_train + s.n_starts], s.warmup + n_forecast - 1, dt, reference
        )
        history = held[:, : s.warmup]
        truth = held[:, s.warmup - 1 :]
        check = _simulate(system, truth[:, 0], n_forecast, dt, check_solver)
    long_runs = _simulate(system, x0[-2:], s.warmup + s.climate_len - 1, dt, reference)
    climate = (long_runs[0, s.warmup - 1 :], long_runs[1, s.warmup - 1 :])
    std = clean_train.reshape(-1, clean_train.shape[-1]).std(axis=0)
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        std = np.concatenate([clean_train.reshape(-1, std.size), climate[0]]).std(axis=0)
    std = np.where(std > 0, std, 1.0)
    train = clean_train.copy()
    from ..diagnostics.vpt import valid_prediction_time

    ref_vt = valid_prediction_time(
        truth, check, dt=dt, lyapunov_time=lt, std=std, thresholds=(0.4,)
    )[..., 0]
    return Problem(
        system=system_name,
        protocol=protocol,
        noise=0.0,
        seed=int(seed),
        dt=float(dt),
        train=train,
        starts=truth[:, 0].copy(),
        history=history,
        truth=truth,
        std=std,
        lyapunov_time=float(lt),
        lyapunov_source=lam_source,
        reference_valid_time=float(np.median(ref_vt)),
        climate=climate,
        climate_history=long_runs[0, : s.warmup],
        components=tuple(system.components),
        attrs={
            "period": period,
            "period_source": period_source,
            "reference_solver": f"{reference['method']} rtol {reference['rtol']:g}",
            "reference_check_solver": f"{check_solver['method']} rtol {check_solver['rtol']:g}",
            "reference_valid_time_capped": bool(
                np.all(ref_vt >= (n_forecast - 1) * dt / lt - 1e-12)
            ),
            "quick": bool(quick),
        },
    )
