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

import numpy as np
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


# --- Rossler (1976) -------------------------------------------------------
# params: a, b, c
@njit(**JIT)
def rossler(x, t, p, out):
    a, b, c = p[0], p[1], p[2]
    out[0] = -x[1] - x[2]
    out[1] = x[0] + a * x[1]
    out[2] = b + x[2] * (x[0] - c)


@njit(**JIT)
def rossler_jac(x, t, p, out):
    a, c = p[0], p[2]
    out[0, 0] = 0.0
    out[0, 1] = -1.0
    out[0, 2] = -1.0
    out[1, 0] = 1.0
    out[1, 1] = a
    out[1, 2] = 0.0
    out[2, 0] = x[2]
    out[2, 1] = 0.0
    out[2, 2] = x[0] - c


# --- Lorenz-96 (1996), any dimension N = len(x) >= 4 ----------------------
# params: N (read from len(x), kept in p for provenance), F
@njit(**JIT)
def lorenz96(x, t, p, out):
    n = x.shape[0]
    f = p[1]
    for i in range(n):
        out[i] = (x[(i + 1) % n] - x[(i - 2) % n]) * x[(i - 1) % n] - x[i] + f


@njit(**JIT)
def lorenz96_jac(x, t, p, out):
    n = x.shape[0]
    out[:, :] = 0.0
    for i in range(n):
        out[i, (i - 1) % n] = x[(i + 1) % n] - x[(i - 2) % n]
        out[i, (i + 1) % n] = x[(i - 1) % n]
        out[i, (i - 2) % n] = -x[(i - 1) % n]
        out[i, i] = -1.0


# --- Chen (1999) ----------------------------------------------------------
# params: a, b, c
@njit(**JIT)
def chen(x, t, p, out):
    a, b, c = p[0], p[1], p[2]
    out[0] = a * (x[1] - x[0])
    out[1] = (c - a) * x[0] - x[0] * x[2] + c * x[1]
    out[2] = x[0] * x[1] - b * x[2]


@njit(**JIT)
def chen_jac(x, t, p, out):
    a, b, c = p[0], p[1], p[2]
    out[0, 0] = -a
    out[0, 1] = a
    out[0, 2] = 0.0
    out[1, 0] = c - a - x[2]
    out[1, 1] = c
    out[1, 2] = -x[0]
    out[2, 0] = x[1]
    out[2, 1] = x[0]
    out[2, 2] = -b


# --- Lu-Chen (2002) -------------------------------------------------------
# params: a, b, c
@njit(**JIT)
def lu(x, t, p, out):
    a, b, c = p[0], p[1], p[2]
    out[0] = a * (x[1] - x[0])
    out[1] = -x[0] * x[2] + c * x[1]
    out[2] = x[0] * x[1] - b * x[2]


@njit(**JIT)
def lu_jac(x, t, p, out):
    a, b, c = p[0], p[1], p[2]
    out[0, 0] = -a
    out[0, 1] = a
    out[0, 2] = 0.0
    out[1, 0] = -x[2]
    out[1, 1] = c
    out[1, 2] = -x[0]
    out[2, 0] = x[1]
    out[2, 1] = x[0]
    out[2, 2] = -b


# --- Chua's circuit, piecewise-linear diode (Matsumoto, Chua, Komuro 1985) --
# params: alpha, beta, m0, m1;  f(x) = m1 x + (m0 - m1)(|x + 1| - |x - 1|) / 2
# The Jacobian is exact for |x| != 1 (f is not differentiable at x = +-1).
@njit(**JIT)
def chua(x, t, p, out):
    alpha, beta, m0, m1 = p[0], p[1], p[2], p[3]
    f = m1 * x[0] + 0.5 * (m0 - m1) * (abs(x[0] + 1.0) - abs(x[0] - 1.0))
    out[0] = alpha * (x[1] - x[0] - f)
    out[1] = x[0] - x[1] + x[2]
    out[2] = -beta * x[1]


