"""Normalisation layers for vector fields, each called as ``layer(t, x)``.

- :class:`TABatchNorm1d` / :class:`TABatchNorm2d`: temporal adaptive batch
  normalisation (TA-BN, Zheng et al., NeurIPS 2024). Running statistics and
  affine parameters live on a uniform grid of ``num_points`` times on
  ``[0, t_max]`` and are linearly interpolated at the solver's time ``t``.
- :class:`PopBatchNorm1d` / :class:`PopBatchNorm2d`: plain BatchNorm whose
  population statistics pool every visited time ("Pop-TI" in the paper).
- :class:`MiniBatchNorm1d` / :class:`MiniBatchNorm2d`: BatchNorm that always
  uses the mini-batch statistics (no running statistics, fails at batch 1).
- :class:`NoNorm`: the identity.

:func:`share_tables` stores the tables of several TA-BN layers side by side
(:class:`TABNTables`), so that a field interpolates all of them in one product
per call; the fields in :mod:`dynfit.nn.fields` do this, and the layers keep
their own interface and state_dict keys.

Running statistics change only in training mode, never inside an autograd
backward pass (so the backward solve of ``torchdiffeq.odeint_adjoint``, which
calls the field again, leaves them alone) and never inside
:func:`frozen_statistics`.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import threading
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from systems import checks

from .calls import direct

__all__ = [
    "TABatchNorm1d",
    "TABatchNorm2d",
    "PopBatchNorm1d",
    "PopBatchNorm2d",
    "MiniBatchNorm1d",
    "MiniBatchNorm2d",
    "NoNorm",
    "NORM_KINDS",
    "make_norm",
    "frozen_statistics",
    "statistics_frozen",
    "norm_penalty",
    "share_tables",
    "TABNTables",
]

NORM_KINDS = ("none", "bn", "minibatch", "tabn")
_OUTSIDE = ("clamp", "error")

_state = threading.local()


def _global_frozen_depth() -> int:
    return getattr(_state, "depth", 0)


def _in_autograd_backward() -> bool:
    """True while the autograd engine runs a backward pass (e.g. an adjoint solve)."""
    try:
        return torch._C._current_graph_task_id() != -1
    except AttributeError:  # very old torch: rely on frozen_statistics only
        return False


def statistics_frozen(module: nn.Module | None = None) -> bool:
    """Whether running statistics are frozen now (globally, or for ``module``)."""
    if _global_frozen_depth() > 0 or _in_autograd_backward():
        return True
    return bool(module is not None and getattr(module, "_stats_frozen", 0))


@contextlib.contextmanager
def frozen_statistics(module: nn.Module | None = None) -> Iterator[None]:
    """Context in which no norm layer updates its running statistics.

    With ``module`` only the norm layers inside it are frozen; without, all
    layers are (thread-local). Normalisation itself is unchanged: in training
    mode the layers still normalise with mini-batch statistics. Use it around
    a backward solve that calls the vector field again.
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
    layers = [m for m in module.modules() if isinstance(m, _StatsNorm)]
    for m in layers:
        m._stats_frozen += 1
    try:
        yield
    finally:
        for m in layers:
            m._stats_frozen -= 1


def _check_momentum(momentum) -> float:
    """The running statistics' momentum, in (0, 1]."""
    return checks.real("momentum", momentum, above=0.0, maximum=1.0,
                       fix="momentum is the weight of the newest batch in the running statistics; "
                           "give a number in (0, 1], such as 0.1")


def _check_eps_affine(eps, affine) -> tuple[float, bool]:
    """eps > 0 and the affine flag every BatchNorm-like layer takes."""
    eps = checks.positive("eps", eps, fix="eps keeps the variance away from zero; give a small number such as 1e-5")
    return eps, checks.boolean("affine", affine, fix="pass affine=True or affine=False")


