"""The forecasting methods of the benchmark: dynfit and the peers a user would pick instead.

One interface for all (:class:`Method`)::

    m = make("esn", seed=0, budget=60.0)      # budget: CPU seconds of the fit (None: no limit)
    m.fit(trajectories, dt)                   # (N, T, D) float64, physical units, maybe noisy
    pred = m.forecast(starts, n_steps, history=history)   # (B, n_steps, D), row 0 == starts
    f = m.vector_field()                      # x (B, D) -> dx/dt (B, D), or None
    m.settings                                # every setting and the search done (JSON-able)

``history`` (B, W, D) holds clean samples ending at the starts (``history[:, -1] ==
starts``); the reservoir models (esn, nvar) warm up on it and need at least
``m.history_length`` samples, the ODE models ignore it. Free runs that blow up
or leave 100x the data's range are NaN from there on (the benchmark scores them).

Names (``METHODS``): dynfit, dynfit-mlp, pysindy, pysindy-tuned, esn, nvar,
torchdiffeq (``make("torchdiffeq", variant="gilpin")``: Gilpin 2023's baseline; default "strong").
Each one's settings, search and sources: docs/benchmark_methods.md.
The searches choose by free-run error on a validation split (:class:`Validation`).
"""
from __future__ import annotations

import importlib
import inspect
import itertools
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

from systems import checks

from .._threads import one_thread

__all__ = ["METHODS", "Method", "Validation", "method_names", "missing", "make"]

PEER_FIX = 'pip install "dynfit[bench]"'
BLOWUP_FACTOR = 100.0      # a free run this many data ranges from the data's mean is NaN
WALL_SAFETY = 10.0         # dynfit's wall-time limit in budgets (a safety net for a hang; the
#                            CPU clock rules, so a loaded machine must not reach it)
VALID_THRESHOLD = 0.4      # normalised error that ends a valid validation forecast
SMOOTH_MIN_SAMPLES = 10    # a validation part shorter than 4x this is never smoothed


# ------------------------------------------------------------------ shared helpers
class _Clock:
    """CPU-time budget of one fit (None: unlimited): the process's CPU seconds, so a fit gets the
    same compute however busy the machine is (fits run single-threaded)."""

    def __init__(self, budget: float | None):
        self.budget = budget
        self.start = time.process_time()
        self.wall_start = time.perf_counter()

    def elapsed(self) -> float:
        return time.process_time() - self.start

    def wall(self) -> float:
        return time.perf_counter() - self.wall_start

    def left(self) -> float:
        return math.inf if self.budget is None else self.budget - self.elapsed()

    def up(self, fraction: float = 1.0) -> bool:
        return self.budget is not None and self.elapsed() >= fraction * self.budget


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _version(package: str) -> str:
    try:
        return str(importlib.import_module(package).__version__)
    except (ImportError, AttributeError):
        return "unknown"


def _blown(x: np.ndarray, center: np.ndarray, bound: float) -> np.ndarray:
    """(...,) True where a state is non-finite or further than bound from center (any component)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return ~np.all(np.isfinite(x) & (np.abs(x - center) <= bound), axis=-1)


def _nan_after_blowup(out: np.ndarray, center: np.ndarray, bound: float) -> np.ndarray:
    """out (B, T, D) with every row from a start's first blown-up state on set to NaN."""
    bad = np.logical_or.accumulate(_blown(out, center, bound), axis=1)
    out[bad] = np.nan
    return out


def _free_run(solve, z0: np.ndarray, n_steps: int, *, chunk: int, center,
              bound: float) -> np.ndarray:
    """Integrate a batch in chunks, isolating failures per start; (B, n_steps, D), row 0 = z0.

    solve(z (b, D), k) -> (b, k + 1, D), row 0 = z (NaN rows where it failed), or raises.
    A start that fails or blows up is NaN from there on and leaves the batch.
    """
    b, d = z0.shape
    out = np.full((b, n_steps, d), np.nan)
    out[:, 0] = z0
    alive = np.flatnonzero(~_blown(z0, center, bound))
    k0 = 0
    while k0 < n_steps - 1 and alive.size:
        k = min(chunk, n_steps - 1 - k0)
        z = out[alive, k0]
        seg = _try(solve, z, k)
        if seg is None or _blown(seg[:, -1], center, bound).any():
            seg = np.concatenate([_try(solve, z[i:i + 1], k, nan_shape=(1, k + 1, d))
                                  for i in range(len(z))])
        seg = _nan_after_blowup(seg, center, bound)
        out[alive, k0:k0 + k + 1] = seg
        alive = alive[~_blown(seg[:, -1], center, bound)]
        k0 += k
    return out


def _try(solve, z, k, nan_shape=None):
    try:
        return np.asarray(solve(z, k), dtype=np.float64)
    except Exception:  # noqa: BLE001 - a peer's integrator failing on a blown-up model is a result
        if nan_shape is None:
            return None
        out = np.full(nan_shape, np.nan)
        out[:, 0] = z
        return out


def _rk4(f, z0: np.ndarray, n_steps: int, dt: float, substeps: int = 2) -> np.ndarray:
    """Classical RK4 free run of f(z (B, D)) -> (B, D): (B, n_steps, D), ``substeps`` per sample."""
    h = dt / substeps
    out = np.empty((z0.shape[0], n_steps, z0.shape[1]))
    out[:, 0] = z = z0
    with np.errstate(all="ignore"):
        for k in range(1, n_steps):
            for _ in range(substeps):
                k1 = f(z)
                k2 = f(z + 0.5 * h * k1)
                k3 = f(z + 0.5 * h * k2)
                k4 = f(z + h * k3)
                z = z + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            out[:, k] = z
    return out