@njit(**JIT)
def chua_jac(x, t, p, out):
    alpha, beta, m0, m1 = p[0], p[1], p[2], p[3]
    slope = m0 if abs(x[0]) < 1.0 else m1
    out[0, 0] = -alpha * (1.0 + slope)
    out[0, 1] = alpha
    out[0, 2] = 0.0
    out[1, 0] = 1.0
    out[1, 1] = -1.0
    out[1, 2] = 1.0
    out[2, 0] = 0.0
    out[2, 1] = -beta
    out[2, 2] = 0.0


# --- Thomas' cyclically symmetric attractor (1999) ------------------------
# params: b
@njit(**JIT)
def thomas(x, t, p, out):
    b = p[0]
    out[0] = np.sin(x[1]) - b * x[0]
    out[1] = np.sin(x[2]) - b * x[1]
    out[2] = np.sin(x[0]) - b * x[2]


@njit(**JIT)
def thomas_jac(x, t, p, out):
    b = p[0]
    out[0, 0] = -b
    out[0, 1] = np.cos(x[1])
    out[0, 2] = 0.0
    out[1, 0] = 0.0
    out[1, 1] = -b
    out[1, 2] = np.cos(x[2])
    out[2, 0] = np.cos(x[0])
    out[2, 1] = 0.0
    out[2, 2] = -b


# --- Halvorsen's cyclically symmetric attractor ---------------------------
# params: a
@njit(**JIT)
def halvorsen(x, t, p, out):
    a = p[0]
    out[0] = -a * x[0] - 4.0 * x[1] - 4.0 * x[2] - x[1] * x[1]
    out[1] = -a * x[1] - 4.0 * x[2] - 4.0 * x[0] - x[2] * x[2]
    out[2] = -a * x[2] - 4.0 * x[0] - 4.0 * x[1] - x[0] * x[0]


@njit(**JIT)
def halvorsen_jac(x, t, p, out):
    a = p[0]
    out[0, 0] = -a
    out[0, 1] = -4.0 - 2.0 * x[1]
    out[0, 2] = -4.0
    out[1, 0] = -4.0
    out[1, 1] = -a
    out[1, 2] = -4.0 - 2.0 * x[2]
    out[2, 0] = -4.0 - 2.0 * x[0]
    out[2, 1] = -4.0
    out[2, 2] = -a


# --- Aizawa (Langford 1984 form) ------------------------------------------
# params: a, b, c, d, e, f
@njit(**JIT)
def aizawa(x, t, p, out):
    a, b, c, d, e, f = p[0], p[1], p[2], p[3], p[4], p[5]
    r2 = x[0] * x[0] + x[1] * x[1]
    out[0] = (x[2] - b) * x[0] - d * x[1]
    out[1] = d * x[0] + (x[2] - b) * x[1]
    out[2] = c + a * x[2] - x[2] ** 3 / 3.0 - r2 * (1.0 + e * x[2]) + f * x[2] * x[0] ** 3


@njit(**JIT)
def aizawa_jac(x, t, p, out):
    a, b, d, e, f = p[0], p[1], p[3], p[4], p[5]
    r2 = x[0] * x[0] + x[1] * x[1]
    out[0, 0] = x[2] - b
    out[0, 1] = -d
    out[0, 2] = x[0]
    out[1, 0] = d
    out[1, 1] = x[2] - b
    out[1, 2] = x[1]
    out[2, 0] = -2.0 * x[0] * (1.0 + e * x[2]) + 3.0 * f * x[2] * x[0] * x[0]
    out[2, 1] = -2.0 * x[1] * (1.0 + e * x[2])
    out[2, 2] = a - x[2] * x[2] - e * r2 + f * x[0] ** 3


