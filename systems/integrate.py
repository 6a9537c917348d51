"""Explicit Runge-Kutta integration of ensembles, compiled with numba.

One generic stepper runs any :class:`systems.tableaus.Tableau` (the tableau
arrays ``a, b, c`` and the error weights are passed into the compiled code),
either at fixed steps (``substeps`` steps per sample interval) or adaptively
with per-trajectory step-size control (mixed rtol/atol RMS norm, PI
controller) that steps exactly onto every requested sample time. Ensembles
run in parallel over trajectories (``prange``).

Why kernels are generated per system
------------------------------------
Numba does not cache a function that receives a jitted right-hand side as an
argument: the dispatcher type changes in every process, so ``cache=True``
misses silently (and one passed down as a value is a "dynamic global" that
cannot be cached at all). The kernels below are therefore written once as a
template (the functions marked ``@_template``) that refers to the globals
``_rhs`` and ``_jac``; :func:`kernels` writes, per system, a small module
holding that template source, binds the system's functions to ``_rhs`` and
``_jac`` and compiles it with ``cache=True``. The file name hashes the
template and the source of the system's module, so a changed equation or a
changed integrator compiles afresh, and an unchanged one loads from the cache
in a second process (about 0.3 s instead of several seconds).
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import os
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numba
import numpy as np

from .status import FAC_MAX, FAC_MIN, SAFETY_PI, Status
from .system import System
from .tableaus import TABLEAUS, Tableau

__all__ = [
    "Solution",
    "IntegrationError",
    "BlowUpError",
    "StepLimitError",
    "StepSizeUnderflowError",
    "integrate",
    "kernels",
    "METHODS",
]

#: Method names accepted by :func:`integrate` and ``systems.simulate``.
METHODS = tuple(TABLEAUS)

# Status codes returned per trajectory by the compiled solvers: systems.status.Status,
# shared with dynfit.solvers (OK and UNDERFLOW are its aliases of SUCCESS, STEP_UNDERFLOW).
SUCCESS, MAX_STEPS, STEP_UNDERFLOW, NONFINITE = (int(s) for s in (Status.SUCCESS, Status.MAX_STEPS,
                                                                  Status.STEP_UNDERFLOW, Status.NONFINITE))
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
# Kernel template. Everything marked @_template is compiled per system in a
# generated module where ``_rhs`` and ``_jac`` are that system's functions.
# The functions are plain Python here and never called from this module.
# --------------------------------------------------------------------------
_TEMPLATE: list[tuple[object, bool]] = []


def _template(parallel: bool = False, registry: list | None = None):
    """Mark a function as kernel template (compiled per system, see module doc)."""

    def mark(fn):
        (_TEMPLATE if registry is None else registry).append((fn, parallel))
        return fn

    return mark


_rhs = _jac = None  # bound per system in the generated module
_D = 0  # the state dimension, a compile-time constant in the generated module
_S = 0  # the number of stages of the method, likewise
prange = range  # numba.prange in the generated module


@_template()
def _all_finite(x):
    for m in range(_D):
        if not np.isfinite(x[m]):
            return False
    return True


@_template()
def _solve_fixed_block(x0, t_eval, n_sub, p, a, b, c, out, status, t_fail):
    """Fixed steps (n_sub per sample interval) for a block of trajectories in lockstep.

    x0 (nb, d) -> out (nb, m, d); status, t_fail (nb,). Stepping the block
    stage by stage interleaves independent dependency chains, which the CPU
    overlaps (~2x faster than one trajectory at a time for small systems).
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


@_template()
def _rms_scaled(v, x, rtol, atol):
    acc = 0.0
    for m in range(_D):
        sc = atol + rtol * abs(x[m])
        acc += (v[m] / sc) ** 2
    return math.sqrt(acc / _D)


@_template()
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


@_template()
def _solve_adaptive_block(x0, t_eval, p, a, b, c, e, fsal, q, rtol, atol, max_steps, out, status, t_fail, stats):
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


