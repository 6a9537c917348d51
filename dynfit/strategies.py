"""Training strategies: how a batch of windows is integrated during training, and the schedule.

A strategy is a small object the trainer calls once per loss evaluation:
``rollout(field, x0, horizon, targets=None) -> (ys, stats)`` with x0 (B, D),
targets (H, B, D) and ys (H, B, D) the predicted states one model time unit
apart (one unit = one sampling interval); ``stats`` is the solver's
:class:`dynfit.solvers.Stats` (or a list of them, one per interval), which
:func:`summary` turns into the history's scalars. Every rollout goes through
:func:`dynfit.odesolve` except the ``torchdiffeq`` baseline, which is there to
be compared with. ``inference()`` is the solver the trained surrogate keeps.

- ``"continuous"`` (the default of :func:`dynfit.fit`): the field is a vector
  field in model time, integrated by an embedded pair (rkf45) with
  per-example adaptive steps, several per sample where the flow is fast. Its
  schedule sets the tolerance from the misfit (the solver's error kept a
  decade below the model's own, tighter as the fit improves, looser when it
  is far off) and doubles the rollout horizon when the fit at the current
  one has converged; it ends training when the loss is at its floor
  (roundoff, the solver's resolution, or the data's noise at the longest
  horizon) or the longest horizon has converged. Inference: rkf45 at a
  tolerance that follows the field's measured accuracy (1e-10 .. 1e-6).
- ``"black-box"`` (alias ``"batch"``): the paper's batch procedure (Allauzen
  et al. 2022): one Fehlberg 3(2) step per sample judged by the Heun
  estimate r = |A1 - A2|_1 / h, :class:`dynfit.PaperRule` with a shared count.
- ``"fehlberg"``: Fehlberg training: the error rate is measured against the
  target, r = |x_target - A2|_1 / h (a reference to the solver).
- ``"curriculum"``: Fehlberg training whose rollout horizon doubles each time
  the solver accepts a large enough fraction of the examples.
- ``"torchdiffeq"``: torchdiffeq ``odeint`` with any of its methods.
"""
from __future__ import annotations

import abc
import difflib
import json
import math
from dataclasses import dataclass

from typing import TYPE_CHECKING

import torch

from _dyncore import checks

from .inference import InferenceSolver  # the Surrogate's record (alias kept here)
from .solvers import MixedNorm, PaperRule, Stats, odesolve

from ._history import as_rows

if TYPE_CHECKING:
    from ._history import HistoryRow  # the rows fit passes (dynfit.train.HistoryRow)

__all__ = [
    "Strategy", "ContinuousStrategy", "LossFloor", "get", "names", "parse_spec", "parse_spec_text"
]

# a loss within 1.5x the noise floor is at it (the start's noise grows along a window)
NOISE_MARGIN = 1.5


# ----------------------------------------------------------------------------- the loss floor
@dataclass(frozen=True)
class LossFloor:
    """The loss a fit of given data cannot go below, in loss units (squared model units summed over
    components, averaged over examples and steps); ``fit`` measures it from the data.

    roundoff: 1e3 * eps^2 * (the data's mean square, summed over components) for the training dtype.
    noise: 2 x the summed variance of white observation noise in the data (a window's start and its
    targets both carry it); 0 for clean data.
    """

    roundoff: float
    noise: float = 0.0

    def roundoff_reason(self, loss: float) -> str | None:
        if loss <= self.roundoff:
            return f"at its floor: the loss {loss:.3g} is at roundoff ({self.roundoff:.3g})"
        return None

    def noise_reason(self, loss: float) -> str | None:
        if self.noise > 0 and loss <= NOISE_MARGIN * self.noise:
            return (
                f"at its floor: the loss {loss:.3g} is at the data's noise level ({self.noise:.3g} "
                f"= 2 x the noise variance, summed over components; within {NOISE_MARGIN:g}x of it)"
            )
        return None

    def reason(self, loss: float) -> str | None:
        """Why ``loss`` is at the floor, or None."""
        return self.roundoff_reason(loss) or self.noise_reason(loss)


