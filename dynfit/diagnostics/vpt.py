"""Normalised error, valid prediction time and valid ground-truth time.

Normalised error (Vlachas et al. 2020, the NRMSE used for the VPT)::

    e(t) = sqrt( (1/D) * sum_i ((y_i(t) - yhat_i(t)) / sigma_i)^2 )

with sigma_i the standard deviation of component i over the attractor
(over all samples of the reference data). For Lorenz'63 this is the Pathak et
al. (2018) error ||y - yhat|| / sqrt(<||y - <y>||^2>) up to the per-component
weighting; both read "error as a fraction of the attractor's spread".

Valid prediction time: the first time t_k = k * dt at which e(t_k) > threshold,
divided by the Lyapunov time. A prediction that never exceeds the threshold
gets the full horizon (n_time - 1) * dt (a lower bound). Thresholds lie in
(0, 1]; 0.3, 0.4 (Pathak) and 0.5 (Vlachas) are in use.

Valid ground-truth time (Hurley and Shaheen 2025): the same first-exceedance
time for the disagreement between independent accurate reference solutions
from one start, minimised over all pairs; a VPT past it cannot be measured.
"""

from __future__ import annotations

import numpy as np

from systems import checks
from ._checks import check_thresholds, check_trajectory

__all__ = [
    "normalized_error", "normalised_error", "valid_prediction_time", "valid_groundtruth_time"
]


def _check_std(std, dim: int) -> np.ndarray:
    s = np.asarray(std, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(dim, float(s))
    if s.shape != (dim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(
            f"std must be a positive number or an array of {dim} positive per-component standard "
            f"deviations of the attractor, got {std!r}"
        )
    return s


def normalized_error(truth, pred, *, std) -> np.ndarray:
    """e(t) = sqrt(mean_i ((truth_i - pred_i) / std_i)^2).

    truth, pred: (..., time, dim) in physical units, same shape. std: scalar or
    (dim,) attractor standard deviations. Returns (..., time); NaN or inf in
    pred gives inf (a blown-up rollout counts as wrong).
    """
    truth = check_trajectory(truth, "truth", min_len=1)
    pred = check_trajectory(pred, "pred", min_len=1)
    if truth.shape != pred.shape:
        raise ValueError(
            f"truth {truth.shape} and pred {pred.shape} must have the same shape (..., time, dim)"
        )
    s = _check_std(std, truth.shape[-1])
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.sqrt(np.mean(((truth - pred) / s) ** 2, axis=-1))
    return np.where(np.isfinite(e), e, np.inf)


normalised_error = normalized_error  # the British spelling of earlier versions (alias)


def first_exceedance(error, thresholds, *, dt: float) -> np.ndarray:
    """First time t_k = k dt with error[..., k] > threshold; the horizon if never.

    error: (..., time). Returns (..., n_thresholds) in the units of dt.
    """
    error = np.asarray(error, dtype=np.float64)
    thr = check_thresholds(thresholds)
    n_time = error.shape[-1]
    above = error[..., None, :] > thr[:, None]  # (..., n_thr, time)
    k = np.where(above.any(axis=-1), above.argmax(axis=-1), n_time - 1)
    return k * float(dt)


def valid_prediction_time(
    truth, pred, *, dt: float, lyapunov_time: float, std, thresholds=(0.3, 0.4, 0.5)
) -> np.ndarray:
    """Valid prediction time in Lyapunov times.

    truth, pred: (..., time, dim), row 0 the common start, spaced by dt.
    std: scalar or (dim,) attractor standard deviation. thresholds: number or
    sequence in (0, 1]. Returns (..., n_thresholds) (a scalar threshold still
    gives a trailing axis of length 1). See the module docstring for the
    definition.
    """
    thr = check_thresholds(thresholds)
    dt = checks.positive("dt", dt)
    lt = checks.positive("lyapunov_time", lyapunov_time)
    e = normalized_error(truth, pred, std=std)
    return first_exceedance(e, thr, dt=dt) / lt


def valid_groundtruth_time(
    solutions, *, dt: float, lyapunov_time: float, std, thresholds=(0.3, 0.4, 0.5)
) -> np.ndarray:
    """Span over which independent reference solutions agree, in Lyapunov times.

    solutions: a sequence of m >= 2 arrays (..., time, dim) from the same
    starts (for example the data, DOP853 at 1e-12 and Radau at 1e-12; see
    ``dynfit.diagnostics.reference_solutions``). Returns (..., n_thresholds):
    the minimum over all pairs of their valid prediction time against each
    other.
    """
    sols = [check_trajectory(s, f"solutions[{i}]") for i, s in enumerate(solutions)]
    if len(sols) < 2:
        raise ValueError(
            f"valid_groundtruth_time needs at least 2 solutions to compare, got {len(sols)}"
        )
    if any(s.shape != sols[0].shape for s in sols):
        raise ValueError(
            f"solutions must share one shape (..., time, dim), got {[s.shape for s in sols]}"
        )
    out = None
    for i in range(len(sols)):
        for j in range(i + 1, len(sols)):
            v = valid_prediction_time(
                sols[i], sols[j], dt=dt, lyapunov_time=lyapunov_time, std=std, thresholds=thresholds
            )
            out = v if out is None else np.minimum(out, v)
    return out
