"""Step-size controllers: the contract the solve loop calls, and the two classic controls.

A controller answers the loop's two questions about each attempted step, on detached
tensors (so a solve differentiates only through the steps themselves):

- ``error(err, y0, y1, h, finite) -> (B,)``: the error measure of the attempt, from the
  embedded estimate (or the reference's miss) ``err`` (B, D), the states before and after
  (B, D), the signed step ``h`` and the rows whose step stayed finite (B,) bool
  (``finite=None``: all of them); rows that are not finite measure inf.
- ``adapt(err, h, state, order) -> (accept (B,) bool, h_next (B,), state)``: whether to keep
  the step and the size of the next attempt (positive), from the measure, the step size
  ``|h|`` (B,) and the controller's per-row ``state`` (a tuple of (B,) tensors, made by
  ``init(n, dtype, device)``; the loop drops the rows of finished examples from it).
  ``order`` is the order of the method's embedded (lower-order) solution.

``driver`` names the loop that calls the controller: ``"step"`` (free adaptive steps,
:class:`MixedNorm`, :class:`~dynfit.solvers.pi.PIController`; such controllers also carry
``rtol``, ``atol``, ``norm`` and ``per_example`` for the starting step) or ``"interval"``
(one attempt per output interval, then ``|H| / h_next`` uniform substeps: :class:`PaperRule`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch

from _dyncore import checks
from _dyncore.status import FAC_MAX, FAC_MIN, SAFETY

__all__ = ["Controller", "MixedNorm", "PaperRule"]

#: MixedNorm's error norms: per example (each held to the tolerance) or one RMS over the batch
NORMS = ("example", "batch")
#: the loops a controller can ask for (its ``driver``)
DRIVERS = ("step", "interval")

_EXAMPLES = {"rtol": 1e-6, "atol": 1e-6, "safety": SAFETY, "fmin": FAC_MIN, "fmax": FAC_MAX,
             "eps": 0.1}


@runtime_checkable
class Controller(Protocol):
    """What the solve loop asks of a step-size controller (see the module docstring)."""

    driver: ClassVar[str]
    per_example: bool

    def init(self, n: int, dtype: torch.dtype, device: torch.device) -> tuple: ...

    def error(self, err: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, h=None,
              finite: torch.Tensor | None = None) -> torch.Tensor: ...

    def adapt(self, err: torch.Tensor, h: torch.Tensor, state: tuple,
              order: int) -> tuple[torch.Tensor, torch.Tensor, tuple]: ...


def check_controller(control) -> None:
    """TypeError unless ``control`` implements :class:`Controller` with a known driver."""
    if not isinstance(control, Controller) or getattr(control, "driver", None) not in DRIVERS:
        raise TypeError(f"control must be a step-size controller such as MixedNorm(rtol, atol), "
                        f"PIController(rtol, atol) or PaperRule(eps), got {type(control).__name__}")


def _positive(owner: str, name: str, value) -> float:
    """``value`` as a positive finite float (``checks.positive``, the owner in the name)."""
    return checks.positive(f"{owner}: {name}", value, fix=f"pass e.g. {name}={_EXAMPLES[name]:g}")


def check_mixed(owner: str, ctrl) -> None:
    """Check and normalise the mixed-norm fields of a frozen dataclass ``ctrl`` in place:
    rtol, atol, safety, fmin, fmax (positive, fmin < 1 < fmax), norm, per_example."""
    for name in ("rtol", "atol", "safety", "fmin", "fmax"):
        object.__setattr__(ctrl, name, _positive(owner, name, getattr(ctrl, name)))
    checks.choice(f"{owner}: norm", ctrl.norm, NORMS,
                  fix="'example' holds each example to the tolerance, "
                      "'batch' one RMS over the batch")
    checks.boolean(f"{owner}: per_example", ctrl.per_example, optional=True,
                   fix="pass True, False or None (None: True, or False with norm='batch')")
    if ctrl.per_example is None:
        object.__setattr__(ctrl, "per_example", ctrl.norm != "batch")
    elif ctrl.per_example and ctrl.norm == "batch":
        raise ValueError(f"{owner}: norm='batch' measures one error over the whole batch, so the "
                         "batch shares one step; drop per_example=True (or use norm='example')")
    if not ctrl.fmin < 1 < ctrl.fmax:
        raise ValueError(f"{owner}: need fmin < 1 < fmax, got fmin={ctrl.fmin}, fmax={ctrl.fmax}")


def mixed_rms(err: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, finite: torch.Tensor | None,
              rtol: float, atol: float, norm: str, per_example: bool) -> torch.Tensor:
    """(B,) RMS over components of err / (atol + rtol max(|y0|, |y1|)), all (B, D); detached.

    norm="batch": the RMS over the whole batch, repeated; per_example=False: the largest
    example's, repeated (one shared step). Rows where ``finite`` is False measure inf.
    """
    with torch.no_grad():  # no graph: nothing here needs detaching
        scale = torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol)
        sq = err.div(scale).square_().mean(1)
        n = sq.shape[0]
        if norm == "batch":  # one RMS over the batch (torchdiffeq's norm); inf if a row overflowed
            if finite is not None:
                sq = torch.where(finite, sq, torch.inf)
            return sq.mean().sqrt_().expand(n)
        e = sq.sqrt_()
        if finite is not None:
            e = torch.where(finite, e, torch.inf)
        return e if per_example else e.max().expand(n)


@dataclass(frozen=True)
class MixedNorm:
    """The standard (I, "elementary") controller with per-example step sizes.

    err = RMS over components of (y_high - y_low) / (atol + rtol * max(|y0|, |y1|));
    accept err <= 1; h_new = h * clip(safety * err^(-1/(order_low + 1)), fmin, fmax)
    (factor at most 1 on a rejection and on the step right after one, as Hairer advises).
    The defaults (safety 0.9, fmin 0.2, fmax 10) are the shared ones of _dyncore/status.py.
    per_example=False shares one step size over the batch (err = max over examples)
    and passes a 0-dim t to the field.

    norm: how the error of a batch is measured.
    - "example" (default): each example's RMS is held to the tolerance (with
      per_example=False, the largest of them decides the shared step).
    - "batch": one RMS over every component of every example, and one shared
      step (per_example is then False): torchdiffeq's default norm. A hard
      example's error is averaged with the easy ones', so it may miss the
      tolerance; use it to compare with torchdiffeq like for like, or where
      only the batch's average accuracy matters.
    """

    driver: ClassVar[str] = "step"

    rtol: float
    atol: float
    safety: float = SAFETY
    fmin: float = FAC_MIN
    fmax: float = FAC_MAX
    per_example: bool | None = None  # None: True, or False with norm="batch"
    norm: str = "example"

    def __post_init__(self):
        check_mixed("MixedNorm", self)

    def init(self, n: int, dtype: torch.dtype, device: torch.device) -> tuple:
        """State: (B,) bool, the last attempt was accepted (no growth right after a rejection)."""
        return (torch.ones(n, dtype=torch.bool, device=device),)

    def error(self, err, y0, y1, h=None, finite=None) -> torch.Tensor:
        """(B, D) error vector -> (B,) scaled RMS error (:func:`mixed_rms`); h is not used."""
        return mixed_rms(err, y0, y1, finite, self.rtol, self.atol, self.norm, self.per_example)

    def adapt(self, err, h, state, order):
        (acc_prev,) = state
        with torch.no_grad():
            accept = err <= 1.0
            # err in [0, inf]: 0 -> fmax, inf -> fmin
            fac = err.pow(-1.0 / (order + 1)).mul_(self.safety).clamp_(self.fmin, self.fmax)
            fac = torch.where(accept & acc_prev, fac, fac.clamp_max(1.0))
            return accept, h * fac, (accept,)


@dataclass(frozen=True)
class PaperRule:
    """The paper's rule (Allauzen et al. 2022), applied per output interval of length H.

    One attempt with h = H; r = |A1 - A2|_1 / h (L1 over components, per example);
    accept if r <= eps, else h' = safety * h * sqrt(eps / r) and
    n = min(ceil(H / h'), max_substeps) uniform substeps of the propagated method.
    shared=True: all rejected examples use one n, from the smallest h' among them
    (the paper's batch procedure).
    """

    driver: ClassVar[str] = "interval"

    eps: float = 0.1
    safety: float = SAFETY
    max_substeps: int = 10
    shared: bool = False

    def __post_init__(self):
        object.__setattr__(self, "eps", _positive("PaperRule", "eps", self.eps))
        object.__setattr__(self, "safety", _positive("PaperRule", "safety", self.safety))
        object.__setattr__(self, "max_substeps", checks.integer(
            "PaperRule: max_substeps", self.max_substeps, minimum=1,
            fix="pass the most uniform substeps a rejected interval may take, "
                "e.g. max_substeps=10"))
        object.__setattr__(self, "shared", checks.boolean("PaperRule: shared", self.shared,
                                                          fix="pass shared=True or shared=False"))

    @property
    def per_example(self) -> bool:
        """Rejected examples take their own substeps (False: one shared count, shared=True)."""
        return not self.shared

    def init(self, n: int, dtype: torch.dtype, device: torch.device) -> tuple:
        """No state: each interval is judged on its own."""
        return ()

    def error(self, err, y0=None, y1=None, h=None, finite=None) -> torch.Tensor:
        """(B, D) error vector over a step of size h -> (B,) rate r = |err|_1 / |h| (detached)."""
        r = err.detach().abs().sum(dim=1) / abs(h)
        return r if finite is None else torch.where(finite, r, torch.inf)

    def adapt(self, err, h, state, order):
        """err: the rates r (B,); h: the interval length |H|. h_next: |H| where accepted, else
        |H| / n with n = min(ceil(|H| / h'), max_substeps) (shared: one n for every rejection)."""
        with torch.no_grad():
            H = abs(h)
            accept = (err <= self.eps) & torch.isfinite(err)
            h_new = self.safety * H * torch.sqrt(self.eps / err)
            n = torch.ceil(H / h_new)
            n = torch.nan_to_num(n, nan=float(self.max_substeps), posinf=float(self.max_substeps))
            n = n.clamp(1, self.max_substeps).to(torch.int64)
            if self.shared:
                rej = ~accept
                if bool(rej.any()):
                    n_shared = n[rej].max()  # smallest h' <=> largest n
                    n = torch.where(rej, n_shared, n)
            n = torch.where(accept, torch.ones_like(n), n)
            return accept, torch.where(accept, H, H / n.to(err.dtype)), state

    def __str__(self) -> str:
        return (f"PaperRule(eps={self.eps}, safety={self.safety}, "
                f"max_substeps={self.max_substeps}, shared={self.shared})")