@_template(parallel=True)
def _ensemble_fixed(x0s, t_eval, n_sub, p, a, b, c, out, status, t_fail):
    """x0s (n, d) -> out (n, m, d); status, t_fail (n,); blocks of BLOCK trajectories."""
    n = x0s.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    for ib in prange(n_blocks):
        lo = ib * BLOCK
        hi = min(lo + BLOCK, n)
        _solve_fixed_block(x0s[lo:hi], t_eval, n_sub, p, a, b, c, out[lo:hi], status[lo:hi], t_fail[lo:hi])


@_template(parallel=True)
def _ensemble_adaptive(x0s, t_eval, p, a, b, c, e, fsal, q, rtol, atol, max_steps, out, status, t_fail, stats):
    """x0s (n, d) -> out (n, m, d); status, t_fail (n,); stats (n, 3); blocks of BLOCK trajectories."""
    n = x0s.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    for ib in prange(n_blocks):
        lo = ib * BLOCK
        hi = min(lo + BLOCK, n)
        _solve_adaptive_block(
            x0s[lo:hi], t_eval, p, a, b, c, e, fsal, q, rtol, atol, max_steps,
            out[lo:hi], status[lo:hi], t_fail[lo:hi], stats[lo:hi],
        )


# --------------------------------------------------------------------------
# Generating and loading the per-system kernel modules.
# --------------------------------------------------------------------------
_EXTRA_TEMPLATES: list[list[tuple[object, bool]]] = []  # registered by lyapunov.py
_LOADED: dict[tuple, ModuleType] = {}
_LOCK = threading.Lock()

_HEADER = '''"""Generated by systems.integrate for {name!r}: do not edit (regenerated when stale)."""
import math
import numpy as np
from numba import njit, prange
SAFETY, FAC_MIN, FAC_MAX = {safety!r}, {fac_min!r}, {fac_max!r}
BLOCK = {block!r}
_D = {dim!r}  # state dimension and number of stages are constants, so that
_S = {stages!r}  # LLVM unrolls the loops over components and stages (~2x faster)
PI_ALPHA, PI_BETA = {pi_alpha!r}, {pi_beta!r}
LOG_1EM4 = math.log(1e-4)
from systems.status import Status as _Status  # noqa: E402  (the codes shared with dynfit.solvers)
SUCCESS, MAX_STEPS, STEP_UNDERFLOW, NONFINITE = (int(_Status.SUCCESS), int(_Status.MAX_STEPS),
                                                 int(_Status.STEP_UNDERFLOW), int(_Status.NONFINITE))
# _rhs and _jac are bound by systems.integrate before this module runs.
'''


def register_template(functions: list[tuple[object, bool]]) -> None:
    """Add more template functions (used by ``systems.lyapunov``)."""
    _EXTRA_TEMPLATES.append(functions)


def _template_source() -> str:
    parts = []
    for group in [_TEMPLATE, *_EXTRA_TEMPLATES]:
        for fn, parallel in group:
            lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
            body = "\n".join(line for line in lines if not line.startswith("@_template"))
            flags = "cache=True, nogil=True" + (", parallel=True" if parallel else "")
            parts.append(f"@njit({flags})\n{body}\n")
    return "\n\n".join(parts)


def _function_fingerprint(fn) -> str | None:
    """Text identifying a compiled function's code: its whole module file, else its source."""
    if fn is None:
        return "none"
    py = getattr(fn, "py_func", fn)
    try:
        path = inspect.getsourcefile(py)
        if path and os.path.isfile(path):
            return Path(path).read_text() + "\n#" + py.__qualname__
        return inspect.getsource(py)
    except (OSError, TypeError):
        return None


class KernelCacheError(OSError):
    """The compiled-kernel cache folder is unsafe (someone else's, or writable by others) or unusable."""


_PRIVATE_FALLBACK: list[Path] = []


def _check_private(d: Path) -> None:
    """Refuse a folder that another user owns or that others may write to (they could plant code)."""
    st = os.stat(d)
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid is not None and st.st_uid != uid:
        raise KernelCacheError(
            f"the compiled-kernel folder {d} belongs to user id {st.st_uid}, not to you ({uid}): its files "
            "would be executed, so it is refused; remove it or set SYSTEMS_KERNEL_DIR to a folder of your own")
    if st.st_mode & 0o022:
        raise KernelCacheError(
            f"the compiled-kernel folder {d} is writable by others (mode {oct(st.st_mode & 0o777)}): its "
            f"files would be executed, so it is refused; run chmod 700 {d} or set SYSTEMS_KERNEL_DIR")


