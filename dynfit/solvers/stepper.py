"""One generic explicit Runge-Kutta step for every tableau, on a batch of examples.

Shapes: y (B, D); per-example mode: t (B,) and h (B, 1) signed step sizes, the
field then receives t as a (B, 1) tensor; shared mode: t a 0-dim tensor and h a
Python float, the field receives a 0-dim t.
"""
from __future__ import annotations

from typing import Callable

import torch

from .tableau import TorchTableau

__all__ = ["FieldCounter", "rk_step"]


class FieldCounter:
    """Wraps field(t, y) and counts batched calls (and calls recorded by autograd)."""

    def __init__(self, field: Callable):
        self.field = field
        self.calls = 0
        self.graph_calls = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.field(t, y)
        self.calls += 1
        if f.requires_grad:
            self.graph_calls += 1
        if not isinstance(f, torch.Tensor) or f.shape != y.shape:
            got = f"shape {tuple(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"field(t, y) must return a tensor shaped like y {tuple(y.shape)}, got {got}")
        return f


def _combo(terms, ks):
    acc = None
    for j, w in terms:
        acc = ks[j] * w if acc is None else acc.add(ks[j], alpha=w)
    return acc


def _advance(y, h, acc):
    if isinstance(h, torch.Tensor):
        return torch.addcmul(y, h, acc)
    return y.add(acc, alpha=h)


def rk_step(field: FieldCounter, t, h, y: torch.Tensor, k1: torch.Tensor | None, tab: TorchTableau, with_error: bool = True):
    """One step of ``tab`` from (t, y) with step h.

    Returns (y_high (B, D), err (B, D) = y_high - y_low (detached) or None, k_last, k1):
    k_last is f at the last stage (f(t + h, y_high) for an FSAL tableau).
    """
    per_example = isinstance(h, torch.Tensor)
    tcol = t.unsqueeze(1) if per_example else t
    if k1 is None:
        k1 = field(tcol, y)
    ks = [k1]
    y_high = None
    for i in range(1, tab.stages):
        yi = _advance(y, h, _combo(tab.rows[i], ks))
        ti = tcol + tab.c[i] * h
        ks.append(field(ti, yi))
        if tab.fsal and i == tab.stages - 1:
            y_high = yi
    if y_high is None:
        y_high = _advance(y, h, _combo(tab.b, ks))
    err = None
    if with_error and tab.e:
        with torch.no_grad():  # error estimates only steer step sizes: keep them out of the graph
            err = _combo(tab.e, [k.detach() for k in ks]) * h
    return y_high, err, ks[-1], k1
