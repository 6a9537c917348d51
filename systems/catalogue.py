"""Right-hand sides and Jacobians of the catalogued flows, numba-compiled.

Every flow is a pair of functions with one calling convention:

    rhs(x, t, p, out)   writes dx/dt, shape (dim,), into ``out``
    jac(x, t, p, out)   writes d(dx/dt)/dx, shape (dim, dim), into ``out``

``x`` is a float64 array of shape (dim,), ``t`` a float, ``p`` the float64
parameter vector in the order declared by ``param_names`` in
``data/systems.json``. Metadata (parameters, initial conditions, sampling step,
reference exponents) lives in that file, not here.
"""
from __future__ import annotations

from numba import njit

JIT = dict(cache=True, nogil=True, fastmath=False)


# --- Lorenz'63 ------------------------------------------------------------
# params: sigma, rho, beta
@njit(**JIT)
def lorenz63(x, t, p, out):
    sigma, rho, beta = p[0], p[1], p[2]
    out[0] = sigma * (x[1] - x[0])
    out[1] = x[0] * (rho - x[2]) - x[1]
    out[2] = x[0] * x[1] - beta * x[2]


@njit(**JIT)
def lorenz63_jac(x, t, p, out):
    sigma, rho, beta = p[0], p[1], p[2]
    out[0, 0] = -sigma
    out[0, 1] = sigma
    out[0, 2] = 0.0
    out[1, 0] = rho - x[2]
    out[1, 1] = -1.0
    out[1, 2] = -x[0]
    out[2, 0] = x[1]
    out[2, 1] = x[0]
    out[2, 2] = -beta
