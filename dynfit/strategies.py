"""Training strategies: how a batch of windows is integrated during training.

A strategy is a small object the trainer calls once per loss evaluation:
``rollout(field, x0, horizon, targets=None) -> (ys, Stats)`` with x0 (B, D),
targets (H, B, D) and ys (H, B, D) the predicted states one model time unit
apart (one unit = one sampling interval). ``generate`` is the inference-time
rollout (no targets). Choose one by name (:func:`get`) or pass an object.

- ``"black-box"`` (alias ``"batch"``): the paper's batch procedure, Fehlberg
  3(2) with the Heun error estimate r = |A1 - A2|_1 / h; the solver's own
  judgement of its error, as a black-box adaptive solver does.
- ``"fehlberg"``: Fehlberg training (Allauzen et al. 2022): during training the
  error rate is measured against the target, r = |x_target - A2|_1 / h.
- ``"torchdiffeq"``: torchdiffeq ``odeint`` with any of its methods.
- ``"curriculum"``: ours, Fehlberg training whose rollout horizon doubles each
  time the solver accepts a large enough fraction of the examples.
"""
from __future__ import annotations

import abc
import difflib
import math
from dataclasses import dataclass

import torch

from .solvers import PaperRule
from .solvers.stepper import rk_step
from .solvers.tableau import torch_tableau

__all__ = ["Stats", "Strategy", "PaperStrategy", "TorchdiffeqStrategy", "CurriculumStrategy", "get", "names"]


@dataclass
class Stats:
    """What the solver did over one rollout.

    accepted (H, B) bool: first attempt accepted per interval and example;
    substeps (H, B) int: steps applied (1 when accepted); n_f_evals: field
    evaluations counted per example (a batched call on B rows counts B).
    """

    accepted: torch.Tensor
    substeps: torch.Tensor
    n_f_evals: int

    def summary(self) -> dict:
        """Scalars for the history: accepted_fraction, mean/max substeps, n_f_evals.

        mean_substeps is the paper's curve: the mean substep count applied to
        rejected examples (1.0 when none was rejected).
        """
        acc = self.accepted
        sub = self.substeps.to(torch.float64)
        rejected = ~acc
        mean_rej = float(sub[rejected].mean()) if bool(rejected.any()) else 1.0
        return {
            "accepted_fraction": float(acc.to(torch.float64).mean()),
            "mean_substeps": mean_rej,
            "max_substeps": int(self.substeps.max()) if self.substeps.numel() else 0,
            "mean_steps": float(sub.mean()) if sub.numel() else 0.0,
            "n_f_evals": int(self.n_f_evals),
        }


class Strategy(abc.ABC):
    """Interface: ``rollout`` for training, ``generate`` for inference, ``horizon`` per epoch."""

    name = "strategy"

    @abc.abstractmethod
    def rollout(self, field, x0: torch.Tensor, horizon: int, targets: torch.Tensor | None = None):
        """Roll x0 (B, D) forward ``horizon`` intervals: (ys (horizon, B, D), Stats)."""

    def generate(self, field, x0: torch.Tensor, n_steps: int):
        """Inference rollout of n_steps intervals: (ys (n_steps, B, D), Stats)."""
        return self.rollout(field, x0, n_steps, targets=None)

    def horizon(self, epoch: int, history: list[dict], base: int) -> int:
        """Rollout horizon to train with at ``epoch`` given the past history rows."""
        return base

    def stride(self, horizon: int, base: int) -> int:
        """Spacing of window starts for a given horizon (``base``: the user's stride)."""
        return base

    def config(self) -> dict:
        return {"name": self.name}

    def state(self) -> dict:
        """Mutable state saved in checkpoints."""
        return {}

    def load_state(self, state: dict) -> None:
        pass


def _rk3_steps(field, x: torch.Tensor, n: int):
    """n uniform Fehlberg 3(2) steps over one unit; returns (x (B, D), err (B, D) = A2 - A1 of the last step)."""
    tab = torch_tableau("rkf23")
    h = 1.0 / n
    t = torch.zeros((), dtype=x.dtype, device=x.device)
    err = None
    for i in range(n):
        x, err, _ = rk_step(field, t + i * h, h, x, None, tab)
    return x, err