def _check_x(layer: nn.Module, x: torch.Tensor, ndim: int, num_features: int, dtype=None) -> None:
    """x is a non-empty (B, F) or (B, F, H, W) tensor of the layer's dtype (``dtype``, else its running_mean's)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{type(layer).__name__} expects x as a torch.Tensor, got {type(x).__name__}")
    shape = "(batch, num_features)" if ndim == 2 else "(batch, channels, height, width)"
    if x.dim() != ndim or x.shape[1] != num_features:
        raise ValueError(
            f"{type(layer).__name__}({num_features}) expects x of shape {shape} with "
            f"{num_features} features, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{type(layer).__name__} got an empty batch (shape {tuple(x.shape)}); pass at least "
                         "one example")
    if dtype is None:
        ref = getattr(layer, "running_mean", None)
        dtype = None if ref is None else ref.dtype
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{type(layer).__name__} holds {dtype} parameters but x is {x.dtype}; convert "
                        f"one of them: layer.to({x.dtype}) or x.to({dtype})")


def _check_batch(layer: nn.Module, x: torch.Tensor) -> None:
    n = x.shape[0] * math.prod(x.shape[2:])
    if n < 2:
        raise ValueError(
            f"{type(layer).__name__} needs more than one value per feature to use mini-batch "
            f"statistics, got x of shape {tuple(x.shape)}; use a batch of at least 2 or eval mode"
        )


_EPS = {dt: torch.finfo(dt).eps for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16)}


def _time_value(t) -> tuple[float, float]:
    """The float value of a scalar time (0-d or one-element tensor, or a real number) and its precision."""
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(
                f"time t must be a scalar (0-d or one-element tensor), got shape {tuple(t.shape)}; "
                "interpolation weights need one time (per-example times (B,) or (B, 1) work in eval mode)"
            )
        if t.is_complex():
            raise TypeError(f"time t must be real, got dtype {t.dtype}")
        value = t.item()
        precision = _EPS.get(t.dtype)
        if precision is None:
            precision = torch.finfo(t.dtype).eps if t.dtype.is_floating_point else 0.0
    elif isinstance(t, numbers.Real) and not isinstance(t, bool):
        value = float(t)
        precision = _EPS[torch.float64]
    else:
        raise TypeError(f"time t must be a scalar tensor or a real number, got {type(t).__name__}")
    if math.isnan(value):
        raise ValueError("time t is NaN; the solver produced an invalid time (check the time span and step size)")
    return value, precision


_INTERP_CACHE: dict = {}  # (t, precision, grid, momentum, dtype, device) -> _Interp


class _Interp:
    """Linear interpolation between grid rows at one time, as tensors built once per time
    (see ``_TABatchNorm._interpolation``).

    ``ip(table)`` interpolates a (P, F) table to (F,) as one product (1, P) @ (P, F) with the
    two weights in a row of zeros: one autograd node, whose backward writes the table's
    gradient directly (no slice, transpose and scatter nodes). At a grid point (a fixed-step
    solver whose stage times fall on the grid) it is the row itself. ``ip.update(table, batch)``
    moves the rows towards ``batch``: row_i <- row_i + eta w_i (batch - row_i), w_i the
    row's weight; at a grid point only that row moves.
    """

    __slots__ = ("lower", "row", "coef", "eta", "eta_w")

    def __init__(self, lower: int, w_lower: float, w_upper: float, eta: float, num_points: int, dtype, device):
        self.lower, self.eta = lower, eta
        self.row = lower if w_upper == 0.0 else (lower + 1 if w_lower == 0.0 else None)
        values = [0.0] * (num_points + 2)  # one tensor: the weights on the grid, then eta times them
        values[lower], values[lower + 1], values[-2], values[-1] = w_lower, w_upper, eta * w_lower, eta * w_upper
        both = torch.tensor(values, dtype=dtype, device=device)
        self.coef = both[:num_points].unsqueeze(0)  # (1, P)
        self.eta_w = both[-2:].unsqueeze(1)  # (2, 1)

    def __call__(self, table: torch.Tensor) -> torch.Tensor:
        if self.row is not None:  # at a grid point: the row itself (a view; the same values, fewer ops)
            return table[self.row]
        return torch.mm(self.coef, table).view(-1)

    def update(self, table: torch.Tensor, batch: torch.Tensor) -> None:
        if self.row is not None:  # weight 1 on this row
            table[self.row].lerp_(batch, self.eta)
        else:
            table.narrow(0, self.lower, 2).lerp_(batch, self.eta_w)

    def update_both(self, mean: torch.Tensor, var: torch.Tensor, batch_mean: torch.Tensor,
                    batch_var: torch.Tensor) -> None:
        """``update`` of the running mean and variance tables, in one call."""
        if self.row is not None:
            mean[self.row].lerp_(batch_mean, self.eta)
            var[self.row].lerp_(batch_var, self.eta)
        else:
            lo, w = self.lower, self.eta_w
            mean.narrow(0, lo, 2).lerp_(batch_mean, w)
            var.narrow(0, lo, 2).lerp_(batch_var, w)


class _StatsNorm(nn.Module):
    """Base of the layers that keep running statistics (freeze counter)."""

    def __init__(self) -> None:
        super().__init__()
        self._stats_frozen = 0

    def _updating(self) -> bool:
        return self.training and not statistics_frozen(self)


class _TABatchNorm(_StatsNorm):
    _ndim = 2

    def __init__(
        self,
        num_features: int,
        *,
        num_points: int = 101,
        t_max: float = 1.0,
        momentum: float = 0.1,
        eps: float = 1e-5,
        affine: bool = True,
        outside: str = "clamp",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.num_features = checks.integer("num_features", num_features, minimum=1)
        # num_points = M + 1 grid points; M >= 1 intervals needed
        self.num_points = checks.integer(
            "num_points", num_points, minimum=2,
            fix="num_points counts the M + 1 grid times on [0, t_max]; give at least 2 (one interval)")
        self.t_max = checks.positive("t_max", t_max, fix="give the end of the time span the layer sees "
                                                         "(the grid covers [0, t_max]), such as 1.0")
        self.momentum = _check_momentum(momentum)
        self.eps, self.affine = _check_eps_affine(eps, affine)
        self.outside = checks.choice("outside", outside, _OUTSIDE,
                                     fix="'clamp' uses the end point, 'error' raises outside [0, t_max]")
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
        self.register_buffer("_batch_mean", torch.zeros(self.num_features, **kw), persistent=False)
        self.register_buffer("_batch_var", torch.ones(self.num_features, **kw), persistent=False)

    @property
    def grid(self) -> torch.Tensor:
        """The grid times, shape (num_points,)."""
        return torch.linspace(0.0, self.t_max, self.num_points, dtype=torch.float64)

    def interpolation_weights(self, t) -> tuple[int, float, float]:
        """Return ``(l, w_lower, w_upper)`` for time ``t``.

        ``t`` lies in ``[t_l, t_{l+1}]``; ``w_lower = (t_{l+1} - t) / D`` weights
        grid point ``l`` and ``w_upper = (t - t_l) / D`` weights ``l + 1``
        (the paper's formula). At a grid point (to the round-off of t's dtype)
        the upper weight is exactly 0.
        Times outside ``[0, t_max]`` follow ``self.outside``: ``"clamp"`` uses
        the end point, ``"error"`` raises ValueError.
        """
        return self._locate(*_time_value(t))

    def _locate(self, value: float, precision: float) -> tuple[int, float, float]:
        tol = max(1e-9, 4 * precision) * self.t_max
        if value < 0.0 or value > self.t_max:
            if self.outside == "error" and (value < -tol or value > self.t_max + tol):
                raise ValueError(
                    f"time t={value!r} lies outside the TA-BN grid [0, {self.t_max}]; "
                    f"integrate within [0, t_max], raise t_max, or use outside='clamp'"
                )
            value = min(max(value, 0.0), self.t_max)
        s = value / self.spacing
        nearest = round(s)
        # a time within its dtype's round-off of a grid point is that grid point
        if abs(s - nearest) <= 4 * precision * max(1.0, abs(s)):
            s = float(nearest)
        last = self.num_points - 2
        lower = min(int(math.floor(s)), last)
        w_upper = s - lower
        return lower, 1.0 - w_upper, w_upper

    def _interpolation(self, t, x: torch.Tensor) -> "_Interp":
        """The interpolation at time t for tensors like x, built once per time and grid and shared
        by all layers on that grid (the layers of a field share t; a solver revisits its times)."""
        value, precision = _time_value(t)
        key = (value, precision, self.t_max, self.num_points, self.outside, self.momentum, x.dtype, x.device)
        hit = _INTERP_CACHE.get(key)
        if hit is None:
            if len(_INTERP_CACHE) >= 4096:
                _INTERP_CACHE.clear()
            hit = _INTERP_CACHE[key] = _Interp(*self._locate(value, precision), self.momentum,
                                               self.num_points, x.dtype, x.device)
        return hit

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` at time ``t``; x is (B, F) for 1d, (B, C, H, W) for 2d.

        t: a scalar (0-d or one-element tensor, or a number) shared by the batch,
        or in eval mode per-example times of shape (B,) or (B, 1).
        """
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            return self._forward_per_example(t, x)
        ip = self._interpolation(t, x)
        _check_x(self, x, self._ndim, self.num_features)
        if not self.training:
            weight, bias = (ip(self.weight), ip(self.bias)) if self.affine else (None, None)
            return F.batch_norm(x, ip(self.running_mean), ip(self.running_var), weight, bias, False, 0.0, self.eps)
        _check_batch(self, x)  # (F.batch_norm's own batch-size check, so torch.batch_norm is called directly)
        weight, bias = (ip(self.weight), ip(self.bias)) if self.affine else (None, None)
        cudnn = torch.backends.cudnn.enabled
        if not self._updating():
            return torch.batch_norm(x, weight, bias, None, None, True, 1.0, self.eps, cudnn)
        # with momentum 1 the fused kernel writes the batch mean and unbiased
        # variance into the scratch buffers; then both neighbours move
        mean, var = self._batch_mean, self._batch_var
        out = torch.batch_norm(x, weight, bias, mean, var, True, 1.0, self.eps, cudnn)
        ip.update_both(self.running_mean, self.running_var, mean, var)
        return out

    def _forward_per_example(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Eval mode with one time per example (e.g. odesolve's per-example steps)."""
        _check_x(self, x, self._ndim, self.num_features)
        b = x.shape[0]
        if t.numel() != b or t.dim() > 2 or (t.dim() == 2 and t.shape[1] != 1):
            raise ValueError(
                f"time t must be a scalar (0-d or one-element tensor) or per-example times of shape "
                f"({b},) or ({b}, 1) for a batch of {b}, got shape {tuple(t.shape)}"
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
                "mini-batch statistics belong to one time), got per-example times; use fixed steps, "
                "MixedNorm(per_example=False) or PaperRule(shared=True) for training, or eval mode"
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
        w_upper = (s - s.floor().clamp(max=self.num_points - 2)).to(dtype=x.dtype, device=x.device)
        w_upper = w_upper.unsqueeze(1)
        shape = (b, self.num_features) + (1,) * (x.dim() - 2)

        def interp(table):
            return torch.lerp(table[lower], table[lower + 1], w_upper.to(table.dtype)).view(shape)

        out = (x - interp(self.running_mean)) * torch.rsqrt(interp(self.running_var) + self.eps)
        if self.affine:
            out = out * interp(self.weight) + interp(self.bias)
        return out

    # ------------------------------------------------------------ tables shared with other layers
    # After share_tables(layers) the four tables live in one TABNTables module, side by side with
    # the other layers' tables; layer.weight & co. are then (P, F) views of them, and the layer's
    # state_dict keys and values are those of a layer that owns its tables.

    def __getattr__(self, name: str):
        if name in _VIEWS:
            tables = self.__dict__.get("_tables")
            if tables is not None:
                return tables.view(self, name)
        return super().__getattr__(name)

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.__dict__.get("_tables") is None:
            return
        for name in _TABLES:
            value = getattr(self, name)
            if value is not None:  # a contiguous copy: saving a view would save the whole shared table
                destination[prefix + name] = value if keep_vars else value.detach().clone()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        if self.__dict__.get("_tables") is None:
            return super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                                 unexpected_keys, error_msgs)
        mine = {prefix + name: name for name in _TABLES if getattr(self, name) is not None}
        rest = {k: v for k, v in state_dict.items() if k not in mine}
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for key, name in mine.items():
            if key not in state_dict:
                if strict:
                    missing_keys.append(key)
                continue
            value, target = state_dict[key], getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.shape != target.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {got} from checkpoint, "
                                  f"the shape in current model is {tuple(target.shape)}.")
                continue
            with torch.no_grad():
                target.copy_(value)

    def penalty(self) -> torch.Tensor:
        """L2 penalty ``sum ||gamma - 1||^2 + ||alpha||^2`` on the grid parameters (0 if not affine)."""
        if not self.affine:
            return self.running_mean.new_zeros(())
        return (self.weight - 1.0).pow(2).sum() + self.bias.pow(2).sum()

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, num_points={self.num_points}, t_max={self.t_max}, "
            f"momentum={self.momentum}, eps={self.eps}, affine={self.affine}, outside={self.outside!r}"
        )


