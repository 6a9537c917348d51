"""Lyapunov spectra by the QR (Benettin) method.

The torch estimator integrates the state with classical RK4 at a fixed step
through :func:`dynfit.odesolve`; the tangent map of one step is the exact
derivative of that step (autograd), so state and tangents stay consistent. After each
step the tangent basis Q (dim, k) is re-orthonormalised by QR and log|diag R|
is accumulated; the exponents are the time averages after a transient. Several
starts (x0 of shape (n, dim)) run side by side in one batch and their
exponents are averaged, which costs little more than one start in torch.

- ``lyapunov_spectrum(field, x0, ...)``: a torch module ``field(t, x)``
  (x of shape (batch, dim)), Jacobians by autograd.
- ``system_lyapunov_spectrum(system, x0, ...)``: a ``systems.System``, by
  ``systems.lyapunov_spectrum`` (numba, analytic Jacobian) from each start.
- ``lyapunov_from_data(x, dt=...)``: the largest exponent of sampled
  trajectories alone (no equations, no model), by Rosenstein et al. (1993).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from systems import checks

__all__ = ["lyapunov_spectrum", "system_lyapunov_spectrum", "lyapunov_from_data"]


def _benettin(
    step: Callable, x0: np.ndarray, *, n_steps: int, transient: int, k: int, dt: float
) -> np.ndarray:
    """Run ``step(x (n, d), q (n, d, k), t) -> (x, q)``; return the k exponents, descending."""
    n, dim = x0.shape
    x = x0
    q = np.broadcast_to(np.eye(dim, k), (n, dim, k)).copy()
    sums = np.zeros((n, k))
    for i in range(transient + n_steps):
        x, q = step(x, q, i * dt)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(q))):
            raise FloatingPointError(
                f"the trajectory left the finite numbers at step {i} (t = {i * dt:g}); the field "
                "diverges from this start: pick x0 on its attractor or a smaller dt"
            )
        q, r = np.linalg.qr(q)
        d = np.diagonal(r, axis1=-2, axis2=-1)
        q = q * np.sign(np.where(d == 0, 1.0, d))[:, None, :]  # keep R's diagonal positive
        if i >= transient:
            sums += np.log(np.abs(d) + 1e-300)
    return np.sort(sums.mean(axis=0) / (n_steps * dt))[::-1]


def _common_checks(x0, dim, dt, n_steps, transient, k):
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.ndim == 1:
        x0 = x0[None]
    if x0.ndim != 2 or x0.shape[1] != dim:
        raise ValueError(f"x0 must have shape ({dim},) or (n_starts, {dim}), got {np.shape(x0)}")
    if not np.all(np.isfinite(x0)):
        raise ValueError("x0 must be finite; it contains NaN or inf")
    checks.positive("dt", dt)
    n_steps = checks.integer("n_steps", n_steps, minimum=1)
    transient = checks.integer("transient", transient, minimum=0)
    k = dim if k is None else checks.integer("k", k, minimum=1)
    if k > dim:
        raise ValueError(f"k={k} exponents requested but the state has dim={dim}; pass k <= {dim}")
    return x0, float(dt), n_steps, transient, k


def _check_field_output(field, x0, dtype, device):
    import torch

    x = torch.as_tensor(x0, dtype=dtype, device=device)
    try:
        with torch.no_grad():
            y = field(torch.zeros((), dtype=dtype, device=device), x)
    except Exception as exc:
        raise ValueError(
            f"field(t, x) failed for x of shape {tuple(x.shape)} built from x0: {exc!r}; "
            "x0 must have the field's state dimension, shape (dim,) or (n_starts, dim)"
        ) from exc
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"field(t, x) must return a tensor of x's shape {tuple(x.shape)}, got {got}; "
            "check that x0 has the field's state dimension"
        )


def lyapunov_spectrum(
    field, x0, *, dt: float, n_steps: int, transient: int = 0, k: int | None = None
) -> np.ndarray:
    """Lyapunov exponents of the flow of a torch vector field, descending.

    field: torch module (or callable) called as ``field(t, x)`` with t a 0-d
        tensor and x of shape (batch, dim); returns dx/dt of shape (batch, dim).
    x0: start (dim,) or several starts (n, dim), ideally on the attractor; with
        several, the exponents are averaged over them.
    dt: RK4 step, in the field's time unit (the exponents are per that unit).
    n_steps: averaging steps after ``transient`` discarded steps.
    k: how many exponents (default dim).
    Returns a numpy array (k,) in descending order. The Jacobian of each RK4
    step is taken by reverse-mode autograd in one batched pass (dim copies of
    each state, one backward), so the field must treat batch rows
    independently; a torch module is put in eval mode for the run and
    restored after. Computed in the dtype of the field's parameters.
    """
    import torch

    if not callable(field):
        raise TypeError(
            f"field must be a torch module called as field(t, x), got {type(field).__name__}"
        )
    params = list(field.parameters()) if isinstance(field, torch.nn.Module) else []
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float64
    device = params[0].device if params else torch.device("cpu")
    dim = np.shape(x0)[-1] if np.ndim(x0) else 0
    x0, dt, n_steps, transient, k = _common_checks(x0, dim, dt, n_steps, transient, k)
    _check_field_output(field, x0, dtype, device)
    h = dt
    n = x0.shape[0]
    eye = torch.eye(dim, dtype=dtype, device=device).repeat(n, 1)  # (n*dim, dim)

    from ..solvers import odesolve

    def rk4(x, t):  # one classical RK4 step through the one solver path
        ts = torch.tensor([t, t + h], dtype=dtype, device=device)
        return odesolve(field, x, ts, method="rk4", step_size=h, raise_on_failure=False).ys[-1]

    def step(x, q, t):
        # Row (s, i) of the batch is a copy of start s; the gradient of
        # sum y_(s,i)[i] gives row i of start s's step Jacobian.
        xb = (
            torch.as_tensor(x, dtype=dtype, device=device)
            .repeat_interleave(dim, 0)
            .requires_grad_(True)
        )
        with torch.enable_grad():
            yb = rk4(xb, t)
            (j,) = torch.autograd.grad((yb * eye).sum(), xb)
        xn = yb.detach()[::dim].to("cpu", torch.float64).numpy()
        j = j.to("cpu", torch.float64).numpy().reshape(n, dim, dim)
        return xn, j @ q

    was_training = getattr(field, "training", False)
    if isinstance(field, torch.nn.Module):
        field.eval()
    try:
        return _benettin(step, x0, n_steps=n_steps, transient=transient, k=k, dt=dt)
    finally:
        if isinstance(field, torch.nn.Module):
            field.train(was_training)


def system_lyapunov_spectrum(
    system, x0=None, *, dt: float, n_steps: int, transient: int = 0, k: int | None = None
) -> np.ndarray:
    """Lyapunov exponents of a ``systems.System`` (analytic Jacobian), descending.

    ``systems.lyapunov_spectrum`` (RK4 on the state and variational
    equations, QR every step) from each start of x0 (dim,) or (n, dim)
    (default the system's ``x0``), averaged. Returns a numpy array (k,) in
    1 / (system time unit).
    """
    import systems

    system = systems.get(system)
    x0 = system.x0 if x0 is None else x0
    x0, dt, n_steps, transient, k = _common_checks(x0, system.dim, dt, n_steps, transient, k)
    # one Lyapunov code per kind: a System goes to systems' numba QR/Benettin, one start at a time
    runs = [
        systems.lyapunov_spectrum(
            system, n_steps=n_steps, dt=dt, transient=transient * dt, x0=start, k=k
        )
        for start in x0
    ]
    return np.sort(np.mean(runs, axis=0))[::-1]


def _mean_period(z: np.ndarray, dt: float) -> float:
    """The power-weighted mean period of trajectories z (N, T, D), in the units of dt."""
    power = (np.abs(np.fft.rfft(z - z.mean(1, keepdims=True), axis=1)) ** 2).sum((0, 2))
    freq = np.fft.rfftfreq(z.shape[1], dt)
    power[0] = 0.0
    if power.sum() <= 0:
        raise ValueError("the data do not move (no power at any frequency); they hold no dynamics")
    return 1.0 / float(np.sum(freq * power) / np.sum(power))


def lyapunov_from_data(
    x,
    *,
    dt: float,
    n_points: int = 2000,
    periods: float = 12.0,
    seed: int = 0,
    fit_range=(0.1, 0.5),
    return_curve: bool = False,
):
    """The largest Lyapunov exponent of sampled trajectories, by Rosenstein et al. (1993).

    x: trajectories (T, D) or (N, T, D) of the full state, sampled every dt.
    For ``n_points`` reference samples (seeded draw) the nearest neighbour
    on any trajectory, excluding the reference's own trajectory within one
    mean period (Theiler window), is followed for ``periods`` mean periods;
    the mean log distance y(k) grows at the rate lambda_1 until it
    saturates at the attractor's size. The slope is fitted where y lies
    between ``fit_range`` = (0.1, 0.5) of the way from y(0) to the
    saturation level (the median of y's last quarter). States are
    standardised per component first (the exponent does not change).
    Returns lambda_1 in 1 / (unit of dt); with ``return_curve`` also a dict
    with ``k`` (steps), ``y`` (mean log distance) and the fitted ``window``.
    On Lorenz'63 (20000 samples, dt 0.01) it gives 0.916 (true 0.906);
    expect some 10% error with a few thousand samples. Raises ValueError for
    data too short to see the divergence saturate (fewer than ~3 mean periods).
    """
    from scipy.spatial import cKDTree

    dt = checks.positive("dt", dt, fix="dt is the time between samples")
    n_points = checks.integer("n_points", n_points, minimum=10)
    periods = checks.positive("periods", periods)
    seed = checks.integer("seed", seed, minimum=0)
    lo, hi = (float(v) for v in fit_range)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"fit_range must be two fractions 0 <= lo < hi <= 1, got {fit_range!r}")
    x = np.asarray(x, dtype=np.float64)
    x = x[None] if x.ndim == 2 else x
    if x.ndim != 3 or not np.all(np.isfinite(x)):
        raise ValueError(f"x must be finite trajectories (T, D) or (N, T, D), got shape {x.shape}")
    n, t, d = x.shape
    flat = x.reshape(-1, d)
    std = flat.std(0)
    if np.any(std == 0):
        raise ValueError("a component of the data is constant; drop it before estimating exponents")
    z = (x - flat.mean(0)) / std
    period = _mean_period(z, dt)
    theiler = max(1, int(round(period / dt)))
    k_max = int(min(round(periods * period / dt), t // 2))
    if k_max < 3 * theiler or k_max < 10:
        raise ValueError(
            f"trajectories of {t} samples are too short for Rosenstein's estimate: following "
            f"neighbours needs several mean periods ({period:.3g} time units = {theiler} samples "
            f"each) within half a trajectory; pass longer trajectories or give lyapunov_time"
        )
    m = t - k_max
    points = z[:, :m].reshape(-1, d)
    traj, when = np.repeat(np.arange(n), m), np.tile(np.arange(m), n)
    rng = np.random.default_rng(seed)
    ref = rng.choice(points.shape[0], min(n_points, points.shape[0]), replace=False)
    dist, idx = cKDTree(points).query(points[ref], k=min(64, points.shape[0]))
    ok = (
        (traj[idx] != traj[ref][:, None]) | (np.abs(when[idx] - when[ref][:, None]) > theiler)
    ) & (dist > 0)
    has = ok.any(1)
    if has.sum() < 10:
        raise ValueError(
            "too few reference samples have a neighbour outside their Theiler window; pass "
            "longer or more trajectories, or give lyapunov_time"
        )
    ref, near = ref[has], idx[has, np.argmax(ok[has], 1)]
    ks = np.arange(k_max + 1)
    a = z[traj[ref][:, None], when[ref][:, None] + ks]
    b = z[traj[near][:, None], when[near][:, None] + ks]
    y = np.mean(np.log(np.linalg.norm(a - b, axis=-1) + 1e-300), 0)
    y_sat = float(np.median(y[-max(1, k_max // 4) :]))
    inside = (y > y[0] + lo * (y_sat - y[0])) & (y < y[0] + hi * (y_sat - y[0]))
    i0 = int(np.argmax(inside))
    i1 = i0 + (int(np.argmin(inside[i0:])) if not inside[i0:].all() else len(inside) - i0)
    if not inside.any() or i1 - i0 < 3 or y_sat <= y[0]:
        raise ValueError(
            "the neighbours' distances do not grow and saturate (no chaos visible in the data, "
            "or too few samples); give lyapunov_time"
        )
    slope = float(np.polyfit(ks[i0:i1] * dt, y[i0:i1], 1)[0])
    if return_curve:
        return slope, {"k": ks, "y": y, "window": (i0, i1), "theiler": theiler}
    return slope