# ----------------------------------------------------------------------------- statistics
def summary(stats, horizon: int) -> dict:
    """History scalars from a rollout's Stats (or a list, one per interval).

    accepted_fraction: PaperRule - first attempts accepted per interval;
    MixedNorm - accepted / attempted steps. mean_substeps: PaperRule - the
    paper's curve, mean substeps of the rejected intervals (1 when none);
    MixedNorm - accepted steps per sample. mean_steps: attempted steps per
    sample. max_substeps: the most steps one example spent on one interval
    (PaperRule) or on its whole rollout (MixedNorm). n_f_evals: field
    evaluations summed over examples (rows, not batched calls).
    """
    parts = stats if isinstance(stats, (list, tuple)) else [stats]
    paper = [s for s in parts if getattr(s, "interval_accepted", None) is not None]
    evals = sum(int(s.n_f_evals_per_example.sum()) for s in parts)
    n_ex = parts[0].n_steps.numel()
    cells = max(n_ex * int(horizon), 1)
    if paper:
        acc = torch.cat([s.interval_accepted.reshape(-1) for s in paper])
        sub = torch.cat([s.interval_substeps.reshape(-1) for s in paper]).to(torch.float64)
        rej = ~acc
        return {"accepted_fraction": float(acc.to(torch.float64).mean()),
                "mean_substeps": float(sub[rej].mean()) if bool(rej.any()) else 1.0,
                "max_substeps": int(sub.max()) if sub.numel() else 0,
                "mean_steps": float(sub.sum()) / cells, "n_f_evals": evals}
    n_acc = sum(float(s.n_accepted.sum()) for s in parts)
    n_att = sum(float(s.n_steps.sum()) for s in parts)
    return {"accepted_fraction": n_acc / max(n_att, 1.0), "mean_substeps": n_acc / cells,
            "max_substeps": max(int(s.n_steps.max()) for s in parts), "mean_steps": n_att / cells,
            "n_f_evals": evals}


# ----------------------------------------------------------------------------- strategies
class Strategy(abc.ABC):
    """Interface: ``rollout`` for training, ``inference`` for the model, ``horizon`` and
    ``finished`` per epoch (``history``: the past rows, :class:`dynfit.train.HistoryRow`).

    ``fit`` asks a strategy, never its type: ``prefit_by_default``, ``lbfgs_tolerances``,
    ``calibrate`` (before the first epoch), ``inference_follows_field`` (then
    ``inference(field_error)``), ``validation_solver``, ``set_floor``, ``rolled_back``.
    """

    name = "strategy"

    @abc.abstractmethod
    def rollout(self, field, x0: torch.Tensor, horizon: int, targets: torch.Tensor | None = None):
        """Roll x0 (B, D) forward ``horizon`` intervals: (ys (horizon, B, D), Stats or list of
        Stats)."""

    def inference(self) -> InferenceSolver:
        """The solver a model trained this way uses at inference."""
        return InferenceSolver()

    def horizon(self, epoch: int, history: list[HistoryRow], base: int) -> int:
        """Rollout horizon to train with at ``epoch`` given the past history rows."""
        return base

    def stride(self, horizon: int, base: int) -> int:
        """Spacing of window starts for a given horizon (``base``: the user's stride)."""
        return base

    def tolerance(self) -> float:
        """The training solver's relative tolerance now (NaN for fixed rules)."""
        return math.nan

    # fit runs the derivative pre-fit on a fresh start when its ``prefit`` is None
    prefit_by_default = False
    # fit measures the trained field's error and passes it to ``inference(field_error)``
    inference_follows_field = False

    def lbfgs_tolerances(self, tolerance: float) -> tuple[float, float]:
        """(tolerance_grad, tolerance_change) of L-BFGS inside an epoch for fit's
        ``lbfgs_tolerance``: an epoch ends early once the gradient or the change is below them."""
        return tolerance, 1e-2 * tolerance

    def calibrate(self, field, x0: torch.Tensor, targets: torch.Tensor, horizon: int,
                  reduce=None) -> float | None:
        """Before the first epoch, with its windows x0 (B, D), targets (H, B, D): set what
        depends on the starting field; returns the misfit it measured, or None (here: nothing)."""
        return None

    def validation_solver(self, max_steps: int) -> InferenceSolver:
        """The solver of fit's validation free runs (``select_by_forecast``, blow-up checks):
        the inference rule with at most ``max_steps`` steps, so a blown-up field fails fast."""
        base = self.inference().to_dict()
        return InferenceSolver.from_dict({**base, "max_steps": min(base["max_steps"], max_steps)})

    def resolved(self, misfit: float, horizon: int) -> str | None:
        """Why a misfit (RMS per component) over windows of ``horizon`` samples is below what
        training can measure, or None (here: never)."""
        return None

    floor: LossFloor | None = None  # set by fit from the data (set_floor)

    def set_floor(self, floor: LossFloor | None) -> None:
        """The data's loss floor (roundoff, noise): a loss at it is converged, whatever its
        change."""
        self.floor = floor

    def rolled_back(self) -> None:
        """fit rolled an epoch back (non-finite, a jump, blown-up free runs); the retry starts after
        this."""

    def finished(self, history: list[HistoryRow]) -> str | None:
        """A reason to stop training now, or None: here, a last loss at the data's floor."""
        history = as_rows(history)
        if history and self.floor is not None:
            return self.floor.reason(float(history[-1].loss))
        return None

    def config(self) -> dict:
        return {"name": self.name}

    def state(self) -> dict:
        """Mutable state saved in checkpoints."""
        return {}

    def load_state(self, state: dict) -> None:
        pass


