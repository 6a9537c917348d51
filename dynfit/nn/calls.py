"""How a field calls its own layers: ``layer(x)`` (``nn.Module.__call__``) by default, or, inside
:func:`direct_calls`, ``layer.forward(x)`` when nothing could observe the call.

A field call at a small batch is a few small ops, and ``Module.__call__`` adds Python work of its
own (hook dispatch) about as long as a small layer's arithmetic. Knowing that nothing observes a
call - no hooks on the layer, no global module hooks, the layer not compiled with
``Module.compile``, no ``torch.jit.trace`` running - means reading torch's private hook
registries, so it is done only inside ``direct_calls()``; outside it every layer is called the
plain way. Both paths give the same numbers to the bit.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Callable, Iterator

import torch
from torch import nn

from systems import checks

__all__ = ["direct", "direct_calls", "direct_calls_enabled"]

_DIRECT = contextvars.ContextVar("dynfit_direct_calls", default=False)
_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
          "_global_backward_pre_hooks", "_global_forward_hooks_always_called")


@contextlib.contextmanager
def direct_calls(enabled: bool = True) -> Iterator[None]:
    """Context in which fields call their layers' ``forward`` directly when nothing observes them.

    ``enabled=False`` restores plain module calls inside an enabled block. The switch is per
    thread and per asyncio task (a context variable).
    """
    enabled = checks.boolean("enabled", enabled,
                             fix="pass direct_calls(True) or direct_calls(False)")
    token = _DIRECT.set(enabled)
    try:
        yield
    finally:
        _DIRECT.reset(token)


def direct_calls_enabled() -> bool:
    """Whether fields call their layers directly here (inside ``direct_calls()``)."""
    return _DIRECT.get()


@functools.cache
def _global_hooks() -> tuple | None:
    """torch's global module hook registries (private); None if this torch lacks one of them."""
    from torch.nn.modules import module

    found = tuple(getattr(module, name, None) for name in _HOOKS)
    return None if any(g is None for g in found) else found


def direct(layer: nn.Module) -> Callable:
    """What a field calls for ``layer``: ``layer`` itself, or inside :func:`direct_calls`
    ``layer.forward`` when calling ``layer`` would only call it."""
    if not _DIRECT.get():
        return layer
    hooks = _global_hooks()
    if hooks is None or hooks[0] or hooks[1] or hooks[2] or hooks[3] or hooks[4]:
        return layer
    d = layer.__dict__
    if (d.get("_forward_hooks", 1) or d.get("_forward_pre_hooks", 1) or d.get("_backward_hooks", 1)
            or d.get("_backward_pre_hooks", 1) or d.get("_compiled_call_impl") is not None
            or torch.jit.is_tracing()):
        return layer
    return layer.forward
