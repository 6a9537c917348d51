"""The trained model: a vector field, its standardisation, its solver rule and provenance."""
from __future__ import annotations

import importlib
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from systems import checks

from . import strategies as _strategies
from .strategies import InferenceSolver
from .data import Standardizer

__all__ = ["Surrogate", "build_field", "FORMAT"]

FORMAT = "dynfit-surrogate-1"

FIELD_KINDS = {"mlp": "MLPField", "residual": "ResidualMLPField", "poly": "PolynomialField"}


def build_field(config: dict, dim: int, dtype=torch.float64) -> torch.nn.Module:
    """A vector field from a config {"kind": "mlp"|"residual", **keyword arguments}."""
    if not isinstance(config, dict):
        raise TypeError(f"field config must be a dict like {{'kind': 'mlp', 'width': 64}}, got {type(config).__name__}")
    options = dict(config)
    kind = options.pop("kind", "mlp")
    checks.choice("field kind", kind, sorted(FIELD_KINDS))
    fields = importlib.import_module("dynfit.nn.fields")
    cls = getattr(fields, FIELD_KINDS[kind])
    try:
        return cls(dim, dtype=dtype, **options)
    except TypeError as err:
        raise ValueError(f"bad option in field config {config!r}: {err}") from None


def _versions() -> dict:
    import dynfit

    out = {"dynfit": str(dynfit.__version__), "torch": str(torch.__version__), "numpy": str(np.__version__),
           "python": platform.python_version()}
    try:
        import torchdiffeq

        out["torchdiffeq"] = str(torchdiffeq.__version__)
    except Exception:  # pragma: no cover
        pass
    return out


class _Callable(torch.nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, t, x):
        return self.f(t, x)


class _PhysicalField(torch.nn.Module):
    """Physical dx/dt = std * f(t / dt, (x - mean) / std) / dt of a model-time field on standardised states."""

    def __init__(self, field: torch.nn.Module, scaler: Standardizer, dt: float):
        super().__init__()
        self.field, self.dt = field, float(dt)
        p = next(field.parameters(), None)
        dtype = p.dtype if p is not None else torch.float64
        self.register_buffer("mean", torch.as_tensor(scaler.mean, dtype=dtype))
        self.register_buffer("std", torch.as_tensor(scaler.std, dtype=dtype))

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.to(x)) / self.std.to(x)
        return self.field(t / self.dt, z) * self.std.to(x) / self.dt


class _ModelTimeField(torch.nn.Module):
    """A physical field f(t, x) seen in model time on standardised states: dt * f(t dt, x(z)) / std
    (scaler None: the physical states themselves)."""

    def __init__(self, f, scaler: Standardizer | None, dt: float, dtype=torch.float64):
        super().__init__()
        self.f, self.dt = f, float(dt)
        self.scaled = scaler is not None
        if self.scaled:
            self.register_buffer("mean", torch.as_tensor(scaler.mean, dtype=dtype))
            self.register_buffer("std", torch.as_tensor(scaler.std, dtype=dtype))

    def forward(self, t, z: torch.Tensor) -> torch.Tensor:
        if not self.scaled:
            return self.f(t * self.dt, z) * self.dt
        x = z * self.std.to(z) + self.mean.to(z)
        return self.f(t * self.dt, x) * self.dt / self.std.to(z)


class _Identity:
    """The identity standardisation of a wrapped vector field; its dimension is taken from the first x0."""

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.mean = None if dim is None else np.zeros(dim)
        self.std = None if dim is None else np.ones(dim)

    def set_dim(self, dim: int) -> None:
        self.dim, self.mean, self.std = int(dim), np.zeros(int(dim)), np.ones(int(dim))

    def forward(self, x):
        return x

    def inverse(self, z):
        return z

    def to_dict(self) -> dict:
        if self.dim is None:
            raise ValueError("this wrapped vector field has no dimension yet: generate once or pass dim=")
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


