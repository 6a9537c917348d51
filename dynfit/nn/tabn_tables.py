"""A field's TA-BN layers read side by side: one interpolation per field call.

:func:`share_tables` groups TA-BN layers on one grid (:class:`TABNTables`); ``tables.at(t)``
concatenates the layers' (P, F) tables and interpolates all of them in one product, then
``norm(i, h)`` normalises the input of layer i and ``norm.finish()`` moves the running statistics
of every layer (training mode). The layers own their tables (plain parameters and buffers, their
usual state_dict keys); the group only reads them. :class:`EachLayer` has the same interface and
calls the layers one by one (other norms, or layers in different modes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._grid import Interp
from ._norm_checks import check_batch, check_x
from .calls import direct
from .running_stats import statistics_frozen
from .tabn import _TABatchNorm

__all__ = ["TABNTables", "EachLayer", "share_tables"]


class TABNTables:
    """TA-BN layers on one grid whose tables a field interpolates together (not a module: the
    layers stay registered where they are, and the group holds no tensors of its own)."""

    __slots__ = ("layers", "sizes")

    def __init__(self, layers) -> None:
        self.layers = tuple(layers)
        self.sizes = [m.num_features for m in self.layers]

    def at(self, t):
        """The layers' call at time t (one shared time; per-example times go layer by layer)."""
        layers = self.layers
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            return EachLayer(layers, t)
        first = layers[0]
        training, frozen = first.training, first._stats_frozen
        for m in layers:
            if m.training != training or bool(m._stats_frozen) != bool(frozen):
                return EachLayer(layers, t)  # layers in different modes: each its own way
        ip = first._interpolation(t, first.running_mean)
        sizes = self.sizes + self.sizes
        affine = None
        if first.affine:
            table = torch.cat([m.weight for m in layers] + [m.bias for m in layers], dim=1)
            affine = ip(table).split(sizes)
        if not training:
            running = torch.cat([m.running_mean for m in layers]
                                + [m.running_var for m in layers], dim=1)
            return _TAPass(layers, ip, affine, ip(running).split(sizes), False)
        return _TAPass(layers, ip, affine, None, not (frozen or statistics_frozen()))

    def __repr__(self) -> str:
        return f"TABNTables({len(self.sizes)} layers, {sum(self.sizes)} features)"


class _TAPass:
    """TA-BN layers read side by side, called at one time: ``norm(i, h)``, then
    ``norm.finish()``."""

    __slots__ = ("layers", "ip", "affine", "stats", "update", "n")

    def __init__(self, layers, ip: Interp, affine, stats, update: bool) -> None:
        self.layers, self.ip, self.affine, self.stats = layers, ip, affine, stats
        self.update = update
        self.n = len(layers)

    def __call__(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer, n = self.layers[i], self.n
        check_x(layer, x, layer._ndim, layer.num_features)
        weight, bias = ((self.affine[i], self.affine[n + i]) if self.affine is not None
                        else (None, None))
        if self.stats is not None:  # eval: the interpolated running statistics
            return F.batch_norm(x, self.stats[i], self.stats[n + i], weight, bias, False, 0.0,
                                layer.eps)
        check_batch(layer, x)
        cudnn = torch.backends.cudnn.enabled
        if not self.update:  # training, statistics frozen
            return torch.batch_norm(x, weight, bias, None, None, True, 1.0, layer.eps, cudnn)
        # momentum 1: the kernel writes the batch mean and unbiased variance into the scratch
        return torch.batch_norm(x, weight, bias, layer._batch_mean, layer._batch_var, True, 1.0,
                                layer.eps, cudnn)

    def finish(self) -> None:
        """Move every layer's running statistics towards its batch's (training mode; after all
        layers ran)."""
        if self.update:
            for m in self.layers:
                self.ip.update(m.running_mean, m.running_var, m._batch_mean, m._batch_var)


class EachLayer:
    """Norm layers called one by one at time t, with the interface of a shared call:
    ``norm(i, h) = layers[i](t, h)``; ``finish()`` does nothing."""

    __slots__ = ("layers", "t")

    def __init__(self, layers, t) -> None:
        self.layers, self.t = layers, t

    def __call__(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return direct(self.layers[i])(self.t, x)

    def finish(self) -> None:
        pass


def share_tables(layers) -> TABNTables | None:
    """Group ``layers`` (TA-BN layers, 1d or 2d, on one grid: num_points, t_max, outside,
    momentum, eps, affine flag, dtype and device) so that a field interpolates their tables in
    one product per call through ``tables.at(t)``; None if they cannot be grouped."""
    layers = list(layers)
    if not layers or not isinstance(layers[0], _TABatchNorm):
        return None
    if not all(layers[0].same_grid(m) for m in layers):
        return None
    return TABNTables(layers)
