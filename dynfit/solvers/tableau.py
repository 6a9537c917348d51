"""Torch-ready view of the Butcher tableaus of the base (``_dyncore.tableaus``).

The arrays live in ``_dyncore.tableaus`` (public as ``systems.tableaus``; checked there
on construction by ``check_tableau``, re-exported here); this module turns them into
the Python-float rows the stepper uses (zero coefficients dropped, so the hot loop does
no useless work). Python floats keep every tensor's dtype and device, so one cached
view serves float32, float64, CPU and CUDA alike.

Adaptive methods also get a first-same-as-last (FSAL) form: a non-FSAL tableau
gains a last stage at c = 1 whose row is b, so that the last stage is
f(t + h, y_new) (reused as the next step's first stage and for dense output),
and midpoint weights w with y0 + h sum_i w_i k_i = y(t + h/2) + O(h^(p+1))
(p = min(order, 4)) for quartic Hermite dense output.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from _dyncore import checks
from _dyncore.tableaus import TABLEAUS, Tableau, check_tableau, get_tableau

METHODS = tuple(sorted(TABLEAUS))


def fsal_extension(tab: Tableau) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, c) with a last stage at c = 1 whose row is b (unchanged for an FSAL tableau)."""
    if tab.fsal:
        return tab.a, tab.b, tab.c
    s = tab.stages
    a = np.zeros((s + 1, s + 1))
    a[:s, :s] = tab.a
    a[s, :s] = tab.b
    return a, np.append(tab.b, 0.0), np.append(tab.c, 1.0)


def midpoint_weights(a: np.ndarray, c: np.ndarray, order: int, theta: float = 0.5) -> np.ndarray:
    """w with sum_i w_i Phi_i(tree) = theta^|tree| / gamma(tree) for all trees up to ``order``
    (<= 4).

    Raises ValueError if the tableau admits no such weights.
    """
    rows = [np.ones_like(c), c, c**2, a @ c, c**3, c * (a @ c), a @ c**2, a @ (a @ c)]
    rhs = [theta, theta**2 / 2, theta**3 / 3, theta**3 / 6,
           theta**4 / 4, theta**4 / 8, theta**4 / 12, theta**4 / 24]
    n = {1: 1, 2: 2, 3: 4, 4: 8}[order]
    A, r = np.array(rows[:n]), np.array(rhs[:n])
    w = np.linalg.lstsq(A, r, rcond=None)[0]
    res = np.abs(A @ w - r).max()
    if res > 1e-13:
        raise ValueError(f"no order-{order} midpoint weights for this tableau (residual {res:.2e})")
    return w


def _terms(vec, tiny: float = 0.0) -> tuple[tuple[int, float], ...]:
    return tuple((j, float(v)) for j, v in enumerate(vec) if abs(v) > tiny)


@dataclass(frozen=True)
class TorchTableau:
    """A checked tableau in the form the generic stepper consumes.

    rows[i]: nonzero (j, a_ij) of stage i; b, e: nonzero (j, weight) of the
    propagated solution and of the error y_high - y_low (e empty for fixed-step
    methods); c: nodes; mid: midpoint weights for dense output (empty if none);
    fsal: the last stage is f(t + h, y_high); dense: (4, S) rows of
    :func:`dense_coefficients` (FSAL form only, else empty).
    """

    name: str
    rows: tuple[tuple[tuple[int, float], ...], ...]
    b: tuple[tuple[int, float], ...]
    e: tuple[tuple[int, float], ...]
    c: tuple[float, ...]
    mid: tuple[tuple[int, float], ...]
    order: int
    order_low: int | None
    fsal: bool
    dense: tuple[tuple[float, ...], ...] = ()

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return bool(self.e)


def dense_coefficients(b: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """(4, S) matrix C such that the quartic dense output of an FSAL step is
    y(t + theta h) = y0 + h sum_i P_i(theta) k_i with
    P(theta) = (theta, theta^2, theta^3, theta^4) @ C.

    It is the quartic through y0, y1 = y0 + h b.k and y(t + h/2) = y0 + h mid.k with slopes
    k_0 and k_{S-1} (Hermite-Birkhoff).
    """
    S = len(b)
    e0, e1 = np.eye(S)[0], np.eye(S)[S - 1]
    r1, r2, r3 = b - e0, e1 - e0, 16.0 * mid - 8.0 * e0
    return np.stack([e0, -5.0 * r1 + r2 + r3, 14.0 * r1 - 3.0 * r2 - 2.0 * r3,
                     -8.0 * r1 + 2.0 * r2 + r3])


def _build(tab: Tableau, a, b, c, fsal: bool, mid=()) -> TorchTableau:
    e = _terms(tab.b - tab.b_low) if tab.b_low is not None else ()
    dense = ()
    if mid:
        w = np.zeros(len(c))
        for j, v in mid:
            w[j] = v
        dense = tuple(tuple(float(x) for x in row) for row in dense_coefficients(a[-1], w))
    return TorchTableau(
        name=tab.name, rows=tuple(_terms(a[i, :i]) for i in range(len(c))), b=_terms(b), e=e,
        c=tuple(float(x) for x in c), mid=mid, order=tab.order, order_low=tab.order_low,
        fsal=fsal, dense=dense,
    )


@lru_cache(maxsize=None)
def _cached(name: str, fsal: bool) -> TorchTableau:
    tab = get_tableau(name)  # checked when it was built (systems.tableaus.check_tableau)
    if not fsal:
        return _build(tab, tab.a, tab.b, tab.c, tab.fsal)
    if not tab.adaptive:
        raise ValueError(f"method {name!r} has no embedded error estimate, "
                         "so no adaptive (FSAL) form")
    a, b, c = fsal_extension(tab)
    mid = _terms(midpoint_weights(a, c, min(tab.order, 4)), tiny=1e-13)
    return _build(tab, a, b, c, True, mid)


def torch_tableau(name: str, fsal: bool = False) -> TorchTableau:
    """The tableau ``name`` (cached); fsal=True gives the FSAL form with dense-output weights.

    ValueError lists the known names.
    """
    checks.choice("Runge-Kutta method", name, METHODS)
    return _cached(name, bool(fsal))