class _IntervalRule:
    """The paper's step rule on one interval of length 1 (model time).

    One Fehlberg 3(2) attempt with h = 1, judged by
    :class:`dynfit.solvers.PaperRule` (r = |A1 - A2|_1 / h, or |target - A2|_1 / h
    with a reference; accept if r <= eps, else ceil(1 / h') uniform substeps with
    h' = safety * h * sqrt(eps / r), at most max_substeps). shared=True applies one
    count, from the smallest h' among the rejected, to all of them (the paper's
    batch procedure); shared=False gives each example its own count.
    """

    def __init__(self, eps: float = 0.1, safety: float = 0.9, max_substeps: int = 10, shared: bool = True):
        self.control = PaperRule(eps=eps, safety=safety, max_substeps=int(max_substeps), shared=bool(shared))

    def interval(self, field, x: torch.Tensor, reference: torch.Tensor | None):
        """One interval: (x_next (B, D), accepted (B,), substeps (B,), n_f_evals)."""
        b = x.shape[0]
        a2, err = _rk3_steps(field, x, 1)
        evals = 3 * b
        with torch.no_grad():
            r = self.control.error(err if reference is None else reference - a2, 1.0)
            accepted, n_each = self.control.substeps(r, 1.0)
        if bool(accepted.all()):
            return a2, accepted, n_each, evals
        out = a2
        rej = ~accepted
        for n in torch.unique(n_each[rej]).tolist():
            idx = torch.nonzero(rej & (n_each == n)).squeeze(1)
            sub, _ = _rk3_steps(field, x[idx], int(n))
            out = out.index_copy(0, idx, sub)
            evals += 3 * int(n) * idx.numel()
        return out, accepted, n_each, evals


class PaperStrategy(Strategy):
    """The paper's solver: Fehlberg 3(2) with its batch step rule.

    reference=False is the batch procedure ("black-box": Heun error estimate);
    reference=True is Fehlberg training (error against the target in training;
    the Heun estimate at inference). Inference uses per-example counts.
    """

    def __init__(self, *, eps: float = 0.1, safety: float = 0.9, max_substeps: int = 10,
                 reference: bool = True, shared: bool = True, name: str | None = None):
        self.rule = _IntervalRule(eps, safety, max_substeps, shared)
        self.infer_rule = _IntervalRule(eps, safety, max_substeps, shared=False)
        self.reference = bool(reference)
        self.name = name or ("fehlberg" if reference else "black-box")

    def _reference(self, k, x, targets, x0):
        return targets[k] if (self.reference and targets is not None) else None

    def rollout(self, field, x0, horizon, targets=None):
        rule = self.rule if targets is not None else self.infer_rule
        if targets is not None and targets.shape[0] < horizon:
            raise ValueError(f"targets cover {targets.shape[0]} intervals, horizon is {horizon}")
        x, ys, accs, subs, evals = x0, [], [], [], 0
        for k in range(horizon):
            ref = self._reference(k, x, targets, x0)
            x, acc, sub, ev = rule.interval(field, x, ref)
            ys.append(x)
            accs.append(acc)
            subs.append(sub)
            evals += ev
        return torch.stack(ys), Stats(torch.stack(accs), torch.stack(subs), evals)

    def config(self) -> dict:
        c = self.rule.control
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
    """torchdiffeq ``odeint`` with any method; fixed methods take ``step_size``.

    The solver reports nothing, so accepted is all True and substeps is the
    fixed grid's count per interval (1 for adaptive methods).
    """

    def __init__(self, method: str = "rk4", *, rtol: float = 1e-6, atol: float = 1e-8,
                 step_size: float | None = None, name: str = "torchdiffeq"):
        from torchdiffeq._impl.odeint import SOLVERS

        if method not in SOLVERS:
            close = difflib.get_close_matches(method, list(SOLVERS), n=3)
            raise ValueError(f"unknown torchdiffeq method {method!r}; close matches {close}; "
                             f"known: {sorted(SOLVERS)}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size!r}")
        self.method, self.rtol, self.atol, self.step_size, self.name = method, rtol, atol, step_size, name

    def rollout(self, field, x0, horizon, targets=None):
        from torchdiffeq import odeint

        counted = _Counted(field)
        t = torch.arange(horizon + 1, dtype=x0.dtype, device=x0.device)
        options = {"step_size": self.step_size} if self.step_size is not None else None
        ys = odeint(counted, x0, t, method=self.method, rtol=self.rtol, atol=self.atol, options=options)[1:]
        b = x0.shape[0]
        n = math.ceil(1.0 / self.step_size) if self.step_size else 1
        acc = torch.ones(horizon, b, dtype=torch.bool, device=x0.device)
        sub = torch.full((horizon, b), n, dtype=torch.int64, device=x0.device)
        return ys, Stats(acc, sub, counted.count)

    def config(self) -> dict:
        return {"name": self.name, "method": self.method, "rtol": self.rtol, "atol": self.atol,
                "step_size": self.step_size}


