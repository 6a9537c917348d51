"""Models of the TA-BN depth study (examples/tabn_depth.py): the paper's "unmixed" classifier.

One Neural ODE integrated on [0, 1] with torchdiffeq, then one linear layer.
The only stem is parameter-free zero augmentation of the state (extra
channels or features set to 0), so every learned transformation before the
linear read-out lives inside the vector field.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from dynfit.nn import ConvField, MLPField
from dynfit.nn.norm import EachLayer

__all__ = ["UnmixedClassifier", "LocalMLPField"]


class _Counted(nn.Module):
    """Wraps a field and counts its calls in ``nfe``."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        return self.field(t, x)


class UnmixedClassifier(nn.Module):
    """Neural ODE classifier: ``logits = W pool(phi_1(augment(x))) + b``.

    image=True: x (B, C, H, W), a :class:`ConvField` on ``state_channels``
    channels, adaptive average pooling to ``pool x pool``. image=False: x
    (B, D), an :class:`MLPField` on ``state_channels`` features, no pooling.
    ``method``/``rtol``/``atol``/``options`` go to torchdiffeq; ``adjoint``
    selects ``odeint_adjoint``. ``nfe`` counts field calls of the last forward.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        image: bool = True,
        state_channels: int | None = None,
        width: int = 64,
        depth: int = 2,
        activation: str = "relu",
        norm: str | None = "tabn",
        num_points: int = 101,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        options: dict | None = None,
        adjoint: bool = False,
        pool: int = 2,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("pool", pool),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        state = in_channels if state_channels is None else state_channels
        if (
            isinstance(state, bool)
            or not isinstance(state, numbers.Integral)
            or state < in_channels
        ):
            raise ValueError(
                f"state_channels must be an int >= in_channels ({in_channels}), got "
                f"{state_channels!r}"
            )
        self.in_channels, self.state_channels = int(in_channels), int(state)
        self.image = bool(image)
        self.pool = int(pool)
        kw = dict(width=width, depth=depth, activation=activation, norm=norm, num_points=num_points,
                  t_max=1.0, dtype=dtype)
        field = (
            ConvField(self.state_channels, **kw)
            if self.image
            else MLPField(self.state_channels, **kw)
        )
        self.field = _Counted(field)
        features = self.state_channels * (self.pool**2 if self.image else 1)
        self.linear = nn.Linear(features, num_classes, dtype=dtype)
        self.method, self.rtol, self.atol = method, rtol, atol
        self.options = options
        self.adjoint = bool(adjoint)
        self.register_buffer("span", torch.tensor([0.0, 1.0], dtype=dtype), persistent=False)

    @property
    def nfe(self) -> int:
        return self.field.nfe

    def penalty(self) -> torch.Tensor:
        """L2 penalty of the TA-BN parameters in the vector field."""
        return self.field.field.penalty()

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        ndim = 4 if self.image else 2
        if x.dim() != ndim or x.shape[1] != self.in_channels:
            shape = "(B, C, H, W)" if self.image else "(B, D)"
            raise ValueError(
                f"UnmixedClassifier expects x of shape {shape} "
                f"with {self.in_channels} in dimension 1, "
                f"got {tuple(x.shape)}"
            )
        extra = self.state_channels - self.in_channels
        if extra == 0:
            return x
        pad = [0, 0] * (ndim - 2) + [0, extra]  # F.pad runs from the last dimension
        return F.pad(x, pad)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled state at t = 1, (B, features)."""
        h0 = self._augment(x)
        self.field.nfe = 0
        solve = odeint_adjoint if self.adjoint else odeint
        h1 = solve(self.field, h0, self.span, method=self.method, rtol=self.rtol, atol=self.atol,
                   options=self.options)[-1]
        if self.image:
            h1 = F.adaptive_avg_pool2d(h1, self.pool)
        return h1.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes)."""
        return self.linear(self.features(x))


class LocalMLPField(nn.Module):
    """A deep MLP applied at every site of a ring: dx_i/dt = g(x_{i-2}, x_{i-1}, x_i, x_{i+1}).

    The Lorenz96 tendency of site i depends on these four neighbours only, and
    the ring is symmetric under rotation, so one MLP ``g`` (4 -> width -> ... ->
    1, ``depth`` hidden layers, a norm from :func:`dynfit.nn.make_norm` after
    each) shared by all sites is the natural deep vector field: a 1-D
    convolution with a 4-wide stencil followed by 1x1 convolutions. The norms
    see every (example, site) pair as one batch row. x: (B, N) -> (B, N).
    """

    def __init__(
        self,
        *,
        width: int = 32,
        depth: int = 4,
        activation: str = "silu",
        norm: str | None = None,
        num_points: int = 101,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        from dynfit.nn import make_activation, make_norm, share_tables

        sizes = [4] + [width] * depth
        self.linears = nn.ModuleList(
            nn.Linear(a, b, dtype=dtype) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.norms = nn.ModuleList(
            make_norm(norm, width, num_points=num_points, dtype=dtype) for _ in range(depth)
        )
        # TA-BN layers: one set of tables for all, one interpolation per call (None: other norms)
        self.tables = share_tables(self.norms)
        self.act = make_activation(activation)
        self.out = nn.Linear(width, 1, dtype=dtype)

    def penalty(self) -> torch.Tensor:
        from dynfit.nn import norm_penalty

        return norm_penalty(self)

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(
                f"LocalMLPField expects x of shape (batch, sites), got {tuple(x.shape)}"
            )
        stencil = torch.stack([x.roll(2, 1), x.roll(1, 1), x, x.roll(-1, 1)], -1)  # (B, N, 4)
        h = stencil.reshape(-1, 4)
        # norm(i, h) is layer i at time t: one interpolation for all TA-BN layers, or layer by layer
        norm = self.tables.at(t) if self.tables is not None else EachLayer(self.norms, t)
        for i, linear in enumerate(self.linears):
            h = self.act(norm(i, linear(h)))
        norm.finish()  # TA-BN: the running statistics of all layers, at once
        return self.out(h).reshape(x.shape)
