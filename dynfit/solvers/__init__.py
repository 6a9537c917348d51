"""dynfit.solvers: Runge-Kutta(-Fehlberg) solvers in torch whose inside the training loop can see.

- :func:`odesolve`: batched solve with per-example steps and statistics.
- :class:`MixedNorm` (I control), :class:`PIController` (PI control), :class:`PaperRule`
  (the paper's rule): step-size controllers, each implementing :class:`Controller`.
- :class:`Solution`, :class:`Stats`, :class:`Status`, :class:`SolverError`: results.
- Importing this package registers "rkf45" and "rkf23" with torchdiffeq. It needs torch
  and torchdiffeq, not numba (its base is the private package ``_dyncore``).
"""
from .control import Controller, MixedNorm, PaperRule
from .pi import PIController
from .integrate import odesolve
from .solution import Solution, SolverError, Stats, Status
from .tableau import METHODS, TorchTableau, check_tableau, torch_tableau
from . import torchdiffeq as _torchdiffeq_registration  # noqa: F401  (registers rkf45, rkf23)

__all__ = [
    "odesolve", "Controller", "MixedNorm", "PIController", "PaperRule", "Solution", "Stats",
    "Status", "SolverError"
]
