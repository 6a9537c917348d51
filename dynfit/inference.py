"""The inference solver: how a Surrogate integrates its field, a plain record saved with the model.

A strategy chooses one at the end of training (``Strategy.inference()``); the Surrogate keeps it
(``surrogate.solver``) and stores it as a dict in model.pt. Its own module, below both
:mod:`dynfit.strategies` and :mod:`dynfit.surrogate`, so that neither imports the other for it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from _dyncore import checks

from .solvers import MixedNorm, PaperRule, odesolve

__all__ = ["InferenceSolver"]


@dataclass(frozen=True)
class InferenceSolver:
    """How a surrogate integrates its field at inference: a plain record stored with the model.

    method "rkf45"/"dopri5"/... with ``rtol``/``atol`` (MixedNorm, per-example
    steps); fixed steps of ``step_size`` model time units when it is set; or, when ``eps`` is set,
    the paper's rule on one interval per sample (method "rkf23", PaperRule(eps, safety,
    max_substeps)).
    ``max_steps``: per-example limit on attempted steps per call.
    """

    method: str = "rkf45"
    rtol: float = 1e-10
    atol: float = 1e-10
    eps: float | None = None
    safety: float = 0.9
    max_substeps: int = 10
    max_steps: int = 10_000_000
    step_size: float | None = None

    def control(self):
        if self.eps is not None:
            return PaperRule(
                eps=self.eps, safety=self.safety, max_substeps=self.max_substeps, shared=False
            )
        return MixedNorm(rtol=self.rtol, atol=self.atol)

    def __post_init__(self):
        self.control()  # validates the tolerances with the controllers' own messages
        checks.integer(
            "max_steps",
            self.max_steps,
            minimum=1,
            fix="pass the most steps an example may take per call, e.g. max_steps=10_000_000",
        )

    def solve(self, field, z0: torch.Tensor, n_intervals: int):
        """Integrate z0 (B, D) over n_intervals model time units: (ys (n_intervals + 1, B, D),
        Stats)."""
        t = torch.arange(n_intervals + 1, dtype=z0.dtype, device=z0.device)
        if self.step_size is not None:
            sol = odesolve(
                field,
                z0,
                t,
                method=self.method,
                step_size=self.step_size,
                max_steps=max(self.max_steps, math.ceil(n_intervals / self.step_size) + 1),
                raise_on_failure=False,
            )
        else:
            sol = odesolve(
                field,
                z0,
                t,
                method=self.method,
                control=self.control(),
                max_steps=self.max_steps,
                raise_on_failure=False,
            )
        return sol.ys, sol.stats

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d) -> "InferenceSolver":
        if isinstance(d, InferenceSolver):
            return d
        if not isinstance(d, dict):
            raise TypeError(
                f"solver must be an InferenceSolver or a dict of its fields, got {type(d).__name__}"
            )
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown solver settings {bad}; known: {sorted(known)}")
        return cls(**d)