def _solve_ivp_run(f, dt: float, *, center, bound: float, rtol: float = 1e-10, atol: float = 1e-10,
                   method: str = "DOP853", max_evals_per_step: int = 2000):
    """solve(z (b, D), k) for :func:`_free_run`: scipy solve_ivp of a batched numpy field."""
    from scipy.integrate import solve_ivp

    def solve(z, k):
        b, d = z.shape
        count = [0]

        def rhs(t, y):
            count[0] += 1
            if count[0] > max_evals_per_step * k:
                raise RuntimeError("too many field evaluations (stiff or blowing up)")
            return f(y.reshape(b, d)).ravel()

        def escape(t, y):
            return bound - np.max(np.abs(y.reshape(b, d) - center))
        escape.terminal = True

        t_eval = np.arange(k + 1) * dt
        sol = solve_ivp(rhs, (0.0, t_eval[-1]), z.ravel(), method=method, t_eval=t_eval, rtol=rtol,
                        atol=atol, events=escape)
        out = np.full((b, k + 1, d), np.nan)
        got = sol.y.T.reshape(-1, b, d).transpose(1, 0, 2)
        out[:, :got.shape[1]] = got
        return out
    return solve


# ------------------------------------------------------------------ validation split
@dataclass
class Validation:
    """A validation split of (N, T, D) trajectories and the free-run score the searches use.

    N >= 3: the last round(N / 5) trajectories are held out (at least one); else
    each trajectory's last 20% is. ``train`` (N', T', D) is what candidates fit;
    ``history`` (B, W, D) and ``truth`` (B, H + 1, D) (row 0 = the start) are the
    validation forecasts' warm-up and target, starts spread evenly over the
    held-out part. ``score(pred)`` -> (mean fraction of the horizon before the
    normalised error first exceeds 0.4, minus the mean normalised error capped
    at 1): larger is better, compared as a tuple.

    Noisy data (white noise found by :func:`dynfit.smoothing.noise_is_white`):
    the held-out part is Savitzky-Golay smoothed (window by Mallows' Cp) before
    warm-ups and targets are cut, so a candidate is scored from clean-like starts
    against a clean-like truth, as the benchmark's test starts are; ``denoised``
    says whether it was. Every method's search gets the same split.
    """
    train: np.ndarray
    history: np.ndarray
    truth: np.ndarray
    std: np.ndarray
    denoised: bool = False

    @classmethod
    def split(cls, x: np.ndarray, *, history: int = 1, horizon: int = 500,
              n_starts: int = 12) -> "Validation":
        n, t, d = x.shape
        history = max(1, int(history))
        if n >= 3:
            n_val = max(1, round(n / 5))
            train, held, lo = x[:n - n_val], x[n - n_val:], history - 1
        else:
            cut = int(0.8 * t)
            train, held, lo = x[:, :cut], x, max(cut, history - 1)
        h = min(horizon, max(2, (t - 1 - lo) // 2))
        if t - 1 - lo < h:
            raise ValueError(f"trajectories of {t} samples are too short for a validation split "
                             f"with a warm-up of {history} samples; give longer trajectories "
                             f"(>= {history + 40})")
        held, denoised = _denoise(held)
        per = max(1, math.ceil(n_starts / len(held)))
        idx = np.unique(np.linspace(lo, t - 1 - h, per).round().astype(int))
        hist = np.stack([traj[i - history + 1:i + 1] for traj in held for i in idx])
        truth = np.stack([traj[i:i + h + 1] for traj in held for i in idx])
        std = train.reshape(-1, d).std(axis=0)
        return cls(train, hist, truth, np.where(std > 0, std, 1.0), denoised)

    @property
    def starts(self) -> np.ndarray:
        return self.history[:, -1]

    @property
    def n_steps(self) -> int:
        return self.truth.shape[1]

    def score(self, pred: np.ndarray) -> tuple[float, float]:
        with np.errstate(invalid="ignore", over="ignore"):
            e = np.sqrt(np.mean(((pred - self.truth) / self.std) ** 2, axis=-1))
        e = np.where(np.isfinite(e), e, np.inf)
        above = e > VALID_THRESHOLD
        valid = np.where(above.any(axis=1), above.argmax(axis=1), e.shape[1] - 1) / (e.shape[1] - 1)
        return float(valid.mean()), -float(np.minimum(e, 1.0).mean())


def _denoise(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """(x smoothed where its samples hold white noise, whether any component was)."""
    from ..smoothing import noise_is_white, noise_level, savgol_window, smoothed_states

    if x.shape[1] <= 4 * SMOOTH_MIN_SAMPLES or not noise_is_white(x).any():
        return x, False
    windows = savgol_window(x, noise_level(x))
    return smoothed_states(x, windows), True


def _search(candidates, evaluate, clock: _Clock, *, fraction: float = 0.8):
    """Run evaluate(candidate) -> (score, model) in order until ``fraction`` of the budget is
    spent (at least one); returns (best candidate, best model, log of JSON-able rows)."""
    best, log = None, []
    for cand in candidates:
        if log and clock.up(fraction):
            break
        score, model = evaluate(cand)
        log.append({**cand, "score": [round(s, 6) for s in score]})
        if best is None or score > best[0]:
            best = (score, cand, model)
    return best[1], best[2], log


def _logged_score(log, cand) -> list:
    """The score a search's log holds for candidate ``cand``."""
    return next(row["score"] for row in log if all(row[k] == v for k, v in cand.items()))


# ------------------------------------------------------------------ the interface
class Method:
    """A forecasting method: fit on trajectories, free-run from starts.

    name: the benchmark's name; settings: every setting and the search done
    (JSON-able; complete after fit); history_length: the samples of history
    :meth:`forecast` needs (1: the starts alone).
    """
    name = ""
    packages: tuple = ()
    history_length = 1

    def __init__(self, *, seed: int = 0, budget: float | None = None, quick: bool = False):
        self.seed = checks.integer("seed", seed, minimum=0)
        self.budget = checks.positive("budget", budget, optional=True,
                                      fix="give the fit's budget in CPU seconds, or None")
        self.quick = checks.boolean("quick", quick)
        self.dim = None
        self.dt = None
        self.settings = {"method": self.name, "seed": self.seed, "budget": self.budget,
                         "quick": self.quick, "versions": {p: _version(p) for p in self.packages}}

    # --- public, checked
    def fit(self, trajectories, dt) -> None:
        """Fit to trajectories (N, T, D) (or one (T, D)) sampled every dt, physical units."""
        x = checks.finite_array("trajectories", trajectories,
                                fix="give an array (N, T, D) of finite samples "
                                    "(trajectory, time, component)")
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1] < 40 or x.shape[2] < 1:
            raise ValueError(f"trajectories must have shape (N, T, D) with T >= 40 samples, got "
                             f"shape {x.shape}; give (trajectory, time, component) arrays")
        self.dt = checks.positive("dt", dt, fix="give the sampling interval of the trajectories")
        self.dim = x.shape[2]
        scale = x.reshape(-1, self.dim)
        self._center = scale.mean(axis=0)
        self._bound = BLOWUP_FACTOR * float(np.max(scale.max(axis=0) - scale.min(axis=0)) or 1.0)
        clock = _Clock(self.budget)
        self._fit(x, self.dt, clock)
        self.settings.update({"budget_clock": "CPU seconds of the single-threaded fit",
                              "fit_seconds": round(clock.wall(), 3),
                              "fit_cpu_seconds": round(clock.elapsed(), 3)})

    def forecast(self, starts, n_steps, history=None) -> np.ndarray:
        """Free run (B, n_steps, D) from starts (B, D), row 0 == starts; history (B, W, D) or
        None."""
        if self.dim is None:
            raise RuntimeError(f"method {self.name!r} is not fitted; call fit(trajectories, dt) "
                               "first")
        starts = checks.finite_array("starts", starts, shape=(None, self.dim),
                                     fix=f"give the start states as an array (B, {self.dim})")
        n_steps = checks.integer("n_steps", n_steps, minimum=1)
        if history is not None:
            history = checks.finite_array(
                "history", history, shape=(len(starts), None, self.dim),
                fix=f"give history as (B, W, D) = ({len(starts)}, W, {self.dim}) clean samples "
                    "ending at the starts")
            if history.shape[1] < 1 or not np.allclose(history[:, -1], starts, rtol=1e-12,
                                                       atol=1e-12):
                raise ValueError("history[:, -1] must equal starts (the history ends at the "
                                 "start); give the W samples up to and including each start")
        if self.history_length > 1 and (history is None or history.shape[1] < self.history_length):
            got = "None" if history is None else f"{history.shape[1]} samples"
            raise ValueError(f"method {self.name!r} warms up on history: it needs history "
                             f"(B, W, D) with W >= {self.history_length}, got {got}; pass the "
                             "samples before each start")
        out = np.asarray(self._forecast(starts, n_steps, history), dtype=np.float64)
        out[:, 0] = starts
        return _nan_after_blowup(out, self._center, self._bound)

    def vector_field(self):
        """f(x (B, D)) -> dx/dt (B, D) physical, or None when the model has no vector field."""
        return None

    # --- per method
    def _fit(self, x, dt, clock):
        raise NotImplementedError

    def _forecast(self, starts, n_steps, history):
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} seed={self.seed} budget={self.budget} "
                f"quick={self.quick}>")


