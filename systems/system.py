"""The ``System`` object: equations from ``catalogue``, metadata from ``data/systems.json``."""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from . import catalogue

__all__ = ["System", "names", "get", "register"]


@dataclass(frozen=True)
class System:
    """A flow dx/dt = f(x, t; p) with its metadata.

    rhs(x, t, p, out) and jac(x, t, p, out) are numba-compiled (see
    ``systems.catalogue``); ``params`` maps parameter names to values in the
    order of ``param_names``; ``x0`` (dim,) is a point on the attractor; ``dt``
    the recommended sampling step; ``lyapunov_max`` the reference largest
    exponent (None when unknown) and ``lyapunov_citation`` its source.
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
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return len(self.components)

    @property
    def lyapunov_time(self) -> float | None:
        """1 / lyapunov_max, the e-folding time of errors (None if unknown)."""
        return None if not self.lyapunov_max else 1.0 / self.lyapunov_max

    def param_array(self) -> np.ndarray:
        """Parameters as the float64 vector ``p`` the compiled functions take."""
        return np.array([self.params[k] for k in self.param_names], dtype=np.float64)

    def with_params(self, **overrides: float) -> "System":
        """A copy with some parameters replaced; unknown names raise ValueError."""
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
        new.update({k: float(v) for k, v in overrides.items()})
        return replace(self, params=MappingProxyType(new))

    def _state(self, x) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"{self.name}: state must have shape ({self.dim},), got {x.shape}")
        return x

    def derivative(self, x, t: float = 0.0) -> np.ndarray:
        """dx/dt at state x (dim,) and time t, as a new array (dim,)."""
        out = np.empty(self.dim)
        self.rhs(self._state(x), float(t), self.param_array(), out)
        return out

    def jacobian(self, x, t: float = 0.0) -> np.ndarray:
        """d(dx/dt)/dx at x, shape (dim, dim); central differences if no analytic one."""
        x = self._state(x)
        out = np.empty((self.dim, self.dim))
        if self.jac is not None:
            self.jac(x, float(t), self.param_array(), out)
            return out
        eps = 1e-6 * np.maximum(1.0, np.abs(x))
        for j in range(self.dim):
            xp, xm = x.copy(), x.copy()
            xp[j] += eps[j]
            xm[j] -= eps[j]
            out[:, j] = (self.derivative(xp, t) - self.derivative(xm, t)) / (2 * eps[j])
        return out


def _load_catalogue() -> dict[str, System]:
    text = resources.files("systems").joinpath("data/systems.json").read_text()
    out = {}
    for name, meta in json.loads(text).items():
        out[name] = System(
            name=name,
            rhs=getattr(catalogue, meta["rhs"]),
            jac=getattr(catalogue, meta["jac"]) if meta.get("jac") else None,
            param_names=tuple(meta["param_names"]),
            params=MappingProxyType({k: float(meta["params"][k]) for k in meta["param_names"]}),
            components=tuple(meta["components"]),
            x0=np.asarray(meta["x0"], dtype=np.float64),
            dt=float(meta["dt"]),
            lyapunov_max=meta.get("lyapunov_max"),
            lyapunov_citation=meta.get("lyapunov_citation", ""),
            reference_matched=bool(meta.get("reference_matched", True)),
            autonomous=bool(meta.get("autonomous", True)),
            description=meta.get("description", ""),
            metadata=MappingProxyType({k: v for k, v in meta.items() if k not in {"rhs", "jac"}}),
        )
    return out


_REGISTRY: dict[str, System] = _load_catalogue()


def names() -> list[str]:
    """Names of all known systems, catalogued and registered, Lorenz'63 first."""
    return list(_REGISTRY)


def get(system: "str | System", **params: float) -> System:
    """The System for a name (or a System passed through), with parameter overrides."""
    if isinstance(system, System):
        return system.with_params(**params)
    if not isinstance(system, str):
        raise TypeError(f"system must be a name (str) or a systems.System, got {type(system).__name__}")
    key = system.lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.5)
        raise ValueError(
            f"unknown system {system!r}; close names: {close or 'none'}. "
            f"See systems.names() for all {len(_REGISTRY)}, or systems.register() to add your own."
        )
    return _REGISTRY[key].with_params(**params)


def register(system: System) -> System:
    """Add a user-defined System to the registry so that its name works everywhere."""
    if not isinstance(system, System):
        raise TypeError(f"register expects a systems.System, got {type(system).__name__}")
    _REGISTRY[system.name.lower()] = system
    return system
