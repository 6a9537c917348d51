"""dysts' catalogue of chaotic flows as ``systems.System`` objects (optional extra
``dynfit[dysts]``).

``from_dysts(name, **params)`` builds a System from one dysts flow: its
parameters, initial condition, time step, estimated largest Lyapunov exponent
and dimension come from dysts' own metadata, and its equations are dysts'
compiled right-hand side ``_rhs(x, y, ..., t, *params)`` (and ``_jac`` where
dysts has one), wrapped into our ``rhs(x, t, p, out)`` convention. Our
generated ensemble kernels (``systems.integrate.kernels``) then call dysts'
equations directly, so ``systems.simulate`` runs every supported dysts flow
in parallel ensembles.

``dysts_names()`` lists dysts' continuous-time catalogue (what
``dysts.systems.get_attractor_list()`` lists); ``dysts_unsupported()`` says
which of those, and which discrete maps, we cannot build and why.

Conventions taken over from dysts: the parameter vector ``p`` holds dysts'
parameters in sorted name order (the order dysts passes them in); a
parameter that is an array in dysts is flattened into ``name[i]`` entries;
components are named after the state arguments of dysts' ``_rhs``. Our
trajectories are the raw state: dysts' optional ``_postprocessing`` (e.g. a
phase variable shown as its cosine) is not applied.
"""
from __future__ import annotations

import dis
import difflib
import hashlib
import inspect
import linecache
import math
import threading
import warnings
from functools import lru_cache
from types import MappingProxyType
from typing import Callable

import numpy as np
from numba import njit
from numba.core.registry import CPUDispatcher

from .system import System, finite_difference_jacobian

__all__ = ["from_dysts", "dysts_names", "dysts_unsupported"]

_INSTALL_HINT = 'install the optional extra: pip install "dynfit[dysts]" (or pip install dysts)'

_DELAY_REASON = (
    "delay differential equation (dysts DynSysDelay): its state is a history on [t - tau, t], "
    "not a vector, and our integrators solve ordinary differential equations"
)
_PYTHON_RHS_REASON = (
    "its right-hand side is a Python method of the dysts object (rhs(self, X, t) computing with "
    "numpy on the object's attributes), not a compiled function of (state, t, parameters) that "
    "our kernels can call; port the equations with systems.System.define"
)
_MAP_REASON = (
    "discrete map (dysts.maps): an iteration x -> f(x), not a flow; our integrators solve ODEs"
)
_NO_RHS_REASON = "dysts defines no right-hand side _rhs for it"

_LOCK = threading.Lock()
_BUILT: dict[tuple, "_Functions"] = {}  # (name, parameter layout, dim, version) -> functions


