"""Explicit Runge-Kutta integration of ensembles, compiled with numba.

One generic stepper runs any :class:`systems.tableaus.Tableau` (the tableau
arrays ``a, b, c`` and the error weights are passed into the compiled code),
either at fixed steps (``substeps`` steps per sample interval) or adaptively
with per-trajectory step-size control (mixed rtol/atol RMS norm, PI
controller) that steps exactly onto every requested sample time. Ensembles
run in parallel over trajectories (``prange``).

The kernels below are templates (group ``"integrate"`` of
:mod:`systems.kernels`), compiled per system so that numba can cache them
across processes; :func:`kernels` returns a system's compiled module.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from _dyncore import checks
from .kernels import KernelCacheError, compile_kernels, define_constants, template
from _dyncore.stats import Stats
from _dyncore.status import FAC_MAX, FAC_MIN, SAFETY_PI, Status
from _dyncore.tableaus import METHODS, method_tableau

if TYPE_CHECKING:
    from .system import System

__all__ = [
    "Solution", "IntegrationError", "BlowUpError", "StepLimitError", "StepSizeUnderflowError",
    "integrate", "KernelCacheError"
]

# Status codes returned per trajectory by the compiled solvers: systems.status.Status,
# shared with dynfit.solvers (OK and UNDERFLOW are its aliases of SUCCESS, STEP_UNDERFLOW).
SUCCESS, MAX_STEPS, STEP_UNDERFLOW, NONFINITE = (
    int(s) for s in (Status.SUCCESS, Status.MAX_STEPS, Status.STEP_UNDERFLOW, Status.NONFINITE)
)
OK, UNDERFLOW = SUCCESS, STEP_UNDERFLOW

# Step-size control constants (Hairer, Norsett & Wanner I, II.4; PI control
# after Gustafsson): factor = SAFETY * err^-alpha * err_prev^beta. The safety
# factor 0.8 (as in MATLAB's ode45) rather than 0.9 costs ~40% more steps and
# buys ~7x smaller global error on Lorenz'63 at the same tolerance. The shared
# defaults and why they differ from dynfit's MixedNorm: systems/status.py.
SAFETY = SAFETY_PI
BLOCK = 8  # trajectories whose stages are computed together (fixed and adaptive)
PI_ALPHA, PI_BETA = 0.7, 0.4  # exponents times q (order of the error estimate)
LOG_1EM4 = math.log(1e-4)


# --------------------------------------------------------------------------
# Kernel templates (group "integrate" of systems.kernels): compiled per system
# in a generated module where ``_rhs`` and ``_jac`` are that system's functions
# and the constants below are written in. Plain Python here, never called.
# --------------------------------------------------------------------------
define_constants(
    "integrate",
    SAFETY=SAFETY,
    FAC_MIN=FAC_MIN,
    FAC_MAX=FAC_MAX,
    BLOCK=BLOCK,
    PI_ALPHA=PI_ALPHA,
    PI_BETA=PI_BETA,
    LOG_1EM4=LOG_1EM4,
    SUCCESS=SUCCESS,
    MAX_STEPS=MAX_STEPS,
    STEP_UNDERFLOW=STEP_UNDERFLOW,
    NONFINITE=NONFINITE,
)
_rhs = _jac = None  # bound per system in the generated module
_D = 0  # the state dimension, a compile-time constant in the generated module
_S = 0  # the number of stages of the method, likewise
prange = range  # numba.prange in the generated module


@template("integrate")
def _all_finite(x):
    for m in range(_D):
        if not np.isfinite(x[m]):
            return False
    return True


@template("integrate")
def _solve_fixed_block(x0, t_eval, n_sub, p, a, b, c, out, status, t_fail):
    """Fixed steps (n_sub per sample interval) for a block of trajectories in lockstep.

    x0 (nb, d) -> out (nb, m, d); status, t_fail (nb,). Stepping the block
    stage by stage interleaves independent dependency chains, which the CPU
    overlaps (faster than one trajectory at a time for small systems).
    """
    nb = x0.shape[0]
    x = x0.copy()
    k = np.empty((nb, _S, _D))
    tmp = np.empty((nb, _D))
    for q in range(nb):
        status[q] = SUCCESS
        t_fail[q] = t_eval[-1]
        for m in range(_D):
            out[q, 0, m] = x[q, m]
        if not _all_finite(x[q]):
            status[q] = NONFINITE
            t_fail[q] = t_eval[0]
    for i in range(1, t_eval.shape[0]):
        t_start = t_eval[i - 1]
        h = (t_eval[i] - t_start) / n_sub
        for j in range(n_sub):
            t = t_start + j * h
            for q in range(nb):
                _rhs(x[q], t, p, k[q, 0])
            for st in range(1, _S):
                for q in range(nb):
                    for m in range(_D):
                        acc = 0.0
                        for r in range(st):
                            acc += a[st, r] * k[q, r, m]
                        tmp[q, m] = x[q, m] + h * acc
                    _rhs(tmp[q], t + c[st] * h, p, k[q, st])
            for q in range(nb):
                for m in range(_D):
                    acc = 0.0
                    for r in range(_S):
                        acc += b[r] * k[q, r, m]
                    x[q, m] += h * acc
                if status[q] == SUCCESS and not _all_finite(x[q]):
                    status[q] = NONFINITE
                    t_fail[q] = t + h
        for q in range(nb):
            for m in range(_D):
                out[q, i, m] = x[q, m]


@template("integrate")
def _rms_scaled(v, x, rtol, atol):
    acc = 0.0
    for m in range(_D):
        sc = atol + rtol * abs(x[m])
        acc += (v[m] / sc) ** 2
    return math.sqrt(acc / _D)


@template("integrate")
def _initial_step(x, t, p, f0, q, rtol, atol, tmp, f1):
    """Starting step size (Hairer, Norsett & Wanner I, II.4)."""
    d0 = _rms_scaled(x, x, rtol, atol)
    d1 = _rms_scaled(f0, x, rtol, atol)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    for m in range(_D):
        tmp[m] = x[m] + h0 * f0[m]
    _rhs(tmp, t + h0, p, f1)
    for m in range(_D):
        f1[m] -= f0[m]
    d2 = _rms_scaled(f1, x, rtol, atol) / h0
    big = max(d1, d2)
    if not np.isfinite(big):
        return h0 * 1e-3
    h1 = max(1e-6, h0 * 1e-3) if big <= 1e-15 else (0.01 / big) ** (1.0 / q)
    return min(100.0 * h0, h1)


@template("integrate")
def _solve_adaptive_block(
    x0, t_eval, p, a, b, c, e, fsal, q, rtol, atol, max_steps, out, status, t_fail, stats
):
    """Adaptive steps for a block of trajectories, each with its own clock and step size.

    x0 (nb, d) -> out (nb, m, d), landing on every t_eval; status, t_fail
    (nb,); stats (nb, 3) accepted, rejected, f-evaluations. The stages of all
    active trajectories are computed together (independent work the CPU
    overlaps); acceptance and step control are per trajectory. q is the
    order of the error estimate (lower order + 1).
    """
    nb = x0.shape[0]
    n_t = t_eval.shape[0]
    alpha = PI_ALPHA / q
    beta = PI_BETA / q
    x = x0.copy()
    xnew = np.empty((nb, _D))
    k = np.empty((nb, _S, _D))
    tmp = np.empty((nb, _D))
    t = np.empty(nb)
    h = np.empty(nb)
    h_try = np.empty(nb)
    err_prev = np.empty(nb)
    fac_max = np.empty(nb)
    nxt = np.ones(nb, dtype=np.int64)  # index of the next sample time
    active = np.zeros(nb, dtype=np.bool_)
    k0_valid = np.zeros(nb, dtype=np.bool_)
    last = np.zeros(nb, dtype=np.bool_)
    n_active = 0
    for r in range(nb):
        t[r] = t_eval[0]
        status[r] = SUCCESS
        t_fail[r] = t_eval[n_t - 1]
        stats[r, 0] = 0
        stats[r, 1] = 0
        stats[r, 2] = 0
        for m in range(_D):
            out[r, 0, m] = x[r, m]
        if not _all_finite(x[r]):
            status[r] = NONFINITE
            t_fail[r] = t[r]
            continue
        _rhs(x[r], t[r], p, k[r, 0])
        if not _all_finite(k[r, 0]):
            status[r] = NONFINITE
            t_fail[r] = t[r]
            stats[r, 2] = 1
            continue
        h[r] = _initial_step(x[r], t[r], p, k[r, 0], q, rtol, atol, tmp[r], k[r, 1])
        stats[r, 2] = 2
        k0_valid[r] = True
        err_prev[r] = LOG_1EM4  # log of the previous accepted error
        fac_max[r] = FAC_MAX
        if n_t > 1:
            active[r] = True
            n_active += 1
    while n_active > 0:
        # choose each trajectory's step; stop those at the step limit or underflow
        for r in range(nb):
            if not active[r]:
                continue
            if stats[r, 0] + stats[r, 1] >= max_steps:
                status[r] = MAX_STEPS
                t_fail[r] = t[r]
                active[r] = False
                n_active -= 1
                continue
            target = t_eval[nxt[r]]
            ht = h[r]
            last[r] = False
            if t[r] + 1.01 * ht >= target:
                ht = target - t[r]
                last[r] = True
            if ht <= 16.0 * 2.220446049250313e-16 * max(abs(t[r]), 1.0):
                status[r] = STEP_UNDERFLOW
                t_fail[r] = t[r]
                active[r] = False
                n_active -= 1
                continue
            h_try[r] = ht
            if not k0_valid[r]:
                _rhs(x[r], t[r], p, k[r, 0])
                stats[r, 2] += 1
        # the stages, interleaved over the block
        for st in range(1, _S):
            for r in range(nb):
                if active[r]:
                    for m in range(_D):
                        acc = 0.0
                        for j in range(st):
                            acc += a[st, j] * k[r, j, m]
                        tmp[r, m] = x[r, m] + h_try[r] * acc
                    _rhs(tmp[r], t[r] + c[st] * h_try[r], p, k[r, st])
        # error estimate, acceptance and the next step size, per trajectory
        for r in range(nb):
            if not active[r]:
                continue
            stats[r, 2] += _S - 1
            ht = h_try[r]
            acc_err = 0.0
            for m in range(_D):
                ab = 0.0
                ae = 0.0
                for j in range(_S):
                    ab += b[j] * k[r, j, m]
                    ae += e[j] * k[r, j, m]
                xnew[r, m] = x[r, m] + ht * ab
                sc = atol + rtol * max(abs(x[r, m]), abs(xnew[r, m]))
                acc_err += (ht * ae / sc) ** 2
            err = math.sqrt(acc_err / _D)
            if err <= 1.0:
                if err == 0.0:
                    fac = fac_max[r]
                else:
                    log_err = math.log(err)
                    fac = SAFETY * math.exp(beta * err_prev[r] - alpha * log_err)
                    fac = min(fac_max[r], max(FAC_MIN, fac))
                if not last[r]:  # a step shortened to land on a sample says little about the next
                    err_prev[r] = max(log_err, LOG_1EM4) if err > 0.0 else LOG_1EM4
                fac_max[r] = FAC_MAX
                for m in range(_D):
                    x[r, m] = xnew[r, m]
                if fsal:
                    for m in range(_D):
                        k[r, 0, m] = k[r, _S - 1, m]
                    k0_valid[r] = True
                else:
                    k0_valid[r] = False
                h_new = ht * fac
                stats[r, 0] += 1
                if last[r]:
                    h[r] = max(h_new, h[r])  # landing on a sample must not shrink the next step
                    t[r] = t_eval[nxt[r]]
                    for m in range(_D):
                        out[r, nxt[r], m] = x[r, m]
                    nxt[r] += 1
                    if nxt[r] == n_t:
                        active[r] = False
                        n_active -= 1
                else:
                    h[r] = h_new
                    t[r] += ht
            else:
                if np.isfinite(err):
                    fac = max(FAC_MIN, SAFETY * err ** (-1.0 / q))
                else:
                    fac = FAC_MIN
                h[r] = ht * fac
                fac_max[r] = 1.0
                stats[r, 1] += 1


@template("integrate", parallel=True)
def _ensemble_fixed(x0s, t_eval, n_sub, p, a, b, c, out, status, t_fail):
    """x0s (n, d) -> out (n, m, d); status, t_fail (n,); blocks of BLOCK trajectories."""
    n = x0s.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    for ib in prange(n_blocks):
        lo = ib * BLOCK
        hi = min(lo + BLOCK, n)
        _solve_fixed_block(
            x0s[lo:hi], t_eval, n_sub, p, a, b, c, out[lo:hi], status[lo:hi], t_fail[lo:hi]
        )


@template("integrate", parallel=True)
def _ensemble_adaptive(
    x0s, t_eval, p, a, b, c, e, fsal, q, rtol, atol, max_steps, out, status, t_fail, stats
):
    """x0s (n, d) -> out (n, m, d); status, t_fail (n,); stats (n, 3); blocks of BLOCK
    trajectories."""
    n = x0s.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    for ib in prange(n_blocks):
        lo = ib * BLOCK
        hi = min(lo + BLOCK, n)
        _solve_adaptive_block(
            x0s[lo:hi], t_eval, p, a, b, c, e, fsal, q, rtol, atol, max_steps,
            out[lo:hi], status[lo:hi], t_fail[lo:hi], stats[lo:hi],
        )


def kernels(system: System, stages: int) -> ModuleType:
    """The compiled integrator kernels (``_ensemble_fixed``, ``_ensemble_adaptive``) for ``system``
    and methods of ``stages`` stages (generated and cached by :mod:`systems.kernels`)."""
    return compile_kernels("integrate", system, stages)


# --------------------------------------------------------------------------
# Public driver
# --------------------------------------------------------------------------
class IntegrationError(RuntimeError):
    """A trajectory could not be integrated; ``trajectory`` and ``time`` say where."""

    def __init__(self, message: str, trajectory: int, time: float):
        super().__init__(message)
        self.trajectory = trajectory
        self.time = time


class BlowUpError(IntegrationError):
    """The state became NaN or infinite."""


class StepLimitError(IntegrationError):
    """An adaptive solve reached ``max_steps``."""


class StepSizeUnderflowError(IntegrationError):
    """The adaptive step size fell to rounding level (finite-time blow-up or stiffness)."""


@dataclass(frozen=True)
class Solution:
    """Result of :func:`integrate`.

    t: (m,) sample times; x: (n, m, d) states; stats: per-trajectory
    :class:`systems.stats.Stats` with numpy arrays of shape (n,) (the type
    ``dynfit.odesolve`` returns too; fixed steps: every step accepted).
    ``n_accepted`` and ``n_rejected`` read ``stats``.
    """

    t: np.ndarray
    x: np.ndarray
    method: str
    adaptive: bool
    stats: Stats = field(repr=False)

    @property
    def n_accepted(self) -> np.ndarray:
        """(n,) accepted steps per trajectory (``stats.n_accepted``)."""
        return self.stats.n_accepted

    @property
    def n_rejected(self) -> np.ndarray:
        """(n,) rejected steps per trajectory (``stats.n_rejected``)."""
        return self.stats.n_rejected

    @property
    def n_f_evals(self) -> np.ndarray:
        """Deprecated: ``stats.n_f_evals_per_example`` ((n,) evaluations per trajectory).

        ``n_f_evals`` of a :class:`Stats` counts calls of the right-hand side, in both packages.
        """
        warnings.warn("systems.Solution.n_f_evals is deprecated: it is stats.n_f_evals_per_example "
                      "(evaluations per trajectory); stats.n_f_evals counts right-hand-side calls",
                      DeprecationWarning, stacklevel=2)
        return self.stats.n_f_evals_per_example


def default_max_steps(n_samples: int) -> int:
    """Default step limit per trajectory: 100,000 plus 10,000 per sample interval."""
    return 100_000 + 10_000 * max(n_samples - 1, 0)


def integrate(
    system: System,
    x0,
    t_eval,
    *,
    method: str = "rkf45",
    adaptive: bool | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-9,
    substeps: int = 1,
    max_steps: int | None = None,
    params=None,
) -> Solution:
    """Integrate an ensemble and return the states at ``t_eval``.

    system: a ``systems.System``; x0: (d,) or (n, d) initial states at
    ``t_eval[0]``; t_eval: (m,) strictly increasing sample times. Adaptive
    methods control the step per trajectory with the RMS norm of
    err / (atol + rtol * |x|) and land exactly on each sample time; fixed
    steps take ``substeps`` equal steps per sample interval. ``max_steps``
    (accepted + rejected, per trajectory) guards adaptive solves. ``params``:
    (n_params,) parameter vector (default ``system.param_array()``).
    Raises BlowUpError, StepLimitError or StepSizeUnderflowError naming the
    trajectory and time.
    """
    tab, adaptive = method_tableau(method, adaptive)
    rtol = checks.positive("rtol", rtol)
    atol = checks.positive("atol", atol)
    x0 = np.array(x0, dtype=np.float64, ndmin=1)
    single = x0.ndim == 1
    x0s = np.ascontiguousarray(x0[None] if single else x0)
    if x0s.ndim != 2 or x0s.shape[1] != system.dim:
        raise ValueError(
            f"x0 must have shape ({system.dim},) or (n_traj, {system.dim}) for {system.name!r}, "
            f"got {x0.shape}"
        )
    if not np.all(np.isfinite(x0s)):
        bad = int(np.argwhere(~np.isfinite(x0s))[0][0])
        raise ValueError(
            f"x0 contains NaN or inf (trajectory {bad}: {x0s[bad]}); give finite initial states"
        )
    t_eval = np.ascontiguousarray(t_eval, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval.size < 1:
        raise ValueError(f"t_eval must be a non-empty 1-D array of times, got shape {t_eval.shape}")
    if not np.all(np.isfinite(t_eval)) or np.any(np.diff(t_eval) <= 0):
        raise ValueError("t_eval must be finite and strictly increasing")
    substeps = checks.integer("substeps", substeps, minimum=1)
    max_steps = checks.integer(
        "max_steps", default_max_steps(t_eval.size) if max_steps is None else max_steps, minimum=1
    )
    p = system.param_array() if params is None else np.ascontiguousarray(params, dtype=np.float64)

    n, m, d = x0s.shape[0], t_eval.size, system.dim
    out = np.empty((n, m, d))
    status = np.zeros(n, dtype=np.int64)
    t_fail = np.zeros(n)
    stats = np.zeros((n, 3), dtype=np.int64)
    mod = kernels(system, tab.stages)
    a, b, c = (np.ascontiguousarray(v) for v in (tab.a, tab.b, tab.c))
    if adaptive:
        e = np.ascontiguousarray(tab.error_weights)
        q = float(min(tab.order, tab.order_low) + 1)
        mod._ensemble_adaptive(
            x0s,
            t_eval,
            p,
            a,
            b,
            c,
            e,
            bool(tab.fsal),
            q,
            rtol,
            atol,
            int(max_steps),
            out,
            status,
            t_fail,
            stats,
        )
    else:
        mod._ensemble_fixed(x0s, t_eval, int(substeps), p, a, b, c, out, status, t_fail)
        n_steps = int(substeps) * (m - 1)
        stats[:, 0] = n_steps
        stats[:, 2] = n_steps * tab.stages
    _raise_on_failure(system, status, t_fail, out, method, rtol, atol, int(max_steps))
    return Solution(
        t=t_eval,
        x=out,
        method=method,
        adaptive=adaptive,
        stats=_stats(stats, status, method, adaptive),
    )


def _stats(counts: np.ndarray, status: np.ndarray, method: str, adaptive: bool) -> Stats:
    """The kernels' (n, 3) counts (accepted, rejected, evaluations) as a :class:`Stats`."""
    n_acc, n_rej, evals = (counts[:, k].copy() for k in range(3))
    return Stats(n_steps=n_acc + n_rej, n_accepted=n_acc, n_rejected=n_rej, status=status.copy(),
                 n_f_evals_per_example=evals, accepted=n_rej == 0, n_f_evals=int(evals.sum()),
                 method=method, control="PI" if adaptive else "fixed")


