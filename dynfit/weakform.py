"""Weak-form (integral) regression targets: a library field fitted with no derivative of the data.

Weak SINDy (Messenger and Bortz 2021; Reinbold et al. 2020). For a test
function phi with compact support [a, b] and x' = f(x), integration by parts
gives

    integral phi(t) f(x(t)) dt = - integral phi'(t) x(t) dt,

so a library field f = Theta(x) xi satisfies the linear system G xi = y with
G_kj = sum_t w_t phi_k(t) Theta_j(x(t)) and y_k = - sum_t w_t phi_k'(t) x(t):
the noisy samples are integrated against smooth weights, never differenced.

Test functions: phi(t) = C ((t - a)(b - t))^p on windows of ``width`` + 1
samples (unit spacing), every ``stride`` samples along each trajectory,
normalised to unit sum (so a row of G is a local average of the features and
y a local average of dx/dt, on the scale of derivative targets). Quadrature:
the trapezoid rule, which at unit spacing is the plain sum since phi vanishes
at both ends; for such an integrand (phi and its first p - 1 derivatives zero
at the ends) the Euler-Maclaurin expansion makes it accurate to O(h^p) for
even p (O(h^(p+1)) for odd p), higher than Simpson's O(h^4).

Width (:func:`width_from_windows`): ``WEAK_WIDTH`` = 2 x the smallest of the
components' Savitzky-Golay Cp windows (:func:`dynfit.smoothing.savgol_window`,
from the noise level), with p = ``WEAK_DEGREE`` = 16 (docs/training.md, "Noisy
data": the field's error over widths and degrees on three flows at 1% and 5%).

All quantities are in the model's units: trajectories z (N, T, D) sampled at
unit spacing.
"""
from __future__ import annotations

import numpy as np
import torch

from systems import checks

__all__ = ["WeakForm", "bump_function", "weak_system", "weak_width", "width_from_windows"]

WEAK_DEGREE = 16  # p of phi = ((t - a)(b - t))^p
WEAK_WIDTH = 2.0  # default width: this multiple of the smallest Savitzky-Golay Cp window
_STRIDE_FRACTION = 0.125  # windows start every width / 8 samples


def bump_function(width: int, degree: int = WEAK_DEGREE) -> tuple[np.ndarray, np.ndarray]:
    """(phi, dphi), both (width + 1,): phi_j = C (j (width - j))^degree at samples j = 0..width,
    with sum(phi) = 1, and its exact derivative d phi / dt (per sample)."""
    width = checks.integer("weak-form width", width, minimum=2)
    degree = checks.integer("weak-form degree", degree, minimum=1)
    j = np.arange(width + 1, dtype=np.float64)
    u = j * (width - j)
    phi = u ** degree
    dphi = degree * u ** (degree - 1) * (width - 2.0 * j)
    c = 1.0 / phi.sum()
    return phi * c, dphi * c


