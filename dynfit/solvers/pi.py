"""PIController: proportional-integral step-size control (Gustafsson; Hairer & Wanner II, IV.2).

The same error norm as :class:`~dynfit.solvers.control.MixedNorm`; after an accepted step
the next one is h * safety * err^(-alpha/q) * err_prev^(beta/q), with q = order_low + 1 and
err_prev the error of the previous accepted step, so a step that follows a large error
grows less and the step-size sequence oscillates less near the stability limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from _dyncore import checks
from _dyncore.status import FAC_MAX, FAC_MIN, SAFETY

from .control import check_mixed, mixed_rms

__all__ = ["PIController"]

_ERR_FLOOR = 1e-4  # err_prev is at least this (Hairer's DOPRI5), so err_prev^beta stays > 0


@dataclass(frozen=True)
class PIController:
    """PI step-size control with per-example step sizes.

    err: the scaled RMS error of :class:`MixedNorm` (same rtol, atol, norm, per_example);
    accept err <= 1. After an acceptance h_new = h * clip(safety * err^(-alpha/q) *
    err_prev^(beta/q), fmin, fmax) (q = order_low + 1; err_prev: the previous accepted
    step's error, at least 1e-4, starting at 1); after a rejection the I step
    h * clip(safety * err^(-1/q), fmin, 1); no growth right after a rejection.
    alpha=0.7, beta=0.4 are Gustafsson's coefficients (as in systems.integrate);
    alpha=1, beta=0 is MixedNorm's I control, step for step.
    """

    driver: ClassVar[str] = "step"

    rtol: float
    atol: float
    alpha: float = 0.7
    beta: float = 0.4
    safety: float = SAFETY
    fmin: float = FAC_MIN
    fmax: float = FAC_MAX
    per_example: bool | None = None  # None: True, or False with norm="batch"
    norm: str = "example"

    def __post_init__(self):
        check_mixed("PIController", self)
        object.__setattr__(self, "alpha", checks.positive(
            "PIController: alpha", self.alpha,
            fix="pass e.g. alpha=0.7 (1 with beta=0: I control)"))
        object.__setattr__(self, "beta", checks.real(
            "PIController: beta", self.beta, minimum=0.0, below=self.alpha,
            fix="pass 0 <= beta < alpha, e.g. beta=0.4"))

    def init(self, n: int, dtype: torch.dtype, device: torch.device) -> tuple:
        """State: (B,) bool, the last attempt was accepted; (B,) the last accepted error."""
        return (torch.ones(n, dtype=torch.bool, device=device),
                torch.ones(n, dtype=dtype, device=device))

    def error(self, err, y0, y1, h=None, finite=None) -> torch.Tensor:
        """(B, D) error vector -> (B,) scaled RMS error (as MixedNorm); h is not used."""
        return mixed_rms(err, y0, y1, finite, self.rtol, self.atol, self.norm, self.per_example)

    def adapt(self, err, h, state, order):
        acc_prev, err_prev = state
        q = order + 1
        with torch.no_grad():
            accept = err <= 1.0
            fac = err.pow(-self.alpha / q).mul_(err_prev.pow(self.beta / q)).mul_(self.safety)
            fac_i = err.pow(-1.0 / q).mul_(self.safety)  # after a rejection: I control
            fac = torch.where(accept, fac, fac_i).clamp_(self.fmin, self.fmax)
            fac = torch.where(accept & acc_prev, fac, fac.clamp_max(1.0))
            err_prev = torch.where(accept, err.clamp_min(_ERR_FLOOR), err_prev)
            return accept, h * fac, (accept, err_prev)