# --- Dadras and Momeni (2009) ---------------------------------------------
# params: a, b, c, d, h
@njit(**JIT)
def dadras(x, t, p, out):
    a, b, c, d, h = p[0], p[1], p[2], p[3], p[4]
    out[0] = x[1] - a * x[0] + b * x[1] * x[2]
    out[1] = c * x[1] - x[0] * x[2] + x[2]
    out[2] = d * x[0] * x[1] - h * x[2]


@njit(**JIT)
def dadras_jac(x, t, p, out):
    a, b, c, d, h = p[0], p[1], p[2], p[3], p[4]
    out[0, 0] = -a
    out[0, 1] = 1.0 + b * x[2]
    out[0, 2] = b * x[1]
    out[1, 0] = -x[2]
    out[1, 1] = c
    out[1, 2] = 1.0 - x[0]
    out[2, 0] = d * x[1]
    out[2, 1] = d * x[0]
    out[2, 2] = -h


# --- Rabinovich-Fabrikant (1979) ------------------------------------------
# params: gamma, alpha
@njit(**JIT)
def rabinovich_fabrikant(x, t, p, out):
    gamma, alpha = p[0], p[1]
    out[0] = x[1] * (x[2] - 1.0 + x[0] * x[0]) + gamma * x[0]
    out[1] = x[0] * (3.0 * x[2] + 1.0 - x[0] * x[0]) + gamma * x[1]
    out[2] = -2.0 * x[2] * (alpha + x[0] * x[1])


@njit(**JIT)
def rabinovich_fabrikant_jac(x, t, p, out):
    gamma, alpha = p[0], p[1]
    out[0, 0] = 2.0 * x[0] * x[1] + gamma
    out[0, 1] = x[2] - 1.0 + x[0] * x[0]
    out[0, 2] = x[1]
    out[1, 0] = 3.0 * x[2] + 1.0 - 3.0 * x[0] * x[0]
    out[1, 1] = gamma
    out[1, 2] = 3.0 * x[0]
    out[2, 0] = -2.0 * x[2] * x[1]
    out[2, 1] = -2.0 * x[2] * x[0]
    out[2, 2] = -2.0 * (alpha + x[0] * x[1])


# --- Sprott (1994) simple flows: case B, C, D, S --------------------------
# Sprott B, no params: x' = yz, y' = x - y, z' = 1 - xy
@njit(**JIT)
def sprott_b(x, t, p, out):
    out[0] = x[1] * x[2]
    out[1] = x[0] - x[1]
    out[2] = 1.0 - x[0] * x[1]


@njit(**JIT)
def sprott_b_jac(x, t, p, out):
    out[0, 0] = 0.0
    out[0, 1] = x[2]
    out[0, 2] = x[1]
    out[1, 0] = 1.0
    out[1, 1] = -1.0
    out[1, 2] = 0.0
    out[2, 0] = -x[1]
    out[2, 1] = -x[0]
    out[2, 2] = 0.0


# Sprott C, no params: x' = yz, y' = x - y, z' = 1 - x^2
@njit(**JIT)
def sprott_c(x, t, p, out):
    out[0] = x[1] * x[2]
    out[1] = x[0] - x[1]
    out[2] = 1.0 - x[0] * x[0]


@njit(**JIT)
def sprott_c_jac(x, t, p, out):
    out[0, 0] = 0.0
    out[0, 1] = x[2]
    out[0, 2] = x[1]
    out[1, 0] = 1.0
    out[1, 1] = -1.0
    out[1, 2] = 0.0
    out[2, 0] = -2.0 * x[0]
    out[2, 1] = 0.0
    out[2, 2] = 0.0


# Sprott D, params: a (= 3):  x' = -y, y' = x + z, z' = xz + a y^2
@njit(**JIT)
def sprott_d(x, t, p, out):
    out[0] = -x[1]
    out[1] = x[0] + x[2]
    out[2] = x[0] * x[2] + p[0] * x[1] * x[1]


