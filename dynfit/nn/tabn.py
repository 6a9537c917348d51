"""Temporal adaptive batch normalisation (TA-BN, Zheng et al., NeurIPS 2024):
:class:`TABatchNorm1d` and :class:`TABatchNorm2d`, each called as ``layer(t, x)``.

Running statistics and affine parameters live on a uniform grid of ``num_points`` times on
``[0, t_max]`` and are linearly interpolated at the solver's time ``t``. Every layer owns its
tables as plain registered parameters and buffers; a field's layers on one grid are read side
by side by :func:`dynfit.nn.tabn_tables.share_tables`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from systems import checks

from ._grid import Interp, interpolation
from ._norm_checks import check_batch, check_eps_affine, check_momentum, check_x
from .running_stats import StatsNorm

__all__ = ["TABatchNorm1d", "TABatchNorm2d"]

OUTSIDE = ("clamp", "error")


class _TABatchNorm(StatsNorm):
    _ndim = 2

    def __init__(self, num_features: int, *, num_points: int = 101, t_max: float = 1.0,
                 momentum: float = 0.1, eps: float = 1e-5, affine: bool = True,
                 outside: str = "clamp", device=None, dtype=None) -> None:
        super().__init__()
        self.num_features = checks.integer("num_features", num_features, minimum=1)
        self.num_points = checks.integer(
            "num_points", num_points, minimum=2,
            fix="num_points counts the M + 1 grid times on [0, t_max]; give at least 2 (one "
                "interval)")
        self.t_max = checks.positive("t_max", t_max, fix="give the end of the time span the layer "
                                                         "sees (the grid covers [0, t_max]), "
                                                         "such as 1.0")
        self.momentum = check_momentum(momentum)
        self.eps, self.affine = check_eps_affine(eps, affine)
        self.outside = checks.choice("outside", outside, OUTSIDE,
                                     fix="'clamp' uses the end point, 'error' raises outside "
                                         "[0, t_max]")
        self.spacing = self.t_max / (self.num_points - 1)
        kw = {"device": device, "dtype": dtype}
        shape = (self.num_points, self.num_features)
        self.register_buffer("running_mean", torch.zeros(shape, **kw))
        self.register_buffer("running_var", torch.ones(shape, **kw))
        if self.affine:
            self.weight = nn.Parameter(torch.ones(shape, **kw))
            self.bias = nn.Parameter(torch.zeros(shape, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        # scratch: the last mini-batch's mean and unbiased variance (not saved)
        self.register_buffer("_batch_mean", torch.zeros(self.num_features, **kw),
                             persistent=False)
        self.register_buffer("_batch_var", torch.ones(self.num_features, **kw), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Refuse tables saved on another grid (torch would say only "size mismatch")."""
        rows = state_dict.get(prefix + "running_mean")
        if isinstance(rows, torch.Tensor) and rows.ndim == 2 and rows.shape[0] != self.num_points:
            raise ValueError(
                f"the TA-BN tables {prefix}running_mean/... have {rows.shape[0]} grid points, this "
                f"layer has num_points={self.num_points}; build the layer (or the field) with "
                f"num_points={rows.shape[0]}, the grid the weights were trained on")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def grid(self) -> torch.Tensor:
        """The grid times, shape (num_points,)."""
        return torch.linspace(0.0, self.t_max, self.num_points, dtype=torch.float64)

    def _interpolation_weights(self, t) -> tuple[int, float, float]:
        """``(l, w_lower, w_upper)`` of the interpolation :meth:`forward` uses at scalar time t
        (read from that very :class:`~dynfit.nn._grid.Interp`, for the tests).

        ``t`` lies in ``[t_l, t_{l+1}]``; ``w_lower = (t_{l+1} - t) / D`` weights grid point
        ``l`` and ``w_upper = (t - t_l) / D`` weights ``l + 1`` (the paper's formula). At a grid
        point (to the round-off of t's dtype) the upper weight is exactly 0. Times outside
        ``[0, t_max]`` follow ``self.outside``: ``"clamp"`` uses the end point, ``"error"``
        raises ValueError.
        """
        ip = self._interpolation(t, self.running_mean)
        return ip.lower, ip.w_lower, ip.w_upper

    def _interpolation(self, t, like: torch.Tensor) -> Interp:
        """The interpolation at scalar time t for tables of ``like``'s dtype and device."""
        return interpolation(t, self.t_max, self.num_points, self.outside, self.momentum,
                             like.dtype, like.device)

    def same_grid(self, other: nn.Module) -> bool:
        """Whether ``other`` is a TA-BN layer whose tables can be read beside this one's: the
        same grid, momentum, eps, affine flag, dtype and device."""
        def key(m):
            return (m.num_points, m.t_max, m.outside, m.momentum, m.eps, m.affine,
                    m.running_mean.dtype, m.running_mean.device)

        return isinstance(other, _TABatchNorm) and key(self) == key(other)

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` at time ``t``; x is (B, F) for 1d, (B, C, H, W) for 2d.

        t: a scalar (0-d or one-element tensor, or a number) shared by the batch, or in eval
        mode per-example times of shape (B,) or (B, 1).
        """
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            return self._forward_per_example(t, x)
        ip = self._interpolation(t, x)
        check_x(self, x, self._ndim, self.num_features)
        weight, bias = (ip(self.weight), ip(self.bias)) if self.affine else (None, None)
        if not self.training:
            return F.batch_norm(x, ip(self.running_mean), ip(self.running_var), weight, bias,
                                False, 0.0, self.eps)
        check_batch(self, x)  # (F.batch_norm's own check, so torch.batch_norm is called directly)
        cudnn = torch.backends.cudnn.enabled
        if not self._updating():
            return torch.batch_norm(x, weight, bias, None, None, True, 1.0, self.eps, cudnn)
        # with momentum 1 the fused kernel writes the batch mean and unbiased
        # variance into the scratch buffers; then both neighbours move
        mean, var = self._batch_mean, self._batch_var
        out = torch.batch_norm(x, weight, bias, mean, var, True, 1.0, self.eps, cudnn)
        ip.update(self.running_mean, self.running_var, mean, var)
        return out

    def _forward_per_example(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Eval mode with one time per example (e.g. odesolve's per-example steps)."""
        check_x(self, x, self._ndim, self.num_features)
        b = x.shape[0]
        if t.numel() != b or t.dim() > 2 or (t.dim() == 2 and t.shape[1] != 1):
            raise ValueError(
                f"time t must be a scalar (0-d or one-element tensor) or per-example times of "
                f"shape ({b},) or ({b}, 1) for a batch of {b}, got shape {tuple(t.shape)}"
            )
        tv = t.detach().reshape(b).to(torch.float64)
        if torch.isnan(tv).any():
            raise ValueError("time t contains NaN; the solver produced an invalid time "
                             "(check the time span and step size)")
        if bool((tv == tv[0]).all()):  # one shared time after all
            return self.forward(t.detach().reshape(-1)[0], x)
        if self.training:
            raise ValueError(
                f"{type(self).__name__} in training mode needs one time shared by the batch (its "
                "mini-batch statistics belong to one time), got per-example times; use fixed "
                "steps, MixedNorm(per_example=False) or PaperRule(shared=True) for training, or "
                "eval mode"
            )
        tol = 1e-9 * self.t_max
        if self.outside == "error" and bool(((tv < -tol) | (tv > self.t_max + tol)).any()):
            bad = tv[(tv < -tol) | (tv > self.t_max + tol)][0].item()
            raise ValueError(
                f"time t={bad!r} lies outside the TA-BN grid [0, {self.t_max}]; "
                f"integrate within [0, t_max], raise t_max, or use outside='clamp'"
            )
        s = tv.clamp(0.0, self.t_max) / self.spacing
        lower = s.floor().clamp(max=self.num_points - 2).long().to(x.device)
        w_upper = (s - s.floor().clamp(max=self.num_points - 2)).to(dtype=x.dtype,
                                                                     device=x.device)
        w_upper = w_upper.unsqueeze(1)
        shape = (b, self.num_features) + (1,) * (x.dim() - 2)

        def interp(table):
            return torch.lerp(table[lower], table[lower + 1],
                              w_upper.to(table.dtype)).view(shape)

        out = (x - interp(self.running_mean)) * torch.rsqrt(interp(self.running_var) + self.eps)
        if self.affine:
            out = out * interp(self.weight) + interp(self.bias)
        return out

    def penalty(self) -> torch.Tensor:
        """L2 penalty ``sum ||gamma - 1||^2 + ||alpha||^2`` on the grid parameters (0 if not
        affine)."""
        if not self.affine:
            return self.running_mean.new_zeros(())
        return (self.weight - 1.0).pow(2).sum() + self.bias.pow(2).sum()

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, num_points={self.num_points}, t_max={self.t_max}, "
            f"momentum={self.momentum}, eps={self.eps}, affine={self.affine}, "
            f"outside={self.outside!r}"
        )


class TABatchNorm1d(_TABatchNorm):
    """TA-BN for feature vectors: ``layer(t, x)`` with x of shape (batch, num_features).

    Buffers ``running_mean`` and ``running_var`` and parameters ``weight`` (gamma, init 1) and
    ``bias`` (alpha, init 0) have shape (num_points, num_features), one row per grid time
    ``m * t_max / (num_points - 1)``.
    """

    _ndim = 2


class TABatchNorm2d(_TABatchNorm):
    """TA-BN for image channels: ``layer(t, x)`` with x of shape (B, C, H, W); statistics per
    channel."""

    _ndim = 4
