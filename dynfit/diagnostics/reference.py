"""Accurate reference trajectories of a ``systems.System``.

A method is a scipy ``solve_ivp`` name ("DOP853", "LSODA", "RK45", "Radau",
"BDF"; Python callbacks into the system's compiled right-hand side and
Jacobian) or "systems.<method>" for the numba integrators of ``systems``
("systems.dopri5", "systems.rkf45", ...; ~20x faster). The valid ground-truth
time compares codes that share nothing but the equations.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from systems import checks

__all__ = ["reference_solutions", "ExactSurrogate"]

#: (method, rtol = atol) pairs used for the valid ground-truth time: scipy's
#: Adams/BDF multistep LSODA and the numba Dormand-Prince 5(4) of ``systems``,
#: unrelated method families and codes. On Lorenz'63 they agree with scipy's
#: DOP853 at 1e-12 for 22.5 and 24.7 Lyapunov times (Radau at 1e-12 agrees
#: about as long but costs ~100x more).
DEFAULT_REFERENCE_SOLVERS = (("LSODA", 1e-12), ("systems.dopri5", 1e-12))

_METHODS = ("RK45", "DOP853", "Radau", "BDF", "LSODA")


def _systems_methods():
    from systems.integrate import METHODS

    return tuple(f"systems.{m}" for m in METHODS)


def integrate(
    system,
    x0,
    *,
    dt: float,
    n_steps: int,
    method: str = "DOP853",
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> np.ndarray:
    """Trajectories (n, n_steps, dim) from starts x0 (n, dim) or (dim,) -> (n_steps, dim).

    Row 0 is x0; samples spaced by dt (dense output of scipy's ``solve_ivp``).
    """
    import systems

    system = systems.get(system)
    checks.choice("method", method, _METHODS + _systems_methods())
    checks.positive("dt", dt)
    checks.positive("rtol", rtol)
    checks.positive("atol", atol)
    n_steps = checks.integer("n_steps", n_steps, minimum=1)
    x0 = np.asarray(x0, dtype=np.float64)
    single = x0.ndim == 1
    x0 = np.atleast_2d(x0)
    if x0.shape[1] != system.dim:
        raise ValueError(
            f"x0 must have {system.dim} components for {system.name}, got shape {x0.shape}"
        )
    if method.startswith("systems."):
        ds = systems.simulate(
            system,
            n_traj=x0.shape[0],
            x0=x0,
            n_steps=n_steps,
            dt=float(dt),
            method=method.split(".", 1)[1],
            rtol=rtol,
            atol=atol,
            seed=0,
            progress=False,
        )
        out = ds["x"].values.copy()
        out[:, 0] = x0
        return out[0] if single else out
    p = system.param_array()

    def f(t, x):
        out = np.empty(system.dim)
        system.rhs(x, t, p, out)
        return out

    def jac(t, x):
        return system.jacobian(x, t)

    t_eval = np.arange(n_steps) * float(dt)
    out = np.empty((x0.shape[0], n_steps, system.dim))
    kw = {"jac": jac} if method in ("Radau", "BDF", "LSODA") else {}
    for s, start in enumerate(x0):
        sol = solve_ivp(
            f, (0.0, t_eval[-1]), start, method=method, t_eval=t_eval, rtol=rtol, atol=atol, **kw
        )
        if not sol.success or sol.y.shape[1] != n_steps:
            raise RuntimeError(f"scipy {method} failed from start {start}: {sol.message}")
        out[s] = sol.y.T
        out[s, 0] = start  # exact, whatever the dense output gives at t = 0
    return out[0] if single else out


def reference_solutions(
    system, x0, *, dt: float, n_steps: int, solvers=DEFAULT_REFERENCE_SOLVERS
) -> list[np.ndarray]:
    """One trajectory array (n, n_steps, dim) per (method, tol) in ``solvers``."""
    if len(solvers) < 1:
        raise ValueError("solvers must name at least one (method, tolerance) pair")
    return [
        integrate(system, x0, dt=dt, n_steps=n_steps, method=m, rtol=tol, atol=tol)
        for m, tol in solvers
    ]


class ExactSurrogate:
    """The true system posing as a surrogate: ``generate`` integrates it with scipy.

    A baseline for ``evaluate`` (its VPT is the valid ground-truth time when
    it uses one of the reference solvers) and a stand-in in tests. Has the
    duck-typed surrogate interface: ``generate(x0, n_steps)``, ``dt``,
    ``dim``, ``system``.
    """

    def __init__(
        self,
        system,
        *,
        dt: float,
        method: str = "DOP853",
        rtol: float = 1e-12,
        atol: float | None = None,
    ):
        import systems

        self._system = systems.get(system)
        self.system = self._system.name
        self.dim = self._system.dim
        self.dt = checks.positive("dt", dt)
        self.method, self.rtol = method, checks.positive("rtol", rtol)
        self.atol = self.rtol if atol is None else checks.positive("atol", atol)

    def generate(self, x0, n_steps: int) -> np.ndarray:
        """Trajectories (B, n_steps, dim) from x0 (B, dim); row 0 is x0."""
        x0 = np.atleast_2d(np.asarray(x0, dtype=np.float64))
        return integrate(
            self._system,
            x0,
            dt=self.dt,
            n_steps=n_steps,
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
        )

    def __repr__(self) -> str:
        return (f"ExactSurrogate({self.system!r}, dt={self.dt}, method={self.method!r}, "
                f"rtol={self.rtol})")