@njit(**JIT)
def sprott_d_jac(x, t, p, out):
    out[0, 0] = 0.0
    out[0, 1] = -1.0
    out[0, 2] = 0.0
    out[1, 0] = 1.0
    out[1, 1] = 0.0
    out[1, 2] = 1.0
    out[2, 0] = x[2]
    out[2, 1] = 2.0 * p[0] * x[1]
    out[2, 2] = x[0]


# Sprott S, params: a (= 4):  x' = -x - a y, y' = x + z^2, z' = 1 + x
@njit(**JIT)
def sprott_s(x, t, p, out):
    out[0] = -x[0] - p[0] * x[1]
    out[1] = x[0] + x[2] * x[2]
    out[2] = 1.0 + x[0]


@njit(**JIT)
def sprott_s_jac(x, t, p, out):
    out[0, 0] = -1.0
    out[0, 1] = -p[0]
    out[0, 2] = 0.0
    out[1, 0] = 1.0
    out[1, 1] = 0.0
    out[1, 2] = 2.0 * x[2]
    out[2, 0] = 1.0
    out[2, 1] = 0.0
    out[2, 2] = 0.0


# --- Diffusionless Lorenz (van der Schrier and Maas 2000) -----------------
# params: R
@njit(**JIT)
def diffusionless_lorenz(x, t, p, out):
    out[0] = -x[1] - x[0]
    out[1] = -x[0] * x[2]
    out[2] = x[0] * x[1] + p[0]


@njit(**JIT)
def diffusionless_lorenz_jac(x, t, p, out):
    out[0, 0] = -1.0
    out[0, 1] = -1.0
    out[0, 2] = 0.0
    out[1, 0] = -x[2]
    out[1, 1] = 0.0
    out[1, 2] = -x[0]
    out[2, 0] = x[1]
    out[2, 1] = x[0]
    out[2, 2] = 0.0


# --- Rucklidge (1992) -----------------------------------------------------
# params: kappa, lam
@njit(**JIT)
def rucklidge(x, t, p, out):
    kappa, lam = p[0], p[1]
    out[0] = -kappa * x[0] + lam * x[1] - x[1] * x[2]
    out[1] = x[0]
    out[2] = -x[2] + x[1] * x[1]


@njit(**JIT)
def rucklidge_jac(x, t, p, out):
    kappa, lam = p[0], p[1]
    out[0, 0] = -kappa
    out[0, 1] = lam - x[2]
    out[0, 2] = -x[1]
    out[1, 0] = 1.0
    out[1, 1] = 0.0
    out[1, 2] = 0.0
    out[2, 0] = 0.0
    out[2, 1] = 2.0 * x[1]
    out[2, 2] = -1.0


# --- Nose-Hoover thermostatted oscillator (Sprott A) ----------------------
# params: a
@njit(**JIT)
def nose_hoover(x, t, p, out):
    out[0] = x[1]
    out[1] = -x[0] + x[1] * x[2]
    out[2] = p[0] - x[1] * x[1]


@njit(**JIT)
def nose_hoover_jac(x, t, p, out):
    out[0, 0] = 0.0
    out[0, 1] = 1.0
    out[0, 2] = 0.0
    out[1, 0] = -1.0
    out[1, 1] = x[2]
    out[1, 2] = x[1]
    out[2, 0] = 0.0
    out[2, 1] = -2.0 * x[1]
    out[2, 2] = 0.0


# --- Lorenz-84 Hadley circulation -----------------------------------------
# params: a, b, F, G
@njit(**JIT)
def lorenz84(x, t, p, out):
    a, b, f, g = p[0], p[1], p[2], p[3]
    out[0] = -x[1] * x[1] - x[2] * x[2] - a * x[0] + a * f
    out[1] = x[0] * x[1] - b * x[0] * x[2] - x[1] + g
    out[2] = b * x[0] * x[1] + x[0] * x[2] - x[2]


