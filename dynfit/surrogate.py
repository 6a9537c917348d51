"""The trained model: a vector field, its standardisation, its solver rule and provenance."""
from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import strategies as _strategies
from .data import Standardizer

__all__ = ["Surrogate", "build_field", "FORMAT"]

FORMAT = "dynfit-surrogate-1"

FIELD_KINDS = {"mlp": "MLPField", "residual": "ResidualMLPField"}


def build_field(config: dict, dim: int, dtype=torch.float64) -> torch.nn.Module:
    """A vector field from a config {"kind": "mlp"|"residual", **keyword arguments}."""
    if not isinstance(config, dict):
        raise TypeError(f"field config must be a dict like {{'kind': 'mlp', 'width': 64}}, got {type(config).__name__}")
    options = dict(config)
    kind = options.pop("kind", "mlp")
    if kind not in FIELD_KINDS:
        raise ValueError(f"unknown field kind {kind!r}; expected one of {sorted(FIELD_KINDS)}")
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


class Surrogate:
    """A Neural ODE surrogate of a dynamical system.

    ``field`` (torch module, called field(t, z)) acts on standardised states z
    in model time, where one unit is one sampling interval ``dt`` (physical).
    ``generate`` returns physical states; ``vector_field`` the physical dx/dt.
    """

    def __init__(self, field: torch.nn.Module, scaler: Standardizer, dt: float, *,
                 strategy: Any = "fehlberg", field_config: dict | None = None,
                 provenance: dict | None = None):
        self.field = field
        self.scaler = scaler
        self.dt = float(dt)
        self.strategy = _strategies.get(strategy)
        self.field_config = field_config
        self.provenance = dict(provenance or {})
        self.provenance.setdefault("versions", _versions())

    @property
    def system(self) -> str:
        return str(self.provenance.get("system", "unknown"))

    @property
    def dim(self) -> int:
        return self.scaler.dim

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.field.parameters(), None)
        return p.dtype if p is not None else torch.float64

    @property
    def device(self) -> torch.device:
        p = next(self.field.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _check_x0(self, x0) -> np.ndarray:
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.ndim == 1:
            x0 = x0[None]
        if x0.ndim != 2 or x0.shape[1] != self.dim:
            raise ValueError(f"x0 must have shape (B, {self.dim}) or ({self.dim},), got {x0.shape}")
        if not np.isfinite(x0).all():
            raise ValueError("x0 holds NaN or inf")
        return x0

    def generate(self, x0, n_steps: int, *, return_stats: bool = False):
        """Free run from x0 (B, D) physical: array (B, n_steps, D), row 0 = x0, spacing dt.

        Uses the strategy's inference rule (for the paper's strategies: the
        Heun estimate with per-example substeps). With return_stats, also a
        dict of arrays (B, n_steps - 1): accepted, substeps; and n_f_evals.
        """
        if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        x0 = self._check_x0(x0)
        z0 = torch.as_tensor(self.scaler.forward(x0), dtype=self.dtype, device=self.device)
        was_training = self.field.training
        self.field.eval()
        try:
            with torch.no_grad():
                if n_steps > 1:
                    ys, stats = self.strategy.generate(self.field, z0, n_steps - 1)
                    zs = torch.cat([z0[None], ys], dim=0)
                else:
                    zs, stats = z0[None], None
        finally:
            self.field.train(was_training)
        out = self.scaler.inverse(zs.detach().cpu().to(torch.float64).numpy()).transpose(1, 0, 2)
        out = np.ascontiguousarray(out)
        if not return_stats:
            return out
        if stats is None:
            b = x0.shape[0]
            info = {"accepted": np.ones((b, 0), bool), "substeps": np.ones((b, 0), np.int64), "n_f_evals": 0}
        else:
            info = {"accepted": stats.accepted.cpu().numpy().T, "substeps": stats.substeps.cpu().numpy().T,
                    "n_f_evals": stats.n_f_evals}
        return out, info

    def vector_field(self, x) -> np.ndarray:
        """Physical dx/dt at physical states x (B, D) (or (D,))."""
        x = np.asarray(x, dtype=np.float64)
        single = x.ndim == 1
        z = torch.as_tensor(self.scaler.forward(np.atleast_2d(x)), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            dz = self.field(torch.zeros((), dtype=self.dtype, device=self.device), z)
        dx = dz.cpu().to(torch.float64).numpy() * self.scaler.std / self.dt
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
            "strategy": self.strategy.config(),
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
            strategy = _strategies.get(blob["strategy"])
        except (TypeError, ValueError, KeyError) as err:
            raise ModelFileError(f"model file {path} names a strategy that cannot be built: {err}; {fix}") from None
        return cls(field, scaler, blob["dt"],
                   strategy=strategy, field_config=blob["field_config"], provenance=blob["provenance"])

    def __repr__(self) -> str:
        return (f"Surrogate(system={self.system!r}, dim={self.dim}, dt={self.dt}, "
                f"strategy={self.strategy.name!r}, field={type(self.field).__name__})")
