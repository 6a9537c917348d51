"""Butcher tableaus of the explicit Runge-Kutta methods we ship, as plain arrays.

The single source of truth for both packages: ``systems.integrate`` (numba)
and ``dynfit.solvers`` (torch) read them from here (public as ``systems.tableaus``).
Each tableau checks itself on construction (:func:`check_tableau`, the one place
of these checks): ``a`` is strictly lower triangular, its rows sum to ``c``, ``b``
sums to 1 and the error weights ``b - b_low`` sum to 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F

import numpy as np

from . import checks


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta method.

    a: (s, s) strictly lower triangular; b: (s,) weights of the propagated
    solution; c: (s,) nodes; b_low: (s,) weights of the embedded estimate or
    None for a fixed-step method; order: order of the propagated solution;
    order_low: order of the embedded one (the error estimate is O(h^(min+1))).
    fsal: the last stage equals f(t + h, y_new) (first same as last).
    """

    name: str
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    order: int
    b_low: np.ndarray | None = None
    order_low: int | None = None
    fsal: bool = False

    def __post_init__(self):
        check_tableau(self)
        for arr in (self.a, self.b, self.c) + (() if self.b_low is None else (self.b_low,)):
            arr.setflags(write=False)

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_low is not None

    @property
    def error_weights(self) -> np.ndarray:
        """Weights e with y_high - y_low = h * sum_i e_i k_i."""
        if self.b_low is None:
            raise ValueError(f"method {self.name!r} has no embedded error estimate")
        return self.b - self.b_low


def check_tableau(tab, tol: float = 1e-14) -> None:
    """Raise ValueError unless ``tab`` (anything with name, a, b, c, b_low) is a consistent
    explicit method.

    Shapes (s, s), (s,), (s,); ``a`` strictly lower triangular; rows of ``a`` sum
    to ``c``; ``b`` sums to 1; the error weights ``b - b_low`` sum to 0 (all
    within ``tol``).
    """
    s = len(tab.c)
    if tab.a.shape != (s, s) or tab.b.shape != (s,):
        raise ValueError(f"tableau {tab.name!r}: a must be ({s}, {s}) and b ({s},), "
                         f"got {tab.a.shape} and {tab.b.shape}")
    if np.any(np.triu(tab.a) != 0):
        raise ValueError(f"tableau {tab.name!r}: a must be strictly lower triangular "
                         "(explicit method)")
    if not np.allclose(tab.a.sum(axis=1), tab.c, atol=tol, rtol=0):
        raise ValueError(f"tableau {tab.name!r}: rows of a must sum to c")
    if abs(tab.b.sum() - 1.0) > tol:
        raise ValueError(f"tableau {tab.name!r}: weights b must sum to 1, got {tab.b.sum()!r}")
    if tab.b_low is not None:
        if tab.b_low.shape != (s,):
            raise ValueError(f"tableau {tab.name!r}: b_low must have shape ({s},)")
        if abs((tab.b - tab.b_low).sum()) > tol:
            raise ValueError(f"tableau {tab.name!r}: error weights b - b_low must sum to 0")


def _lower(rows, s):
    out = np.zeros((s, s))
    for i, row in enumerate(rows):
        out[i, : len(row)] = [float(F(v)) for v in row]
    return out


def _vec(vals):
    return np.array([float(F(v)) for v in vals], dtype=np.float64)


RK4 = Tableau(
    name="rk4",
    a=_lower([[], ["1/2"], [0, "1/2"], [0, 0, 1]], 4),
    b=_vec(["1/6", "1/3", "1/3", "1/6"]),
    c=_vec([0, "1/2", "1/2", 1]),
    order=4,
)

# Runge-Kutta-Fehlberg 4(5), propagating the order-5 solution (docs/references.md section 3).
RKF45 = Tableau(
    name="rkf45",
    a=_lower(
        [
            [],
            ["1/4"],
            ["3/32", "9/32"],
            ["1932/2197", "-7200/2197", "7296/2197"],
            ["439/216", -8, "3680/513", "-845/4104"],
            ["-8/27", 2, "-3544/2565", "1859/4104", "-11/40"],
        ],
        6,
    ),
    b=_vec(["16/135", 0, "6656/12825", "28561/56430", "-9/50", "2/55"]),
    b_low=_vec(["25/216", 0, "1408/2565", "2197/4104", "-1/5", 0]),
    c=_vec([0, "1/4", "3/8", "12/13", 1, "1/2"]),
    order=5,
    order_low=4,
)

# The paper's "Fehlberg 3(2)" (Allauzen et al. 2022): RK3 kept, Heun for the error.
# f1 = f(x), f2 = f(x + h f1), f3 = f(x + h/4 (f1 + f2));
# A2 = x + h/6 (f1 + f2 + 4 f3) (order 3), A1 = x + h/2 (f1 + f2) (order 2).
RKF23 = Tableau(
    name="rkf23",
    a=_lower([[], [1], ["1/4", "1/4"]], 3),
    b=_vec(["1/6", "1/6", "2/3"]),
    b_low=_vec(["1/2", "1/2", 0]),
    c=_vec([0, 1, "1/2"]),
    order=3,
    order_low=2,
)