def _private_dir(d: Path) -> Path:
    """Create ``d`` (mode 0700) if needed, check it is private and writable; returns it."""
    existed = d.exists()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not existed:
        os.chmod(d, 0o700)
    _check_private(d)
    if os.stat(d).st_mode & 0o077:  # ours and not writable by others: make it private all the same
        os.chmod(d, 0o700)
    if not os.access(d, os.W_OK | os.X_OK):
        raise PermissionError(f"the compiled-kernel folder {d} is not writable")
    return d


def _kernel_dir() -> Path:
    """The per-user folder of generated kernel modules and numba's cache of them.

    ``SYSTEMS_KERNEL_DIR`` if set, else ``$XDG_CACHE_HOME/dynfit/kernels`` (or
    ``~/.cache/dynfit/kernels``), created with mode 0700. A folder owned by
    another user or writable by others raises :class:`KernelCacheError`: its
    files are imported and its cache files loaded, so it must be private.
    When no cache folder can be created (no home, read-only home) a private
    folder with an unpredictable name (``tempfile.mkdtemp``, mode 0700) serves
    this process only.
    """
    env = os.environ.get("SYSTEMS_KERNEL_DIR")
    if env:
        try:
            return _private_dir(Path(env).expanduser())
        except KernelCacheError:
            raise
        except OSError as err:
            raise KernelCacheError(f"SYSTEMS_KERNEL_DIR={env} cannot be used for compiled kernels: "
                                   f"{err.strerror or err}; set it to a folder you can write to") from None
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    d = Path(xdg) / "dynfit" / "kernels"
    try:
        return _private_dir(d)
    except KernelCacheError:
        raise
    except OSError:
        pass
    if not _PRIVATE_FALLBACK:  # unpredictable name, created 0700 atomically; removed at exit
        import atexit
        import shutil

        tmp = Path(tempfile.mkdtemp(prefix="dynfit-kernels-"))
        atexit.register(shutil.rmtree, tmp, True)
        _PRIVATE_FALLBACK.append(tmp)
    return _PRIVATE_FALLBACK[0]


