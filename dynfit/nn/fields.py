"""Vector fields ``f(t, x)`` for Neural ODEs, with the norm layer chosen by name.

- :class:`MLPField`: x (B, dim) -> (B, dim), ``depth`` hidden layers
  ``linear -> norm(t, .) -> activation``, then a linear output layer.
- :class:`ResidualMLPField`: an input layer, ``depth`` residual blocks
  ``h + linear(act(norm(t, linear(h))))``, a linear output layer.
- :class:`ConvField`: x (B, C, H, W) -> same shape, 3x3 convolutions with
  2d norms (TA-BN over channels).
- :class:`PolynomialField`: monomials up to a degree plus an MLP correction.
- :class:`LibraryField`: any feature library (:mod:`dynfit.nn.library`:
  polynomials, trigonometric terms, their products, rational terms) with a
  sparsity mask, plus an MLP or residual-MLP correction; what ``fit``'s
  default field kind "auto" builds after choosing the library on the data.

``norm`` is one of ``None``/``"none"``, ``"tabn"``, ``"bn"`` (plain BatchNorm,
"Pop-TI"), ``"minibatch"``; see :func:`dynfit.nn.norm.make_norm`. TA-BN
layers cover ``[0, t_max]`` with ``num_points`` grid points.
"""
from __future__ import annotations

import torch
from torch import nn

from systems import checks

from .calls import direct
from .library import Library, monomial_exponents, monomial_maps, monomial_name
from .norm import make_norm, norm_penalty
from .tabn_tables import EachLayer, share_tables
from .registry import register_field

