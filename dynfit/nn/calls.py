"""Calling a field's own layers without ``nn.Module.__call__`` where that changes nothing.

A field call at a small batch is a few small ops, and each ``layer(x)`` adds
Python work of its own (``_wrapped_call_impl`` -> ``_call_impl`` -> the hook
checks) about as long as the layer's arithmetic. When nothing could observe
the call - no hooks on the layer, no global module hooks, the layer not
compiled with ``Module.compile``, no ``torch.jit.trace`` running - that work
ends by calling ``layer.forward`` anyway, so a field may call it directly.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.modules import module as _module

__all__ = ["direct"]

_NAMES = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
          "_global_backward_pre_hooks", "_global_forward_hooks_always_called")
_GF, _GFP, _GB, _GBP, _GFA = (getattr(_module, name, None) for name in _NAMES)
_KNOWN = all(g is not None for g in (_GF, _GFP, _GB, _GBP, _GFA))  # else: always the module call
_tracing = torch._C._get_tracing_state


def direct(layer: nn.Module) -> Callable:
    """``layer.forward`` when calling ``layer`` would only call it, else ``layer`` itself."""
    d = layer.__dict__
    if (not _KNOWN or _GF or _GFP or _GB or _GBP or _GFA or d.get("_forward_hooks", 1)
            or d.get("_forward_pre_hooks", 1) or d.get("_backward_hooks", 1) or d.get("_backward_pre_hooks", 1)
            or d.get("_compiled_call_impl") is not None or _tracing() is not None):
        return layer
    return layer.forward
