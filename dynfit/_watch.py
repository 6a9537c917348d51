"""What ``fit`` watches while it trains: the data's loss floor, short validation free runs, the
field's accuracy.

- :func:`loss_floor`: the loss a fit of the data cannot go below (roundoff, white observation
  noise), a :class:`dynfit.strategies.LossFloor`.
- :class:`Forecasts`: free runs from a few starts of the data, scored by how many samples the
  normalised error stays below 0.4 (:class:`Score`); ``fit`` keeps the weights that forecast best
  and rolls back an epoch whose free runs blow up.
- :func:`field_error`: the field's relative error against finite-difference derivatives of the data,
  which sets the surrogate's inference tolerance.

All in the model's units: standardised states (when the data are standardised), one time unit per
sampling interval.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .inference import InferenceSolver
from .strategies import LossFloor

FORECAST_STARTS = 8  # free runs per score
FORECAST_SAMPLES = 500  # the most samples a free run covers
FORECAST_THRESHOLD = 0.4  # normalised error at which a forecast stops being valid
BLOWN = 10.0  # a run leaving BLOWN x the data's largest |z - mean| has blown up


@contextlib.contextmanager
def _evaluating(field):
    """``field`` in eval mode (a module; a plain function as it is), its mode restored after."""
    was = getattr(field, "training", None)
    if was is not None:
        field.eval()
    try:
        yield
    finally:
        if was is not None:
            field.train(was)


def loss_floor(z: np.ndarray, dtype: torch.dtype) -> LossFloor:
    """The loss floor of trajectories z (N, T, D) in model units, trained in ``dtype``.

    roundoff: 1e3 * eps(dtype)^2 * sum_i mean(z_i^2). noise: 2 * sum_i s_i^2 over the components
    whose difference spectrum is flat (white noise, :func:`dynfit.smoothing.noise_is_white`), s_i
    their :func:`dynfit.smoothing.noise_level`; 0 for clean data or trajectories too short to tell.
    """
    z = np.asarray(z, dtype=np.float64)
    eps = torch.finfo(dtype).eps
    roundoff = 1e3 * eps ** 2 * float(np.mean(z.reshape(-1, z.shape[-1]) ** 2, axis=0).sum())
    try:
        from .smoothing import noise_is_white, noise_level

        level, white = noise_level(z), noise_is_white(z)
    except ValueError:  # too short for the difference orders
        return LossFloor(roundoff=roundoff)
    return LossFloor(roundoff=roundoff, noise=2.0 * float(np.sum(np.where(white, level, 0.0) ** 2)))


@dataclass(frozen=True)
class Score:
    """A forecast score: ``valid`` (mean samples before the normalised error passes 0.4), ``error``
    (mean normalised error over the runs, each sample capped at 1) and ``blown`` (runs that became
    non-finite or left 10x the data's range)."""

    valid: float
    error: float
    blown: int

    def better_than(self, other: "Score | None") -> bool:
        """More valid samples (by more than half a sample), else a lower or equal mean error."""
        if other is None:
            return True
        if abs(self.valid - other.valid) > 0.5:
            return self.valid > other.valid
        return self.error <= other.error

    def to_dict(self) -> dict:
        return {"valid": self.valid, "error": self.error, "blown": self.blown}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Score | None":
        return None if not d else cls(float(d["valid"]), float(d["error"]), int(d["blown"]))


class Forecasts:
    """Free runs of ``FORECAST_SAMPLES`` samples (fewer for short data) from ``FORECAST_STARTS``
    starts spread over the trajectories z (N, T, D), scored against the data (no gradient).

    The starts are the data's own samples: the runs test what windows of a few samples do not,
    whether the field forecasts and stays on the attractor over hundreds of samples.
    """

    def __init__(self, z: np.ndarray, *, device, dtype):
        z = np.asarray(z, dtype=np.float64)
        n, t, d = z.shape
        self.length = min(FORECAST_SAMPLES, t - 1)
        last = t - 1 - self.length
        picks = [(k % n, int(round(k * last / max(FORECAST_STARTS - 1, 1))) if last > 0 else 0)
                 for k in range(FORECAST_STARTS)]
        picks = sorted(set(picks))
        runs = np.stack([z[i, s:s + self.length + 1] for i, s in picks], axis=1)  # (L + 1, B, D)
        flat = z.reshape(-1, d)
        self.truth = torch.as_tensor(runs, dtype=dtype, device=device)
        self.std = torch.as_tensor(np.maximum(flat.std(axis=0), 1e-300), dtype=dtype, device=device)
        self.mean = torch.as_tensor(flat.mean(axis=0), dtype=dtype, device=device)
        self.bound = BLOWN * float(np.abs(flat - flat.mean(axis=0)).max())

    def solver(self, strategy) -> InferenceSolver:
        """The strategy's validation solver, at most 50 steps per sample (a stiff blown-up field
        fails fast)."""
        return strategy.validation_solver(50 * self.length)

    def score(self, field, strategy) -> Score:
        """Free runs of ``field`` from the starts: their Score."""
        with _evaluating(field), torch.no_grad():
            ys, _ = self.solver(strategy).solve(field, self.truth[0], self.length)
        ys = ys.to(self.truth)
        finite = torch.isfinite(ys).all(dim=-1)  # (L + 1, B)
        far = ((ys - self.mean).abs() > self.bound).any(dim=-1)
        blown = (~finite | far).any(dim=0)
        e = ((ys - self.truth) / self.std).square().mean(dim=-1).sqrt()
        e = torch.where(finite, e, torch.full_like(e, math.inf))
        above = e > FORECAST_THRESHOLD
        k = torch.where(above.any(dim=0), above.to(torch.int64).argmax(dim=0),
                        torch.full_like(above[0], self.length, dtype=torch.int64))
        return Score(valid=float(k.to(torch.float64).mean()), error=float(e.clamp(max=1.0).mean()),
                     blown=int(blown.sum()))


def field_error(field, z: np.ndarray, *, order: int, device, dtype,
                max_samples: int = 50_000) -> float:
    """Relative RMS error of ``field`` against ``order``-th order central-difference derivatives of
    z
    (N, T, D) (at most ``max_samples`` states, evenly spaced); NaN when the data are too short.

    An upper bound where the derivative estimates' own error dominates (~1e-7 at order 8 on clean
    data sampled finely; the noise, amplified, on noisy data).
    """
    from .prefit import derivative_estimates

    try:
        states, derivs = derivative_estimates(z, order)
    except ValueError:
        return math.nan
    step = max(1, len(states) // max_samples)
    zs = torch.as_tensor(states[::step], dtype=dtype, device=device)
    dz = torch.as_tensor(derivs[::step], dtype=dtype, device=device)
    with _evaluating(field), torch.no_grad():
        res = field(torch.zeros((), dtype=dtype, device=device), zs) - dz
    num, den = float(res.square().sum()), float(dz.square().sum())
    return math.sqrt(num / den) if den > 0 and math.isfinite(num) else math.nan
