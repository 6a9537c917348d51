"""One generic explicit Runge-Kutta step for every tableau, on a batch of examples.

Shapes: y (B, D); per-example mode: t (B,) and h (B, 1) signed step sizes, the
field then receives t as a (B, 1) tensor; shared mode: t a 0-dim tensor and h a
Python float, the field receives a 0-dim t.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch

from .tableau import TorchTableau


class FieldCounter:
    """Wraps field(t, y); counts batched calls, and the vector-Jacobian products that
    backward passes run through the calls recorded by autograd (via tensor hooks)."""

    def __init__(self, field: Callable):
        self.field = field
        self.calls = 0
        self.backward_calls = 0

    def _on_backward(self, grad):
        self.backward_calls += 1

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.field(t, y)
        self.calls += 1
        if not isinstance(f, torch.Tensor) or f.shape != y.shape:
            got = f"shape {tuple(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"field(t, y) must return a tensor shaped like y {tuple(y.shape)}, "
                             f"got {got}")
        if f.requires_grad:
            f.register_hook(self._on_backward)
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


def rk_step(field: FieldCounter, t, h, y: torch.Tensor, k1: torch.Tensor | None, tab: TorchTableau,
            with_error: bool = True):
    """One step of ``tab`` from (t, y) with step h (k1 = f(t, y) if already known).

    h: a Python float or 0-dim tensor (shared time t, 0-dim) or a (B, 1) tensor
    (per-example t (B,)).
    Returns (y_high (B, D), err (B, D) = y_high - y_low, detached, or None, ks): ks is
    the list of stage derivatives; for an FSAL tableau ks[-1] = f(t + h, y_high).
    """
    tcol = t.unsqueeze(1) if isinstance(h, torch.Tensor) and h.ndim == 2 else t
    if k1 is None:
        k1 = field(tcol, y)
    ks = [k1]
    y_high = None
    for i in range(1, tab.stages):
        yi = _advance(y, h, _combo(tab.rows[i], ks))
        ks.append(field(tcol + tab.c[i] * h, yi))
        if tab.fsal and i == tab.stages - 1:
            y_high = yi
    if y_high is None:
        y_high = _advance(y, h, _combo(tab.b, ks))
    err = None
    if with_error and tab.e:
        with torch.no_grad():  # error estimates only steer step sizes: keep them out of the graph
            err = _combo(tab.e, [k.detach() for k in ks]) * h
    return y_high, err, ks


@lru_cache(maxsize=64)
def _weights(tab: TorchTableau, dtype: torch.dtype, device: torch.device):
    """Dense tensors of a tableau on one dtype/device: per-stage rows (i,), the (4, S) dense
    matrix and the nodes (S,)."""
    rows = []
    for i, terms in enumerate(tab.rows):
        w = torch.zeros(i, dtype=dtype, device=device)
        for j, v in terms:
            w[j] = v
        rows.append(w)
    dense = torch.tensor(tab.dense, dtype=dtype, device=device) if tab.dense else None
    c = torch.tensor(tab.c, dtype=dtype, device=device)
    return rows, dense, c


def rk_stages(field: FieldCounter, times, hs: torch.Tensor, y: torch.Tensor, k1: torch.Tensor,
              tab: TorchTableau, fused: bool = False):
    """The stages of one step of an FSAL tableau: returns (y_high, ks), ks[-1] = f(t + h, y_high).

    times: the S stage times (0-dim, or (B, 1) per example); hs: signed step, 0-dim or (B, 1).
    fused=True forms each stage sum as one contraction over the stacked stages (fewer kernels:
    wins on a GPU); False adds the nonzero terms one by one (fewer dispatches: wins on a CPU
    at small batches, measured in benchmarks/bench_solvers.py).
    """
    ks = [k1]
    rows = _weights(tab, y.dtype, y.device)[0] if fused else None
    yi = y
    for i in range(1, tab.stages):
        terms = tab.rows[i]
        if len(terms) == 1:
            j, a = terms[0]
            yi = torch.addcmul(y, hs, ks[j], value=a)
        elif fused:
            yi = torch.addcmul(y, hs, torch.tensordot(rows[i], torch.stack(ks), 1))
        else:
            yi = torch.addcmul(y, hs, _combo(terms, ks))
        ks.append(field(times[i], yi))
    return yi, ks
