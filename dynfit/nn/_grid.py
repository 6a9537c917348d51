"""Linear interpolation on a TA-BN time grid: where a time falls (:func:`locate`) and the
interpolation at that time as tensors (:class:`Interp`), built once per time and grid."""
from __future__ import annotations

import math

import torch

from ._norm_checks import time_value

_CACHE: dict = {}  # (t, precision, t_max, num_points, outside, momentum, dtype, device) -> Interp
_CACHE_SIZE = 4096


def locate(value: float, precision: float, t_max: float, num_points: int,
           outside: str) -> tuple[int, float, float]:
    """``(l, w_lower, w_upper)``: t in [t_l, t_{l+1}] on the grid of ``num_points`` times over
    [0, t_max], with w_lower = (t_{l+1} - t) / D and w_upper = (t - t_l) / D (0 at a grid point,
    to the round-off ``precision`` of t's dtype). Outside the grid: ``outside`` is "clamp" (the
    end point) or "error" (ValueError)."""
    tol = max(1e-9, 4 * precision) * t_max
    if value < 0.0 or value > t_max:
        if outside == "error" and (value < -tol or value > t_max + tol):
            raise ValueError(
                f"time t={value!r} lies outside the TA-BN grid [0, {t_max}]; "
                f"integrate within [0, t_max], raise t_max, or use outside='clamp'"
            )
        value = min(max(value, 0.0), t_max)
    s = value / (t_max / (num_points - 1))
    nearest = round(s)
    # a time within its dtype's round-off of a grid point is that grid point
    if abs(s - nearest) <= 4 * precision * max(1.0, abs(s)):
        s = float(nearest)
    lower = min(int(math.floor(s)), num_points - 2)
    w_upper = s - lower
    return lower, 1.0 - w_upper, w_upper


class Interp:
    """Linear interpolation between grid rows at one time.

    ``ip(table)`` interpolates a (P, F) table to (F,) as one product (1, P) @ (P, F) with the
    two weights in a row of zeros: one autograd node, whose backward writes the table's gradient
    directly. At a grid point it is the row itself. ``lower``, ``w_lower``, ``w_upper``: where
    the time falls (:func:`locate`). ``ip.update(mean, var, batch_mean,
    batch_var)`` moves the rows of two (P, F) tables towards the (F,) batch values:
    row_i <- row_i + eta w_i (batch - row_i), w_i the row's weight.
    """

    __slots__ = ("lower", "w_lower", "w_upper", "row", "coef", "eta", "eta_w")

    def __init__(self, lower: int, w_lower: float, w_upper: float, eta: float, num_points: int,
                 dtype, device):
        self.lower, self.w_lower, self.w_upper, self.eta = lower, w_lower, w_upper, eta
        self.row = lower if w_upper == 0.0 else (lower + 1 if w_lower == 0.0 else None)
        values = [0.0] * (num_points + 2)  # one tensor: the weights on the grid, then eta * them
        values[lower], values[lower + 1] = w_lower, w_upper
        values[-2], values[-1] = eta * w_lower, eta * w_upper
        both = torch.tensor(values, dtype=dtype, device=device)
        self.coef = both[:num_points].unsqueeze(0)  # (1, P)
        self.eta_w = both[-2:].unsqueeze(1)  # (2, 1)

    def __call__(self, table: torch.Tensor) -> torch.Tensor:
        if self.row is not None:  # at a grid point: the row itself (the same values, fewer ops)
            return table[self.row]
        return torch.mm(self.coef, table).view(-1)

    def update(self, mean: torch.Tensor, var: torch.Tensor, batch_mean: torch.Tensor,
               batch_var: torch.Tensor) -> None:
        """Move the running mean and variance tables towards the batch's, in place."""
        if self.row is not None:  # weight 1 on this row
            mean[self.row].lerp_(batch_mean, self.eta)
            var[self.row].lerp_(batch_var, self.eta)
        else:
            lo, w = self.lower, self.eta_w
            mean.narrow(0, lo, 2).lerp_(batch_mean, w)
            var.narrow(0, lo, 2).lerp_(batch_var, w)


def interpolation(t, t_max: float, num_points: int, outside: str, momentum: float, dtype,
                  device) -> Interp:
    """The interpolation at time t (a scalar) on a grid, for tables of ``dtype`` on ``device``;
    built once per time and grid and shared by all layers on that grid (a field's layers share
    t, and a solver revisits its times)."""
    value, precision = time_value(t)
    key = (value, precision, t_max, num_points, outside, momentum, dtype, device)
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        hit = _CACHE[key] = Interp(*locate(value, precision, t_max, num_points, outside),
                                   momentum, num_points, dtype, device)
    return hit
