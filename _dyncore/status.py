"""Outcome codes and step-size control defaults shared by both integrators.

:class:`Status` is the per-trajectory outcome of ``systems.integrate`` (numba
kernels) and of ``dynfit.solvers.odesolve`` (torch): one enum, one numbering,
so a status array means the same thing wherever it is stored.

Step-size control: h_new = h * clip(safety * err^(-1/q), FAC_MIN, FAC_MAX)
(q: order of the error estimate + 1), growth capped at 1 after a rejection.
Both controllers use FAC_MIN = 0.2 and FAC_MAX = 10 (Hairer, Norsett & Wanner I,
II.4). The safety factor differs on purpose:

- ``SAFETY = 0.9``: ``dynfit``'s ``MixedNorm`` and ``PIController`` (as in
  torchdiffeq and Hairer's DOPRI5 code);
- ``SAFETY_PI = 0.8``: the PI controller of ``systems.integrate`` (as MATLAB's
  ode45): smaller steps for a smaller global error, which the reference
  trajectories (tight tolerances, long runs) are for (docs/systems.md).
"""
from __future__ import annotations

from enum import IntEnum

__all__ = ["Status"]


class Status(IntEnum):
    """Per-trajectory (per-example) outcome of a solve."""

    SUCCESS = 0
    MAX_STEPS = 1
    STEP_UNDERFLOW = 2
    NONFINITE = 3
    OK = 0  # alias of SUCCESS
    UNDERFLOW = 2  # alias of STEP_UNDERFLOW


SAFETY = 0.9
SAFETY_PI = 0.8
FAC_MIN = 0.2
FAC_MAX = 10.0