__all__ = ["MLPField", "ResidualMLPField", "ConvField", "PolynomialField", "LibraryField"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


def make_activation(name: str) -> nn.Module:
    """The activation module named ``name`` (one of ACTIVATIONS)."""
    key = checks.choice("activation", name.lower() if isinstance(name, str) else name,
                        sorted(ACTIVATIONS),
                        fix="pass one of these names (any case)")
    return ACTIVATIONS[key]()


def _time_column(t, x: torch.Tensor, shape) -> torch.Tensor:
    """t (scalar, or per-example (B,) / (B, 1)) broadcast to ``shape`` = (B, 1, ...)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).detach()
    if t.numel() == 1:
        return t.reshape(()).expand(shape)
    if t.numel() == shape[0] and (t.dim() == 1 or (t.dim() == 2 and t.shape[1] == 1)):
        return t.reshape((shape[0],) + (1,) * (len(shape) - 1)).expand(shape)
    raise ValueError(
        f"time t must be a scalar or per-example times of shape ({shape[0]},) or ({shape[0]}, 1), "
        f"got shape {tuple(t.shape)}"
    )


class _Field(nn.Module):
    def _setup(self, dim_name: str, dim, width, depth, activation, time_dependent, norm,
               dtype) -> torch.dtype:
        """Validate and store the settings every field shares; returns the checked dtype."""
        self.dim = checks.integer(dim_name, dim, minimum=1)
        self.width = checks.integer("width", width, minimum=1)
        self.depth = checks.integer("depth", depth, minimum=1)
        self.time_dependent = bool(time_dependent)
        self.act = make_activation(activation)
        self.norm_kind = "none" if norm is None else norm
        return checks.float_dtype("dtype", dtype)

    def _with_time(self, t, x: torch.Tensor) -> torch.Tensor:
        """x with t appended as one more input feature/channel when the field is time-dependent."""
        if not self.time_dependent:
            return x
        return torch.cat([x, _time_column(t, x, (x.shape[0], 1) + tuple(x.shape[2:]))], dim=1)

    def _keep_norms(self, layers) -> None:
        """Keep the norm layers in call order; TA-BN layers on one grid are read side by side
        (``tabn_tables``, None otherwise), so that a field call interpolates all of them in one
        product instead of two per layer."""
        self._norm_order = tuple(layers)
        self.tabn_tables = share_tables(self._norm_order)

    def _norms_at(self, t):
        """The norm layers at time t: ``norm(i, h)`` is layer i; call ``norm.finish()`` after
        the last."""
        tables = self.tabn_tables
        return tables.at(t) if tables is not None else EachLayer(self._norm_order, t)

    def penalty(self) -> torch.Tensor:
        """L2 penalty of the TA-BN grid parameters inside this field (0 if none)."""
        return norm_penalty(self)

    def _check_input(self, x: torch.Tensor, ndim: int, what: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects x as a torch.Tensor, "
                            f"got {type(x).__name__}")
        if x.dim() != ndim or x.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects x of shape {what} with {self.dim} in dimension 1, "
                f"got shape {tuple(x.shape)}"
            )


@register_field("mlp")
class MLPField(_Field):
    """MLP vector field; the paper's 3-50-50-3 ReLU net is
    ``MLPField(3, width=50, depth=2, activation="relu", dtype=torch.float64)``.

    Called as ``field(t, x)`` with t a scalar tensor and x of shape (B, dim);
    ``time_dependent=True`` feeds t as an extra input.
    """

    def __init__(self, dim: int, *, width: int = 64, depth: int = 2, activation: str = "relu",
                 time_dependent: bool = False, norm: str | None = None, num_points: int = 101,
                 t_max: float = 1.0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        dtype = self._setup("dim", dim, width, depth, activation, time_dependent, norm, dtype)
        n_in = self.dim + int(self.time_dependent)
        sizes = [n_in] + [self.width] * self.depth
        self.linears = nn.ModuleList(nn.Linear(a, b, dtype=dtype)
                                     for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(
            make_norm(norm, self.width, num_points=num_points, t_max=t_max, dtype=dtype)
            for _ in range(self.depth)
        )
        self._keep_norms(self.norms)
        self.out = nn.Linear(self.width, self.dim, dtype=dtype)

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """dx/dt at time t; x (B, dim) -> (B, dim)."""
        self._check_input(x, 2, "(batch, dim)")
        h = self._with_time(t, x)
        norm, act = self._norms_at(t), direct(self.act)
        for i, linear in enumerate(self.linears):
            h = act(norm(i, direct(linear)(h)))
        norm.finish()
        return direct(self.out)(h)


@register_field("residual")
class ResidualMLPField(_Field):
    """Deep residual MLP vector field: x (B, dim) -> (B, dim).

    ``h = act(norm(t, W_in x))``, then ``depth`` blocks
    ``h = h + W2 act(norm(t, W1 h))``, then ``W_out h``.
    """

    def __init__(self, dim: int, *, width: int = 64, depth: int = 4, activation: str = "relu",
                 time_dependent: bool = False, norm: str | None = None, num_points: int = 101,
                 t_max: float = 1.0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        dtype = self._setup("dim", dim, width, depth, activation, time_dependent, norm, dtype)

        def mk():
            return make_norm(norm, self.width, num_points=num_points, t_max=t_max, dtype=dtype)

        self.inp = nn.Linear(self.dim + int(self.time_dependent), self.width, dtype=dtype)
        self.inp_norm = mk()
        self.first = nn.ModuleList(nn.Linear(self.width, self.width, dtype=dtype)
                                   for _ in range(self.depth))
        self.second = nn.ModuleList(nn.Linear(self.width, self.width, dtype=dtype)
                                    for _ in range(self.depth))
        self.norms = nn.ModuleList(mk() for _ in range(self.depth))
        self._keep_norms([self.inp_norm, *self.norms])
        self.out = nn.Linear(self.width, self.dim, dtype=dtype)

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """dx/dt at time t; x (B, dim) -> (B, dim)."""
        self._check_input(x, 2, "(batch, dim)")
        h = self._with_time(t, x)
        norm, act = self._norms_at(t), direct(self.act)
        h = act(norm(0, direct(self.inp)(h)))
        for i, (w1, w2) in enumerate(zip(self.first, self.second), start=1):
            h = h + direct(w2)(act(norm(i, direct(w1)(h))))
        norm.finish()
        return direct(self.out)(h)


@register_field("conv", vector=False)
class ConvField(_Field):
    """Convolutional vector field on image channels: x (B, C, H, W) -> same shape.

    ``depth`` hidden 3x3 convolutions with ``width`` channels, each followed by
    the 2d norm and the activation, then a 3x3 convolution back to C channels.
    ``time_dependent=True`` appends t as a constant input channel.
    """

    def __init__(
        self,
        channels: int,
        *,
        width: int = 64,
        depth: int = 2,
        activation: str = "relu",
        time_dependent: bool = False,
        norm: str | None = "tabn",
        num_points: int = 101,
        t_max: float = 1.0,
        kernel_size: int = 3,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        dtype = self._setup("channels", channels, width, depth, activation, time_dependent, norm,
                            dtype)
        self.channels = self.dim
        kernel_size = checks.integer("kernel_size", kernel_size, minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (to keep H and W), got {kernel_size}")
        pad = kernel_size // 2
        sizes = [self.dim + int(self.time_dependent)] + [self.width] * self.depth
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size, padding=pad, dtype=dtype)
            for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.norms = nn.ModuleList(
            make_norm(norm, self.width, dims=2, num_points=num_points, t_max=t_max, dtype=dtype)
            for _ in range(self.depth)
        )
        self._keep_norms(self.norms)
        self.out = nn.Conv2d(self.width, self.dim, kernel_size, padding=pad, dtype=dtype)

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """dx/dt at time t; x (B, C, H, W) -> (B, C, H, W)."""
        self._check_input(x, 4, "(batch, channels, height, width)")
        h = self._with_time(t, x)
        norm, act = self._norms_at(t), direct(self.act)
        for i, conv in enumerate(self.convs):
            h = act(norm(i, direct(conv)(h)))
        norm.finish()
        return direct(self.out)(h)


class _FeatureField(_Field):
    """A time-invariant field ``features(x) @ coefficients + mlp(x)``: x (B, dim) -> (B, dim).

    The linear part on ``features`` (B, n_features) with ``coef`` (n_features, dim) is what the
    closed-form pre-fit solves for (:func:`dynfit.prefit.prefit`); ``mlp`` (None when width is
    0) is the neural correction, starting at zero. Subclasses set ``dim``, ``coef`` and ``mlp``
    and define ``features``.
    """

    def _time_invariant(self, time_dependent) -> None:
        """Refuse ``time_dependent=True``; mark the field time-invariant."""
        if time_dependent:
            raise ValueError(f"{type(self).__name__} is time-invariant (time_dependent=False); "
                             "for a time-dependent field use kind 'mlp' or 'residual' with "
                             "time_dependent=True")
        self.time_dependent = False

    def _coefficients(self) -> torch.Tensor:
        """The (n_features, dim) matrix the features are multiplied by."""
        return self.coef

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """dx/dt; x (B, dim) -> (B, dim)."""
        self._check_input(x, 2, "(batch, dim)")
        out = self.features(x) @ self._coefficients()
        if self.mlp is not None:
            out = out + direct(self.mlp)(t, x)
        return out


@register_field("poly")
class PolynomialField(_FeatureField):
    """Polynomial library plus an MLP correction: x (B, dim) -> (B, dim).

    ``f(x) = W p(x) + mlp(x)`` where p(x) holds every monomial of x up to total
    ``degree`` (constant, linear, quadratic, ...: ``monomial_exponents``) and
    ``mlp`` is an :class:`MLPField` whose output layer starts at zero
    (``width=0`` drops it). Many benchmark flows (Lorenz'63, Rossler, Lorenz96,
    Chen) are polynomial of degree 2, so the library can represent them to
    rounding error while the MLP learns what it cannot; ``W`` has a closed-form
    least-squares start (:func:`dynfit.prefit.prefit`). Time-invariant.
    """

    def __init__(self, dim: int, *, degree: int = 2, width: int = 32, depth: int = 2,
                 activation: str = "silu",
                 time_dependent: bool = False, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self._time_invariant(time_dependent)
        self.dim = checks.integer("dim", dim, minimum=1)
        self.degree = checks.integer("degree", degree, minimum=1)
        width = checks.integer("width", width, minimum=0)
        dtype = checks.float_dtype("dtype", dtype)
        select, const = monomial_maps(self.dim, self.degree, dtype)
        n_terms = select.shape[-1]
        self.register_buffer("_select", select, persistent=False)
        self.register_buffer("_const", const, persistent=False)
        self.coef = nn.Parameter(torch.zeros(n_terms, self.dim, dtype=dtype))
        self.mlp = zero_correction(MLPField, self.dim, width, depth, activation, dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Monomials p(x): (B, dim) -> (B, n_terms), in the order of ``monomial_exponents``."""
        sel, const = self._select, self._const
        if sel.dtype != x.dtype:
            sel, const = sel.to(x.dtype), const.to(x.dtype)
        sel, const = sel.unbind(0), const.unbind(0)
        out = torch.addmm(const[0], x, sel[0])
        for k in range(1, self.degree):
            out = out * torch.addmm(const[k], x, sel[k])
        return out

    def term_names(self, names) -> list[str]:
        """One name per feature column ('1', 'x', 'x*y', 'y^2', ...) in the field's own
        (standardised) variables named ``names`` (dim,)."""
        names = [str(n) for n in names]
        if len(names) != self.dim:
            raise ValueError(f"term_names needs {self.dim} variable names, got {len(names)}: "
                             f"{names}")
        return [monomial_name(e, names) for e in monomial_exponents(self.dim, self.degree).tolist()]


CORRECTIONS = ("mlp", "residual")


def zero_correction(cls, dim: int, width: int, depth: int, activation: str,
                    dtype) -> nn.Module | None:
    """A library field's neural correction: a ``cls`` field whose output layer starts at zero
    (so the field starts as its library part); None when ``width`` is 0."""
    if width <= 0:
        return None
    net = cls(dim, width=width, depth=depth, activation=activation, dtype=dtype)
    nn.init.zeros_(net.out.weight)
    nn.init.zeros_(net.out.bias)
    return net


@register_field("library")
class LibraryField(_FeatureField):
    """Library features with masked coefficients plus a neural correction: x (B, dim) -> (B, dim).

    ``f(z) = L(z) (coef * mask) + net(z)``: L the features of ``library`` (a
    spec, :mod:`dynfit.nn.library`; default ``{"poly": 2}``), ``mask`` (n_terms,
    dim) a saved 0/1 buffer (the sparse regression's active terms; all ones
    when built), ``net`` an :class:`MLPField` (``correction="mlp"``) or
    :class:`ResidualMLPField` ("residual") whose output layer starts at zero
    (``width=0`` drops it). Time-invariant. ``features``/``coef`` as
    :class:`PolynomialField`, for the closed-form pre-fit.
    """

    def __init__(self, dim: int, *, library: dict | None = None, width: int = 32, depth: int = 2,
                 activation: str = "silu", correction: str = "mlp", time_dependent: bool = False,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self._time_invariant(time_dependent)
        self.dim = checks.integer("dim", dim, minimum=1)
        width = checks.integer("width", width, minimum=0)
        dtype = checks.float_dtype("dtype", dtype)
        self.correction = checks.choice("correction", correction, CORRECTIONS)
        self.library = Library(self.dim, {"poly": 2} if library is None else library, dtype=dtype)
        n_terms = self.library.n_terms
        self.coef = nn.Parameter(torch.zeros(n_terms, self.dim, dtype=dtype))
        self.register_buffer("mask", torch.ones(n_terms, self.dim, dtype=dtype))
        cls = MLPField if self.correction == "mlp" else ResidualMLPField
        self.mlp = zero_correction(cls, self.dim, width, depth, activation, dtype)

    @property
    def spec(self) -> dict:
        """The library's checked spec (plain data)."""
        return self.library.spec

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Library features: (B, dim) -> (B, n_terms)."""
        return self.library(x)

    def _coefficients(self) -> torch.Tensor:
        """The coefficients of the active terms: coef * mask (n_terms, dim)."""
        return self.coef * self.mask

    def term_names(self, names) -> list[str]:
        """One name per feature column in the field's own (standardised) variables named ``names``
        (dim,): '1', 'x*y', 'sin(y)', 'z*cos(2*x)', 'y/(1+x^2)', ... (``Library.term_names``)."""
        return self.library.term_names(names)