class TABatchNorm1d(_TABatchNorm):
    """TA-BN for feature vectors: ``layer(t, x)`` with x of shape (batch, num_features).

    Buffers ``running_mean`` and ``running_var`` and parameters ``weight``
    (gamma, init 1) and ``bias`` (alpha, init 0) have shape
    (num_points, num_features), one row per grid time ``m * t_max / (num_points - 1)``.
    """

    _ndim = 2


class TABatchNorm2d(_TABatchNorm):
    """TA-BN for image channels: ``layer(t, x)`` with x of shape (B, C, H, W); statistics per channel."""

    _ndim = 4


_TABLES = ("weight", "bias", "running_mean", "running_var")  # saved in the state_dict
_VIEWS = _TABLES + ("_batch_mean", "_batch_var")  # a sharing layer's tensors: views of the shared ones


class TABNTables(nn.Module):
    """The tables of several TA-BN layers on one grid, side by side, so that one product
    interpolates all of them at a time (built by :func:`share_tables`; fields do this).

    ``affine`` (P, 2N) holds every layer's weight columns then every layer's bias columns,
    ``running`` (P, 2N) the running means then the running variances (N = the layers'
    features summed). ``tables.at(t)`` returns the call of the layers at time t:
    ``norm(i, h)`` normalises the input of layer i, ``norm.finish()`` moves the running
    statistics of all layers at once (training mode). Its own state_dict is empty: each
    layer saves and loads its (P, F) slices under its usual keys.
    """

    def __init__(self, layers: list[_TABatchNorm]) -> None:
        super().__init__()
        first = layers[0]
        self.sizes = [m.num_features for m in layers]
        n = sum(self.sizes)
        with torch.no_grad():
            running = torch.cat([m.running_mean for m in layers] + [m.running_var for m in layers], dim=1)
            affine = (torch.cat([m.weight for m in layers] + [m.bias for m in layers], dim=1)
                      if first.affine else None)
        self.register_buffer("running", running)
        self.register_parameter("affine", nn.Parameter(affine) if affine is not None else None)
        self.register_buffer("_batch", torch.zeros(2 * n, dtype=running.dtype, device=running.device),
                             persistent=False)
        self._layers = tuple(layers)  # a plain tuple: the layers stay registered where they were
        start = 0
        for m in layers:
            for name in _VIEWS:
                if name in m._parameters or name in m._buffers:
                    delattr(m, name)
            m.__dict__["_tables"] = self  # not a submodule of the layer (it is the field's)
            m.__dict__["_columns"] = (start, start + m.num_features, n)
            start += m.num_features

    def view(self, layer: _TABatchNorm, name: str) -> torch.Tensor | None:
        """``layer``'s (P, F) table ``name`` (weight, bias, running_mean, running_var), a view;
        ``_batch_mean`` / ``_batch_var``: its (F,) slices of the last batch's statistics."""
        start, stop, n = layer.__dict__["_columns"]
        shift = n if name in ("bias", "running_var", "_batch_var") else 0
        if name.startswith("_batch"):
            return self._batch[start + shift:stop + shift]
        table = self.running if name.startswith("running") else self.affine
        return None if table is None else table[:, start + shift:stop + shift]

    def at(self, t):
        """The layers' call at time t (one shared time; per-example times go layer by layer)."""
        layers = self._layers
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            return EachLayer(layers, t)
        training, frozen = layers[0].training, layers[0]._stats_frozen
        for m in layers:
            if m.training != training or bool(m._stats_frozen) != bool(frozen):
                return EachLayer(layers, t)  # layers in different modes: each its own way
        ip = layers[0]._interpolation(t, self.running)  # weights in the tables' dtype and device
        sizes = self.sizes + self.sizes
        affine = ip(self.affine).split(sizes) if self.affine is not None else None
        if not training:
            return _TAPass(self, ip, affine, ip(self.running).split(sizes), None)
        if frozen or statistics_frozen():
            return _TAPass(self, ip, affine, None, None)
        return _TAPass(self, ip, affine, None, self._batch.split(sizes))

    def extra_repr(self) -> str:
        return f"{len(self.sizes)} layers, {sum(self.sizes)} features, affine={self.affine is not None}"

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        pass  # the layers save their slices

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        pass  # the layers load their slices