# ------------------------------------------------------------------ dynfit
def _fit_accepts(option: str) -> bool:
    """Whether dynfit.fit takes ``option`` (a parameter, or a field of one of its settings
    objects)."""
    import dataclasses

    import dynfit
    from dynfit import config

    if option in inspect.signature(dynfit.fit).parameters:
        return True
    return any(dataclasses.is_dataclass(c) and option in {f.name for f in dataclasses.fields(c)}
               for c in vars(config).values() if isinstance(c, type))


class DynfitMethod(Method):
    """dynfit.fit with its defaults; stopped on the CPU budget by an epoch callback."""
    name = "dynfit"
    packages = ("dynfit", "torch")
    field = None        # None: fit's default field
    epochs = 100        # LoopSettings' default (quick: one epoch of 3 L-BFGS iterations)

    def _options(self) -> dict:
        opts = {"seed": self.seed, "progress": False, "epochs": self.epochs}
        if self.quick:
            opts.update(epochs=1, lbfgs_iterations=3)
        if self.field is not None:
            opts["field"] = dict(self.field)
        return opts

    def _fit(self, x, dt, clock):
        import dynfit

        opts = self._options()
        shown = dict(opts)
        if self.budget is not None:
            last = [clock.elapsed()]

            def callback(epoch, row):
                now = clock.elapsed()
                epoch_time, last[0] = now - last[0], now
                return now + epoch_time > self.budget      # the next epoch would overrun
            opts["callback"] = callback
            shown["budget_via"] = "callback on the CPU clock"
            if _fit_accepts("time_limit"):                 # a wall-time safety net only
                opts["time_limit"] = shown["time_limit"] = WALL_SAFETY * float(self.budget)
        with one_thread():
            self.surrogate, history = dynfit.fit(x, dt=dt, **opts)
        self.settings.update({"fit_options": shown,
                              "epochs_run": int(history.sizes.get("epoch", 0)),
                              "stop_reason": str(history.attrs.get("stop_reason", "")),
                              "field_config": _jsonable(self.surrogate.field_config)})

    def _forecast(self, starts, n_steps, history):
        with one_thread():
            return self.surrogate.generate(starts, n_steps)

    def vector_field(self):
        return self.surrogate.vector_field