def _times(horizon: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(horizon + 1, dtype=like.dtype, device=like.device)


class PaperStrategy(Strategy):
    """The paper's solver: one Fehlberg 3(2) attempt per sample, :class:`dynfit.PaperRule`.

    reference=False is the batch procedure ("black-box": Heun error estimate);
    reference=True is Fehlberg training (error against the target in training;
    the Heun estimate at inference). Training shares one substep count over
    the rejected examples (the paper's batch procedure); inference gives each
    example its own count.
    """

    def __init__(self, *, eps: float = 0.1, safety: float = 0.9, max_substeps: int = 10,
                 reference: bool = True, shared: bool = True, name: str | None = None):
        self.rule = PaperRule(eps=eps, safety=safety, max_substeps=max_substeps, shared=shared)
        self.reference = checks.boolean(
            "reference",
            reference,
            fix="True: error against the targets in training (Fehlberg); False: Heun's",
        )
        self.name = name or ("fehlberg" if reference else "black-box")

    def rollout(self, field, x0, horizon, targets=None):
        if targets is not None and targets.shape[0] < horizon:
            raise ValueError(f"targets cover {targets.shape[0]} intervals, horizon is {horizon}")
        ref = None
        if self.reference and targets is not None:
            ref = torch.cat([x0.detach()[None], targets[:horizon]])
        sol = odesolve(
            field,
            x0,
            _times(horizon, x0),
            method="rkf23",
            control=self.rule,
            reference=ref,
            max_steps=10 * self.rule.max_substeps * (horizon + 1),
            raise_on_failure=False,
        )
        return sol.ys[1:], sol.stats

    def inference(self) -> InferenceSolver:
        c = self.rule
        return InferenceSolver(
            method="rkf23", eps=c.eps, safety=c.safety, max_substeps=c.max_substeps
        )

    def config(self) -> dict:
        c = self.rule
        return {"name": self.name, "eps": c.eps, "safety": c.safety, "max_substeps": c.max_substeps,
                "reference": self.reference, "shared": c.shared}


class _Counted(torch.nn.Module):
    """Wraps a field and counts per-example evaluations."""

    def __init__(self, field):
        super().__init__()
        self.field = field
        self.count = 0

    def forward(self, t, x):
        self.count += x.shape[0]
        return self.field(t, x)


class TorchdiffeqStrategy(Strategy):
    """torchdiffeq ``odeint`` with any method (the plain baseline); fixed methods take
    ``step_size``.

    torchdiffeq reports nothing, so its Stats hold only the counted
    evaluations (accepted = all, substeps = the fixed grid's count).
    """

    def __init__(self, method: str = "rk4", *, rtol: float = 1e-6, atol: float = 1e-8,
                 step_size: float | None = None, name: str = "torchdiffeq"):
        from torchdiffeq._impl.odeint import SOLVERS

        checks.choice(
            "torchdiffeq method",
            method,
            sorted(SOLVERS),
            fix="pass one of torchdiffeq's method names",
        )
        step_size = checks.positive("step_size", step_size, optional=True,
                                    fix="pass a positive step for a fixed-step method, or None")
        self.method, self.rtol, self.atol, self.step_size, self.name = (
            method,
            rtol,
            atol,
            step_size,
            name,
        )

    def rollout(self, field, x0, horizon, targets=None):
        from torchdiffeq import odeint

        counted = _Counted(field)
        options = {"step_size": self.step_size} if self.step_size is not None else None
        ys = odeint(
            counted,
            x0,
            _times(horizon, x0),
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
            options=options,
        )[1:]
        b, dev = x0.shape[0], x0.device
        n = math.ceil(1.0 / self.step_size) if self.step_size else 1
        zeros = torch.zeros(b, dtype=torch.int64, device=dev)
        steps = torch.full((b,), n * horizon, dtype=torch.int64, device=dev)
        stats = Stats(
            n_steps=steps,
            n_accepted=steps.clone(),
            n_rejected=zeros,
            error_rate=torch.full((b,), math.nan, dtype=x0.dtype, device=dev),
            accepted=torch.ones(b, dtype=torch.bool, device=dev),
            substeps=torch.full_like(zeros, n),
            h=torch.full((b,), 1.0 / n, dtype=x0.dtype, device=dev),
            status=zeros.clone(),
            n_f_evals_per_example=torch.full_like(zeros, counted.count // max(b, 1)),
            n_f_evals=counted.count,
            counter=None,
            method=f"torchdiffeq.{self.method}",
            control="torchdiffeq",
        )
        return ys, stats

    def inference(self) -> InferenceSolver:
        # the same kind of solve it was trained with: its fixed grid (classical RK4 for the
        # fixed-step methods we do not carry), or an adaptive pair at its tolerances
        if self.step_size is not None:
            return InferenceSolver(method="rk4", step_size=self.step_size)
        return InferenceSolver(
            method="dopri5" if self.method == "dopri5" else "rkf45", rtol=self.rtol, atol=self.atol
        )

    def config(self) -> dict:
        return {"name": self.name, "method": self.method, "rtol": self.rtol, "atol": self.atol,
                "step_size": self.step_size}


class CurriculumStrategy(PaperStrategy):
    """Fehlberg training with a rollout-horizon curriculum driven by the solver.

    Training starts on one-step pairs; whenever the solver accepts at least
    ``accept_threshold`` of the examples for ``patience`` consecutive epochs,
    the horizon doubles, up to ``max_horizon``. Windows start every
    ``horizon`` samples, so an epoch integrates each sample once. Inside a
    rollout the error of interval k is measured against the observed
    increment applied to the current prediction, r = |x_k + (y_{k+1} - y_k)
    - A2|_1 / h: the reference is the callable (k, x_k) -> target, so each
    interval is one :func:`dynfit.odesolve` call.
    """

    def __init__(
        self,
        *,
        max_horizon: int = 8,
        accept_threshold: float = 0.9,
        patience: int = 3,
        eps: float = 0.1,
        safety: float = 0.9,
        max_substeps: int = 10,
        shared: bool = True,
    ):
        super().__init__(eps=eps, safety=safety, max_substeps=max_substeps, reference=True,
                         shared=shared, name="curriculum")
        self.max_horizon = checks.integer(
            "max_horizon", max_horizon, minimum=1,
            fix="pass the longest rollout in samples, e.g. max_horizon=8")
        self.accept_threshold = checks.real(
            "accept_threshold", accept_threshold, above=0.0, maximum=1.0,
            fix="pass the accepted fraction that doubles the horizon, e.g. 0.9")
        self.patience = checks.integer(
            "patience", patience, minimum=1,
            fix="pass how many epochs in a row must pass the threshold, e.g. 3")
        self.current = None

    def rollout(self, field, x0, horizon, targets=None):
        if targets is None:
            return super().rollout(field, x0, horizon, None)
        x, ys, parts = x0, [], []
        t = _times(1, x0)
        for k in range(horizon):
            target = targets[0] if k == 0 else x.detach() + (targets[k] - targets[k - 1])
            sol = odesolve(field, x, t, method="rkf23", control=self.rule,
                           reference=torch.stack([x.detach(), target]),
                           max_steps=10 * self.rule.max_substeps, raise_on_failure=False)
            x = sol.ys[1]
            ys.append(x)
            parts.append(sol.stats)
        return torch.stack(ys), parts

    def horizon(self, epoch, history, base):
        history = as_rows(history)
        if self.current is None:
            self.current = base
        recent = [row.accepted_fraction for row in history[-self.patience:]]
        horizons = [row.horizon for row in history[-self.patience:]]
        if (len(recent) == self.patience and all(h == self.current for h in horizons)
                and min(recent) >= self.accept_threshold and self.current < self.max_horizon):
            self.current = min(2 * self.current, self.max_horizon)
        return self.current

    def stride(self, horizon, base):
        return max(base, horizon)

    def config(self) -> dict:
        return {**super().config(), "max_horizon": self.max_horizon,
                "accept_threshold": self.accept_threshold, "patience": self.patience}

    def state(self):
        return {"current": self.current}

    def load_state(self, state):
        self.current = state.get("current")


# the most solver steps a training rollout may take per sample (healthy fields take ~0.5-2)
ROLLOUT_STEPS_PER_SAMPLE = 50


class ContinuousStrategy(Strategy):
    """A continuous-time field, accurate adaptive rollouts, a schedule that acts (fit's default).

    Rollouts: :func:`dynfit.odesolve` with ``method`` (rkf45) and
    MixedNorm(rtol, atol = rtol), per-example steps, several per sample where
    the flow is fast. Schedule, after every epoch (``horizon`` reads the
    history; a row holds ``loss`` and ``misfit`` at the weights kept, and
    ``loss_start``, the loss at the epoch's first weights at the same
    tolerance and horizon):

    - tolerance: rtol = clip(misfit / (10 * horizon), rtol_min, rtol_max),
      where misfit is the RMS error per component of the window predictions
      (standardised units): the solver's error per sample stays a decade
      below what the model gets wrong, so the loss measures the field and not
      the solver. It follows the misfit both ways: tighter as the field
      improves, looser when it is far off; a rolled-back epoch tightens it
      tenfold (``rolled_back``).
    - horizon: starts at ``start_horizon`` and doubles, up to
      ``max_horizon``, when the fit at the current horizon has converged: its
      last ``patience`` epochs each lowered the loss by less than
      ``improvement`` (relative, from the epoch's start to the weights kept,
      as the solver measured them), or its loss is at the data's noise
      floor (:class:`LossFloor`).
    - stop (``finished``): at once when the loss is at roundoff or the
      misfit is below what the training solver resolves at its tightest
      tolerance (10 * rtol_min * horizon: the schedule would want a tighter
      rtol than ``rtol_min``); at the longest horizon when it has converged
      (at the noise floor or by ``improvement``).

    ``inference_rtol`` None (the default): ``fit`` sets the surrogate's
    inference tolerance from the field's measured accuracy
    (:meth:`inference_tolerance`); a number fixes it.

    A rollout takes at most ``min(max_steps, ROLLOUT_STEPS_PER_SAMPLE * horizon)`` steps per
    window: back-propagation keeps every step's stages, so a field that turns stiff off the data
    would otherwise grow the graph without bound; such windows fail (NaN), and the epoch is rolled
    back like a non-finite one.

    Windows start every ``min(horizon, max_stride)`` samples (never closer than
    the user's stride): disjoint windows (each sample once per epoch) up to
    ``max_stride``, overlapping ones beyond, so that a long-horizon batch holds
    as many windows as the horizon-``max_stride`` batch (a rollout's steps are
    sequential batched calls: few long windows leave the per-call cost to dominate).
    The default, ``max_stride=None``, keeps disjoint windows at every horizon
    (each sample integrated once per epoch); docs/training.md compares the two
    (opt in with ``strategy_options={"max_stride": 8}``).
    """

    name = "continuous"

    def __init__(
        self,
        *,
        method: str = "rkf45",
        start_horizon: int = 8,
        max_horizon: int = 64,
        rtol_max: float = 1e-3,
        rtol_min: float = 1e-9,
        patience: int = 2,
        improvement: float = 0.05,
        inference_rtol: float | None = None,
        max_steps: int = 100_000,
        max_stride: int | None = None,
    ):
        from .solvers.tableau import METHODS, torch_tableau

        checks.choice(
            "method",
            method,
            [m for m in METHODS if torch_tableau(m).adaptive],
            fix="the continuous strategy needs an adaptive tableau (one with an embedded error "
                "estimate)",
        )
        for key, val in (
            ("start_horizon", start_horizon),
            ("max_horizon", max_horizon),
            ("patience", patience),
            ("max_steps", max_steps),
        ):
            checks.integer(key, val, minimum=1, fix="give a whole number >= 1")
        if start_horizon > max_horizon:
            raise ValueError(
                f"start_horizon ({start_horizon}) must not exceed max_horizon ({max_horizon})"
            )
        checks.integer(
            "max_stride",
            max_stride,
            minimum=1,
            optional=True,
            fix="windows start at most max_stride samples apart; pass None for disjoint windows "
            "at every horizon",
        )
        examples = {
            "rtol_max": 1e-3,
            "rtol_min": 1e-9,
            "inference_rtol": 1e-10,
            "improvement": 0.05,
        }
        for key, val in (
            ("rtol_max", rtol_max),
            ("rtol_min", rtol_min),
            ("inference_rtol", inference_rtol),
            ("improvement", improvement),
        ):
            checks.real(
                key,
                val,
                above=0.0,
                below=1.0,
                optional=key == "inference_rtol",
                fix=f"give a fraction strictly between 0 and 1, e.g. {key}={examples[key]:g}",
            )
        if rtol_min > rtol_max:
            raise ValueError(
                f"rtol_min ({rtol_min}) must not exceed rtol_max ({rtol_max}): the schedule "
                "cannot be met; lower rtol_min or raise rtol_max"
            )
        self.method, self.start_horizon, self.max_horizon = method, start_horizon, max_horizon
        self.rtol_max, self.rtol_min, self.patience, self.improvement = (
            rtol_max,
            rtol_min,
            patience,
            improvement,
        )
        self.inference_rtol, self.max_steps = inference_rtol, max_steps
        self.max_stride = max_stride
        self.rtol = rtol_max
        self.current = None
        self.since = 0  # epochs at the current horizon

    def rollout(self, field, x0, horizon, targets=None):
        ctrl = MixedNorm(rtol=self.rtol, atol=self.rtol)
        sol = odesolve(
            field,
            x0,
            _times(horizon, x0),
            method=self.method,
            control=ctrl,
            max_steps=min(self.max_steps, ROLLOUT_STEPS_PER_SAMPLE * int(horizon)),
            raise_on_failure=False,
        )
        return sol.ys[1:], sol.stats

    @staticmethod
    def inference_tolerance(field_error: float) -> float:
        """Inference rtol for a field of relative error ``field_error``: 1e-3 x the error, rounded
        down to a power of ten and clipped to [1e-10, 1e-6] (NaN or inf: 1e-10). The solver's
        error then stays three decades below the field's own, where it cannot shorten a forecast."""
        if not (math.isfinite(field_error) and field_error > 0):
            return 1e-10
        return min(max(10.0 ** math.floor(math.log10(1e-3 * field_error) + 1e-9), 1e-10), 1e-6)

    def inference(self, field_error: float | None = None) -> InferenceSolver:
        """rkf45 at ``inference_rtol``; when that is None, at :meth:`inference_tolerance` of
        ``field_error`` (1e-10 when no error is given)."""
        rtol = self.inference_rtol
        if rtol is None:
            rtol = self.inference_tolerance(math.nan if field_error is None else float(field_error))
        return InferenceSolver(method=self.method, rtol=rtol, atol=rtol)

    def tolerance(self) -> float:
        return self.rtol

    prefit_by_default = True
    inference_follows_field = True

    def lbfgs_tolerances(self, tolerance: float) -> tuple[float, float]:
        """None inside an epoch: the schedule judges convergence by relative progress."""
        return 0.0, 0.0

    def validation_solver(self, max_steps: int) -> InferenceSolver:
        """Its own solve at the training tolerance (not below 1e-10)."""
        r = max(self.tolerance(), 1e-10)
        return InferenceSolver(method=self.method, rtol=r, atol=r, max_steps=max_steps)

    def stride(self, horizon, base):
        """Disjoint windows up to max_stride samples, then a start every max_stride samples (>=
        base)."""
        return max(base, horizon if self.max_stride is None else min(horizon, self.max_stride))

    # ------------------------------------------------------------ the schedule
    @staticmethod
    def _gain(history: list[HistoryRow], i: int) -> float | None:
        """Relative loss decrease of epoch i: from its start (``loss_start``) or else from the
        previous epoch at the same horizon; None when neither is known."""
        row = history[i]
        start = float(row.loss_start)
        if not (math.isfinite(start) and start > 0):
            prev = [r for r in history[:i] if r.horizon == row.horizon]
            if not prev:
                return None
            start = float(prev[-1].loss)
        return (start - float(row.loss)) / start if start > 0 else 0.0

    def _converged(self, history: list[HistoryRow]) -> str | None:
        """Why the fit at the current horizon has converged (noise floor, or patience epochs each
        below ``improvement``), or None."""
        idx = [i for i, r in enumerate(history) if r.horizon == self.current]
        if not idx:
            return None
        if self.floor is not None:
            reason = self.floor.noise_reason(float(history[idx[-1]].loss))
            if reason:
                return reason
        gains = [self._gain(history, i) for i in idx[-self.patience:]]
        if len(gains) == self.patience and all(
            g is not None and g < self.improvement for g in gains
        ):
            return (
                f"converged: the loss improved by less than {self.improvement:g} (relative) in "
                "each of the "
                f"last {self.patience} epoch(s) at the longest horizon ({self.max_horizon} samples)"
            )
        return None

    def resolved(self, misfit: float, horizon: int) -> str | None:
        """The misfit is below what the training solver resolves at rtol_min (10 * rtol_min *
        horizon)."""
        res = 10.0 * self.rtol_min * int(horizon)
        misfit = float(misfit)
        if misfit <= res:
            return (
                f"at its floor: the misfit {misfit:.3g} is below what the training solver resolves "
                f"at its tightest tolerance (10 x rtol_min x horizon = {res:.3g}); the loss cannot "
                "measure the field any better"
            )
        return None

    def set_tolerance(self, misfit: float, horizon: int) -> None:
        """rtol = clip(misfit / (10 * horizon), rtol_min, rtol_max): follows the misfit both
        ways."""
        if math.isfinite(misfit) and misfit > 0:
            self.rtol = min(max(misfit / (10.0 * horizon), self.rtol_min), self.rtol_max)

    def rolled_back(self) -> None:
        """A rolled-back epoch retries with a tenfold tighter tolerance (not below rtol_min)."""
        self.rtol = max(self.rtol / 10.0, self.rtol_min)

    def calibrate(
        self, field, x0: torch.Tensor, targets: torch.Tensor, horizon: int, reduce=None
    ) -> float:
        """Set the first tolerance from the field's misfit at the tightest tolerance (no gradient);
        returns it.

        A field that starts accurate (after the derivative pre-fit) must not be
        trained against a loose solver: it would learn to cancel the solver's error.
        reduce(sq, count) -> (sq, count) sums over processes in data-parallel training.
        """
        loose, self.rtol = self.rtol, self.rtol_min
        try:
            with torch.no_grad():
                ys, _ = self.rollout(field, x0, horizon, targets)
                sq = float((ys - targets[:horizon]).square().sum())
                count = float(ys.shape[0] * ys.shape[1] * x0.shape[1])
                if reduce is not None:  # data-parallel: over every rank's windows
                    sq, count = reduce(sq, count)
                misfit = (sq / max(count, 1.0)) ** 0.5
        finally:
            self.rtol = loose
        self.set_tolerance(misfit, horizon)
        return misfit

    def horizon(self, epoch, history, base):
        history = as_rows(history)
        if self.current is None:
            self.current = max(self.start_horizon, base)
        if history:
            last = history[-1]
            self.set_tolerance(float(last.misfit), int(last.horizon))
            if self.current < self.max_horizon and self._converged(history):
                self.current = min(2 * self.current, self.max_horizon)
                self.since = 0
        self.since += 1
        return self.current

    def finished(self, history):
        history = as_rows(history)
        if not history:
            return None
        last = history[-1]
        reason = self.resolved(float(last.misfit), int(last.horizon))
        if reason is None and self.floor is not None:
            reason = self.floor.roundoff_reason(float(last.loss))
        if reason is None and self.current == self.max_horizon:
            reason = self._converged(history)
        return reason

    def config(self) -> dict:
        return {
            "name": self.name,
            "method": self.method,
            "start_horizon": self.start_horizon,
            "max_horizon": self.max_horizon,
            "rtol_max": self.rtol_max,
            "rtol_min": self.rtol_min,
            "patience": self.patience,
            "improvement": self.improvement,
            "inference_rtol": self.inference_rtol,
            "max_steps": self.max_steps,
            "max_stride": self.max_stride,
        }

    def state(self):
        return {"current": self.current, "rtol": self.rtol, "since": self.since}

    def load_state(self, state):
        self.current = state.get("current")
        self.rtol = float(state.get("rtol", self.rtol_max))
        self.since = int(state.get("since", 0))


_FACTORIES = {
    "continuous": lambda **kw: ContinuousStrategy(**kw),
    "black-box": lambda **kw: PaperStrategy(reference=False, **kw),
    "batch": lambda **kw: PaperStrategy(reference=False, name="batch", **kw),
    "fehlberg": lambda **kw: PaperStrategy(reference=True, **kw),
    "torchdiffeq": lambda **kw: TorchdiffeqStrategy(**kw),
    "curriculum": lambda **kw: CurriculumStrategy(**kw),
}


def names() -> list[str]:
    return sorted(_FACTORIES)


def get(strategy, **options) -> Strategy:
    """A Strategy from a name (with keyword options), a config dict ({"name": ..., **options}) or an
    object."""
    if isinstance(strategy, Strategy):
        if options:
            raise ValueError(
                f"options {sorted(options)} given with a Strategy object; set them on the object"
            )
        return strategy
    if isinstance(strategy, dict):
        options = {**strategy, **options}
        strategy = options.pop("name", None)
    if not isinstance(strategy, str):
        raise TypeError(
            f"strategy must be a name from {names()} or a Strategy, got {type(strategy).__name__}"
        )
    checks.choice("strategy", strategy, names())
    if strategy not in ("torchdiffeq", "continuous"):
        options.pop("reference", None)  # implied by the name
    try:
        return _FACTORIES[strategy](**options)
    # an option of the wrong type: its own message says which and the fix
    except checks.ArgumentTypeError:
        raise
    except TypeError as err:  # an unknown option
        raise ValueError(f"bad option for strategy {strategy!r}: {err}") from None


def parse_spec(spec) -> tuple[str, str, dict]:
    """One strategy spec -> (label, strategy name, options); checked (built once), nothing trained.

    spec: a name; a (label, name[, options]) tuple; or a dict {"name" (or "strategy"), "label",
    "options", **options} (a compare entry, a ``[[strategy]]`` table, ``parse_spec_text``'s output).
    Raises ValueError for an unknown name (with close matches) or a bad option, TypeError for a spec
    of another type. The one parser of strategy specs: ``get``, the config, compare and the CLI.
    """
    if isinstance(spec, str):
        label, name, options = spec, spec, {}
    elif isinstance(spec, (tuple, list)) and len(spec) in (2, 3):
        label, name = spec[0], spec[1]
        options = dict(spec[2]) if len(spec) == 3 and spec[2] is not None else {}
    elif isinstance(spec, dict):
        options = dict(spec)
        name = options.pop("name", options.pop("strategy", None))
        label = options.pop("label", name)
        if isinstance(options.get("options"), dict):
            options.update(options.pop("options"))
    else:
        raise TypeError(
            f"a strategy entry must be a name, a (label, name[, options]) tuple or a dict with "
            f"'name', got {spec!r} ({type(spec).__name__})"
        )
    if not isinstance(name, str) or not isinstance(label, str) or not label.strip():
        raise TypeError(f"strategy name and label must be non-empty strings, got name {name!r}, "
                        f"label {label!r}")
    if name not in names():
        close = difflib.get_close_matches(name, names(), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown strategy {name!r}{hint} (known: {names()}); a label such as "
                         "'black-box rk4' goes with a name: ('black-box rk4', 'torchdiffeq', "
                         "{'method': 'rk4'})")
    get(name, **options)  # raises ValueError for a bad option
    return label.strip(), name, options


def _text_value(text: str):
    """A flag's option value: JSON (numbers, true/false, lists) where it parses, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_spec_text(text: str) -> dict:
    """``[LABEL=]NAME[:KEY=VALUE,KEY=VALUE]`` (the CLI's ``--strategy``) -> {"label", "name",
    **options}, the dict form :func:`parse_spec` checks.

    Example: ``"black-box rk4=torchdiffeq:method=rk4,step_size=0.5"``.
    """
    head, _, opts = str(text).partition(":")
    label, _, name = head.rpartition("=")
    name = name.strip()
    entry = {"label": label.strip() or name, "name": name}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"strategy option {item!r} in {text!r} must read KEY=VALUE, e.g. "
                             "'black-box rk4=torchdiffeq:method=rk4,step_size=0.5'")
        entry[key.strip()] = _text_value(val.strip())
    return entry
