"""Lyapunov spectra by the QR (Benettin) method on the tangent dynamics.

The state x (d,) and k tangent vectors V (d, k) are integrated together,
x' = f(x, t), V' = J(x, t) V, with a fixed-step explicit Runge-Kutta method
(any tableau: rk4 by default, rkf45 at fixed steps is order 5). Every
``renorm_every`` steps V is re-orthonormalised by modified Gram-Schmidt
(V = QR) and log R_jj is accumulated; the exponents are these sums divided
by the elapsed time. The kernels are templates of group ``"lyapunov"`` of
:mod:`systems.kernels`, compiled per system and cached across processes.
"""
from __future__ import annotations

import math

import numpy as np

from _dyncore import checks
from .integrate import BlowUpError
from .kernels import compile_kernels, template
from .system import get
from _dyncore.tableaus import method_tableau

__all__ = ["lyapunov_spectrum", "kaplan_yorke_dimension"]

_rhs = _jac = None  # bound per system in the generated module
_D = _S = 0  # state dimension and stages, constants in the generated module
prange = range


@template("lyapunov")
def _tangent_rhs(z, t, p, out, d, kk, J):
    """Augmented field: z = (x, V row-major) of length d + d*kk -> out."""
    x = z[:d]
    _rhs(x, t, p, out[:d])
    _jac(x, t, p, J)
    for i in range(d):
        for j in range(kk):
            acc = 0.0
            for m in range(d):
                acc += J[i, m] * z[d + m * kk + j]
            out[d + i * kk + j] = acc


@template("lyapunov")
def _tangent_step(z, t, h, p, a, b, c, K, tmp, d, kk, J):
    """One explicit RK step of the augmented system, in place; K (s, n) stages."""
    s = _S
    n = z.shape[0]
    for i in range(s):
        for m in range(n):
            tmp[m] = 0.0
        for j in range(i):
            aij = a[i, j]
            if aij != 0.0:
                for m in range(n):
                    tmp[m] += aij * K[j, m]
        for m in range(n):
            tmp[m] = z[m] + h * tmp[m]
        _tangent_rhs(tmp, t + c[i] * h, p, K[i], d, kk, J)
    for m in range(n):
        acc = 0.0
        for r in range(s):
            acc += b[r] * K[r, m]
        z[m] += h * acc


@template("lyapunov")
def _gram_schmidt(z, d, kk, logr):
    """Orthonormalise the columns of V (stored in z[d:]) in place; logr (kk,) gets log R_jj."""
    for j in range(kk):
        for i in range(j):
            r = 0.0
            for m in range(d):
                r += z[d + m * kk + i] * z[d + m * kk + j]
            for m in range(d):
                z[d + m * kk + j] -= r * z[d + m * kk + i]
        nrm = 0.0
        for m in range(d):
            nrm += z[d + m * kk + j] ** 2
        nrm = math.sqrt(nrm)
        logr[j] = math.log(nrm) if nrm > 0.0 else -np.inf
        if nrm > 0.0:
            for m in range(d):
                z[d + m * kk + j] /= nrm


@template("lyapunov")
def _benettin(x0, t0, h, n_transient, n_steps, renorm_every, kk, p, a, b, c, sums):
    """Run n_transient + n_steps steps; sums (kk,) += log R_jj after the transient.

    Returns (status, t, elapsed): status 1 if the state or a tangent vector
    became non-finite at time t; elapsed is the time over which sums ran.
    """
    d = _D
    n = d + d * kk
    z = np.zeros(n)
    for m in range(d):
        z[m] = x0[m]
    for j in range(kk):
        z[d + j * kk + j] = 1.0
    K = np.empty((_S, n))
    tmp = np.empty(n)
    J = np.empty((d, d))
    logr = np.empty(kk)
    for j in range(kk):
        sums[j] = 0.0
    elapsed = 0.0
    total = n_transient + n_steps
    for step in range(total):
        t = t0 + step * h
        _tangent_step(z, t, h, p, a, b, c, K, tmp, d, kk, J)
        if (step + 1) % renorm_every == 0 or step + 1 == total:
            _gram_schmidt(z, d, kk, logr)
            for m in range(n):
                if not np.isfinite(z[m]):
                    return 1, t + h, elapsed
            if step >= n_transient:
                for j in range(kk):
                    sums[j] += logr[j]
        if step >= n_transient:
            elapsed += h
    return 0, t0 + total * h, elapsed