class DynfitMLPMethod(DynfitMethod):
    """dynfit.fit with a plain neural field (no function library)."""
    name = "dynfit-mlp"
    field = {"kind": "mlp", "width": 64, "depth": 3, "activation": "silu"}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


# ------------------------------------------------------------------ pysindy
def _sindy_field(model):
    """A fast numpy f(x (B, D)) -> (B, D) of a fitted ps.SINDy, checked against model.predict.

    Polynomial, Fourier and their concatenation are evaluated directly (model.predict
    costs ~1 ms a call through its checks); any other library falls back to predict.
    """
    coef = np.asarray(model.coefficients(), dtype=np.float64)          # (D, n_features)
    lib = model.feature_library

    def features(x, lib=lib):
        kind = type(lib).__name__
        if kind == "PolynomialLibrary":
            return np.prod(x[:, None, :] ** lib.powers_[None], axis=2)
        if kind == "FourierLibrary":
            cols = []
            for i in range(1, lib.n_frequencies + 1):
                for j in range(x.shape[1]):
                    if lib.include_sin:
                        cols.append(np.sin(i * x[:, j]))
                    if lib.include_cos:
                        cols.append(np.cos(i * x[:, j]))
            return np.stack(cols, axis=1)
        if kind == "ConcatLibrary":
            return np.concatenate([features(x, sub) for sub in lib.libraries], axis=1)
        raise TypeError(kind)

    def fast(x):
        return features(np.asarray(x, dtype=np.float64)) @ coef.T

    def slow(x):
        return np.asarray(model.predict(np.asarray(x, dtype=np.float64)), dtype=np.float64)

    probe = (np.asarray(model.feature_library.n_features_in_ * [0.0])[None]
             + np.linspace(-1, 1, 5)[:, None])
    try:
        ok = np.allclose(fast(probe), slow(probe), rtol=1e-9,
                         atol=1e-9 * (1 + np.abs(slow(probe)).max()))
    except (TypeError, AttributeError, ValueError):
        ok = False
    return fast if ok else slow


def _sindy_equations(model) -> list[str]:
    try:
        return [str(e) for e in model.equations(precision=6)]
    except Exception:  # noqa: BLE001 - the equations are for the record only
        return []


class PySINDyMethod(Method):
    """pysindy's defaults: ps.SINDy() (degree-2 polynomials, STLSQ threshold 0.1, finite
    differences of order 2)."""
    name = "pysindy"
    packages = ("pysindy",)

    def _fit(self, x, dt, clock):
        import pysindy as ps

        self.model = ps.SINDy()
        self.model.fit([traj for traj in x], t=dt)
        self._f = _sindy_field(self.model)
        self.settings.update({"library": repr(self.model.feature_library),
                              "optimizer": repr(self.model.optimizer),
                              "differentiation": repr(self.model.differentiation_method),
                              "equations": _sindy_equations(self.model)})

    def _forecast(self, starts, n_steps, history):
        solve = _solve_ivp_run(self._f, self.dt, center=self._center, bound=self._bound)
        return _free_run(solve, starts, n_steps, chunk=200, center=self._center, bound=self._bound)

    def vector_field(self):
        return self._f


def _sindy_grid(quick: bool):
    """(libraries, thresholds, alphas, differentiations) of pysindy-tuned's search."""
    if quick:
        return ["poly2", "poly3"], [0.01, 0.1], [0.05], ["finite", "finite4"]
    return (["poly2", "poly3", "poly1", "poly4", "fourier2", "poly2+fourier1"],
            [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0], [0.05, 1e-3],
            ["finite", "finite4", "finite6", "finite8", "smoothed"])


# pysindy's own default, ps.SINDy(): always the search's first candidate
SINDY_DEFAULT = {"library": "poly2", "threshold": 0.1, "alpha": 0.05, "differentiation": "finite"}


def _sindy_differentiation(label: str):
    """pysindy differentiation by label: finite (its default, order 2), finiteK (order K),
    smoothed (Savitzky-Golay then finite differences, for noisy data)."""
    import pysindy as ps

    if label == "smoothed":
        return ps.SmoothedFiniteDifference()
    return ps.FiniteDifference(order=int(label[6:] or 2))


def _sindy_library(label: str):
    import pysindy as ps

    parts = []
    for part in label.split("+"):
        if part.startswith("poly"):
            parts.append(ps.PolynomialLibrary(degree=int(part[4:])))
        else:
            parts.append(ps.FourierLibrary(n_frequencies=int(part[7:])))
    lib = parts[0]
    for p in parts[1:]:
        lib = lib + p
    return lib


