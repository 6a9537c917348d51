"""Argument and input checks shared by the norm layers, and the value of a scalar time."""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from systems import checks

_EPS = {dt: torch.finfo(dt).eps
        for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16)}


def check_momentum(momentum) -> float:
    """The running statistics' momentum, in (0, 1]."""
    return checks.real("momentum", momentum, above=0.0, maximum=1.0,
                       fix="momentum is the weight of the newest batch in the running "
                           "statistics; give a number in (0, 1], such as 0.1")


def check_eps_affine(eps, affine) -> tuple[float, bool]:
    """eps > 0 and the affine flag every BatchNorm-like layer takes."""
    eps = checks.positive("eps", eps, fix="eps keeps the variance away from zero; give a small "
                                          "number such as 1e-5")
    return eps, checks.boolean("affine", affine, fix="pass affine=True or affine=False")


def check_x(layer: nn.Module, x: torch.Tensor, ndim: int, num_features: int) -> None:
    """x is a non-empty (B, F) (ndim 2) or (B, F, H, W) (ndim 4) tensor of the dtype of the
    layer's ``running_mean`` (if it has one)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} expects x as a torch.Tensor, "
                        f"got {type(x).__name__}")
    shape = "(batch, num_features)" if ndim == 2 else "(batch, channels, height, width)"
    if x.dim() != ndim or x.shape[1] != num_features:
        raise ValueError(
            f"{type(layer).__name__}({num_features}) expects x of shape {shape} with "
            f"{num_features} features, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{type(layer).__name__} got an empty batch (shape {tuple(x.shape)}); "
                         "pass at least one example")
    ref = getattr(layer, "running_mean", None)
    if ref is not None and x.dtype != ref.dtype:
        raise TypeError(f"{type(layer).__name__} holds {ref.dtype} parameters but x is {x.dtype}; "
                        f"convert one of them: layer.to({x.dtype}) or x.to({ref.dtype})")


def check_batch(layer: nn.Module, x: torch.Tensor) -> None:
    """x holds more than one value per feature (mini-batch statistics need two)."""
    n = x.shape[0] * math.prod(x.shape[2:])
    if n < 2:
        raise ValueError(
            f"{type(layer).__name__} needs more than one value per feature to use mini-batch "
            f"statistics, got x of shape {tuple(x.shape)}; use a batch of at least 2 or eval mode"
        )


def time_value(t) -> tuple[float, float]:
    """The float value of a scalar time (0-d or one-element tensor, or a real number) and the
    precision of its dtype."""
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(
                f"time t must be a scalar (0-d or one-element tensor), got shape "
                f"{tuple(t.shape)}; interpolation weights need one time (per-example times (B,) "
                "or (B, 1) work in eval mode)"
            )
        if t.is_complex():
            raise TypeError(f"time t must be real, got dtype {t.dtype}")
        value = t.item()
        precision = _EPS.get(t.dtype)
        if precision is None:
            precision = torch.finfo(t.dtype).eps if t.dtype.is_floating_point else 0.0
    elif isinstance(t, numbers.Real) and not isinstance(t, bool):
        value = float(t)
        precision = _EPS[torch.float64]
    else:
        raise TypeError(f"time t must be a scalar tensor or a real number, got {type(t).__name__}")
    if math.isnan(value):
        raise ValueError("time t is NaN; the solver produced an invalid time (check the time span "
                         "and step size)")
    return value, precision
