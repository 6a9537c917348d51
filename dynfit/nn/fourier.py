"""Random Fourier features of the state with a linear readout, plus an optional MLP correction.

``f(z) = cos(z Omega^T + b) coef + mlp(z)``: ``Omega`` (features, dim) drawn from
N(0, 1 / bandwidth^2) and ``b`` (features,) from U(0, 2 pi) when the field is built (torch's
generator: seed it first), kept as saved buffers; ``coef`` (features, dim) is trained, and has the
closed-form least-squares start of every field with ``features``/``coef``
(:func:`dynfit.prefit.prefit`). Registered as kind "fourier".
"""
from __future__ import annotations

import math

import torch
from torch import nn

from systems import checks

from .fields import MLPField, _FeatureField, zero_correction
from .registry import register_field

__all__ = ["FourierField"]


@register_field("fourier")
class FourierField(_FeatureField):
    """Random Fourier features plus an MLP correction: x (B, dim) -> (B, dim). Time-invariant.

    features: the number of random features; bandwidth: the length scale of the (standardised)
    state the features resolve; width, depth, activation: the MLP correction, whose output layer
    starts at zero (``width=0`` drops it).
    """

    def __init__(self, dim: int, *, features: int = 128, bandwidth: float = 1.0, width: int = 32,
                 depth: int = 2, activation: str = "silu", time_dependent: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self._time_invariant(time_dependent)
        self.dim = checks.integer("dim", dim, minimum=1)
        n = checks.integer("features", features, minimum=1)
        bandwidth = checks.real("bandwidth", bandwidth, above=0.0)
        width = checks.integer("width", width, minimum=0)
        dtype = checks.float_dtype("dtype", dtype)
        self.register_buffer("omega", torch.randn(n, self.dim, dtype=dtype) / bandwidth)
        self.register_buffer("phase", torch.rand(n, dtype=dtype) * (2 * math.pi))
        self.coef = nn.Parameter(torch.zeros(n, self.dim, dtype=dtype))
        self.mlp = zero_correction(MLPField, self.dim, width, depth, activation, dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """cos(x Omega^T + b): (B, dim) -> (B, features)."""
        return torch.cos(torch.addmm(self.phase.to(x.dtype), x, self.omega.to(x.dtype).T))
