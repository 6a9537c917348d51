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
from the noise level) instead of differences of the raw samples; or, for a
field with a library, weak-form (integral) targets (:mod:`dynfit.weakform`:
the field integrated against smooth test functions, fitted to the samples
integrated against their derivatives: no derivative of the noisy data at all).

All quantities are in the model's units: standardised states, one time unit
per sampling interval.
"""
from __future__ import annotations

import functools
import math
import time

import numpy as np
import torch

from systems import checks

__all__ = ["auto_order", "choose_targets", "derivative_targets", "prefit", "stencil"]

# the highest order "auto" tries (docs/training.md, "The pre-fit's difference order")
AUTO_MAX_ORDER = 24


@functools.lru_cache(maxsize=None)
def stencil(order: int) -> tuple[float, ...]:
    """The central first-derivative stencil of even ``order`` at unit spacing: coefficients of
    samples -p..p (p = order // 2), c_k = (-1)^(k+1) (p!)^2 / (k (p-k)! (p+k)!), c_-k = -c_k
    (Fornberg 1988)."""
    order = check_order(order)
    p = order // 2
    half = [(-1) ** (k + 1) * math.factorial(p) ** 2
            / (k * math.factorial(p - k) * math.factorial(p + k)) for k in range(1, p + 1)]
    return tuple([-c for c in reversed(half)] + [0.0] + half)


def check_order(order) -> int:
    """A difference order: an even integer >= 2."""
    order = checks.integer("derivative order", order, minimum=2,
                           fix="pass an even order such as 8 or 12, or prefit_order='auto'")
    if order % 2:
        raise ValueError(f"derivative order must be even (central differences), got {order}; "
                         f"pass {order + 1} or {order - 1}, or prefit_order='auto'")
    return order


def validation_split(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) trajectories z (N, T, D): the last fifth of the trajectories (of the time
    axis for one); the library selection validates on it."""
    n, t = z.shape[:2]
    if n >= 2:
        k = max(1, round(0.2 * n))
        return z[:n - k], z[n - k:]
    cut = int(0.8 * t)
    return z[:, :cut], z[:, cut:]


def auto_order(z: np.ndarray, max_order: int = AUTO_MAX_ORDER) -> tuple[int, dict]:
    """The difference order for trajectories z (N, T, D) at unit spacing, chosen by the data.

    For each even order o from 4 to ``max_order`` whose stencil spans at most a quarter of a
    trajectory (and fits in the last fifth of a single trajectory, where the library selection
    validates), the gap ||d_o - d_(o-2)|| / ||d_o|| between the derivative estimates of orders o
    and o - 2 on their common samples bounds the error of order o - 2. The order of the smallest
    gap is chosen: the highest while the gaps fall, as they do on smooth clean data (slowly where
    the flow has a kink, and on noisy data, whose pre-fit uses no differences); a lower one where
    they reach roundoff. Returns (order, {order: gap}).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (N, T, D), got {z.shape}")
    t = z.shape[1]
    # the shortest piece differences are taken of: the library selection's validation part
    shortest = min(part.shape[1] for part in validation_split(z))
    orders = [o for o in range(4, check_order(max_order) + 1, 2) if 4 * o <= t and o < shortest]
    if not orders:
        return max(2, min(8, (min(shortest, t) - 1) // 2 * 2)), {}
    edge = orders[-1] // 2
    est = {}
    for o in [orders[0] - 2] + orders:
        _, d = derivative_estimates(z, o)
        d = d.reshape(z.shape[0], -1, z.shape[2])
        cut = edge - o // 2
        est[o] = d[:, cut:d.shape[1] - cut]
    gaps = {o: float(np.linalg.norm(est[o] - est[o - 2]) / max(np.linalg.norm(est[o]), 1e-300))
            for o in orders}
    return min(orders, key=lambda o: (gaps[o], -o)), gaps


def resolve_order(order, z: np.ndarray) -> int:
    """``order`` itself (checked), or for "auto" :func:`auto_order` of z (N, T, D)."""
    return auto_order(z)[0] if order == "auto" else check_order(order)


def derivative_estimates(z: np.ndarray, order: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference derivatives of trajectories z (N, T, D) sampled at unit spacing.

    Returns (states, derivatives), both (N * (T - order), D): the interior
    samples (``order // 2`` dropped at each end of every trajectory) and dz/dt
    there, with truncation error O(h^order).
    """
    order = check_order(order)
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (N, T, D), got {z.shape}")
    n, t, d = z.shape
    if t <= order:
        raise ValueError(f"derivative estimates of order {order} need trajectories longer than "
                         f"{order} samples, got {t}; pass shorter-order derivatives (prefit_order) "
                         "or longer trajectories")
    m = t - order
    dz = np.zeros((n, m, d))
    for k, c in enumerate(stencil(order)):
        if c:
            dz += c * z[:, k:k + m]
    p = order // 2
    return z[:, p:p + m].reshape(-1, d), dz.reshape(-1, d)


TARGETS = ("auto", "differences", "smoothed", "weak")
NOISY_TARGETS = "weak"  # what "auto" picks on noisy data (docs/training.md, "Noisy data")
# clean data sampled too coarsely for differences: the relative gap between 8th- and 6th-order
# differences above this (HindmarshRose at 100 samples a period: 4e-3; Rossler 2e-4;
# Lorenz'63 at dt 0.01 below 1e-6)
COARSE_GAP = 1e-3


def choose_targets(z: np.ndarray, targets: str = "auto") -> dict:
    """The regression targets for trajectories z (N, T, D) at unit spacing: {"targets": the one
    used ("auto": ``NOISY_TARGETS`` where :func:`dynfit.smoothing.noise_is_white` finds noise in
    some component; on clean data "weak" where the samples are too coarse for differences (their
    8th- and 6th-order estimates differ by more than ``COARSE_GAP``, relative), else
    "differences"), "noise_level": (D,) list, "coarse_sampling" (that gap, when it decided)}."""
    from .smoothing import noise_is_white, noise_level

    checks.choice("prefit targets", targets, TARGETS)
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (N, T, D), got {z.shape}")
    info = {"noise_level": [float(v) for v in noise_level(z)]}
    if targets == "auto":
        targets = NOISY_TARGETS if noise_is_white(z).any() else "differences"
        if targets == "differences" and z.shape[1] > 8:
            _, hi = derivative_estimates(z, 8)
            _, lo = derivative_estimates(z[:, 1:-1], 6)
            gap = float(np.linalg.norm(hi - lo) / max(np.linalg.norm(hi), 1e-300))
            if gap > COARSE_GAP:
                targets, info["coarse_sampling"] = "weak", gap
    info["targets"] = targets
    return info


def derivative_targets(z: np.ndarray, *, order: int = 8, targets: str = "auto",
                       windows=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(states, derivatives, info) for the pre-fit from trajectories z (N, T, D) at unit spacing.

    Pointwise targets only: "differences" (central differences of ``order``,
    the clean-data path), "smoothed" (Savitzky-Golay states and derivatives
    with per-component ``windows`` (D,), chosen from the noise level when
    None) or "auto" (smoothed where :func:`dynfit.smoothing.noise_is_white`
    finds noise in some component, else differences); weak-form targets have
    no pointwise derivatives (:func:`dynfit.weakform.weak_system`). info:
    "targets" (the one used), "noise_level" (D,) list (in z's units; on clean
    data an upper bound), "windows" (D,) list (smoothed only).
    """
    from .smoothing import savgol_derivatives, savgol_window

    if targets == "weak":
        raise ValueError("derivative_targets gives pointwise targets ('auto', 'differences', "
                         "'smoothed'); weak-form targets come from dynfit.weakform.weak_system")
    info = choose_targets(z, targets)
    z = np.asarray(z, dtype=np.float64)
    if info["targets"] == "weak":
        info["targets"] = "smoothed"
    if info["targets"] == "differences":
        states, derivs = derivative_estimates(z, order)
        return states, derivs, info
    noise = np.asarray(info["noise_level"])
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


def _relative_error(field, zs: torch.Tensor, dz: torch.Tensor, lift=None) -> float:
    with torch.no_grad():
        out = field(torch.zeros((), dtype=zs.dtype, device=zs.device), zs)
        res = (out if lift is None else lift(out)) - dz
        return float(res.square().sum().sqrt() / dz.square().sum().sqrt())


def _has_library(field: torch.nn.Module) -> bool:
    return isinstance(getattr(field, "coef", None), torch.nn.Parameter) and hasattr(field,
                                                                                    "features")


def _targets(field, z, order, targets, windows, width):
    """(states (B, D), targets (R, D), lift or None, info): the regression's rows. Pointwise
    targets: R = B and no lift; weak-form targets: states are every sample (N * T), the targets
    the weak form's y and lift maps values at the states to their test-function integrals."""
    if targets == "differences" and windows is None:  # no noise estimate needed: the clean path
        states, derivs = derivative_estimates(z, order)
        return states, derivs, None, {"targets": "differences"}
    info = choose_targets(z, targets)
    if info["targets"] == "weak" and targets == "auto" and not _has_library(field):
        # weak targets were measured on library fields only
        info["targets"] = "differences" if "coarse_sampling" in info else "smoothed"
    if info["targets"] != "weak":
        states, derivs, info = derivative_targets(z, order=order, targets=info["targets"],
                                                  windows=windows)
        return states, derivs, None, info
    from .smoothing import savgol_window
    from .weakform import weak_form_for, width_from_windows

    z = np.asarray(z, dtype=np.float64)
    if width is None:
        if windows is None:
            windows = savgol_window(z, np.asarray(info["noise_level"]))
        width = width_from_windows(windows, z.shape[1])
    if windows is not None:
        info["windows"] = [int(w) for w in np.asarray(windows).reshape(-1)]
    form = weak_form_for(z, width=width)
    n, t, d = z.shape
    info.update({"weak_width": form.width, "weak_degree": form.degree,
                 "weak_stride": form.stride})

    def lift(v: torch.Tensor) -> torch.Tensor:
        return form.integrate(v.reshape(n, t, -1))

    return z.reshape(-1, d), form.targets(z), lift, info


# noisy targets: the neural part is kept only if it lowers the held-out RMS error below this
# fraction of the least-squares start's (a field that holds the flow gains a few % by fitting the
# noise's imprint on the features, which forecasts worse: docs/training.md, "Weak-form targets")
_NEURAL_GAIN = 0.9


def _held_out(n_rows: int, n_traj: int) -> torch.Tensor:
    """(n_rows,) bool: the validation rows of trajectory-major targets, the last fifth of the
    trajectories (of the rows for one trajectory)."""
    held = torch.zeros(n_rows, dtype=torch.bool)
    if n_traj >= 2 and n_rows % n_traj == 0:
        per = n_rows // n_traj
        held[(n_traj - max(1, round(0.2 * n_traj))) * per:] = True
    else:
        held[int(0.8 * n_rows):] = True
    return held


def _lbfgs(field, zs, dz, up, t_zero, iterations: int, tolerance: float,
           held: torch.Tensor | None) -> dict:
    """L-BFGS on the mean squared error of ``up(field(zs))`` against dz, 20 iterations a step,
    until the relative change over 5 steps falls below ``tolerance`` or ``iterations`` are
    spent; the weights kept are the lowest loss's. With ``held`` (rows, bool) the loss is on the
    other rows and the weights kept are those with the lowest error on the held rows, if it is
    below ``_NEURAL_GAIN`` x the starting weights' (else the starting weights); it stops after 2
    steps without improving it."""
    params = [p for p in field.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=20, tolerance_grad=0.0,
                            tolerance_change=0.0, history_size=50, line_search_fn="strong_wolfe")
    fit_rows = slice(None) if held is None else ~held.to(dz.device)
    norm = float(dz[fit_rows].square().mean())
    val_norm = math.nan if held is None else float(dz[held.to(dz.device)].square().mean())

    def residual():
        return up(field(t_zero, zs)) - dz

    def closure():
        opt.zero_grad()
        loss = residual()[fit_rows].square().mean() / norm
        loss.backward()
        return loss

    def judged() -> float:
        with torch.no_grad():
            if held is None:
                return float(residual().square().mean() / norm)
            return float(residual()[held.to(dz.device)].square().mean() / val_norm)

    losses, done, stale = [], 0, 0
    best = start = {k: v.detach().clone() for k, v in field.state_dict().items()}
    best_loss = judged()
    out = {} if held is None else {"prefit_validation_start": math.sqrt(best_loss)}
    while done < iterations:
        opt.step(closure)
        done += 20
        loss = float(closure().detach())
        score = loss if held is None else judged()
        if not (math.isfinite(loss) and math.isfinite(score)):
            break
        if score < best_loss:
            best_loss, stale = score, 0
            best = {k: v.detach().clone() for k, v in field.state_dict().items()}
        else:
            stale += 1
        losses.append(loss)
        if held is not None and stale >= 2:
            break
        if len(losses) > 5 and (losses[-6] - losses[-1]) <= tolerance * losses[-6]:
            break
    if held is not None and math.sqrt(best_loss) > _NEURAL_GAIN * out["prefit_validation_start"]:
        best, best_loss = start, out["prefit_validation_start"] ** 2  # not worth its risk
    field.load_state_dict(best)
    out["iterations"] = done
    if held is not None:
        out["prefit_validation"] = math.sqrt(best_loss)
    return out


def prefit(field: torch.nn.Module, z: np.ndarray, *, order: int = 8, iterations: int = 200,
           tolerance: float = 1e-3, device=None, dtype=torch.float64, targets: str = "differences",
           windows=None, width: int | None = None) -> dict:
    """Fit ``field`` (in place) to the derivatives of z (N, T, D) at unit spacing.

    targets: "differences" (the default; central differences of ``order``,
    the clean-data path), "smoothed" (Savitzky-Golay, per-component
    ``windows``), "weak" (weak-form targets, :mod:`dynfit.weakform`: test
    functions of ``width`` samples; when None,
    :func:`dynfit.weakform.width_from_windows` of the Savitzky-Golay
    ``windows``, themselves from the noise level when None) or "auto"
    (:func:`choose_targets`: on noisy data weak for a field with a library,
    smoothed for others; differences on clean data).

    A field with a library (``features`` and ``coef``; a 0/1 ``mask`` buffer
    restricts each component to its active terms) gets its coefficients from
    linear least squares first. Then, if the field has other parameters,
    L-BFGS on the mean squared derivative (or weak-form) error runs until the
    relative change of the loss over 5 steps of 20 iterations falls below
    ``tolerance`` or ``iterations`` are spent. On noisy (smoothed or weak)
    targets the last fifth of the trajectories is held out: the weights kept
    are those with the smallest held-out error if it is 10% below the
    least-squares start's (else the start), so the neural part does not fit
    the noise ("prefit_validation", relative RMS, and
    "prefit_validation_start"). Returns {"field_error":
    relative RMS error of the field on the targets, "field_error_lstsq",
    "iterations", "wall_time", "targets", "noise_level" (D,), "windows"
    (smoothed or weak targets), "weak_width", "weak_degree", "weak_stride"
    (weak targets)}.
    """
    iterations = checks.integer("prefit iterations", iterations, minimum=0)
    checks.choice("prefit targets", targets, TARGETS)
    t0 = time.perf_counter()
    states, derivs, lift, tinfo = _targets(field, z, order, targets, windows, width)
    dev = torch.device("cpu") if device is None else torch.device(device)
    zs = torch.as_tensor(states, dtype=dtype, device=dev)
    dz = torch.as_tensor(derivs, dtype=dtype, device=dev)
    up = (lambda v: v) if lift is None else lift
    info = {"field_error_lstsq": math.nan, "iterations": 0, **tinfo}
    coef = getattr(field, "coef", None)
    t_zero = torch.zeros((), dtype=zs.dtype, device=dev)
    if _has_library(field):
        with torch.no_grad():
            feats = up(field.features(zs)).to(torch.float64)
            target = dz.to(torch.float64)
            mlp = getattr(field, "mlp", None)
            if mlp is not None:
                target = target - up(mlp(t_zero, zs)).to(torch.float64)
            mask = getattr(field, "mask", None)
            mask = mask if isinstance(mask, torch.Tensor) else None
            coef.copy_(_lstsq(feats, target, mask).to(coef))
        info["field_error_lstsq"] = _relative_error(field, zs, dz, lift)
    others = [p for name, p in field.named_parameters() if p.requires_grad and p is not coef]
    if others and iterations > 0:
        # noisy targets: the neural part could fit the noise; held-out rows judge each step
        held = None if tinfo["targets"] == "differences" else _held_out(dz.shape[0], len(z))
        info.update(_lbfgs(field, zs, dz, up, t_zero, iterations, tolerance, held))
    info["field_error"] = _relative_error(field, zs, dz, lift)
    info["wall_time"] = time.perf_counter() - t0
    return info
