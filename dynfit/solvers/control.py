"""Error controls: the standard mixed rtol/atol norm and the paper's rule.

Each control turns an error vector (B, D) into a per-example error measure
(B,) and a step-size decision; decisions are always computed on detached
tensors, so the solve differentiates only through the steps themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from systems import checks
from systems.status import FAC_MAX, FAC_MIN, SAFETY

__all__ = ["MixedNorm", "PaperRule", "NORMS"]

#: MixedNorm's error norms: per example (each held to the tolerance) or one RMS over the batch
NORMS = ("example", "batch")


_EXAMPLES = {"rtol": 1e-6, "atol": 1e-6, "safety": SAFETY, "fmin": FAC_MIN, "fmax": FAC_MAX, "eps": 0.1}


def _positive(owner: str, name: str, value) -> float:
    """``value`` as a positive finite float (:func:`systems.checks.positive`, the owner in the name)."""
    return checks.positive(f"{owner}: {name}", value, fix=f"pass e.g. {name}={_EXAMPLES[name]:g}")


@dataclass(frozen=True)
class MixedNorm:
    """Standard error control with per-example step sizes.

    err = RMS over components of (y_high - y_low) / (atol + rtol * max(|y0|, |y1|));
    accept err <= 1; h_new = h * clip(safety * err^(-1/(order_low + 1)), fmin, fmax)
    (factor at most 1 on a rejection and on the step right after one, as Hairer advises).
    The defaults (safety 0.9, fmin 0.2, fmax 10) are the shared ones of systems/status.py.
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

    rtol: float
    atol: float
    safety: float = SAFETY
    fmin: float = FAC_MIN
    fmax: float = FAC_MAX
    per_example: bool | None = None  # None: True, or False with norm="batch"
    norm: str = "example"

    def __post_init__(self):
        for name in ("rtol", "atol", "safety", "fmin", "fmax"):
            object.__setattr__(self, name, _positive("MixedNorm", name, getattr(self, name)))
        checks.choice("MixedNorm: norm", self.norm, NORMS,
                      fix="'example' holds each example to the tolerance, 'batch' one RMS over the batch")
        checks.boolean("MixedNorm: per_example", self.per_example, optional=True,
                       fix="pass True, False or None (None: True, or False with norm='batch')")
        if self.per_example is None:
            object.__setattr__(self, "per_example", self.norm != "batch")
        elif self.per_example and self.norm == "batch":
            raise ValueError("MixedNorm: norm='batch' measures one error over the whole batch, so the batch "
                             "shares one step; drop per_example=True (or use norm='example')")
        if not self.fmin < 1 < self.fmax:
            raise ValueError(f"MixedNorm: need fmin < 1 < fmax, got fmin={self.fmin}, fmax={self.fmax}")

    def error(self, err_vec: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
        """(B, D) error vector -> (B,) scaled RMS error (detached); norm="batch": the batch's RMS, repeated."""
        scale = self.atol + self.rtol * torch.maximum(y0.detach().abs(), y1.detach().abs())
        sq = (err_vec.detach() / scale).square()
        if self.norm == "batch":
            return sq.mean().sqrt().expand(sq.shape[0])
        return sq.mean(dim=1).sqrt()

    def factor(self, err: torch.Tensor, accept: torch.Tensor, order_low: int) -> torch.Tensor:
        """(B,) multiplier of the step size."""
        f = self.safety * err.clamp_min(1e-300 if err.dtype == torch.float64 else 1e-30).pow(-1.0 / (order_low + 1))
        f = torch.nan_to_num(f, nan=self.fmin, posinf=self.fmax).clamp(self.fmin, self.fmax)
        return torch.where(accept, f, f.clamp_max(1.0))


@dataclass(frozen=True)
class PaperRule:
    """The paper's rule (Allauzen et al. 2022), applied per output interval of length H.

    One attempt with h = H; r = |A1 - A2|_1 / h (L1 over components, per example);
    accept if r <= eps, else h' = safety * h * sqrt(eps / r) and
    n = min(ceil(H / h'), max_substeps) uniform substeps of the propagated method.
    shared=True: all rejected examples use one n, from the smallest h' among them
    (the paper's batch procedure).
    """

    eps: float = 0.1
    safety: float = SAFETY
    max_substeps: int = 10
    shared: bool = False

    def __post_init__(self):
        object.__setattr__(self, "eps", _positive("PaperRule", "eps", self.eps))
        object.__setattr__(self, "safety", _positive("PaperRule", "safety", self.safety))
        object.__setattr__(self, "max_substeps", checks.integer(
            "PaperRule: max_substeps", self.max_substeps, minimum=1,
            fix="pass the most uniform substeps a rejected interval may take, e.g. max_substeps=10"))
        object.__setattr__(self, "shared", checks.boolean("PaperRule: shared", self.shared,
                                                          fix="pass shared=True or shared=False"))

    def error(self, err_vec: torch.Tensor, h: float) -> torch.Tensor:
        """(B, D) error vector over a step of size h -> (B,) rate r = |err|_1 / h (detached)."""
        return err_vec.detach().abs().sum(dim=1) / abs(h)

    def substeps(self, r: torch.Tensor, H: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(accept (B,) bool, n (B,) int64 substeps; 1 where accepted)."""
        finite = torch.isfinite(r)
        accept = (r <= self.eps) & finite
        h_new = self.safety * abs(H) * torch.sqrt(self.eps / r)
        n = torch.ceil(abs(H) / h_new)
        n = torch.nan_to_num(n, nan=float(self.max_substeps), posinf=float(self.max_substeps))
        n = n.clamp(1, self.max_substeps).to(torch.int64)
        if self.shared:
            rej = ~accept
            if bool(rej.any()):
                n_shared = n[rej].max()  # smallest h' <=> largest n
                n = torch.where(rej, n_shared, n)
        return accept, torch.where(accept, torch.ones_like(n), n)

    def __str__(self) -> str:
        return (f"PaperRule(eps={self.eps}, safety={self.safety}, max_substeps={self.max_substeps}, "
                f"shared={self.shared})")