class _TAPass:
    """TA-BN layers sharing tables, called at one time: ``norm(i, h)``, then ``norm.finish()``."""

    __slots__ = ("tables", "ip", "affine", "stats", "batch", "n")

    def __init__(self, tables: TABNTables, ip: _Interp, affine, stats, batch) -> None:
        self.tables, self.ip, self.affine, self.stats, self.batch = tables, ip, affine, stats, batch
        self.n = len(tables.sizes)

    def __call__(self, i: int, x: torch.Tensor) -> torch.Tensor:
        tables = self.tables
        layer = tables._layers[i]
        _check_x(layer, x, layer._ndim, layer.num_features, tables.running.dtype)
        weight, bias = (self.affine[i], self.affine[self.n + i]) if self.affine is not None else (None, None)
        if self.stats is not None:  # eval: the interpolated running statistics
            return F.batch_norm(x, self.stats[i], self.stats[self.n + i], weight, bias, False, 0.0, layer.eps)
        _check_batch(layer, x)
        cudnn = torch.backends.cudnn.enabled
        if self.batch is None:  # training, statistics frozen
            return torch.batch_norm(x, weight, bias, None, None, True, 1.0, layer.eps, cudnn)
        # momentum 1: the kernel writes the batch mean and unbiased variance into the scratch
        return torch.batch_norm(x, weight, bias, self.batch[i], self.batch[self.n + i], True, 1.0, layer.eps,
                                cudnn)

    def finish(self) -> None:
        """Move every layer's running statistics towards its batch's (training mode; after all layers ran)."""
        if self.batch is not None:
            self.ip.update(self.tables.running, self.tables._batch)