def lyapunov_spectrum(
    system,
    *,
    n_steps: int = 200_000,
    dt: float | None = None,
    transient: float | None = None,
    x0=None,
    params: dict | None = None,
    k: int | None = None,
    renorm_every: int = 1,
    method: str = "rk4",
) -> np.ndarray:
    """The k largest Lyapunov exponents of ``system``, descending, shape (k,).

    n_steps: integration steps averaged over (time n_steps * dt); dt: step
    (default the system's sampling step ``system.dt``); transient: time run
    before averaging, also aligning the tangent vectors (default 20 Lyapunov
    times, else 2000 steps); x0: (dim,) start (default ``system.x0``); k:
    number of exponents (default dim); renorm_every: steps between QR
    re-orthonormalisations; method: fixed-step tableau (rk4, or rkf45 whose
    propagated solution is order 5).
    """
    if params is not None and not isinstance(params, dict):
        raise TypeError(
            f"params must be a dict of parameter overrides by name, got {type(params).__name__}"
        )
    system = get(system, **(params or {}))
    if system.jac is None:
        raise ValueError(
            f"system {system.name!r} has no Jacobian; give the System a jac(x, t, p, out) function "
            "(numba-compiled) to compute its Lyapunov spectrum"
        )
    n_steps = checks.integer("n_steps", n_steps, minimum=1)
    renorm_every = checks.integer("renorm_every", renorm_every, minimum=1)
    dt = checks.positive("dt", system.dt if dt is None else dt)
    k = checks.integer("k", system.dim if k is None else k, minimum=1, maximum=system.dim,
                       fix=f"{system.name!r} has {system.dim} exponents")
    if transient is None:
        lam = system.lyapunov_max
        transient = 20.0 / lam if lam and lam > 0 else 2000 * dt
    transient = checks.real("transient", transient, minimum=0.0)
    tab, _ = method_tableau(method, False)
    x = checks.finite_array("x0", system.x0 if x0 is None else x0, shape=(system.dim,),
                            fix=f"give a start of {system.name!r}")

    mod = compile_kernels("lyapunov", system, tab.stages)
    sums = np.zeros(int(k))
    a, b, c = (np.ascontiguousarray(v) for v in (tab.a, tab.b, tab.c))
    status, t_fail, elapsed = mod._benettin(
        x, 0.0, dt, int(round(transient / dt)), int(n_steps), int(renorm_every), int(k),
        system.param_array(), a, b, c, sums,
    )
    if status != 0:
        raise BlowUpError(
            f"{system.name}: the tangent integration blew up at t={t_fail:.6g}; use a smaller dt "
            f"(got {dt}) or check the parameters",
            0,
            float(t_fail),
        )
    return np.sort(sums / elapsed)[::-1].copy()


def kaplan_yorke_dimension(exponents) -> float:
    """Kaplan-Yorke dimension j + (l_1 + ... + l_j) / |l_{j+1}| of a spectrum (any order).

    j is the largest index with a non-negative partial sum; 0 if l_1 < 0 and
    the full dimension if every partial sum is non-negative.
    """
    lam = np.sort(np.asarray(exponents, dtype=np.float64).ravel())[::-1]
    if lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError(f"exponents must be a non-empty finite array, got {exponents!r}")
    csum = np.cumsum(lam)
    if csum[0] < 0:
        return 0.0
    nonneg = np.flatnonzero(csum >= 0)
    j = int(nonneg[-1]) + 1  # number of exponents in the non-negative partial sum
    if j == lam.size:
        return float(lam.size)
    return float(j + csum[j - 1] / abs(lam[j]))
