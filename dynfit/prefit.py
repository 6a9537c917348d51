"""Derivative pre-fit: a vector field fitted to finite-difference derivatives before any rollout.

The largest single gain in accuracy for chaotic surrogates (docs/references.md,
section 7): a field trained only on integrated
windows plateaus at a relative error of ~5e-4, while derivatives from a
high-order central difference are accurate to ~1e-7 on data sampled at
dt = 0.01, and for a :class:`~dynfit.nn.fields.PolynomialField` the
polynomial part then has a closed-form least-squares solution.

Noisy data: :func:`derivative_targets` estimates the noise level first
(:func:`dynfit.smoothing.noise_level`); where the samples hold white noise
that the differences would amplify, the targets are Savitzky-Golay smoothed
states and derivatives (:func:`dynfit.smoothing.savgol_derivatives`, window
from the noise level) instead of differences of the raw samples.

All quantities are in the model's units: standardised states, one time unit
per sampling interval.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from systems import checks

__all__ = ["STENCILS", "TARGETS", "derivative_estimates", "derivative_targets", "prefit"]

# central first-derivative stencils (unit spacing), order -> coefficients of samples -p..p
STENCILS = {
    2: (-1 / 2, 0.0, 1 / 2),
    4: (1 / 12, -2 / 3, 0.0, 2 / 3, -1 / 12),
    6: (-1 / 60, 3 / 20, -3 / 4, 0.0, 3 / 4, -3 / 20, 1 / 60),
    8: (1 / 280, -4 / 105, 1 / 5, -4 / 5, 0.0, 4 / 5, -1 / 5, 4 / 105, -1 / 280),
}


def derivative_estimates(z: np.ndarray, order: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference derivatives of trajectories z (N, T, D) sampled at unit spacing.

    Returns (states, derivatives), both (N * (T - order), D): the interior
    samples (``order // 2`` dropped at each end of every trajectory) and dz/dt
    there, with truncation error O(h^order).
    """
    checks.choice("derivative order", order, sorted(STENCILS))
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (N, T, D), got {z.shape}")
    n, t, d = z.shape
    if t <= order:
        raise ValueError(f"derivative estimates of order {order} need trajectories longer than {order} samples, "
                         f"got {t}; pass shorter-order derivatives (prefit_order) or longer trajectories")
    m = t - order
    dz = np.zeros((n, m, d))
    for k, c in enumerate(STENCILS[order]):
        if c:
            dz += c * z[:, k:k + m]
    p = order // 2
    return z[:, p:p + m].reshape(-1, d), dz.reshape(-1, d)


TARGETS = ("auto", "differences", "smoothed")


