"""Norm layers by name: :data:`NORM_KINDS`, :func:`make_norm`, :func:`norm_penalty`.

The layers live in :mod:`dynfit.nn.tabn` (TA-BN), :mod:`dynfit.nn.baseline_norms` (the norms it
is compared with), :mod:`dynfit.nn.tabn_tables` (a field's TA-BN layers read side by side) and
:mod:`dynfit.nn.running_stats` (freezing running statistics); their names are importable from
here too, as before the split.
"""
from __future__ import annotations

import torch
from torch import nn

from systems import checks

# the layers, frozen_statistics, statistics_frozen, share_tables, TABNTables and EachLayer are
# importable from here too, as before the split
from .baseline_norms import (  # noqa: F401
    MiniBatchNorm1d, MiniBatchNorm2d, NoNorm, PopBatchNorm1d, PopBatchNorm2d)
from .running_stats import frozen_statistics, statistics_frozen  # noqa: F401
from .tabn import TABatchNorm1d, TABatchNorm2d, _TABatchNorm
from .tabn_tables import EachLayer, TABNTables, share_tables  # noqa: F401

__all__ = ["NORM_KINDS", "make_norm", "norm_penalty"]

NORM_KINDS = ("none", "bn", "minibatch", "tabn")


def make_norm(kind: str | None, num_features: int, *, dims: int = 1, num_points: int = 101,
              t_max: float = 1.0, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True,
              outside: str = "clamp", device=None, dtype=None) -> nn.Module:
    """Build the norm layer named ``kind`` (one of NORM_KINDS or None), called as ``layer(t, x)``.

    ``dims=1`` for (batch, features), ``dims=2`` for (B, C, H, W). ``num_points``, ``t_max`` and
    ``outside`` matter only for ``"tabn"``.
    """
    key = "none" if kind is None else kind
    key = checks.choice("norm", key.lower() if isinstance(key, str) else key, NORM_KINDS,
                        fix="pass one of these names (any case), or None for no normalisation")
    checks.integer("dims", dims, minimum=1, maximum=2,
                   fix="pass 1 for (batch, features) or 2 for image channels (B, C, H, W)")
    kw = {"device": device, "dtype": dtype}
    if key == "none":
        return NoNorm()
    if key == "bn":
        cls = PopBatchNorm1d if dims == 1 else PopBatchNorm2d
        return cls(num_features, momentum=momentum, eps=eps, affine=affine, **kw)
    if key == "minibatch":
        cls = MiniBatchNorm1d if dims == 1 else MiniBatchNorm2d
        return cls(num_features, eps=eps, affine=affine, **kw)
    cls = TABatchNorm1d if dims == 1 else TABatchNorm2d
    return cls(num_features, num_points=num_points, t_max=t_max, momentum=momentum, eps=eps,
               affine=affine, outside=outside, **kw)


def norm_penalty(module: nn.Module) -> torch.Tensor:
    """Sum of the L2 penalties of all TA-BN layers inside ``module`` (0 if none)."""
    terms = [m.penalty() for m in module.modules() if isinstance(m, _TABatchNorm)]
    if not terms:
        p = next(module.parameters(), None)
        return torch.zeros((), dtype=p.dtype if p is not None else None,
                           device=p.device if p is not None else None)
    return torch.stack([term.to(terms[0].dtype) for term in terms]).sum()
