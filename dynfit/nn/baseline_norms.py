"""The norms TA-BN is compared with, each called as ``layer(t, x)`` (``t`` ignored):

- :class:`PopBatchNorm1d` / :class:`PopBatchNorm2d`: plain BatchNorm whose population
  statistics pool every visited time ("Pop-TI" in the TA-BN paper).
- :class:`MiniBatchNorm1d` / :class:`MiniBatchNorm2d`: BatchNorm that always uses the
  mini-batch statistics (no running statistics; fails at batch 1).
- :class:`NoNorm`: the identity.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from systems import checks

from ._norm_checks import check_batch, check_eps_affine, check_momentum, check_x
from .running_stats import StatsNorm


def _affine(module: nn.Module, num_features: int, kw: dict) -> None:
    """Register ``weight`` (ones) and ``bias`` (zeros) of shape (num_features,), or None."""
    if module.affine:
        module.weight = nn.Parameter(torch.ones(num_features, **kw))
        module.bias = nn.Parameter(torch.zeros(num_features, **kw))
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


class _PopBatchNorm(StatsNorm):
    _ndim = 2

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
                 affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.num_features = checks.integer("num_features", num_features, minimum=1)
        self.momentum = check_momentum(momentum)
        self.eps, self.affine = check_eps_affine(eps, affine)
        kw = {"device": device, "dtype": dtype}
        self.register_buffer("running_mean", torch.zeros(num_features, **kw))
        self.register_buffer("running_var", torch.ones(num_features, **kw))
        _affine(self, num_features, kw)

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """Plain BatchNorm; ``t`` is ignored (statistics pooled over all times)."""
        check_x(self, x, self._ndim, self.num_features)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        check_batch(self, x)
        if self._updating():
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                True, self.momentum, self.eps)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, "
                f"affine={self.affine}")


class PopBatchNorm1d(_PopBatchNorm):
    """Plain BatchNorm ("Pop-TI") for (batch, num_features), called as ``layer(t, x)``."""

    _ndim = 2


class PopBatchNorm2d(_PopBatchNorm):
    """Plain BatchNorm ("Pop-TI") for (B, C, H, W), called as ``layer(t, x)``."""

    _ndim = 4


class _MiniBatchNorm(nn.Module):
    _ndim = 2

    def __init__(self, num_features: int, *, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.num_features = checks.integer("num_features", num_features, minimum=1)
        self.eps, self.affine = check_eps_affine(eps, affine)
        _affine(self, num_features, {"device": device, "dtype": dtype})

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """Normalise with the statistics of this mini-batch, in training and eval alike."""
        check_x(self, x, self._ndim, self.num_features)
        check_batch(self, x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class MiniBatchNorm1d(_MiniBatchNorm):
    """Mini-batch BatchNorm (no running statistics) for (batch, num_features)."""

    _ndim = 2


class MiniBatchNorm2d(_MiniBatchNorm):
    """Mini-batch BatchNorm (no running statistics) for (B, C, H, W)."""

    _ndim = 4


class NoNorm(nn.Module):
    """The identity, called as ``layer(t, x)``."""

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        return x