class CurriculumStrategy(PaperStrategy):
    """Ours: Fehlberg training with a rollout-horizon curriculum driven by the solver.

    Training starts on one-step pairs; whenever the solver accepts at least
    ``accept_threshold`` of the examples for ``patience`` consecutive epochs,
    the horizon doubles, up to ``max_horizon``. Longer rollouts make the loss
    see how one-step errors compound, which is what free runs suffer from; the
    acceptance signal says when the one-step field is good enough to unroll.

    Two details keep it cheap and honest: windows start every ``horizon``
    samples, so an epoch integrates each sample once whatever the horizon
    (the cost per epoch stays that of one-step training); and inside a
    rollout the error of interval k is measured against the *observed
    increment* applied to the current prediction, r = |x_k + (y_{k+1} - y_k)
    - A2|_1 / h, so that drift accumulated earlier in the rollout is not
    mistaken for a local step error (for k = 0 this is Fehlberg training).
    """

    def __init__(self, *, max_horizon: int = 8, accept_threshold: float = 0.9, patience: int = 3,
                 eps: float = 0.1, safety: float = 0.9, max_substeps: int = 10, shared: bool = True):
        super().__init__(eps=eps, safety=safety, max_substeps=max_substeps, reference=True,
                         shared=shared, name="curriculum")
        if int(max_horizon) < 1:
            raise ValueError(f"max_horizon must be >= 1, got {max_horizon!r}")
        if not 0 < accept_threshold <= 1:
            raise ValueError(f"accept_threshold must lie in (0, 1], got {accept_threshold!r}")
        self.max_horizon, self.accept_threshold, self.patience = int(max_horizon), accept_threshold, int(patience)
        self.current = None

    def horizon(self, epoch, history, base):
        if self.current is None:
            self.current = base
        recent = [row.get("accepted_fraction", 0.0) for row in history[-self.patience:]]
        horizons = [row.get("horizon", self.current) for row in history[-self.patience:]]
        if (len(recent) == self.patience and all(h == self.current for h in horizons)
                and min(recent) >= self.accept_threshold and self.current < self.max_horizon):
            self.current = min(2 * self.current, self.max_horizon)
        return self.current

    def stride(self, horizon, base):
        return max(base, horizon)

    def _reference(self, k, x, targets, x0):
        if targets is None:
            return None
        if k == 0:
            return targets[0]  # exactly Fehlberg training on the first interval
        return x.detach() + (targets[k] - targets[k - 1])

    def config(self) -> dict:
        return {**super().config(), "max_horizon": self.max_horizon,
                "accept_threshold": self.accept_threshold, "patience": self.patience}

    def state(self):
        return {"current": self.current}

    def load_state(self, state):
        self.current = state.get("current")


_FACTORIES = {
    "black-box": lambda **kw: PaperStrategy(reference=False, **kw),
    "batch": lambda **kw: PaperStrategy(reference=False, name="batch", **kw),
    "fehlberg": lambda **kw: PaperStrategy(reference=True, **kw),
    "torchdiffeq": lambda **kw: TorchdiffeqStrategy(**kw),
    "curriculum": lambda **kw: CurriculumStrategy(**kw),
}


def names() -> list[str]:
    return sorted(_FACTORIES)


def get(strategy, **options) -> Strategy:
    """A Strategy from a name (with keyword options) or an object (returned as is)."""
    if isinstance(strategy, Strategy):
        if options:
            raise ValueError(f"options {sorted(options)} given with a Strategy object; set them on the object")
        return strategy
    if isinstance(strategy, dict):
        options = {**strategy, **options}
        strategy = options.pop("name", None)
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a name from {names()} or a Strategy, got {type(strategy).__name__}")
    if strategy not in _FACTORIES:
        close = difflib.get_close_matches(strategy, names(), n=3)
        raise ValueError(f"unknown strategy {strategy!r}; known: {names()} (close matches: {close})")
    if strategy != "torchdiffeq":
        options.pop("reference", None)  # implied by the name
    try:
        return _FACTORIES[strategy](**options)
    except TypeError as err:
        raise ValueError(f"bad option for strategy {strategy!r}: {err}") from None
