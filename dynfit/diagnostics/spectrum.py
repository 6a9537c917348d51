"""Power-spectrum distance (Mikhaeil et al. 2022).

Per component: the power spectral density by Welch's method (Hann window,
segments of ``nperseg`` samples, half overlap, averaged over segments and
trajectories), smoothed by a Gaussian filter of ``smoothing`` frequency bins,
restricted to the leading frequency bins and normalised to unit sum. The
leading bins are those below the frequency where the truth's spectrum,
averaged over components, reaches ``power_fraction`` (default 0.99) of its
power. The distance is the Hellinger distance

    H(p, q) = sqrt(1 - sum_f sqrt(p_f q_f))   in [0, 1]

averaged over components. A model run that is not finite scores 1.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import welch

from systems import checks

__all__ = ["power_spectrum", "spectrum_distance"]


def _series(x, name, dim=None):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(
            f"{name} must have shape (time, dim) or (n_traj, time, dim), got {x.shape}"
        )
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} has {x.shape[-1]} components, expected {dim} (as in the truth)")
    return x


def power_spectrum(x, *, dt: float, nperseg: int = 1024, smoothing: float = 2.0):
    """(frequencies (n_freq,), smoothed PSD (n_freq, dim)) of x (time, dim) or (n_traj, time, dim).

    Frequencies in cycles per time unit. Each component is centred; the PSD is
    averaged over trajectories and Welch segments, then Gaussian-smoothed over
    ``smoothing`` bins (0: none).
    """
    x = _series(x, "x")
    dt = checks.positive("dt", dt)
    nperseg = checks.integer("nperseg", nperseg, minimum=8)
    nperseg = min(nperseg, x.shape[1])
    f, p = welch(x - x.mean(axis=1, keepdims=True), fs=1.0 / dt, nperseg=nperseg, axis=1)
    p = p.mean(axis=0)  # (n_freq, dim)
    if smoothing > 0:
        p = gaussian_filter1d(p, sigma=float(smoothing), axis=0, mode="nearest")
    return f, p


def spectrum_distance(
    truth,
    model,
    *,
    dt: float,
    nperseg: int = 1024,
    smoothing: float = 2.0,
    power_fraction: float = 0.99,
    per_component: bool = False,
):
    """Hellinger distance between normalised power spectra, in [0, 1].

    truth, model: (time, dim) or (n_traj, time, dim), sampled every dt.
    Returns the mean over components (float), or the (dim,) array when
    ``per_component``. See the module docstring for the definition.
    """
    t = _series(truth, "truth")
    m = _series(model, "model", dim=t.shape[-1])
    if not np.all(np.isfinite(t)):
        raise ValueError("truth contains NaN or inf; pass a finite reference trajectory")
    power_fraction = checks.real(
        "power_fraction",
        power_fraction,
        above=0.0,
        maximum=1.0,
        fix="pass the share of the spectral power to compare, e.g. 0.99",
    )
    if not np.all(np.isfinite(m)):
        ones = np.ones(t.shape[-1])
        return ones if per_component else 1.0
    n = min(nperseg, t.shape[1], m.shape[1])
    f, pt = power_spectrum(t, dt=dt, nperseg=n, smoothing=smoothing)
    _, pm = power_spectrum(m, dt=dt, nperseg=n, smoothing=smoothing)
    mean_t = (pt / pt.sum(0)).mean(1)
    n_keep = int(np.searchsorted(np.cumsum(mean_t), power_fraction * mean_t.sum()) + 1)
    n_keep = max(2, min(n_keep, len(f)))
    pt, pm = pt[:n_keep], pm[:n_keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        pt = pt / pt.sum(0)
        pm = pm / pm.sum(0)
    pm = np.nan_to_num(pm)
    bc = np.sqrt(pt * pm).sum(0)
    h = np.sqrt(np.clip(1.0 - bc, 0.0, 1.0))
    return h if per_component else float(h.mean())