def kernels(system: System, stages: int) -> ModuleType:
    """The compiled kernel module for ``system`` and methods of ``stages`` stages (generated, cached).

    Its functions (``_ensemble_fixed``, ``_ensemble_adaptive``, and those of
    ``systems.lyapunov``) call ``system.rhs`` and ``system.jac`` directly.
    """
    from . import lyapunov  # noqa: F401  (registers its templates before any module is generated)

    for role, fn in (("rhs", system.rhs), ("jac", system.jac)):
        if fn is not None and not isinstance(fn, numba.core.registry.CPUDispatcher):
            raise TypeError(
                f"system {system.name!r}: {role} must be a numba-compiled function (decorate it with "
                f"@numba.njit), got {type(fn).__name__}"
            )

    key = (id(system.rhs), id(system.jac), system.dim, stages)
    with _LOCK:
        mod = _LOADED.get(key)
        if mod is not None:
            return mod
        src = _HEADER.format(name=system.name, block=BLOCK, dim=system.dim, stages=stages, safety=SAFETY, fac_min=FAC_MIN, fac_max=FAC_MAX, pi_alpha=PI_ALPHA, pi_beta=PI_BETA) + "\n\n" + _template_source()
        fp_rhs, fp_jac = _function_fingerprint(system.rhs), _function_fingerprint(system.jac)
        cacheable = fp_rhs is not None and fp_jac is not None
        digest = hashlib.sha256(
            "\0".join([src, fp_rhs or repr(key), fp_jac or repr(key), numba.__version__, sys.version]).encode()
        ).hexdigest()[:20]
        safe = "".join(ch if ch.isalnum() else "_" for ch in system.name)[:40]
        modname = f"_systems_kernel_{safe}_d{system.dim}_s{stages}_{digest}"
        if not cacheable:
            src = src.replace("cache=True", "cache=False")
            modname += f"_{os.getpid()}"
        path = _kernel_dir() / f"{modname}.py"
        if not path.exists() or path.read_text() != src:
            from .files import atomic_write_bytes

            atomic_write_bytes(path, src.encode())  # concurrent processes never see half a file
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        mod._rhs = system.rhs
        mod._jac = system.jac
        sys.modules[modname] = mod  # numba's cache loader re-imports the module by name
        spec.loader.exec_module(mod)
        _LOADED[key] = mod
        return mod


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

    t: (m,) sample times; x: (n, m, d) states; n_accepted, n_rejected,
    n_f_evals: (n,) per-trajectory counts (fixed steps: all accepted).
    """

    t: np.ndarray
    x: np.ndarray
    method: str
    adaptive: bool
    n_accepted: np.ndarray
    n_rejected: np.ndarray
    n_f_evals: np.ndarray


def _check_method(method: str, adaptive: bool | None) -> tuple[Tableau, bool]:
    if not isinstance(method, str) or method not in TABLEAUS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    tab = TABLEAUS[method]
    if adaptive is None:
        adaptive = tab.adaptive
    if adaptive and not tab.adaptive:
        raise ValueError(
            f"method {method!r} has no embedded error estimate, so it cannot adapt its step; "
            f"use adaptive=False or one of {[n for n, t in TABLEAUS.items() if t.adaptive]}"
        )
    return tab, bool(adaptive)


def _check_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not (v > 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


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
    tab, adaptive = _check_method(method, adaptive)
    rtol = _check_positive("rtol", rtol)
    atol = _check_positive("atol", atol)
    x0 = np.array(x0, dtype=np.float64, ndmin=1)
    single = x0.ndim == 1
    x0s = np.ascontiguousarray(x0[None] if single else x0)
    if x0s.ndim != 2 or x0s.shape[1] != system.dim:
        raise ValueError(f"x0 must have shape ({system.dim},) or (n_traj, {system.dim}) for {system.name!r}, got {x0.shape}")
    if not np.all(np.isfinite(x0s)):
        bad = int(np.argwhere(~np.isfinite(x0s))[0][0])
        raise ValueError(f"x0 contains NaN or inf (trajectory {bad}: {x0s[bad]}); give finite initial states")
    t_eval = np.ascontiguousarray(t_eval, dtype=np.float64)
    if t_eval.ndim != 1 or t_eval.size < 1:
        raise ValueError(f"t_eval must be a non-empty 1-D array of times, got shape {t_eval.shape}")
    if not np.all(np.isfinite(t_eval)) or np.any(np.diff(t_eval) <= 0):
        raise ValueError("t_eval must be finite and strictly increasing")
    if not isinstance(substeps, (int, np.integer)) or substeps < 1:
        raise ValueError(f"substeps must be an integer >= 1, got {substeps!r}")
    if max_steps is None:
        max_steps = default_max_steps(t_eval.size)
    if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
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
            x0s, t_eval, p, a, b, c, e, bool(tab.fsal), q, rtol, atol, int(max_steps), out, status, t_fail, stats
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
        n_accepted=stats[:, 0].copy(),
        n_rejected=stats[:, 1].copy(),
        n_f_evals=stats[:, 2].copy(),
    )


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
            f"{system.name}: trajectory {i} blew up (state became NaN or inf) at t={t:.6g} with method "
            f"{method!r}{more}; check the parameters and initial state, or use an adaptive method / smaller dt",
            i,
            t,
        )
    if code == MAX_STEPS:
        raise StepLimitError(
            f"{system.name}: trajectory {i} reached the step limit max_steps={max_steps} at t={t:.6g} "
            f"(method {method!r}, rtol={rtol:g}, atol={atol:g}){more}; increase max_steps, loosen rtol/atol, "
            f"or check whether the solution blows up",
            i,
            t,
        )
    raise StepSizeUnderflowError(
        f"{system.name}: trajectory {i} step size fell to rounding level at t={t:.6g} (method {method!r}){more}; "
        f"the solution probably blows up in finite time there, or the system is too stiff for an explicit method",
        i,
        t,
    )
