"""Noise level and noise-robust derivatives of sampled trajectories, for the derivative pre-fit.

All functions take trajectories z (N, T, D) sampled at unit spacing (the
model's units: one time unit per sampling interval) and work per component.

- :func:`noise_level`: the standard deviation of white observation noise,
  from differences of order 4..8 (white noise gives the same normalised
  spread at every order; a smooth signal's shrinks geometrically with it).
- :func:`savgol_window`: per component, the Savitzky-Golay window that
  minimises Mallows' Cp of the smoothed states (an unbiased estimate of the
  smoothing error given the noise level).
- :func:`savgol_derivatives`: smoothed states (that window) and first
  derivatives (``DERIVATIVE_WINDOW`` = 0.4 of it). The targets feed a
  regression, which averages their variance out but keeps their bias: on
  Lorenz'63 and Thomas at 1-5% noise the least-squares library field is most
  accurate with 0.3-0.5 of the Cp window (pointwise derivatives would favour
  0.7).
- :func:`smoothed_states`: the smoothed states at every sample (the ends by
  the polynomial fitted to the first and last window), for the start states
  of the training windows on noisy data.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["noise_level", "savgol_window", "savgol_derivatives", "smoothed_states"]

DIFFERENCE_ORDERS = (4, 5, 6, 7, 8)
DERIVATIVE_WINDOW = 0.4  # derivative window / state window
_MAD = 0.6744897501960817  # median |N(0, 1)|


def _check(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"trajectories must have shape (N, T, D), got {z.shape}")
    if z.shape[1] <= max(DIFFERENCE_ORDERS):
        raise ValueError(f"noise estimates need trajectories longer than {max(DIFFERENCE_ORDERS)} "
                         "samples, "
                         f"got {z.shape[1]}; pass longer trajectories")
    return z


def _spread_by_order(z: np.ndarray) -> np.ndarray:
    """(len(DIFFERENCE_ORDERS), D): the noise level each difference order implies (median-based)."""
    out = []
    for k in DIFFERENCE_ORDERS:
        d = np.diff(z, n=k, axis=1).reshape(-1, z.shape[2])
        out.append(np.median(np.abs(d), axis=0) / _MAD / math.sqrt(math.comb(2 * k, k)))
    return np.array(out)


def noise_level(z) -> np.ndarray:
    """Estimated standard deviation of additive white noise in z (N, T, D): (D,), in z's units.

    The k-th difference of white noise of level s has standard deviation
    s * sqrt(binom(2k, k)); a smooth signal's k-th difference shrinks like
    (h w / 2)^k. The smallest normalised spread over orders 4..8 is the
    estimate: the noise level where noise dominates, an upper bound of it
    (the signal's own high-order content) on clean data.
    """
    return _spread_by_order(_check(z)).min(axis=0)


def noise_is_white(z, *, floor: float = 1e-6) -> np.ndarray:
    """(D,) bool: the spread is flat across difference orders (order 8 within a factor 2 of order 6)
    and above ``floor`` (relative to the component's standard deviation): the data hold noise that
    finite differences would amplify."""
    z = _check(z)
    spread = _spread_by_order(z)
    scale = z.reshape(-1, z.shape[2]).std(axis=0)
    flat = spread[-1] > 0.5 * spread[DIFFERENCE_ORDERS.index(6)]
    return flat & (spread.min(axis=0) > floor * scale)


def _kernels(window: int, polyorder: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import savgol_coeffs

    return (savgol_coeffs(window, polyorder, deriv=0, use="dot"),
            savgol_coeffs(window, polyorder, deriv=1, use="dot"))


def savgol_window(z, noise, *, polyorder: int = 4, max_window: int | None = None) -> np.ndarray:
    """(D,) odd windows: per component the one minimising Mallows' Cp of the smoothed states,
    ``mean((S z - z)^2) - s^2 + 2 s^2 c0`` (s the noise level (D,), c0 the kernel's centre
    weight: an unbiased estimate of the smoothing error)."""
    z = np.asarray(z, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64).reshape(-1)
    n_time = z.shape[1]
    top = min(n_time // 4, 401 if max_window is None else max_window)
    smallest = polyorder + 3 - (polyorder % 2)
    if top < smallest:
        raise ValueError(f"Savitzky-Golay smoothing of order {polyorder} needs trajectories of at "
                         "least "
                         f"{4 * smallest} samples, got {n_time}")
    candidates = list(range(smallest, top + 1, 2))
    out = np.empty(z.shape[2], dtype=np.int64)
    for d in range(z.shape[2]):
        x, s2 = z[:, :, d], noise[d] ** 2
        best, best_w = math.inf, candidates[0]
        for w in candidates:
            k0, _ = _kernels(w, polyorder)
            p = w // 2
            sm = _correlate(x, k0)
            risk = np.mean((sm - x[:, p:n_time - p]) ** 2) - s2 + 2 * s2 * k0[p]
            if risk < best:
                best, best_w = risk, w
            elif w > 3 * best_w:
                break
        out[d] = best_w
    return out


def _correlate(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """x (N, T) correlated with kernel (w,): (N, T - w + 1), the interior ('valid') part."""
    w = kernel.size
    m = x.shape[1] - w + 1
    out = np.zeros((x.shape[0], m))
    for j, c in enumerate(kernel):
        out += c * x[:, j:j + m]
    return out


def derivative_windows(windows) -> np.ndarray:
    """The derivative's odd windows for state windows (D,): ``DERIVATIVE_WINDOW`` of them, >= 7."""
    w = np.maximum(np.rint(DERIVATIVE_WINDOW * np.asarray(windows)).astype(np.int64), 7)
    return w | 1


def savgol_derivatives(z, windows, *, polyorder: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Savitzky-Golay smoothed states and first derivatives of z (N, T, D), with the per-component
    odd state ``windows`` (D,) and :func:`derivative_windows` of them for the derivatives:
    (states, derivatives), both (N * (T - 2 p), D) with p = max(windows) // 2 (the same interior
    samples for every component)."""
    z = np.asarray(z, dtype=np.float64)
    n, t, dim = z.shape
    windows = np.asarray(windows).reshape(-1)
    dwin = derivative_windows(windows)
    p = int(max(windows.max(), dwin.max())) // 2
    m = t - 2 * p
    if m < 1:
        raise ValueError(f"a Savitzky-Golay window of {2 * p + 1} samples needs trajectories "
                         f"longer than {t}")
    states, derivs = np.empty((n, m, dim)), np.empty((n, m, dim))
    for d in range(dim):
        for w, k, out in ((int(windows[d]), 0, states), (int(dwin[d]), 1, derivs)):
            q = p - w // 2
            out[:, :, d] = _correlate(z[:, q:t - q, d], _kernels(w, polyorder)[k])
    return states.reshape(-1, dim), derivs.reshape(-1, dim)


def smoothed_states(z, windows, *, polyorder: int = 4) -> np.ndarray:
    """Savitzky-Golay smoothed states of z (N, T, D) at every sample, with the per-component odd
    ``windows`` (D,) (e.g. :func:`savgol_window`'s): (N, T, D). The interior samples are
    :func:`savgol_derivatives`' states; the first and last ``w // 2`` samples come from the
    polynomial fitted to the first and last window."""
    from scipy.signal import savgol_filter

    z = np.asarray(z, dtype=np.float64)
    windows = np.asarray(windows).reshape(-1)
    if z.ndim != 3 or windows.size != z.shape[2]:
        raise ValueError(f"smoothed_states needs trajectories (N, T, D) and one window per "
                         f"component, got {z.shape} and {windows.size} windows")
    out = np.empty_like(z)
    for d, w in enumerate(windows):
        w = int(w)
        if w % 2 == 0 or w <= polyorder or w > z.shape[1]:
            raise ValueError(f"Savitzky-Golay window {w} for component {d}: expected an odd window "
                             f"above {polyorder} and at most the {z.shape[1]} samples")
        out[:, :, d] = savgol_filter(z[:, :, d], w, polyorder, axis=1, mode="interp")
    return out