class EachLayer:
    """Norm layers called one by one at time t, with the interface of a shared-table call:
    ``norm(i, h) = layers[i](t, h)``; ``finish()`` does nothing."""

    __slots__ = ("layers", "t")

    def __init__(self, layers, t) -> None:
        self.layers, self.t = layers, t

    def __call__(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return direct(self.layers[i])(self.t, x)

    def finish(self) -> None:
        pass


def share_tables(layers) -> TABNTables | None:
    """Store the tables of ``layers`` (TA-BN layers on one grid) side by side; None if they cannot share.

    Layers can share when they are all TA-BN layers (1d or 2d) with the same grid (num_points,
    t_max, outside), momentum, eps, affine flag, dtype and device, and none shares yet. The
    layers keep working on their own (``layer(t, x)``, ``layer.weight``, their state_dict
    keys); the returned module must be registered in the model that owns them, which then
    calls them through ``tables.at(t)``.
    """
    layers = list(layers)
    if not layers or not all(isinstance(m, _TABatchNorm) and m.__dict__.get("_tables") is None for m in layers):
        return None
    first = layers[0]

    def key(m):
        return (m.num_points, m.t_max, m.outside, m.momentum, m.eps, m.affine, m.running_mean.dtype,
                m.running_mean.device)

    if any(key(m) != key(first) for m in layers):
        return None
    return TABNTables(layers)


class _PopBatchNorm(_StatsNorm):
    _ndim = 2

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
                 affine: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.num_features = checks.integer("num_features", num_features, minimum=1)
        self.momentum = _check_momentum(momentum)
        self.eps, self.affine = _check_eps_affine(eps, affine)
        kw = {"device": device, "dtype": dtype}
        self.register_buffer("running_mean", torch.zeros(num_features, **kw))
        self.register_buffer("running_var", torch.ones(num_features, **kw))
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features, **kw))
            self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """Plain BatchNorm; ``t`` is ignored (statistics pooled over all times)."""
        _check_x(self, x, self._ndim, self.num_features)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        _check_batch(self, x)
        if self._updating():
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                True, self.momentum, self.eps)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, affine={self.affine}"