class PySINDyTunedMethod(PySINDyMethod):
    """pysindy tuned on a validation split: library, STLSQ threshold and alpha, differentiation.

    Every candidate is fitted on the training part (cheap). Within each (library,
    differentiation) the ``shortlist`` best by derivative error on the held-out part
    (against that differentiation's own derivatives there) are short-listed; pysindy's
    default is always short-listed first. The short-list is ranked by free-run validation
    score (RK4, two steps a sample) and the best refitted on all data.
    """
    name = "pysindy-tuned"
    shortlist = 2

    def _fit(self, x, dt, clock):
        val = Validation.split(x, horizon=100 if self.quick else 500)
        libs, thresholds, alphas, diff_names = _sindy_grid(self.quick)
        diffs = {k: _sindy_differentiation(k) for k in dict.fromkeys(["finite", *diff_names])}
        xdot = {k: [np.asarray(d(traj, t=dt)) for traj in val.train] for k, d in diffs.items()}
        held = np.concatenate(list(val.truth))                         # validation windows
        held_dot = {k: np.concatenate([np.asarray(d(w, t=dt)) for w in val.truth])
                    for k, d in diffs.items()}
        ranked = [dict(SINDY_DEFAULT)]
        for lib in libs:              # a budget cut (40% of it) keeps the libraries done so far
            if len(ranked) > 1 and clock.up(0.4):
                break
            for diff in diff_names:
                rows = []
                for thr, alpha in itertools.product(thresholds, alphas):
                    cand = {"library": lib, "threshold": thr, "alpha": alpha,
                            "differentiation": diff}
                    if cand == SINDY_DEFAULT:
                        continue
                    model = self._sindy(cand, val.train, dt, xdot[diff])
                    rows.append((_derivative_error(model, held, held_dot[diff]), len(rows), cand))
                ranked += [c for _, _, c in sorted(rows, key=lambda r: r[:2])[:self.shortlist]]

        def evaluate(cand):
            model = self._sindy(cand, val.train, dt, xdot[cand["differentiation"]])
            with np.errstate(all="ignore"):
                pred = _rk4(_sindy_field(model), val.starts, val.n_steps, dt)
            return val.score(_nan_after_blowup(pred, self._center, self._bound)), model

        best, _, log = _search(ranked, evaluate, clock)
        all_dot = [np.asarray(diffs[best["differentiation"]](traj, t=dt)) for traj in x]
        self.model = self._sindy(best, x, dt, all_dot)
        self._f = _sindy_field(self.model)
        self.settings.update({"grid": {"libraries": libs, "thresholds": thresholds,
                                       "alphas": alphas, "differentiation": diff_names},
                              "default_candidate": SINDY_DEFAULT,
                              "shortlist_per_library_and_differentiation": self.shortlist,
                              "search": log, "chosen": best,
                              "equations": _sindy_equations(self.model)})

    @staticmethod
    def _sindy(cand, x, dt, xdot):
        import pysindy as ps

        model = ps.SINDy(feature_library=_sindy_library(cand["library"]),
                         optimizer=ps.STLSQ(threshold=cand["threshold"], alpha=cand["alpha"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # STLSQ warns when a threshold removes every term
            model.fit([traj for traj in x], t=dt, x_dot=xdot)
        return model


def _derivative_error(model, x, xdot) -> float:
    with np.errstate(all="ignore"):
        err = np.mean((_sindy_field(model)(x) - xdot) ** 2) / np.mean((xdot - xdot.mean(0)) ** 2)
    return float(err) if np.isfinite(err) else np.inf


# ------------------------------------------------------------------ reservoirpy: ESN and NVAR
def _matmul(m, s):
    """s (B, n) times m.T for a dense or scipy-sparse m (out, n)."""
    return np.asarray((m @ s.T).T)


class _Standard:
    """Per-component standardisation of (..., D) arrays."""

    def __init__(self, x):
        flat = x.reshape(-1, x.shape[-1])
        self.mean, self.std = flat.mean(axis=0), flat.std(axis=0)
        self.std = np.where(self.std > 0, self.std, 1.0)

    def __call__(self, x):
        return (x - self.mean) / self.std

    def inverse(self, z):
        return z * self.std + self.mean


class ESNMethod(Method):
    """A reservoirpy echo state network predicting the increment of the standardised state.

    Reservoir (with a bias, which breaks the tanh reservoir's odd symmetry) >> Ridge on the
    reservoir state and the input (reservoirpy's input-to-readout connection); closed loop
    u[t+1] = u[t] + readout([s[t], u[t]]). A 500-unit search on a validation split (spectral
    radius, leak rate, input scaling, ridge), then the best reservoir at 1000 units.
    """
    name = "esn"
    packages = ("reservoirpy",)
    units = (500, 1000)          # the search's size, then the larger size tried for the best
    bias = 0.5
    warmup = 100                 # samples of each training trajectory's states the readout drops

    def __init__(self, **kw):
        super().__init__(**kw)
        self.history_length = 20 if self.quick else 100

    def _grid(self):
        """(reservoirs in search order, ridges)."""
        if self.quick:
            return [{"units": 40, "sr": 0.9, "lr": 0.5, "input_scaling": 1.0, "bias": self.bias}], \
                [1e-6, 1e-4]
        reservoirs = [{"units": self.units[0], "sr": sr, "lr": lr, "input_scaling": s,
                       "bias": self.bias}
                      for sr in (0.99, 0.6, 1.2) for lr in (1.0, 0.6, 0.3) for s in (0.3, 1.0, 0.1)]
        return reservoirs, [1e-10, 1e-8, 1e-6, 1e-4]

    def _fit(self, x, dt, clock):
        self.scaler = _Standard(x)
        z = self.scaler(x)
        val = Validation.split(z, history=self.history_length, horizon=100 if self.quick else 500)
        reservoirs, ridges = self._grid()
        cache = {}

        def evaluate(cand):
            key = tuple((k, cand[k]) for k in ("units", "sr", "lr", "input_scaling", "bias"))
            if key not in cache:
                cache.clear()
                cache[key] = self._states(cand, val.train)
            model = self._readout(cand, cache[key], val.train)
            return val.score(self._run(model, val.history, val.n_steps)), model

        candidates = [{**r, "ridge": ridge} for r in reservoirs for ridge in ridges]
        best, _, log = _search(candidates, evaluate, clock, fraction=0.6)
        if not self.quick and not clock.up(0.6):       # the best reservoir, larger
            bigger = [{**best, "units": self.units[1], "ridge": r} for r in ridges]
            best_big, _, log_big = _search(bigger, evaluate, clock)
            if _logged_score(log_big, best_big) > _logged_score(log, best):
                best = best_big
            log += log_big
        self.model = self._readout(best, self._states(best, z), z)
        self.settings.update({"connectivity": {"input": 0.2, "recurrent": 0.1},
                              "activation": "tanh",
                              "target": "increment of the standardised state",
                              "readout_features": "reservoir state and input",
                              "warmup": self._warmup(z), "history_length": self.history_length,
                              "search": log, "chosen": best})

    def _warmup(self, z):
        return min(self.warmup, z.shape[1] // 10)

    def _states(self, cand, z):
        """(reservoir, states (N, T - 1, units)): teacher-forced on z[:, :-1], batched over
        trajectories with reservoirpy's update (:meth:`_step`), each from a zero state."""
        from reservoirpy.nodes import Reservoir

        res = Reservoir(cand["units"], sr=cand["sr"], lr=cand["lr"],
                        input_scaling=cand["input_scaling"], bias=cand["bias"],
                        input_connectivity=0.2, rc_connectivity=0.1, seed=self.seed)
        res.initialize(z[0, :2])
        s = np.zeros((z.shape[0], res.units))
        states = np.empty((z.shape[0], z.shape[1] - 1, res.units))
        for k in range(z.shape[1] - 1):
            states[:, k] = s = self._step(res, s, z[:, k])
        return res, states

    @staticmethod
    def _step(res, s, u):
        """reservoirpy's Reservoir update on a batch: s (B, units), u (B, D) -> (B, units)."""
        bias = np.ravel(res.bias) if np.ndim(res.bias) else res.bias
        pre = _matmul(res.W, s) + _matmul(res.Win, u) + bias
        return (1 - res.lr) * s + res.lr * res.activation(pre)

    def _readout(self, cand, res_states, z):
        from reservoirpy.nodes import Ridge

        res, states = res_states
        feats = np.concatenate([states, z[:, :-1]], axis=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # small ridges: ill-conditioned; validation judges
            ridge = Ridge(ridge=cand["ridge"]).fit(feats, z[:, 1:] - z[:, :-1],
                                                   warmup=self._warmup(z))
        return {"reservoir": res, "readout": ridge}

    @classmethod
    def _run(cls, model, history_z, n_steps):
        """Batched teacher-forced warm-up on history, then closed loop; (B, n_steps, D)
        standardised: u[t+1] = u[t] + Ridge([s[t], u[t]]), s[t+1] = reservoir(s[t], u[t+1])."""
        res, ridge = model["reservoir"], model["readout"]
        b, _, d = history_z.shape
        s = np.zeros((b, res.units))
        for k in range(history_z.shape[1]):
            s = cls._step(res, s, history_z[:, k])
        out = np.empty((b, n_steps, d))
        out[:, 0] = u = history_z[:, -1]
        with np.errstate(all="ignore"):
            for k in range(1, n_steps):
                out[:, k] = u = u + np.concatenate([s, u], axis=1) @ ridge.Wout + ridge.bias
                if k < n_steps - 1:
                    s = cls._step(res, s, u)
        return out

    def _forecast(self, starts, n_steps, history):
        return self.scaler.inverse(self._run(self.model, self.scaler(history), n_steps))


class NVARMethod(Method):
    """reservoirpy NVAR (next-generation reservoir computing, Gauthier et al. 2021) predicting the
    increment of the standardised state; delay, strides and ridge chosen on a validation split."""
    name = "nvar"
    packages = ("reservoirpy",)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.history_length = max((k - 1) * s + 1 for k, s, _ in self._grid()[0])

    def _grid(self):
        if self.quick:
            return [(2, 1, 2)], [2.5e-6, 1e-4]
        return [(k, s, 2) for k in (2, 3) for s in (1, 2, 4, 8)], [2.5e-6, 1e-8, 1e-6, 1e-4, 1e-2]

    def _fit(self, x, dt, clock):
        self.scaler = _Standard(x)
        z = self.scaler(x)
        val = Validation.split(z, history=self.history_length, horizon=100 if self.quick else 500)
        shapes, ridges = self._grid()
        cache = {}

        def evaluate(cand):
            key = (cand["delay"], cand["strides"], cand["order"])
            if key not in cache:
                cache.clear()
                cache[key] = self._features(cand, val.train)
            model = self._readout(cand, cache[key], val.train)
            return val.score(self._run(model, val.history, val.n_steps)), model

        candidates = [{"delay": k, "strides": s, "order": o, "ridge": r}
                      for k, s, o in shapes for r in ridges]
        best, _, log = _search(candidates, evaluate, clock)
        self.model = self._readout(best, self._features(best, z), z)
        self.settings.update({"target": "increment of the standardised state", "history_length":
                              self.history_length, "search": log, "chosen": best})

    @staticmethod
    def _features(cand, z):
        from reservoirpy.nodes import NVAR

        node = NVAR(delay=cand["delay"], order=cand["order"], strides=cand["strides"])
        return node, np.asarray(node.run(z[:, :-1]))

    @staticmethod
    def _readout(cand, node_feats, z):
        from reservoirpy.nodes import Ridge

        node, feats = node_feats
        warm = (cand["delay"] - 1) * cand["strides"]
        ridge = Ridge(ridge=cand["ridge"]).fit(feats, z[:, 1:] - z[:, :-1], warmup=warm)
        return {"nvar": node, "readout": ridge, **cand}

    @staticmethod
    def _run(model, history_z, n_steps):
        """Batched NVAR free run (reservoirpy's NVAR._step features, Ridge readout, u += du)."""
        node, ridge, k, s = model["nvar"], model["readout"], model["delay"], model["strides"]
        idx = node._monomial_idx
        b, w, d = history_z.shape
        store = history_z[:, ::-1][:, :k * s]                  # newest first, as NVAR.store
        if store.shape[1] < k * s:
            store = np.concatenate([store, np.zeros((b, k * s - store.shape[1], d))], axis=1)
        out = np.empty((b, n_steps, d))
        out[:, 0] = u = history_z[:, -1]
        with np.errstate(all="ignore"):
            for t in range(1, n_steps):
                lin = store[:, ::s].reshape(b, -1)
                feats = np.concatenate([lin, np.prod(lin[:, idx], axis=2)], axis=1)
                u = u + feats @ ridge.Wout + ridge.bias
                out[:, t] = u
                store = np.concatenate([u[:, None], store[:, :-1]], axis=1)
        return out

    def _forecast(self, starts, n_steps, history):
        return self.scaler.inverse(self._run(self.model, self.scaler(history), n_steps))


# ------------------------------------------------------------------ torchdiffeq Neural ODE
def _gilpin_net(dim: int, dtype):
    """Gilpin 2023's Neural ODE field (dysts benchmarks/resources/node.py): 30 units, tanh, a SiLU
    residual block, N(0, 0.1) weights and zero biases."""
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            return self.module(x) + x

    net = nn.Sequential(nn.Linear(dim, 30), nn.Tanh(),
                        Residual(nn.Sequential(nn.Linear(30, 30), nn.SiLU(),
                                               nn.Linear(30, 30), nn.SiLU())),
                        nn.Linear(30, dim)).to(dtype)
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.1)
            nn.init.zeros_(m.bias)
    return net


def _strong_net(dim: int, dtype, width: int = 128, depth: int = 3):
    from torch import nn

    sizes = [dim] + [width] * depth
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    last = nn.Linear(width, dim)
    nn.init.normal_(last.weight, std=0.01)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last).to(dtype)


class _Autonomous:
    """f(t, z) = net(z) for torchdiffeq."""

    def __init__(self, net):
        self.net = net

    def __call__(self, t, z):
        return self.net(z)


TORCHDIFFEQ_VARIANTS = {
    # Gilpin 2023 (dysts benchmarks/node_benchmarks.py, resources/node.py): raw data, time in
    # samples, default dopri5, Adam lr 1e-2, 500 iterations of 128 windows; window length tau
    # chosen on a validation split from a subset of its grid (2, 5, 15, 30, 60, 120).
    "gilpin": {"net": "gilpin-30", "standardize": False, "solver": "dopri5", "lr": 1e-2,
               "iterations": 500, "batch": 128, "taus": [5, 15, 30]},
    # A stronger recipe: 3x128 SiLU, standardised data, windows growing 10 -> 20 -> 40 samples,
    # Adam with cosine decay (lr -> lr / 100), fixed-step RK4 at dt / 2, float64.
    "strong": {"net": "silu-3x128", "standardize": True, "solver": "rk4", "step": 0.5, "lr": 3e-3,
               "iterations": 3000, "batch": 64, "windows": [10, 20, 40]},
}
TORCHDIFFEQ_DEFAULT = "strong"   # 1.16 vs 0.98 LT on Lorenz'63 at a 90 s budget (docs)


class TorchdiffeqMethod(Method):
    """A plain torchdiffeq Neural ODE, variant "gilpin" (Gilpin 2023's baseline) or "strong"."""
    name = "torchdiffeq"
    packages = ("torchdiffeq", "torch")

    def __init__(self, *, variant: str = TORCHDIFFEQ_DEFAULT, **kw):
        super().__init__(**kw)
        self.variant = checks.choice("torchdiffeq variant", variant, sorted(TORCHDIFFEQ_VARIANTS),
                                     fix="use make('torchdiffeq', variant='gilpin') or the "
                                         f"default {TORCHDIFFEQ_DEFAULT!r}")
        cfg = dict(TORCHDIFFEQ_VARIANTS[self.variant])
        if self.quick:
            cfg.update(iterations=20, batch=16, taus=[5])
        self.cfg = cfg
        self.settings.update({"variant": self.variant, **cfg})

    def _fit(self, x, dt, clock):
        import torch

        self._dtype = torch.float64
        self._dev = _device()
        self.scaler = _Standard(x) if self.cfg["standardize"] else None
        z = self.scaler(x) if self.scaler else x
        with one_thread():
            torch.manual_seed(self.seed)
            if self.variant == "gilpin":
                self.net, info = self._fit_gilpin(z, clock)
            else:
                self.net, info = self._train(z, self.cfg["windows"], clock, budget_share=1.0)
        self.settings.update({"device": str(self._dev), "dtype": "float64", **info})

    def _fit_gilpin(self, z, clock):
        val = Validation.split(z, horizon=100 if self.quick else 200)
        taus, share = self.cfg["taus"], 1.0 / (len(self.cfg["taus"]) + 1)

        def evaluate(cand):
            net, _ = self._train(val.train, [cand["tau"]], clock, budget_share=share)
            return val.score(self._solve(net, val.starts, val.n_steps)), net

        best, net, log = _search([{"tau": t} for t in taus], evaluate, clock, fraction=1 - share)
        refit = not clock.up(1 - share)
        if refit:
            net, _ = self._train(z, [best["tau"]], clock, budget_share=1.0)
        return net, {"search": log, "chosen": best, "refit_on_all_data": refit}

    def _train(self, z, windows, clock, *, budget_share: float):
        """Adam on random windows of z (N, T, D); the window length steps through ``windows``."""
        import torch
        from torchdiffeq import odeint

        cfg, gen = self.cfg, np.random.default_rng(self.seed)
        build = _gilpin_net if self.variant == "gilpin" else _strong_net
        net = build(z.shape[2], self._dtype).to(self._dev)
        opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        data = torch.as_tensor(z, dtype=self._dtype, device=self._dev)
        n, t_len, _ = z.shape
        start, budget = clock.elapsed(), clock.left() * budget_share
        losses, it = [], 0
        for it in range(cfg["iterations"]):
            spent = (clock.elapsed() - start) / budget if budget < math.inf else 0
            progress = max(it / cfg["iterations"], spent)
            if progress >= 1.0:
                break
            win = min(windows[min(int(progress * len(windows)), len(windows) - 1)], t_len - 1)
            if self.variant == "strong":
                for g in opt.param_groups:
                    g["lr"] = cfg["lr"] * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
            traj = gen.integers(0, n, cfg["batch"])
            t0 = gen.integers(0, t_len - win, cfg["batch"])
            idx = t0[:, None] + np.arange(win + 1)
            target = data[torch.as_tensor(traj)[:, None], torch.as_tensor(idx)]  # (b, win+1, D)
            ts = torch.arange(win + 1, dtype=self._dtype, device=self._dev)
            opt.zero_grad()
            pred = odeint(_Autonomous(net), target[:, 0], ts, **self._solver()).transpose(0, 1)
            loss = torch.mean((pred - target) ** 2)
            if not torch.isfinite(loss):
                break
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return net, {"iterations_run": len(losses), "final_loss": losses[-1] if losses else None}

    def _solver(self, n_steps: int | None = None) -> dict:
        if self.cfg["solver"] == "rk4":
            return {"method": "rk4", "options": {"step_size": self.cfg["step"]}}
        opts = {"method": "dopri5"}
        if n_steps is not None:
            opts["options"] = {"max_num_steps": 100 * n_steps}
        return opts

    def _solve(self, net, z0, n_steps):
        """Free run of the net from z0 (B, D) in the model's units: (B, n_steps, D)."""
        import torch
        from torchdiffeq import odeint

        center = np.zeros(z0.shape[1]) if self.scaler else self._center
        bound = self._bound / (self.scaler.std.min() if self.scaler else 1.0)

        def solve(z, k):
            ts = torch.arange(k + 1, dtype=self._dtype, device=self._dev)
            z = torch.as_tensor(z, dtype=self._dtype, device=self._dev)
            with torch.no_grad():
                out = odeint(_Autonomous(net), z, ts, **self._solver(k))
            return out.transpose(0, 1).cpu().numpy()

        with one_thread():
            return _free_run(solve, z0, n_steps, chunk=100, center=center, bound=bound)

    def _forecast(self, starts, n_steps, history):
        if self.scaler is None:
            return self._solve(self.net, starts, n_steps)
        return self.scaler.inverse(self._solve(self.net, self.scaler(starts), n_steps))

    def vector_field(self):
        import torch

        def f(x):
            x = np.asarray(x, dtype=np.float64)
            z = self.scaler(x) if self.scaler else x
            with torch.no_grad():
                dz = self.net(torch.as_tensor(z, dtype=self._dtype, device=self._dev)).cpu().numpy()
            scale = self.scaler.std if self.scaler else 1.0
            return dz * scale / self.dt                           # time was in samples
        return f


# ------------------------------------------------------------------ registry
METHODS: dict[str, type] = {
    "dynfit": DynfitMethod,
    "dynfit-mlp": DynfitMLPMethod,
    "pysindy": PySINDyMethod,
    "pysindy-tuned": PySINDyTunedMethod,
    "esn": ESNMethod,
    "nvar": NVARMethod,
    "torchdiffeq": TorchdiffeqMethod,
}


def method_names() -> list[str]:
    """The benchmark's method names, in the order of METHODS."""
    return list(METHODS)


def _check_name(name) -> str:
    return checks.choice("method", name, METHODS, fix="see dynfit.benchmark.methods.method_names()")


def missing(names=None) -> dict[str, str]:
    """name -> why it cannot run here (a package to install), for the given names (None: all);
    {} if all can."""
    names = method_names() if names is None else [names] if isinstance(names, str) else list(names)
    out = {}
    for name in names:
        for package in METHODS[_check_name(name)].packages:
            try:
                importlib.import_module(package)
            except ImportError:
                fix = (PEER_FIX if package in ("pysindy", "reservoirpy")
                       else f"pip install {package}")
                out[name] = f"{package} is not installed: {fix}"
                break
    return out


def make(name: str, *, seed: int = 0, budget: float | None = None, quick: bool = False,
         **options) -> Method:
    """A fresh, unfitted method by name; options: the method's own (torchdiffeq: variant)."""
    cls = METHODS[_check_name(name)]
    allowed = (set(inspect.signature(cls.__init__).parameters)
               - {"self", "kw", "seed", "budget", "quick"})
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"method {name!r} takes no option(s) {unknown}; its options: "
                        f"{sorted(allowed) or 'none'}")
    why = missing([name])
    if why:
        raise ModuleNotFoundError(f"method {name!r} cannot run: {why[name]}")
    return cls(seed=seed, budget=budget, quick=quick, **options)
