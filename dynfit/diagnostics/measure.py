"""Distances between invariant measures from long trajectories.

- ``density_divergence``: KL(p_truth || p_model) of state-space densities
  (Hess et al. 2023, "D_stsp"). Both point clouds are standardised with the
  truth's per-component mean and standard deviation. For dim <= 3 the density
  is a histogram on ``bins`` equal bins per component spanning the truth's
  range widened by 10% on each side (model points outside are clipped into the
  edge bins, so mass that escapes the attractor is penalised), smoothed by a
  Gaussian filter of ``smoothing`` bins, then mixed with a floor of 1e-7 /
  n_bins so that the logarithm is finite. For dim > 3 (or ``method="knn"``)
  the divergence is the k-nearest-neighbour estimate of Wang, Kulkarni & Verdu
  (2009, IEEE Trans. Inf. Theory 55, 2392): for ``n_points`` evaluation points
  from the second half of the truth run, ``dim * mean(log(nu_k / rho_k)) +
  log(m / n)``, with rho_k the distance to the k-th nearest of n points of the
  truth's first half and nu_k the distance to the k-th nearest of m model
  points (no kernel width to choose; a model collapsed onto a point or a cycle
  scores large). ``method="gmm"``: each density is a Gaussian mixture with one isotropic
  component of standard deviation ``scale`` (standardised units) on each of ``n_points`` points
  sampled from the model run and from the first half of the truth run, and
  the KL divergence is a Monte Carlo average over ``n_points`` points of the
  second half of the truth run (pass the truth in time order). Its kernel
  smooths the truth's cloud but not a collapsed model's, so it can come out
  negative (reported as 0) for a model that collapsed inside the attractor:
  it is kept for comparison with older results only.
- ``wasserstein``: per-component 1-D Wasserstein-1 distance of the marginals
  (``scipy.stats.wasserstein_distance``), divided by the truth's standard
  deviation of that component (dimensionless).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import logsumexp
from scipy.stats import wasserstein_distance

from systems import checks

__all__ = ["density_divergence", "wasserstein"]

_FLOOR = 1e-7


def as_points(x, name: str, dim: int | None = None):
    """(..., dim) array -> (points (n, dim), finite mask (n,)); raises on bad shapes."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (..., dim) with a trailing component axis, got {x.shape}"
        )
    pts = x.reshape(-1, x.shape[-1])
    if dim is not None and pts.shape[1] != dim:
        raise ValueError(f"{name} has {pts.shape[1]} components, expected {dim} (as in the truth)")
    finite = np.all(np.isfinite(pts), axis=1)
    return pts, finite


def _prepare(truth, model, min_points=10):
    t, tf = as_points(truth, "truth")
    if not tf.all():
        raise ValueError("truth contains NaN or inf; pass a finite reference trajectory")
    if t.shape[0] < min_points:
        raise ValueError(f"truth needs at least {min_points} points, got {t.shape[0]}")
    m, mf = as_points(model, "model", dim=t.shape[1])
    if m.shape[0] < min_points:
        raise ValueError(f"model needs at least {min_points} points, got {m.shape[0]}")
    mu, sd = t.mean(0), t.std(0)
    if np.any(sd <= 0):
        raise ValueError(
            "truth has a constant component (zero standard deviation); it spans no attractor"
        )
    # a model that left the finite numbers is placed far outside the attractor
    m = np.where(mf[:, None], m, mu + 1e6 * sd)
    return (t - mu) / sd, (m - mu) / sd