class PopBatchNorm1d(_PopBatchNorm):
    """Plain BatchNorm ("Pop-TI") for (batch, num_features), called as ``layer(t, x)``."""

    _ndim = 2


class PopBatchNorm2d(_PopBatchNorm):
    """Plain BatchNorm ("Pop-TI") for (B, C, H, W), called as ``layer(t, x)``."""

    _ndim = 4


class _MiniBatchNorm(nn.Module):
    _ndim = 2

    def __init__(self, num_features: int, *, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.num_features = checks.integer("num_features", num_features, minimum=1)
        self.eps, self.affine = _check_eps_affine(eps, affine)
        kw = {"device": device, "dtype": dtype}
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features, **kw))
            self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """Normalise with the statistics of this mini-batch, in training and eval alike."""
        _check_x(self, x, self._ndim, self.num_features)
        _check_batch(self, x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class MiniBatchNorm1d(_MiniBatchNorm):
    """Mini-batch BatchNorm (no running statistics) for (batch, num_features)."""

    _ndim = 2


class MiniBatchNorm2d(_MiniBatchNorm):
    """Mini-batch BatchNorm (no running statistics) for (B, C, H, W)."""

    _ndim = 4


class NoNorm(nn.Module):
    """The identity, called as ``layer(t, x)``."""

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        return x


def make_norm(
    kind: str | None,
    num_features: int,
    *,
    dims: int = 1,
    num_points: int = 101,
    t_max: float = 1.0,
    momentum: float = 0.1,
    eps: float = 1e-5,
    affine: bool = True,
    outside: str = "clamp",
    device=None,
    dtype=None,
) -> nn.Module:
    """Build the norm layer named ``kind`` (one of NORM_KINDS or None), called as ``layer(t, x)``.

    ``dims=1`` for (batch, features), ``dims=2`` for (B, C, H, W). ``num_points``,
    ``t_max`` and ``outside`` matter only for ``"tabn"``.
    """
    key = "none" if kind is None else kind
    key = checks.choice("norm", key.lower() if isinstance(key, str) else key, NORM_KINDS,
                        fix="pass one of these names (any case), or None for no normalisation")
    checks.integer("dims", dims, minimum=1, maximum=2, fix="pass 1 for (batch, features) or 2 for image "
                                                          "channels (B, C, H, W)")
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