# Dormand-Prince 5(4), FSAL.
DOPRI5 = Tableau(
    name="dopri5",
    a=_lower(
        [
            [],
            ["1/5"],
            ["3/40", "9/40"],
            ["44/45", "-56/15", "32/9"],
            ["19372/6561", "-25360/2187", "64448/6561", "-212/729"],
            ["9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656"],
            ["35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84"],
        ],
        7,
    ),
    b=_vec(["35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0]),
    b_low=_vec(["5179/57600", 0, "7571/16695", "393/640", "-92097/339200", "187/2100", "1/40"]),
    c=_vec([0, "1/5", "3/10", "4/5", "8/9", 1, 1]),
    order=5,
    order_low=4,
    fsal=True,
)

# Dormand-Prince 8(5) as in Hairer, Norsett & Wanner, "Solving ODEs I" (2nd ed.),
# code DOP853; coefficients as tabulated in scipy.integrate (the same numbers to
# double precision). Order 8; the embedded weights b - E5 give the order-5
# solution whose difference is the "err5" estimate of DOP853 (we use that
# estimate alone, not DOP853's blend with its 3rd-order one, so the step
# control is somewhat more cautious than Hairer's). The 12th stage sits at
# c = 1 but is not f(t + h, y_new), so the method is not FSAL here.
_DOP853_A = {  # row: {column: a[row, column]}, nonzero entries
    1: {0: 0.05260015195876773},
    2: {0: 0.0197250569845379, 1: 0.0591751709536137},
    3: {0: 0.02958758547680685, 2: 0.08876275643042054},
    4: {0: 0.2413651341592667, 2: -0.8845494793282861, 3: 0.924834003261792},
    5: {0: 0.037037037037037035, 3: 0.17082860872947386, 4: 0.12546768756682242},
    6: {0: 0.037109375, 3: 0.17025221101954405, 4: 0.06021653898045596, 5: -0.017578125},
    7: {
        0: 0.03709200011850479,
        3: 0.17038392571223998,
        4: 0.10726203044637328,
        5: -0.015319437748624402,
        6: 0.008273789163814023,
    },
    8: {
        0: 0.6241109587160757,
        3: -3.3608926294469414,
        4: -0.868219346841726,
        5: 27.59209969944671,
        6: 20.154067550477894,
        7: -43.48988418106996,
    },
    9: {
        0: 0.47766253643826434,
        3: -2.4881146199716677,
        4: -0.590290826836843,
        5: 21.230051448181193,
        6: 15.279233632882423,
        7: -33.28821096898486,
        8: -0.020331201708508627,
    },
    10: {
        0: -0.9371424300859873,
        3: 5.186372428844064,
        4: 1.0914373489967295,
        5: -8.149787010746927,
        6: -18.52006565999696,
        7: 22.739487099350505,
        8: 2.4936055526796523,
        9: -3.0467644718982196,
    },
    11: {
        0: 2.273310147516538,
        3: -10.53449546673725,
        4: -2.0008720582248625,
        5: -17.9589318631188,
        6: 27.94888452941996,
        7: -2.8589982771350235,
        8: -8.87285693353063,
        9: 12.360567175794303,
        10: 0.6433927460157636,
    },
}
_DOP853_B = [
    0.054293734116568765, 0.0, 0.0, 0.0, 0.0, 4.450312892752409, 1.8915178993145003,
    -5.801203960010585, 0.3111643669578199, -0.1521609496625161, 0.20136540080403034,
    0.04471061572777259,
]
_DOP853_C = [
    0.0, 0.05260015195876773, 0.0789002279381516, 0.1183503419072274, 0.2816496580927726,
    0.3333333333333333, 0.25, 0.3076923076923077, 0.6512820512820513, 0.6, 0.8571428571428571,
    1.0,
]
_DOP853_E5 = [
    0.01312004499419488, 0.0, 0.0, 0.0, 0.0, -1.2251564463762044, -0.4957589496572502,
    1.6643771824549864, -0.35032884874997366, 0.3341791187130175, 0.08192320648511571,
    -0.022355307863886294,
]


def _from_rows(rows: dict, s: int) -> np.ndarray:
    out = np.zeros((s, s))
    for i, row in rows.items():
        for j, v in row.items():
            out[i, j] = v
    return out


DOP853 = Tableau(
    name="dop853",
    a=_from_rows(_DOP853_A, 12),
    b=np.array(_DOP853_B),
    b_low=np.array(_DOP853_B) - np.array(_DOP853_E5),
    c=np.array(_DOP853_C),
    order=8,
    order_low=5,
)

TABLEAUS: dict[str, Tableau] = {t.name: t for t in (RK4, RKF45, RKF23, DOPRI5, DOP853)}
#: Method names accepted by ``systems.integrate``, ``systems.simulate`` and ``dynfit.odesolve``.
METHODS = tuple(TABLEAUS)


def get_tableau(name: str) -> Tableau:
    """Look a method up by name; raise a ValueError listing the known ones."""
    try:
        return TABLEAUS[name]
    except KeyError:
        raise ValueError(f"unknown Runge-Kutta method {name!r}; "
                         f"expected one of {sorted(TABLEAUS)}") from None


def method_tableau(method: str, adaptive: bool | None = None) -> tuple[Tableau, bool]:
    """The tableau of ``method`` and whether to adapt the step (None: adapt if the method can).

    ValueError for an unknown name, or adaptive=True with a fixed-step method.
    """
    checks.choice("method", method, METHODS)
    tab = TABLEAUS[method]
    if adaptive is None:
        adaptive = tab.adaptive
    if adaptive and not tab.adaptive:
        raise ValueError(
            f"method {method!r} has no embedded error estimate, so it cannot adapt its step; "
            f"use adaptive=False or one of {[n for n, t in TABLEAUS.items() if t.adaptive]}"
        )
    return tab, bool(adaptive)