# -- dysts, imported lazily ---------------------------------------------------------
def _dysts():
    """The dysts modules (flows, maps, base, systems); a clear ImportError without dysts."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import dysts.base
            import dysts.flows
            import dysts.maps
            import dysts.systems
    except ImportError as exc:
        raise ImportError(
            "systems.from_dysts and systems.dysts_names need the optional package dysts, which "
            f"could not be imported ({type(exc).__name__}: {exc}); {_INSTALL_HINT}"
        ) from exc
    return dysts


def dysts_version() -> str:
    """The installed dysts version, e.g. ``"0.96"`` (ImportError with the install hint without
    dysts)."""
    _dysts()
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dysts")
    # pragma: no cover - dysts importable but not installed as a distribution
    except PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def _catalogue() -> tuple[tuple[str, ...], dict[str, str]]:
    dysts = _dysts()
    base = dysts.base
    names = tuple(dysts.systems.get_attractor_list("continuous"))
    unsupported = {}
    for n in names:
        cls = getattr(dysts.flows, n)
        if issubclass(cls, base.DynSysDelay):
            unsupported[n] = _DELAY_REASON
        elif cls.rhs is not base.DynSys.rhs:
            unsupported[n] = _PYTHON_RHS_REASON
        elif cls._rhs is base.BaseDyn._rhs:
            unsupported[n] = _NO_RHS_REASON
    for n in dysts.systems.get_attractor_list("discrete"):
        # prefixed: dysts has a flow and a map both named Duffing
        unsupported[f"maps.{n}"] = _MAP_REASON
    return names, unsupported


def dysts_names(supported_only: bool = False) -> list[str]:
    """Names of dysts' continuous-time systems (dysts' own list, sorted); with
    ``supported_only=True`` only those ``from_dysts`` can build."""
    names, unsupported = _catalogue()
    return [n for n in names if not (supported_only and n in unsupported)]


def dysts_unsupported() -> dict[str, str]:
    """dysts systems that ``from_dysts`` cannot build -> the reason (delay equations,
    Python-level right-hand sides; discrete maps, keyed ``"maps.<name>"``)."""
    return dict(_catalogue()[1])


# -- building a System ------------------------------------------------------------
def _resolve(name) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a dysts system name (str), got {name!r} ({type(name).__name__})"
        )
    names, unsupported = _catalogue()
    # a flow wins over a map of the same name
    lookup = {n.lower(): n for n in [*unsupported, *names]}
    lookup.update(
        {
            n.lower().removeprefix("maps."): n
            for n in unsupported
            if n.lower().removeprefix("maps.") not in lookup
        }
    )
    key = name.removeprefix("dysts_").lower()
    if key not in lookup:
        close = difflib.get_close_matches(name, list(lookup.values()), n=5, cutoff=0.5)
        raise ValueError(
            f"unknown dysts system {name!r}; close names: {close or 'none'}. "
            f"See systems.dysts_names() for the {len(names)} flows of dysts {dysts_version()}."
        )
    real = lookup[key]
    if real in unsupported:
        raise ValueError(f"dysts system {real!r} is not supported: {unsupported[real]}")
    return real


def _state_and_param_args(fn: Callable, dim: int, name: str) -> tuple[list[str], str, list[str]]:
    """Names of the state arguments, the time argument and the parameter arguments of dysts'
    _rhs."""
    args = list(inspect.signature(getattr(fn, "py_func", fn)).parameters)
    if len(args) < dim + 1:
        raise ValueError(
            f"dysts {name}._rhs{tuple(args)} has fewer than dim + 1 = {dim + 1} arguments"
        )
    return args[:dim], args[dim], args[dim + 1 :]


def _uses(fn: Callable, arg: str) -> bool:
    """Whether the body of ``fn`` reads its argument ``arg``."""
    py = getattr(fn, "py_func", fn)
    for ins in dis.get_instructions(py):
        if ins.opname.startswith("LOAD_FAST"):
            val = ins.argval if isinstance(ins.argval, tuple) else (ins.argval,)
            if arg in val:
                return True
    return False


def _exec_source(src: str, filename: str, globs: dict, fname: str) -> Callable:
    """Run generated Python source under ``filename`` (kept in linecache so that
    ``inspect.getsource`` works: the kernel cache fingerprints it); the function ``fname``."""
    linecache.cache[filename] = (len(src), None, src.splitlines(keepends=True), filename)
    exec(compile(src, filename, "exec"), globs)
    return globs[fname]


def _param_layout(params: dict) -> tuple[list[str], list[float], list[str]]:
    """Flatten dysts' parameters (sorted by name) into names, values and the expressions
    that rebuild each dysts argument from ``p``."""
    names, values, exprs = [], [], []
    for k in sorted(params):
        v = np.asarray(params[k], dtype=np.float64)
        i = len(values)
        if v.ndim == 0:
            names.append(k)
            values.append(float(v))
            exprs.append(f"p[{i}]")
        else:
            flat = v.ravel()
            names += [f"{k}[{j}]" for j in range(flat.size)]
            values += [float(u) for u in flat]
            sl = f"p[{i}:{i + flat.size}]"
            exprs.append(sl if v.ndim == 1 else f"np.ascontiguousarray({sl}).reshape({v.shape!r})")
    return names, values, exprs


def _heaviside_for_numba() -> None:
    """Teach numba np.heaviside for scalars (dysts' FluidTrampoline uses it; numba lacks it)."""
    global _HEAVISIDE
    if _HEAVISIDE:
        return
    from numba.extending import overload

    @overload(np.heaviside)
    def _heaviside(x1, x2):  # pragma: no cover - compiled
        def impl(x1, x2):
            if x1 < 0.0:
                return 0.0
            if x1 > 0.0:
                return 1.0
            if x1 == 0.0:
                return x2 * 1.0
            return x1 * 1.0  # NaN stays NaN, as in numpy

        return impl

    _HEAVISIDE = True


_HEAVISIDE = False


class _Functions:
    """dysts' equations for one flow in our convention: compiled ``rhs``/``jac``
    (numba, compiled on first call) and their pure-Python twins ``rhs_py``/``jac_py``
    (the same generated code around dysts' uncompiled functions, for cheap checks)."""

    def __init__(self, name: str, cls, dim: int, exprs: list[str], version: str):
        base = _dysts().base
        f = cls._rhs
        j = cls._jac if cls._jac is not base.BaseDyn._jac else None
        f_py = getattr(f, "py_func", f)
        j_py = getattr(j, "py_func", j)
        f_src = inspect.getsource(f_py)
        j_src = inspect.getsource(j_py) if j is not None else ""
        digest = hashlib.sha256(f"{version}\0{f_src}\0{j_src}".encode()).hexdigest()[:16]
        state = ", ".join(f"x[{i}]" for i in range(dim))
        call = f"({state}, t, {', '.join(exprs)})" if exprs else f"({state}, t)"
        src = (
            "def rhs(x, t, p, out):\n"
            f'    """dysts {version} {name}._rhs (source sha256 {digest}) '
            'as rhs(x, t, p, out)."""\n'
            f"    r = _f{call}\n" + "".join(f"    out[{i}] = r[{i}]\n" for i in range(dim))
        )
        jsrc = (
            "def jac(x, t, p, out):\n"
            f'    """dysts {version} {name}._jac (source sha256 {digest}) '
            'as jac(x, t, p, out)."""\n'
            f"    r = _j{call}\n"
            + "".join(f"    out[{a}, {b}] = r[{a}][{b}]\n" for a in range(dim) for b in range(dim))
        )
        if not isinstance(f, CPUDispatcher) and "heaviside" in f_src:
            _heaviside_for_numba()
        f_jit = f if isinstance(f, CPUDispatcher) else njit(nogil=True)(f_py)
        rhs_src = _exec_source(
            src, f"<systems.dysts {name} rhs {digest}>", {"_f": f_jit, "np": np}, "rhs"
        )
        self.rhs = njit(nogil=True)(rhs_src)
        self.rhs_py = _exec_source(
            src, f"<systems.dysts {name} rhs (Python)>", {"_f": f_py, "np": np}, "rhs"
        )
        self.jac = self.jac_py = None
        if j is not None:
            j_jit = j if isinstance(j, CPUDispatcher) else njit(nogil=True)(j_py)
            jac_src = _exec_source(
                jsrc, f"<systems.dysts {name} jac {digest}>", {"_j": j_jit, "np": np}, "jac"
            )
            self.jac = njit(nogil=True)(jac_src)
            self.jac_py = _exec_source(
                jsrc, f"<systems.dysts {name} jac (Python)>", {"_j": j_py, "np": np}, "jac"
            )
        self.fd_jac = finite_difference_jacobian(self.rhs)


def _functions(name: str, cls, dim: int, exprs: list[str], version: str) -> _Functions:
    """The wrapped functions of a flow, built once per process (so kernels are reused)."""
    key = (name, tuple(exprs), dim, version)
    with _LOCK:
        if key not in _BUILT:
            _BUILT[key] = _Functions(name, cls, dim, exprs, version)
        return _BUILT[key]


def central_differences(rhs: Callable, x: np.ndarray, t: float, p: np.ndarray) -> np.ndarray:
    """Jacobian (d, d) of ``rhs(x, t, p, out)`` by central differences, from Python (any rhs)."""
    n = x.shape[0]
    out, fp, fm = np.empty((n, n)), np.empty(n), np.empty(n)
    for j in range(n):
        h = 6e-6 * max(1.0, abs(x[j]))
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        rhs(xp, t, p, fp)
        rhs(xm, t, p, fm)
        out[:, j] = (fp - fm) / (2.0 * h)
    return out


@lru_cache(maxsize=4)
def _our_estimates(version: str) -> dict[str, float]:
    """Our largest exponents of the dysts flows (``data/dysts_lyapunov.json``, written by
    ``examples/dysts_lyapunov.py``), if computed for this dysts version; else empty."""
    import json
    from importlib import resources

    try:
        data = json.loads(
            resources.files("systems").joinpath("data/dysts_lyapunov.json").read_text()
        )
    except (OSError, ValueError):
        return {}
    if str(data.get("dysts")) != version:
        return {}
    rows = data.get("rows", [])
    return {
        r["name"]: float(r["ours"])
        for r in rows
        if r.get("ours") is not None and math.isfinite(r["ours"])
    }


def from_dysts(name: str, **params: float) -> System:
    """The dysts flow ``name`` (e.g. ``"Aizawa"``, case-insensitive) as a ``systems.System``.

    Metadata from dysts: parameters (sorted by name, the order dysts passes
    them), ``x0`` = dysts' initial condition, ``dt`` = dysts' integration
    step, ``lyapunov_max`` = dysts' ``maximum_lyapunov_estimated`` (cited to
    the dysts version), components named after dysts' state arguments;
    ``metadata`` keeps dysts' period, Lyapunov spectrum estimate, citation and
    ``source = "dysts <version>"`` (copied into ``systems.simulate``'s Dataset
    attrs) and ``lyapunov_max_computed``, our own estimate where
    ``examples/dysts_lyapunov.py`` has stored one; ``reference_matched`` is
    False (with a ``note``) where that differs from dysts' by more than 10%.
    ``params`` override parameters by name (array parameters as ``"name[i]"``).
    The Jacobian is dysts' ``_jac`` where it has one and it
    agrees with central differences at x0; else our compiled central
    differences (``metadata["jacobian"]`` says which). Raises ImportError
    without dysts, ValueError for unknown or unsupported names.
    """
    real = _resolve(name)
    dysts = _dysts()
    version = dysts_version()
    cls = getattr(dysts.flows, real)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = cls()
    dim = int(obj.dimension)
    pnames, pvalues, exprs = _param_layout(obj.params)
    state_args, t_arg, param_args = _state_and_param_args(cls._rhs, dim, real)
    fns = _functions(real, cls, dim, exprs, version)

    x0 = np.asarray(obj.ic, dtype=np.float64).ravel()
    if x0.shape != (dim,):
        raise ValueError(f"dysts {real}: initial condition has shape {x0.shape}, expected ({dim},)")
    p = np.array(pvalues, dtype=np.float64)
    # checked once, in pure Python (compilation waits for the first kernel): finite at x0,
    # and dysts' Jacobian against central differences of its right-hand side
    f0 = np.full(dim, np.nan)
    with np.errstate(all="ignore"):
        fns.rhs_py(x0.copy(), 0.0, p, f0)
    if not np.all(np.isfinite(f0)):
        raise ValueError(
            f"dysts {real}: the right-hand side is not finite at dysts' initial condition {x0}"
        )
    jac, jac_kind, note = fns.fd_jac, "central differences", ""
    if fns.jac is not None:
        a = np.full((dim, dim), np.nan)
        with np.errstate(all="ignore"):
            fns.jac_py(x0.copy(), 0.0, p, a)
        fd = central_differences(fns.rhs_py, x0, 0.0, p)
        err = float(np.max(np.abs(a - fd)) / max(1.0, np.max(np.abs(fd))))
        if err <= 1e-5:
            jac, jac_kind = fns.jac, "analytic (dysts _jac)"
        else:
            note = (
                f"dysts' _jac disagrees with central differences of its _rhs at x0 (relative error "
                f"{err:.1e}); our compiled central differences are used"
            )

    lam = getattr(obj, "maximum_lyapunov_estimated", None)
    lam = float(lam) if lam is not None and np.isfinite(lam) else None
    ours = _our_estimates(version).get(real)
    matched = True
    if ours is not None and lam is not None and not abs(ours / lam - 1.0) <= 0.10:
        matched = False
        note = (note + "; " if note else "") + (
            f"our QR/Benettin estimate {ours:.4g} (examples/dysts_lyapunov.py) differs from dysts' "
            f"maximum_lyapunov_estimated {lam:.4g} by more than 10% (docs/catalogue.md lists why)"
        )
    meta = {
        "source": f"dysts {version}",
        "dysts_name": real,
        "jacobian": jac_kind,
        "period": getattr(obj, "period", None),
        "lyapunov_spectrum_estimated": list(
            getattr(obj, "lyapunov_spectrum_estimated", None) or []
        ),
        "dysts_citation": getattr(obj, "citation", ""),
        "nonautonomous": bool(getattr(obj, "nonautonomous", False)),
        "postprocessing": hasattr(obj, "_postprocessing"),
        "dysts_argument_names": tuple(param_args),
        "lyapunov_max_computed": ours,
    }
    system = System(
        name=f"dysts_{real}",
        rhs=fns.rhs,
        jac=jac,
        param_names=tuple(pnames),
        params=MappingProxyType(dict(zip(pnames, pvalues))),
        components=tuple(state_args),
        x0=x0,
        dt=float(obj.dt),
        lyapunov_max=lam,
        lyapunov_citation=(
            f"dysts {version} metadata (maximum_lyapunov_estimated; Gilpin, Chaos as an "
            "interpretable benchmark for forecasting and data-driven modelling, NeurIPS Datasets "
            "and Benchmarks 2021)"
        )
        if lam is not None
        else "",
        reference_matched=matched,
        autonomous=not _uses(cls._rhs, t_arg),
        description=str(getattr(obj, "description", "")),
        note=note,
        metadata=MappingProxyType(meta),
    )
    return system.with_params(**params)
