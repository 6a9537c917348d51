"""The ``System`` object: equations from ``catalogue``, metadata from ``data/systems.json``.

Public names: ``System`` (with ``System.define`` for user flows), ``names``,
``get``, ``register``.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np
from numba import njit
from numba.core.registry import CPUDispatcher

from _dyncore import checks

from . import catalogue
from .integrate import integrate

__all__ = ["System", "names", "get", "register"]


@dataclass(frozen=True, eq=False)
class System:
    """A flow dx/dt = f(x, t; p) with its metadata (compared by identity).

    rhs(x, t, p, out) and jac(x, t, p, out) are numba-compiled (see
    ``systems.catalogue``); ``params`` maps parameter names to values in the
    order of ``param_names``; ``x0`` (dim,) is a point on the attractor; ``dt``
    the recommended sampling step; ``lyapunov_max`` the reference largest
    exponent (None when unknown, or when parameters differ from those the
    reference was computed for) and ``lyapunov_citation`` its source;
    ``reference_matched`` is False when our own computed exponent does not
    match the reference within 10% (``note`` says why).
    """

    name: str
    rhs: Callable
    jac: Callable | None
    param_names: tuple[str, ...]
    params: Mapping[str, float]
    components: tuple[str, ...]
    x0: np.ndarray
    dt: float
    lyapunov_max: float | None = None
    lyapunov_citation: str = ""
    reference_matched: bool = True
    autonomous: bool = True
    description: str = ""
    note: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # A System built directly with jac=None still gets a compiled Jacobian
        # (central differences), so tangent dynamics work for it too.
        if self.jac is None and isinstance(self.rhs, CPUDispatcher):
            object.__setattr__(self, "jac", finite_difference_jacobian(self.rhs))

    # -- properties ---------------------------------------------------------
    @property
    def dim(self) -> int:
        return len(self.components)

    @property
    def lyapunov_time(self) -> float | None:
        """1 / lyapunov_max, the e-folding time of errors (None if unknown)."""
        return None if not self.lyapunov_max else 1.0 / self.lyapunov_max

    def param_array(self) -> np.ndarray:
        """Parameters as the float64 vector ``p`` (len(param_names),) the compiled functions
        take."""
        return np.array([self.params[k] for k in self.param_names], dtype=np.float64)

    # -- parameters -----------------------------------------------------------
    def with_params(self, **overrides: float) -> "System":
        """A copy with some parameters replaced; unknown names raise ValueError.

        Changing the dimension parameter (``metadata["dim_param"]``, e.g. N of
        Lorenz-96) resizes ``components`` and ``x0``. Changing any value drops
        the reference exponent (it belongs to the catalogued parameters).
        """
        if not overrides:
            return self
        unknown = [k for k in overrides if k not in self.param_names]
        if unknown:
            hints = {k: difflib.get_close_matches(k, self.param_names, n=3) for k in unknown}
            raise ValueError(
                f"unknown parameter(s) {unknown} for system {self.name!r}; "
                f"expected names from {list(self.param_names)} (close matches: {hints})"
            )
        new = dict(self.params)
        for k, v in overrides.items():
            new[k] = checks.real(f"parameter {k!r} of system {self.name!r}", v)
        if all(new[k] == self.params[k] for k in self.param_names):
            return self
        changes: dict[str, Any] = dict(
            params=MappingProxyType(new),
            lyapunov_max=None,
            lyapunov_citation="",
            reference_matched=True,
            note="parameters differ from the catalogued ones; no reference exponent",
        )
        dim_param = self.metadata.get("dim_param")
        if dim_param and new[dim_param] != self.params[dim_param]:
            changes.update(self._resized(new, dim_param))
        return replace(self, **changes)

    def _resized(self, new: dict, dim_param: str) -> dict:
        """Components and x0 for a new value of the dimension parameter."""
        value = new[dim_param]
        low = int(self.metadata.get("dim_min", 1))
        if value != int(value) or value < low:
            raise ValueError(
                f"{self.name}: {dim_param} must be an integer >= {low}, got {value}; "
                f"pass e.g. {dim_param}={max(low, round(value))}"
            )
        n = int(value)
        pattern = self.metadata.get("components_pattern", "x{i}")
        rest = new.get(self.metadata.get("rest_param", ""), 1.0)
        x = np.full(n, rest)
        x[0] += 0.01  # the classic Lorenz-96 start: the rest state x_i = F plus a small kick
        components = tuple(pattern.format(i=i + 1) for i in range(n))
        resized = replace(self, params=MappingProxyType(new), components=components, x0=x)
        x0 = relax(resized, x, float(self.metadata.get("relax_time", 50.0)))
        return dict(components=components, x0=x0)

    # -- evaluation from Python -------------------------------------------------
    def _state(self, x, t) -> tuple[np.ndarray, float]:
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(
                f"{self.name}: state x must have shape ({self.dim},) (components "
                f"{list(self.components)[:6]}{'...' if self.dim > 6 else ''}), got shape {x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{self.name}: state x must be finite, got {x} (contains NaN or inf)")
        return x, checks.real(f"{self.name}: time t", t)

    def derivative(self, x, t: float = 0.0) -> np.ndarray:
        """dx/dt at state x (dim,) and time t, as a new array (dim,)."""
        x, t = self._state(x, t)
        out = np.empty(self.dim)
        self.rhs(x, t, self.param_array(), out)
        return out

    def jacobian(self, x, t: float = 0.0) -> np.ndarray:
        """d(dx/dt)/dx at x (dim,), shape (dim, dim)."""
        x, t = self._state(x, t)
        out = np.empty((self.dim, self.dim))
        self.jac(x, t, self.param_array(), out)
        return out

    # -- user-defined systems -------------------------------------------------
    @classmethod
    def define(
        cls,
        name: str,
        rhs: Callable,
        *,
        params: Mapping[str, float],
        x0,
        dt: float,
        components=None,
        dim: int | None = None,
        jac: Callable | None = None,
        lyapunov_max: float | None = None,
        lyapunov_citation: str = "",
        autonomous: bool = True,
        description: str = "",
        register: bool = False,
    ) -> "System":
        """A user flow from ``rhs(x, t, p, out)``, checked once on ``x0``.

        ``rhs`` (and ``jac`` if given) may be plain Python functions written in
        numba's subset, or ``numba.njit`` functions; ``p`` is the float64 vector
        of ``params`` values in the dict's order. Give ``components`` (names) or
        ``dim``. Without ``jac`` a compiled central-difference Jacobian is used.
        With ``register=True`` the name then works in ``systems.get``.
        """
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if components is None and dim is None:
            raise TypeError("System.define needs components=[names...] or dim=<int>")
        if components is not None:
            if isinstance(components, str) or not all(isinstance(c, str) for c in components):
                raise TypeError(f"components must be a list of str, got {components!r}")
            components = tuple(components)
            if dim is not None and dim != len(components):
                raise ValueError(
                    f"dim={dim} disagrees with {len(components)} components {list(components)}"
                )
        else:
            dim = checks.integer("dim", dim, minimum=1)
            components = tuple(f"x{i + 1}" for i in range(int(dim)))
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of name -> float, got {type(params).__name__}")
        pvals = {str(k): checks.real(f"parameter {k!r}", v) for k, v in params.items()}
        x0 = np.array(x0, dtype=np.float64)
        if x0.shape != (len(components),) or not np.all(np.isfinite(x0)):
            raise ValueError(
                f"x0 must be a finite array of shape ({len(components)},) for components "
                f"{list(components)}, got {x0!r} with shape {x0.shape}"
            )
        dt = checks.positive("dt", dt, fix="dt is the recommended sampling step, e.g. dt=0.01")
        if lyapunov_max is not None:
            lyapunov_max = checks.real("lyapunov_max", lyapunov_max)
        p = np.array(list(pvals.values()), dtype=np.float64)
        rhs = _compiled(rhs, "rhs")
        _check_rhs(rhs, x0, p, name)
        if jac is None:
            jac, jac_kind = finite_difference_jacobian(rhs), "central differences"
        else:
            jac, jac_kind = _compiled(jac, "jac"), "analytic"
            _check_jac(rhs, jac, x0, p, name)
        system = cls(
            name=name,
            rhs=rhs,
            jac=jac,
            param_names=tuple(pvals),
            params=MappingProxyType(pvals),
            components=components,
            x0=x0,
            dt=dt,
            lyapunov_max=lyapunov_max,
            lyapunov_citation=lyapunov_citation,
            reference_matched=True,
            autonomous=bool(autonomous),
            description=description,
            metadata=MappingProxyType({"user_defined": True, "jacobian": jac_kind}),
        )
        return globals()["register"](system) if register else system


# -- helpers -------------------------------------------------------------------
def _compiled(fn: Callable, what: str) -> Callable:
    if isinstance(fn, CPUDispatcher):
        return fn
    if not callable(fn):
        raise TypeError(f"{what} must be a function {what}(x, t, p, out), got {type(fn).__name__}")
    return njit(cache=False, nogil=True)(fn)


def _check_rhs(rhs, x0: np.ndarray, p: np.ndarray, name: str) -> None:
    out = np.full(x0.shape[0], np.nan)
    try:
        rhs(x0.copy(), 0.0, p, out)
    except Exception as exc:  # numba typing errors and user bugs alike
        raise TypeError(
            f"system {name!r}: rhs could not be compiled or run with numba as rhs(x, t, p, out) "
            f"on x0 (x float64 ({x0.shape[0]},), t float, p float64 ({p.shape[0]},), out float64 "
            f"({x0.shape[0]},)): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. "
            "Write it in numba's nopython subset, fill out[:] in place, and return nothing."
        ) from exc
    if not np.all(np.isfinite(out)):
        raise ValueError(
            f"system {name!r}: rhs(x0, 0, p, out) left non-finite values in out: {out}; "
            "it must write every component of out, and x0 must be a point where the flow is finite"
        )


def _check_jac(rhs, jac, x0: np.ndarray, p: np.ndarray, name: str) -> None:
    n = x0.shape[0]
    out = np.full((n, n), np.nan)
    try:
        jac(x0.copy(), 0.0, p, out)
    except Exception as exc:
        raise TypeError(
            f"system {name!r}: jac could not be compiled or run with numba as jac(x, t, p, out) "
            f"with out float64 ({n}, {n}): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    fd = np.empty((n, n))
    finite_difference_jacobian(rhs)(x0.copy(), 0.0, p, fd)
    err = np.max(np.abs(out - fd)) / max(1.0, np.max(np.abs(fd)))
    if not np.isfinite(err) or err > 1e-4:
        raise ValueError(
            f"system {name!r}: jac(x0) disagrees with central differences of rhs (max relative "
            f"error {err:.2e} > 1e-4); fix jac, or pass jac=None for a finite-difference Jacobian"
        )


def finite_difference_jacobian(rhs: Callable) -> Callable:
    """A numba ``jac(x, t, p, out)`` from central differences of a compiled ``rhs``."""

    @njit(nogil=True)
    def fd_jac(x, t, p, out):
        n = x.shape[0]
        xs = x.copy()
        fp = np.empty(n)
        fm = np.empty(n)
        for j in range(n):
            h = 6e-6 * max(1.0, abs(x[j]))  # ~ cube root of machine epsilon
            xs[j] = x[j] + h
            rhs(xs, t, p, fp)
            xs[j] = x[j] - h
            rhs(xs, t, p, fm)
            xs[j] = x[j]
            for i in range(n):
                out[i, j] = (fp[i] - fm[i]) / (2.0 * h)

    return fd_jac


def relax(system: "System", x: np.ndarray, duration: float) -> np.ndarray:
    """x (dim,) integrated for ``duration`` by fixed-step RK4 (step ``system.dt / 4``): a start on
    the attractor."""
    h = system.dt / 4.0
    n = max(1, int(round(duration / h)))
    out = integrate(system, x, [0.0, n * h], method="rk4", adaptive=False, substeps=n).x[0, -1]
    if not np.all(np.isfinite(out)):
        raise ValueError("relaxation onto the attractor diverged; pass an explicit x0")
    return out


# -- the catalogue and registry ----------------------------------------------------
def _load_catalogue() -> dict[str, System]:
    text = resources.files("systems").joinpath("data/systems.json").read_text()
    out = {}
    for name, meta in json.loads(text).items():
        if meta.get("dim_param"):
            n = int(meta["params"][meta["dim_param"]])
            components = tuple(meta["components_pattern"].format(i=i + 1) for i in range(n))
        else:
            components = tuple(meta["components"])
        out[name] = System(
            name=name,
            rhs=getattr(catalogue, meta["rhs"]),
            jac=getattr(catalogue, meta["jac"]),
            param_names=tuple(meta["param_names"]),
            params=MappingProxyType({k: float(meta["params"][k]) for k in meta["param_names"]}),
            components=components,
            x0=np.asarray(meta["x0"], dtype=np.float64),
            dt=float(meta["dt"]),
            lyapunov_max=meta.get("lyapunov_max"),
            lyapunov_citation=meta.get("lyapunov_citation", ""),
            reference_matched=bool(meta.get("reference_matched", True)),
            autonomous=bool(meta.get("autonomous", True)),
            description=meta.get("description", ""),
            note=meta.get("note", ""),
            metadata=MappingProxyType({k: v for k, v in meta.items() if k not in {"rhs", "jac"}}),
        )
    return out


_CATALOGUE: dict[str, System] = _load_catalogue()
_REGISTRY: dict[str, System] = dict(_CATALOGUE)


def is_catalogued(system: System) -> bool:
    """True if ``system`` runs the catalogue's own equations (its name and parameters rebuild
    it)."""
    ref = _CATALOGUE.get(system.name.lower())
    return ref is not None and ref.rhs is system.rhs


def names() -> list[str]:
    """Names of all known systems, catalogued and registered, Lorenz'63 first."""
    return list(_REGISTRY)


def get(system: "str | System", **params: float) -> System:
    """The System for a name (or a System passed through), with parameter overrides."""
    if isinstance(system, System):
        return system.with_params(**params)
    if not isinstance(system, str):
        raise TypeError(
            f"system must be a name (str) or a systems.System, got {type(system).__name__}"
        )
    key = system.lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.5)
        raise ValueError(
            f"unknown system {system!r}; close names: {close or 'none'}. "
            f"See systems.names() for all {len(_REGISTRY)}, or systems.register() to add your own."
        )
    return _REGISTRY[key].with_params(**params)


def register(system: System) -> System:
    """Add a user-defined System so that its name works everywhere a name is accepted.

    Re-registering a user name replaces it; a catalogued name cannot be shadowed.
    """
    if not isinstance(system, System):
        raise TypeError(
            "register expects a systems.System (make one with systems.System.define), got "
            f"{type(system).__name__}"
        )
    key = system.name.lower()
    if key in _CATALOGUE and _CATALOGUE[key] is not system:
        raise ValueError(
            f"{system.name!r} is a catalogued system and cannot be replaced; register it under "
            "another name"
        )
    _REGISTRY[key] = system
    return system