@njit(**JIT)
def lorenz84_jac(x, t, p, out):
    a, b = p[0], p[1]
    out[0, 0] = -a
    out[0, 1] = -2.0 * x[1]
    out[0, 2] = -2.0 * x[2]
    out[1, 0] = x[1] - b * x[2]
    out[1, 1] = x[0] - 1.0
    out[1, 2] = -b * x[0]
    out[2, 0] = b * x[1] + x[2]
    out[2, 1] = b * x[0]
    out[2, 2] = x[0] - 1.0


# --- Lorenz-Stenflo (Stenflo 1996) ----------------------------------------
# params: a, b, r, s
@njit(**JIT)
def lorenz_stenflo(x, t, p, out):
    a, b, r, s = p[0], p[1], p[2], p[3]
    out[0] = a * (x[1] - x[0]) + s * x[3]
    out[1] = x[0] * (r - x[2]) - x[1]
    out[2] = x[0] * x[1] - b * x[2]
    out[3] = -x[0] - a * x[3]


@njit(**JIT)
def lorenz_stenflo_jac(x, t, p, out):
    a, b, r, s = p[0], p[1], p[2], p[3]
    out[:, :] = 0.0
    out[0, 0] = -a
    out[0, 1] = a
    out[0, 3] = s
    out[1, 0] = r - x[2]
    out[1, 1] = -1.0
    out[1, 2] = -x[0]
    out[2, 0] = x[1]
    out[2, 1] = x[0]
    out[2, 2] = -b
    out[3, 0] = -1.0
    out[3, 3] = -a


# --- Hindmarsh-Rose neuron (1984) -----------------------------------------
# params: a, b, c, d, r, s, xr, I
@njit(**JIT)
def hindmarsh_rose(x, t, p, out):
    a, b, c, d, r, s, xr, current = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    out[0] = x[1] - a * x[0] ** 3 + b * x[0] * x[0] - x[2] + current
    out[1] = c - d * x[0] * x[0] - x[1]
    out[2] = r * (s * (x[0] - xr) - x[2])


@njit(**JIT)
def hindmarsh_rose_jac(x, t, p, out):
    a, b, d, r, s = p[0], p[1], p[3], p[4], p[5]
    out[0, 0] = -3.0 * a * x[0] * x[0] + 2.0 * b * x[0]
    out[0, 1] = 1.0
    out[0, 2] = -1.0
    out[1, 0] = -2.0 * d * x[0]
    out[1, 1] = -1.0
    out[1, 2] = 0.0
    out[2, 0] = r * s
    out[2, 1] = 0.0
    out[2, 2] = -r


# --- Double pendulum (point masses, massless rods) ------------------------
# state: theta1, theta2, omega1, omega2;  params: m1, m2, l1, l2, g
@njit(**JIT)
def double_pendulum(x, t, p, out):
    m1, m2, l1, l2, g = p[0], p[1], p[2], p[3], p[4]
    th1, th2, w1, w2 = x[0], x[1], x[2], x[3]
    dl = th1 - th2
    den = 2.0 * m1 + m2 - m2 * np.cos(2.0 * dl)
    n1 = (-g * (2.0 * m1 + m2) * np.sin(th1) - m2 * g * np.sin(th1 - 2.0 * th2)
          - 2.0 * np.sin(dl) * m2 * (w2 * w2 * l2 + w1 * w1 * l1 * np.cos(dl)))
    k = w1 * w1 * l1 * (m1 + m2) + g * (m1 + m2) * np.cos(th1) + w2 * w2 * l2 * m2 * np.cos(dl)
    out[0] = w1
    out[1] = w2
    out[2] = n1 / (l1 * den)
    out[3] = 2.0 * np.sin(dl) * k / (l2 * den)


