"""Scores of one method's forecasts on one :class:`~dynfit.benchmark.protocols.Problem`.

- ``vpt`` (start, threshold): valid prediction time in Lyapunov times, the first
  time the normalised error (``dynfit.diagnostics.vpt``) exceeds 0.3 / 0.4 / 0.5;
  ``vpt_capped`` where the forecast stayed valid to its end (a lower bound).
- ``smape_horizon`` (start): the first time, in Lyapunov times, at which the
  running sMAPE (Zhang and Gilpin 2025: 200 |y - yhat| / (|y| + |yhat|), mean over
  components and over the samples so far) exceeds 30.
- ``blowup`` (start): the forecast became non-finite or left the attractor (a
  component more than 10 attractor standard deviations from the training data's
  range) before its end.
- climate: ``density_distance`` of a long free run from the truth's long run
  against ``density_floor`` (two true runs from different starts),
  ``lle_model`` (largest Lyapunov exponent of the method's vector field, where it
  has one) beside ``lle_true``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "THRESHOLDS",
    "SMAPE_LIMIT",
    "forecast_scores",
    "smape_horizon",
    "escaped",
    "largest_exponent",
    "climate_scores",
]

THRESHOLDS = (0.3, 0.4, 0.5)
SMAPE_LIMIT = 30.0
ESCAPE_STDS = 10.0


def smape_horizon(
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    dt: float,
    lyapunov_time: float,
    limit: float = SMAPE_LIMIT,
) -> np.ndarray:
    """(B,) first time (Lyapunov times) the running sMAPE of pred (B, T, D) against truth exceeds
    ``limit``."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        denom = np.abs(truth) + np.abs(pred)
        term = np.where(
            denom > 0, 200.0 * np.abs(truth - pred) / np.where(denom > 0, denom, 1.0), 0.0
        )
        term = np.where(np.isfinite(term), term, 200.0).mean(axis=-1)  # (B, T)
    running = np.cumsum(term[:, 1:], axis=1) / np.arange(1, term.shape[1])
    above = running > limit
    k = np.where(above.any(axis=1), above.argmax(axis=1) + 1, term.shape[1] - 1)
    return k * dt / lyapunov_time


def escaped(pred: np.ndarray, train: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(B,) True where pred (B, T, D) is non-finite or leaves the training range by > 10 std
    anywhere."""
    flat = train.reshape(-1, train.shape[-1])
    lo, hi = (
        np.nanmin(flat, axis=0) - ESCAPE_STDS * std,
        np.nanmax(flat, axis=0) + ESCAPE_STDS * std,
    )
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(pred) | (pred < lo) | (pred > hi)
    return bad.reshape(pred.shape[0], -1).any(axis=1)


def forecast_scores(problem, pred: np.ndarray) -> dict:
    """{"vpt" (B, 3), "vpt_capped" (B, 3), "smape_horizon" (B,), "blowup" (B,)} of pred (B, T,
    D)."""
    from ..diagnostics.vpt import valid_prediction_time

    truth = problem.truth
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"forecast has shape {pred.shape}, the truth {truth.shape}")
    vpt = valid_prediction_time(
        truth,
        pred,
        dt=problem.dt,
        lyapunov_time=problem.lyapunov_time,
        std=problem.std,
        thresholds=THRESHOLDS,
    )
    cap = (truth.shape[1] - 1) * problem.dt / problem.lyapunov_time
    return {
        "vpt": vpt,
        "vpt_capped": vpt >= cap - 1e-9,
        "smape_horizon": smape_horizon(
            truth, pred, dt=problem.dt, lyapunov_time=problem.lyapunov_time
        ),
        "blowup": escaped(pred, problem.train, problem.std),
    }


def _rk4(f, x, h):
    k1 = f(x)
    k2 = f(x + 0.5 * h * k1)
    k3 = f(x + 0.5 * h * k2)
    k4 = f(x + h * k3)
    return x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def largest_exponent(
    f, x0: np.ndarray, *, dt: float, n_steps: int, transient: int = 200, eps: float = 1e-7
) -> float:
    """Largest Lyapunov exponent of dx/dt = f(x) (f: (B, D) -> (B, D) numpy) by RK4 at ``dt`` and a
    renormalised finite-difference tangent (Benettin), from x0 (D,); NaN if the run leaves the
    finite
    numbers."""
    x = np.asarray(x0, dtype=np.float64)[None]
    rng = np.random.default_rng(0)
    v = rng.standard_normal(x.shape)
    v /= np.linalg.norm(v)
    scale = max(float(np.linalg.norm(x)), 1.0) * eps
    total = 0.0
    with np.errstate(all="ignore"):
        for i in range(transient + n_steps):
            both = _rk4(f, np.concatenate([x, x + scale * v]), dt)
            x, moved = both[:1], (both[1:] - both[:1]) / scale
            growth = float(np.linalg.norm(moved))
            if not (np.all(np.isfinite(x)) and math.isfinite(growth)) or growth == 0.0:
                return math.nan
            v = moved / growth
            if i >= transient:
                total += math.log(growth)
    return total / (n_steps * dt)


def climate_scores(problem, long_run: np.ndarray | None, vector_field, *, lle_steps: int) -> dict:
    """{"density_distance", "density_floor", "lle_model", "lle_true"}: NaN where not available."""
    from ..diagnostics.measure import density_divergence

    out = {
        "density_distance": math.nan,
        "lle_model": math.nan,
        "lle_true": 1.0 / problem.lyapunov_time,
    }
    truth_a, truth_b = problem.climate
    cut = truth_a.shape[0] // 10
    out["density_floor"] = float(density_divergence(truth_a[cut:], truth_b[cut:]))
    if long_run is not None:
        run = np.asarray(long_run, dtype=np.float64)
        if np.isfinite(run).all():
            out["density_distance"] = float(density_divergence(truth_a[cut:], run[cut:]))
        else:
            out["density_distance"] = math.inf
    if vector_field is not None:
        try:
            out["lle_model"] = largest_exponent(
                vector_field, truth_a[cut], dt=problem.dt, n_steps=lle_steps
            )
        except Exception:  # a model whose field cannot be evaluated there: no exponent
            out["lle_model"] = math.nan
    return out
