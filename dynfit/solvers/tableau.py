"""Torch view of the Butcher tableaus in :mod:`systems.tableaus`.

The arrays live in ``systems.tableaus`` (checked there on construction); this
module re-checks them, turns them into the Python-float rows the stepper uses
(zero coefficients dropped, so the hot loop does no useless work) and caches
torch tensors per ``(name, dtype, device)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from systems.tableaus import TABLEAUS, Tableau, get_tableau

__all__ = ["TorchTableau", "torch_tableau", "check_tableau", "METHODS"]

METHODS = tuple(sorted(TABLEAUS))


def check_tableau(tab: Tableau, tol: float = 1e-14) -> None:
    """Raise ValueError unless rows of a sum to c, b sums to 1, error weights to 0."""
    if not np.allclose(tab.a.sum(axis=1), tab.c, atol=tol, rtol=0):
        raise ValueError(f"tableau {tab.name!r}: rows of a must sum to c")
    if abs(tab.b.sum() - 1.0) > tol:
        raise ValueError(f"tableau {tab.name!r}: weights b must sum to 1, got {tab.b.sum()!r}")
    if tab.b_low is not None and abs((tab.b - tab.b_low).sum()) > tol:
        raise ValueError(f"tableau {tab.name!r}: error weights b - b_low must sum to 0")
    if np.any(np.triu(tab.a) != 0):
        raise ValueError(f"tableau {tab.name!r}: a must be strictly lower triangular")


def _terms(vec) -> tuple[tuple[int, float], ...]:
    return tuple((j, float(v)) for j, v in enumerate(vec) if v != 0.0)


@dataclass(frozen=True)
class TorchTableau:
    """A checked tableau in the form the generic stepper consumes.

    rows[i]: nonzero (j, a_ij) of stage i; b, e: nonzero (j, weight) of the
    propagated solution and of the error y_high - y_low (e empty for fixed-step
    methods); c: nodes; order, order_low; fsal.
    """

    name: str
    rows: tuple[tuple[tuple[int, float], ...], ...]
    b: tuple[tuple[int, float], ...]
    e: tuple[tuple[int, float], ...]
    c: tuple[float, ...]
    order: int
    order_low: int | None
    fsal: bool

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return bool(self.e)


@lru_cache(maxsize=None)
def _cached(name: str) -> TorchTableau:
    tab = get_tableau(name)
    check_tableau(tab)
    e = _terms(tab.b - tab.b_low) if tab.b_low is not None else ()
    return TorchTableau(
        name=tab.name,
        rows=tuple(_terms(tab.a[i, :i]) for i in range(tab.stages)),
        b=_terms(tab.b),
        e=e,
        c=tuple(float(x) for x in tab.c),
        order=tab.order,
        order_low=tab.order_low,
        fsal=tab.fsal,
    )


def torch_tableau(name: str, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> TorchTableau:
    """The tableau ``name`` (cached). ValueError lists known names.

    The coefficients are Python floats, so one view serves every dtype and device:
    multiplying a tensor by a float keeps the tensor's dtype and device.
    """
    if not isinstance(name, str):
        raise TypeError(f"method must be a string naming a tableau, one of {list(METHODS)}; got {type(name).__name__}")
    return _cached(name)