def density_divergence(
    truth,
    model,
    *,
    bins: int = 30,
    smoothing: float = 1.0,
    method: str = "auto",
    n_points: int = 2000,
    scale: float = 1.0,
    seed: int = 0,
    k: int = 5,
) -> float:
    """KL divergence (nats) of the model's state-space density from the truth's.

    truth, model: (..., dim) samples of long runs (time and trajectory axes are
    pooled; non-finite model rows count as escaped). method: "bins", "knn",
    "gmm" or "auto" (bins for dim <= 3, else knn). bins, smoothing: per-component
    bin count and Gaussian smoothing in bins (binned method). n_points, seed:
    sample sizes and sampling seed (knn, gmm); k: the neighbour (knn); scale:
    kernel width in standardised units (gmm). Returns a float >= 0 (0 for
    identical clouds). See the module docstring.
    """
    checks.choice("method", method, ("auto", "bins", "knn", "gmm"))
    zt, zm = _prepare(truth, model)
    dim = zt.shape[1]
    if method == "auto":
        method = "bins" if dim <= 3 else "knn"
    if method == "bins":
        bins = checks.integer("bins", bins, minimum=2)
        if bins**dim > 5e7:
            raise ValueError(
                f"bins={bins} in dim={dim} needs {bins ** dim:.3g} cells; use method='gmm'"
            )
        smoothing = checks.real(
            "smoothing", smoothing, minimum=0.0, fix="smoothing is a width in bins; 0 turns it off"
        )
        lo, hi = zt.min(0), zt.max(0)
        pad = 0.1 * (hi - lo)
        # one common set of edges in standardised units per component
        edges = [np.linspace(lo[i] - pad[i], hi[i] + pad[i], bins + 1) for i in range(dim)]
        p = _histogram_multi(zt, edges, smoothing)
        q = _histogram_multi(zm, edges, smoothing)
        return float(max(np.sum(p * np.log(p / q)), 0.0))
    n_points = checks.integer("n_points", n_points, minimum=10)
    if method == "knn":
        k = checks.integer("k", k, minimum=1)
        return _knn_divergence(zt, zm, n_points=n_points, k=k, seed=seed)
    scale = checks.positive("scale", scale)
    centres_t, centres_m, evals = _sample_points(zt, zm, n_points, seed)

    def log_mix(x, c):
        d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        return logsumexp(-0.5 * d2 / scale**2, axis=1) - np.log(len(c))

    return float(max(np.mean(log_mix(evals, centres_t) - log_mix(evals, centres_m)), 0.0))


def _sample_points(zt, zm, n_points: int, seed: int):
    """Up to ``n_points`` rows each (seeded, without replacement): truth reference points from
    the first half of ``zt``, model points from ``zm`` and evaluation points from the second half
    of ``zt``, so that no evaluation point sits next to its own time neighbours. Returns the
    three (n, D) arrays."""
    rng = np.random.default_rng(seed)
    half = len(zt) // 2
    first, second = zt[:half], zt[half:]
    ref_t = first[rng.choice(len(first), min(n_points, len(first)), replace=False)]
    ref_m = zm[rng.choice(len(zm), min(n_points, len(zm)), replace=False)]
    evals = second[rng.choice(len(second), min(n_points, len(second)), replace=False)]
    return ref_t, ref_m, evals


def _knn_divergence(zt, zm, *, n_points: int, k: int, seed: int) -> float:
    """Wang-Kulkarni-Verdu k-NN estimate of KL(truth || model) from standardised clouds."""
    from scipy.spatial import cKDTree

    ref_t, ref_m, evals = _sample_points(zt, zm, n_points, seed)
    k = min(k, len(ref_t), len(ref_m))
    rho = cKDTree(ref_t).query(evals, k=[k])[0][:, 0]
    nu = cKDTree(ref_m).query(evals, k=[k])[0][:, 0]
    tiny = 1e-12
    est = zt.shape[1] * np.mean(np.log(np.maximum(nu, tiny) / np.maximum(rho, tiny)))
    return float(max(est + np.log(len(ref_m) / len(ref_t)), 0.0))


def _histogram_multi(z, edges, smoothing):
    dim = z.shape[1]
    nb = len(edges[0]) - 1
    idx = np.stack(
        [
            np.clip(np.searchsorted(edges[i], z[:, i], side="right") - 1, 0, nb - 1)
            for i in range(dim)
        ],
        axis=1,
    )
    flat = np.ravel_multi_index(tuple(idx.T), (nb,) * dim)
    h = np.bincount(flat, minlength=nb**dim).astype(float).reshape((nb,) * dim)
    if smoothing > 0:
        h = gaussian_filter(h, sigma=smoothing, mode="constant")
    p = h / h.sum()
    return (p + _FLOOR / p.size) / (1 + _FLOOR)


def wasserstein(truth, model) -> np.ndarray:
    """Per-component Wasserstein-1 distance of the marginals / truth std, shape (dim,).

    truth, model: (..., dim) samples; non-finite model rows are dropped (if all
    are, the distances are inf).
    """
    t, tf = as_points(truth, "truth")
    if not tf.all():
        raise ValueError("truth contains NaN or inf; pass a finite reference trajectory")
    m, mf = as_points(model, "model", dim=t.shape[1])
    m = m[mf]
    sd = t.std(0)
    if np.any(sd <= 0):
        raise ValueError("truth has a constant component (zero standard deviation)")
    if len(m) == 0:
        return np.full(t.shape[1], np.inf)
    return np.array([wasserstein_distance(t[:, i], m[:, i]) / sd[i] for i in range(t.shape[1])])