def derivative_targets(z: np.ndarray, *, order: int = 8, targets: str = "auto",
                       windows=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(states, derivatives, info) for the pre-fit from trajectories z (N, T, D) at unit spacing.

    targets: "differences" (central differences of ``order``, today's
    clean-data path), "smoothed" (Savitzky-Golay states and derivatives with
    per-component ``windows`` (D,), chosen from the noise level when None) or
    "auto" (smoothed where :func:`dynfit.smoothing.noise_is_white` finds noise
    in some component, else differences). info: "targets" (the one used),
    "noise_level" (D,) list (in z's units; on clean data an upper bound),
    "windows" (D,) list (smoothed only).
    """
    from .smoothing import noise_is_white, noise_level, savgol_derivatives, savgol_window

    checks.choice("prefit targets", targets, TARGETS)
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (N, T, D), got {z.shape}")
    noise = noise_level(z)
    info = {"noise_level": [float(v) for v in noise]}
    if targets == "auto":
        targets = "smoothed" if noise_is_white(z).any() else "differences"
    info["targets"] = targets
    if targets == "differences":
        states, derivs = derivative_estimates(z, order)
        return states, derivs, info
    if windows is None:
        windows = savgol_window(z, noise)
    info["windows"] = [int(w) for w in np.asarray(windows).reshape(-1)]
    states, derivs = savgol_derivatives(z, windows)
    return states, derivs, info


def _lstsq(feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Least-squares coefficients (n_terms, D) of target (B, D) on feats (B, n_terms) in float64 on
    the CPU, columns scaled for conditioning; with a 0/1 ``mask`` (n_terms, D) each component on its
    active columns only (the others 0)."""
    scale = feats.abs().amax(dim=0).clamp_min(1e-300)
    a = (feats / scale).cpu()
    target = target.cpu()
    if mask is None or bool((mask != 0).all()):
        return torch.linalg.lstsq(a, target, driver="gelsd").solution / scale.cpu()[:, None]
    sol = torch.zeros(feats.shape[1], target.shape[1], dtype=torch.float64)
    for j in range(target.shape[1]):
        cols = torch.nonzero(mask[:, j].cpu() != 0).flatten()
        if cols.numel():
            part = torch.linalg.lstsq(a[:, cols], target[:, j:j + 1], driver="gelsd").solution
            sol[cols, j] = part[:, 0]
    return sol / scale.cpu()[:, None]


def _relative_error(field, zs: torch.Tensor, dz: torch.Tensor) -> float:
    with torch.no_grad():
        res = field(torch.zeros((), dtype=zs.dtype, device=zs.device), zs) - dz
        return float(res.square().sum().sqrt() / dz.square().sum().sqrt())


def prefit(field: torch.nn.Module, z: np.ndarray, *, order: int = 8, iterations: int = 200,
           tolerance: float = 1e-3, device=None, dtype=torch.float64, targets: str = "differences",
           windows=None) -> dict:
    """Fit ``field`` (in place) to the derivatives of z (N, T, D) (:func:`derivative_targets` with
    ``order``, ``targets`` and ``windows``; the default "differences" is the clean-data path).

    A field with a library (``features`` and ``coef``; a 0/1 ``mask`` buffer
    restricts each component to its active terms) gets its coefficients from
    linear least squares first. Then, if the field has other parameters,
    L-BFGS on the mean squared derivative error runs until the relative change
    of the loss over 5 steps of 20 iterations falls below ``tolerance`` or
    ``iterations`` are spent. Returns {"field_error": relative RMS derivative
    error, "field_error_lstsq", "iterations", "wall_time", "targets",
    "noise_level" (D,), "windows" (smoothed targets only)}.
    """
    iterations = checks.integer("prefit iterations", iterations, minimum=0)
    t0 = time.perf_counter()
    if targets == "differences" and windows is None:  # no noise estimate needed: today's path
        states, derivs = derivative_estimates(z, order)
        tinfo = {"targets": "differences"}
    else:
        states, derivs, tinfo = derivative_targets(z, order=order, targets=targets, windows=windows)
    dev = torch.device("cpu") if device is None else torch.device(device)
    zs = torch.as_tensor(states, dtype=dtype, device=dev)
    dz = torch.as_tensor(derivs, dtype=dtype, device=dev)
    info = {"field_error_lstsq": math.nan, "iterations": 0, **tinfo}
    coef = getattr(field, "coef", None)
    if isinstance(coef, torch.nn.Parameter) and hasattr(field, "features"):
        with torch.no_grad():
            feats = field.features(zs).to(torch.float64)
            target = dz.to(torch.float64)
            mlp = getattr(field, "mlp", None)
            if mlp is not None:
                target = target - mlp(torch.zeros((), dtype=zs.dtype, device=dev), zs).to(torch.float64)
            mask = getattr(field, "mask", None)
            mask = mask if isinstance(mask, torch.Tensor) else None
            coef.copy_(_lstsq(feats, target, mask).to(coef))
        info["field_error_lstsq"] = _relative_error(field, zs, dz)
    others = [p for name, p in field.named_parameters() if p.requires_grad and p is not coef]
    if others and iterations > 0:
        params = [p for p in field.parameters() if p.requires_grad]
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=20, tolerance_grad=0.0, tolerance_change=0.0,
                                history_size=50, line_search_fn="strong_wolfe")
        norm = float(dz.square().mean())

        def closure():
            opt.zero_grad()
            loss = (field(torch.zeros((), dtype=zs.dtype, device=dev), zs) - dz).square().mean() / norm
            loss.backward()
            return loss

        losses, done = [], 0
        best = {k: v.detach().clone() for k, v in field.state_dict().items()}
        best_loss = float(closure().detach())
        while done < iterations:
            opt.step(closure)
            done += 20
            loss = float(closure().detach())
            if not math.isfinite(loss):
                field.load_state_dict(best)
                break
            if loss < best_loss:
                best_loss = loss
                best = {k: v.detach().clone() for k, v in field.state_dict().items()}
            losses.append(loss)
            if len(losses) > 5 and (losses[-6] - losses[-1]) <= tolerance * losses[-6]:
                break
        field.load_state_dict(best)
        info["iterations"] = done
    info["field_error"] = _relative_error(field, zs, dz)
    info["wall_time"] = time.perf_counter() - t0
    return info