class WeakForm:
    """Test functions on windows of trajectories of ``n_time`` samples (unit spacing): windows of
    ``width`` + 1 samples starting every ``stride`` samples (default width / 8).

    :meth:`integrate` maps values at every sample (N, T, C) to their integrals against each test
    function (N * K, C); :meth:`targets` gives y (N * K, D) of G xi = y. Works on numpy arrays and
    on torch tensors (differentiable)."""

    def __init__(self, n_time: int, width: int, *, degree: int = WEAK_DEGREE,
                 stride: int | None = None) -> None:
        self.n_time = checks.integer("trajectory length", n_time, minimum=3)
        self.width = checks.integer("weak-form width", width, minimum=2)
        if self.width >= self.n_time:
            raise ValueError(f"weak-form width {width} needs trajectories longer than {width} "
                             f"samples, got {n_time}; pass a smaller width or longer "
                             "trajectories")
        self.degree = checks.integer("weak-form degree", degree, minimum=1)
        if stride is None:
            stride = max(1, int(round(_STRIDE_FRACTION * self.width)))
        self.stride = checks.integer("weak-form stride", stride, minimum=1)
        self.phi, self.dphi = bump_function(self.width, self.degree)
        self.n_windows = (self.n_time - self.width - 1) // self.stride + 1

    def _apply(self, v, weights: np.ndarray):
        if isinstance(v, torch.Tensor):
            if v.ndim != 3 or v.shape[1] != self.n_time:
                raise ValueError(f"values must have shape (N, {self.n_time}, C), got "
                                 f"{tuple(v.shape)}")
            win = v.unfold(1, self.width + 1, self.stride)  # (N, K, C, width + 1)
            out = win @ torch.as_tensor(weights, dtype=v.dtype, device=v.device)
            return out.reshape(-1, v.shape[2])
        v = np.asarray(v, dtype=np.float64)
        if v.ndim != 3 or v.shape[1] != self.n_time:
            raise ValueError(f"values must have shape (N, {self.n_time}, C), got {v.shape}")
        win = np.lib.stride_tricks.sliding_window_view(v, self.width + 1, axis=1)[:, ::self.stride]
        return (win @ weights).reshape(-1, v.shape[2])

    def integrate(self, v):
        """sum_t phi_k(t) v(t) for every window k of every trajectory: v (N, T, C) -> (N * K, C)
        (trajectory-major)."""
        return self._apply(v, self.phi)

    def targets(self, z):
        """y = - sum_t phi_k'(t) z(t): (N * K, D), the right-hand side of G xi = y."""
        return -self._apply(z, self.dphi)

    def noise_gain(self) -> float:
        """sqrt(sum_t phi'(t)^2): white noise of level s in z gives noise of level s x this in y."""
        return float(np.sqrt(np.sum(self.dphi ** 2)))


def width_from_windows(windows, n_time: int, *, factor: float = WEAK_WIDTH) -> int:
    """The test functions' width (samples): ``factor`` x the smallest of the components'
    Savitzky-Golay Cp windows (D,) (the sharpest component sets it), at least 8 samples and at
    most a quarter of ``n_time``."""
    factor = checks.real("weak-form width factor", factor, above=0.0)
    w = int(np.min(np.asarray(windows)))
    return int(min(max(8, round(factor * w)), max(n_time // 4, 2)))


def weak_width(z, noise=None, *, factor: float = WEAK_WIDTH) -> int:
    """The test functions' width (samples) for trajectories z (N, T, D):
    :func:`width_from_windows` of :func:`dynfit.smoothing.savgol_window` given the noise level
    (D,) (estimated when None): the window the data's noise asks for."""
    from .smoothing import noise_level, savgol_window

    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"trajectories must have shape (N, T, D), got {z.shape}")
    noise = noise_level(z) if noise is None else noise
    return width_from_windows(savgol_window(z, noise), z.shape[1], factor=factor)


def weak_form_for(z, *, width: int | None = None, degree: int = WEAK_DEGREE,
                  stride: int | None = None, noise=None) -> WeakForm:
    """The :class:`WeakForm` for trajectories z (N, T, D): width from :func:`weak_width` when
    None."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"trajectories must have shape (N, T, D), got {z.shape}")
    if width is None:
        width = weak_width(z, noise)
    return WeakForm(z.shape[1], width, degree=degree, stride=stride)


def weak_system(z, library, *, width: int | None = None, degree: int = WEAK_DEGREE,
                stride: int | None = None, form: WeakForm | None = None
                ) -> tuple[np.ndarray, np.ndarray, WeakForm]:
    """(G (N * K, n_terms), y (N * K, D), form): the weak-form system G xi = y of ``library``
    (a :class:`dynfit.nn.library.Library`, or any module mapping states (B, D) to features
    (B, n_terms)) on trajectories z (N, T, D) at unit spacing, float64. A library field
    ``Theta(x) xi`` that generates z satisfies it up to the quadrature error."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"trajectories must have shape (N, T, D), got {z.shape}")
    if form is None:
        form = weak_form_for(z, width=width, degree=degree, stride=stride)
    elif form.n_time != z.shape[1]:
        raise ValueError(f"the weak form is for trajectories of {form.n_time} samples, got "
                         f"{z.shape[1]}")
    g = []
    with torch.no_grad():
        for traj in z:  # one trajectory at a time: features of every sample can be large
            feats = library(torch.as_tensor(traj, dtype=torch.float64))
            g.append(form.integrate(feats.cpu().numpy()[None]))
    return np.concatenate(g, axis=0), form.targets(z), form
