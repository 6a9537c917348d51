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
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from systems import checks

__all__ = ["lyapunov_spectrum", "system_lyapunov_spectrum"]


def _benettin(step: Callable, x0: np.ndarray, *, n_steps: int, transient: int, k: int,
              dt: float) -> np.ndarray:
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
        raise ValueError(f"field(t, x) must return a tensor of x's shape {tuple(x.shape)}, got {got}; "
                         "check that x0 has the field's state dimension")


def lyapunov_spectrum(field, x0, *, dt: float, n_steps: int, transient: int = 0,
                      k: int | None = None) -> np.ndarray:
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
        raise TypeError(f"field must be a torch module called as field(t, x), got {type(field).__name__}")
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
        xb = torch.as_tensor(x, dtype=dtype, device=device).repeat_interleave(dim, 0).requires_grad_(True)
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


def system_lyapunov_spectrum(system, x0=None, *, dt: float, n_steps: int, transient: int = 0,
                             k: int | None = None) -> np.ndarray:
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
    runs = [systems.lyapunov_spectrum(system, n_steps=n_steps, dt=dt, transient=transient * dt, x0=start, k=k)
            for start in x0]
    return np.sort(np.mean(runs, axis=0))[::-1]