@njit(**JIT)
def double_pendulum_jac(x, t, p, out):
    m1, m2, l1, l2, g = p[0], p[1], p[2], p[3], p[4]
    th1, th2, w1, w2 = x[0], x[1], x[2], x[3]
    dl = th1 - th2
    sd, cd = np.sin(dl), np.cos(dl)
    den = 2.0 * m1 + m2 - m2 * np.cos(2.0 * dl)
    dden1 = 2.0 * m2 * np.sin(2.0 * dl)  # d den / d th1 (= -d den / d th2)
    q = w2 * w2 * l2 + w1 * w1 * l1 * cd
    n1 = -g * (2.0 * m1 + m2) * np.sin(th1) - m2 * g * np.sin(th1 - 2.0 * th2) - 2.0 * sd * m2 * q
    inner = cd * q - w1 * w1 * l1 * sd * sd
    dn1_1 = -g * (2.0 * m1 + m2) * np.cos(th1) - m2 * g * np.cos(th1 - 2.0 * th2) - 2.0 * m2 * inner
    dn1_2 = 2.0 * m2 * g * np.cos(th1 - 2.0 * th2) + 2.0 * m2 * inner
    k = w1 * w1 * l1 * (m1 + m2) + g * (m1 + m2) * np.cos(th1) + w2 * w2 * l2 * m2 * cd
    dk_1 = -g * (m1 + m2) * np.sin(th1) - w2 * w2 * l2 * m2 * sd
    dk_2 = w2 * w2 * l2 * m2 * sd
    n2 = 2.0 * sd * k
    dn2_1 = 2.0 * cd * k + 2.0 * sd * dk_1
    dn2_2 = -2.0 * cd * k + 2.0 * sd * dk_2
    out[0, 0] = 0.0
    out[0, 1] = 0.0
    out[0, 2] = 1.0
    out[0, 3] = 0.0
    out[1, 0] = 0.0
    out[1, 1] = 0.0
    out[1, 2] = 0.0
    out[1, 3] = 1.0
    out[2, 0] = (dn1_1 * den - n1 * dden1) / (l1 * den * den)
    out[2, 1] = (dn1_2 * den + n1 * dden1) / (l1 * den * den)
    out[2, 2] = -4.0 * m2 * sd * w1 * l1 * cd / (l1 * den)
    out[2, 3] = -4.0 * m2 * sd * w2 * l2 / (l1 * den)
    out[3, 0] = (dn2_1 * den - n2 * dden1) / (l2 * den * den)
    out[3, 1] = (dn2_2 * den + n2 * dden1) / (l2 * den * den)
    out[3, 2] = 4.0 * sd * w1 * l1 * (m1 + m2) / (l2 * den)
    out[3, 3] = 4.0 * sd * w2 * l2 * m2 * cd / (l2 * den)


# --- Forced Duffing two-well oscillator (non-autonomous) ------------------
# x'' + delta x' - x + x^3 = A sin(omega t);  params: delta, A, omega
@njit(**JIT)
def duffing(x, t, p, out):
    delta, amp, omega = p[0], p[1], p[2]
    out[0] = x[1]
    out[1] = -delta * x[1] + x[0] - x[0] ** 3 + amp * np.sin(omega * t)


@njit(**JIT)
def duffing_jac(x, t, p, out):
    out[0, 0] = 0.0
    out[0, 1] = 1.0
    out[1, 0] = 1.0 - 3.0 * x[0] * x[0]
    out[1, 1] = -p[0]


# --- Ueda oscillator (forced Duffing with cubic stiffness only) ----------
# x'' + b x' + x^3 = A sin(omega t);  params: b, A, omega
@njit(**JIT)
def ueda(x, t, p, out):
    b, amp, omega = p[0], p[1], p[2]
    out[0] = x[1]
    out[1] = -b * x[1] - x[0] ** 3 + amp * np.sin(omega * t)


@njit(**JIT)
def ueda_jac(x, t, p, out):
    out[0, 0] = 0.0
    out[0, 1] = 1.0
    out[1, 0] = -3.0 * x[0] * x[0]
    out[1, 1] = -p[0]