class Surrogate:
    """A Neural ODE surrogate of a dynamical system.

    ``field`` (torch module, called field(t, z)) acts on standardised states z
    in model time, where one unit is one sampling interval ``dt`` (physical).
    ``solver`` (:class:`dynfit.strategies.InferenceSolver`) is how
    ``generate`` integrates it: by default rkf45 with per-example adaptive
    steps at rtol = atol = 1e-10; models trained with the paper's strategies
    keep the paper's rule. Change it with ``surrogate.solver = InferenceSolver(...)``
    or per call. ``generate`` returns physical states; ``physical_field()``
    the physical dx/dt as a differentiable torch module.
    """

    def __init__(self, field: torch.nn.Module, scaler: Standardizer, dt: float, *,
                 solver: InferenceSolver | dict | None = None, strategy: Any = None,
                 field_config: dict | None = None, provenance: dict | None = None):
        dt = checks.positive("dt", dt, fix="dt is the sampling step of the data the field was trained on")
        self.field = field
        self.scaler = scaler
        self.dt = dt
        if solver is None:
            solver = _strategies.get(strategy).inference() if strategy is not None else InferenceSolver()
        self.solver = InferenceSolver.from_dict(solver)
        self.training = None  # the training strategy's config, for provenance
        if isinstance(strategy, dict):
            self.training = dict(strategy)
        elif strategy is not None:
            self.training = _strategies.get(strategy).config()
        self.field_config = field_config
        self.provenance = dict(provenance or {})
        self.provenance.setdefault("versions", _versions())

    @classmethod
    def from_vector_field(cls, f, dt: float, *, scaler: Standardizer | None = None,
                          solver: InferenceSolver | dict | None = None, dim: int | None = None,
                          provenance: dict | None = None) -> "Surrogate":
        """A Surrogate from a physical vector field ``f(t, x)`` -> dx/dt, x (B, D) (module or callable).

        scaler: the standardisation the solver works in (None: identity, the
        physical states themselves). dim: the state dimension (optional; with
        scaler=None it is otherwise taken from the first x0 given to generate).
        """
        if not callable(f):
            raise TypeError(f"f must be a torch module or a callable f(t, x) -> dx/dt, got {type(f).__name__}")
        field = _ModelTimeField(f, scaler, dt)
        if scaler is None:
            scaler = _Identity(dim if dim is not None else getattr(f, "dim", None))
        return cls(field, scaler, dt, solver=solver, provenance=dict(provenance or {}))

    @property
    def system(self) -> str:
        return str(self.provenance.get("system", "unknown"))

    @property
    def strategy(self):
        """The training strategy's config (a dict), or None for a wrapped vector field."""
        return self.training

    @property
    def dim(self) -> int:
        return self.scaler.dim

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.field.parameters(), None)
        if p is None:
            p = next(self.field.buffers(), None)
        return p.dtype if p is not None else torch.float64

    @property
    def device(self) -> torch.device:
        p = next(self.field.parameters(), None)
        if p is None:
            p = next(self.field.buffers(), None)
        return p.device if p is not None else torch.device("cpu")

    def _check_x0(self, x0) -> np.ndarray:
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.ndim == 1:
            x0 = x0[None]
        if self.scaler.dim is None and x0.ndim == 2 and x0.shape[1] >= 1:  # a wrapped field learns its dim
            self.scaler.set_dim(x0.shape[1])
        if x0.ndim != 2 or x0.shape[1] != self.dim or x0.shape[0] == 0:
            raise ValueError(f"x0 must have shape (B, {self.dim}) with B >= 1 or ({self.dim},), got {x0.shape}")
        if not np.isfinite(x0).all():
            raise ValueError("x0 holds NaN or inf")
        return x0

    def physical_field(self) -> torch.nn.Module:
        """The physical vector field as a torch module ``f(t, x)`` -> dx/dt, x (B, D); differentiable."""
        if isinstance(self.field, _ModelTimeField):
            return self.field.f if isinstance(self.field.f, torch.nn.Module) else _Callable(self.field.f)
        return _PhysicalField(self.field, self.scaler, self.dt)

    def generate(self, x0, n_steps: int, *, return_stats: bool = False, solver=None):
        """Free run from x0 (B, D) physical: array (B, n_steps, D), row 0 = x0, spacing dt.

        solver: an InferenceSolver (or dict) for this call instead of ``self.solver``.
        With return_stats, also the solver's :class:`dynfit.Stats` (per example).
        Examples where the solver fails (NaN, step limit) are NaN from there on.
        """
        n_steps = checks.integer("n_steps", n_steps, minimum=1)
        solver = self.solver if solver is None else InferenceSolver.from_dict(solver)
        x0 = self._check_x0(x0)
        z0 = torch.as_tensor(self.scaler.forward(x0), dtype=self.dtype, device=self.device)
        was_training = self.field.training
        self.field.eval()
        try:
            with torch.no_grad():
                if n_steps > 1:
                    zs, stats = solver.solve(self.field, z0, int(n_steps) - 1)
                else:
                    zs, stats = z0[None], None
        finally:
            self.field.train(was_training)
        out = self.scaler.inverse(zs.detach().cpu().to(torch.float64).numpy()).transpose(1, 0, 2)
        out = np.ascontiguousarray(out)
        return (out, stats) if return_stats else out

    def vector_field(self, x) -> np.ndarray:
        """Physical dx/dt at physical states x (B, D) (or (D,)), as numpy."""
        x = np.asarray(x, dtype=np.float64)
        single = x.ndim == 1
        xt = torch.as_tensor(np.atleast_2d(x), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            dx = self.physical_field()(torch.zeros((), dtype=self.dtype, device=self.device), xt)
        dx = dx.cpu().to(torch.float64).numpy()
        return dx[0] if single else dx


    # ---------------------------------------------------------------- save/load
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "field_config": self.field_config,
            "field_class": type(self.field).__name__,
            "state_dict": {k: v.detach().cpu() for k, v in self.field.state_dict().items()},
            "dtype": str(self.dtype).replace("torch.", ""),
            "scaler": self.scaler.to_dict(),
            "dt": self.dt,
            "solver": self.solver.to_dict(),
            "strategy": self.training if self.training is not None else {},
            "provenance": self.provenance,
        }

    def save(self, path) -> Path:
        """Write the model to ``path`` atomically (temp file, fsync, rename; see systems.files)."""
        from .io import save_torch

        return save_torch(self.to_dict(), path)

    @classmethod
    def load(cls, path, *, field: torch.nn.Module | None = None, map_location="cpu") -> "Surrogate":
        """Read a model written by :meth:`save`; pass ``field`` for a custom module without config."""
        from .io import ModelFileError, check_model_blob, load_torch

        path = Path(path)
        blob = check_model_blob(load_torch(path, what="model"), path, FORMAT)
        fix = "write it again with Surrogate.save / dynfit train"
        scaler = Standardizer.from_dict(blob["scaler"])
        dtype = getattr(torch, blob["dtype"])
        if field is None:
            if blob["field_config"] is None:
                raise ValueError(f"{path} holds a custom field ({blob['field_class']}) without config; "
                                 "pass field=<a module of that class> to load it")
            try:
                field = build_field(blob["field_config"], scaler.dim, dtype)
            except (TypeError, ValueError) as err:
                raise ModelFileError(f"model file {path} has a bad field config: {err}; {fix}") from None
        try:
            field.load_state_dict(blob["state_dict"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise ModelFileError(f"the weights in {path} do not fit the field {type(field).__name__} "
                                 f"(wrong names or shapes: {' '.join(first[:3])[:300]}); {fix}") from None
        try:
            if "solver" in blob:
                solver = InferenceSolver.from_dict(blob["solver"])
            else:  # round-1 files: the training strategy's inference rule
                solver = _strategies.get(blob["strategy"]).inference()
        except (TypeError, ValueError, KeyError) as err:
            raise ModelFileError(f"model file {path} holds solver settings that cannot be used: {err}; {fix}") from None
        strategy = blob["strategy"] if isinstance(blob["strategy"], dict) and blob["strategy"] else None
        return cls(field, scaler, blob["dt"], solver=solver, strategy=strategy,
                   field_config=blob["field_config"], provenance=blob["provenance"])

    def __repr__(self) -> str:
        return (f"Surrogate(system={self.system!r}, dim={self.dim}, dt={self.dt}, "
                f"solver={self.solver}, field={type(self.field).__name__})")
