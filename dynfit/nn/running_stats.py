"""When norm layers update their running statistics: :func:`frozen_statistics`,
:func:`statistics_frozen`, and :class:`StatsNorm`, the base of layers that keep them.

Running statistics change only in training mode, never inside an autograd backward pass (so
the backward solve of ``torchdiffeq.odeint_adjoint``, which calls the field again, leaves them
alone) and never inside :func:`frozen_statistics`.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
from torch import nn

__all__ = ["frozen_statistics"]

_state = threading.local()


def _global_frozen_depth() -> int:
    return getattr(_state, "depth", 0)


def _in_autograd_backward() -> bool:
    """True while the autograd engine runs a backward pass (e.g. an adjoint solve).

    torch has no public query for this; without the private one, only frozen_statistics freezes.
    """
    task = getattr(torch._C, "_current_graph_task_id", None)
    return task is not None and task() != -1


def statistics_frozen(module: nn.Module | None = None) -> bool:
    """Whether running statistics are frozen now (globally, or for ``module``)."""
    if _global_frozen_depth() > 0 or _in_autograd_backward():
        return True
    return bool(module is not None and getattr(module, "_stats_frozen", 0))


@contextlib.contextmanager
def frozen_statistics(module: nn.Module | None = None) -> Iterator[None]:
    """Context in which no norm layer updates its running statistics.

    With ``module`` only the norm layers inside it are frozen; without, all layers are
    (thread-local). Normalisation itself is unchanged: in training mode the layers still
    normalise with mini-batch statistics. Use it around a backward solve that calls the vector
    field again.
    """
    if module is None:
        _state.depth = _global_frozen_depth() + 1
        try:
            yield
        finally:
            _state.depth -= 1
        return
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"frozen_statistics expects an nn.Module or None, got {type(module).__name__}"
        )
    layers = [m for m in module.modules() if isinstance(m, StatsNorm)]
    for m in layers:
        m._stats_frozen += 1
    try:
        yield
    finally:
        for m in layers:
            m._stats_frozen -= 1


class StatsNorm(nn.Module):
    """Base of the norm layers that keep running statistics (a freeze counter)."""

    def __init__(self) -> None:
        super().__init__()
        self._stats_frozen = 0

    def _updating(self) -> bool:
        return self.training and not statistics_frozen(self)