def _raise_on_failure(system, status, t_fail, out, method, rtol, atol, max_steps) -> None:
    bad = np.flatnonzero(status != OK)
    if bad.size == 0:
        return
    i = int(bad[0])
    t = float(t_fail[i])
    more = f" ({bad.size - 1} more trajectories failed too)" if bad.size > 1 else ""
    code = int(status[i])
    if code == NONFINITE:
        raise BlowUpError(
            f"{system.name}: trajectory {i} blew up (state became NaN or inf) at t={t:.6g} with "
            "method "
            f"{method!r}{more}; check the parameters and initial state, or use an adaptive method "
            "/ smaller dt",
            i,
            t,
        )
    if code == MAX_STEPS:
        raise StepLimitError(
            f"{system.name}: trajectory {i} reached the step limit max_steps={max_steps} at "
            f"t={t:.6g} (method {method!r}, rtol={rtol:g}, atol={atol:g}){more}; increase "
            "max_steps, loosen rtol/atol, "
            f"or check whether the solution blows up",
            i,
            t,
        )
    raise StepSizeUnderflowError(
        f"{system.name}: trajectory {i} step size fell to rounding level at t={t:.6g} (method "
        f"{method!r}){more}; "
        "the solution probably blows up in finite time there, or the system is too stiff for an "
        "explicit method",
        i,
        t,
    )
