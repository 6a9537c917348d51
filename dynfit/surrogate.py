"""The trained model: a vector field, its standardisation, its solver rule and provenance."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _dyncore import checks

from . import strategies as _strategies
from .inference import InferenceSolver
from .data import Standardizer
from .io import version
from .nn.registry import FIELD_KINDS, build_field  # noqa: F401  (owned by dynfit.nn.registry)

__all__ = ["Surrogate", "build_field"]

FORMAT = "dynfit-surrogate-1"

def _versions() -> dict:
    out = {"dynfit": version(), "torch": str(torch.__version__), "numpy": str(np.__version__),
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
    """Physical dx/dt = std * f(t / dt, (x - mean) / std) / dt of a model-time field on standardised
    states."""

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
    """The identity standardisation of a wrapped vector field; its dimension is taken from the first
    x0."""

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
            raise ValueError(
                "this wrapped vector field has no dimension yet: generate once or pass dim="
            )
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def _check_field_at(field, z0: torch.Tensor, x0: np.ndarray) -> None:
    """One evaluation of the field at the start states: a clear ValueError if it is not finite
    there."""
    try:
        dz = field(torch.zeros((), dtype=z0.dtype, device=z0.device), z0)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"the vector field cannot be evaluated at the start states "
            f"({type(err).__name__}: {str(err)[:200]}); it must map (B, D) to (B, D)"
        ) from None
    if not isinstance(dz, torch.Tensor) or dz.shape != z0.shape:
        got = tuple(dz.shape) if isinstance(dz, torch.Tensor) else type(dz).__name__
        raise ValueError(
            f"the vector field returned {got} for states {tuple(z0.shape)}; it must return "
            "dx/dt of the same shape (B, D) as a torch tensor"
        )
    bad = ~torch.isfinite(dz).all(dim=1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"the vector field returns NaN or inf at the start state of trajectory {i} "
            f"(x0 = {np.array2string(x0[i], precision=4)}); check the field (NaN weights, "
            "division by zero, a function undefined there) before a free run"
        )


class Surrogate:
    """A Neural ODE surrogate of a dynamical system.

    ``field`` (torch module, called field(t, z)) acts on standardised states z
    in model time, where one unit is one sampling interval ``dt`` (physical).
    ``solver`` (:class:`dynfit.inference.InferenceSolver`) is how
    ``generate`` integrates it: by default rkf45 with per-example adaptive
    steps at rtol = atol = 1e-10; models trained with the paper's strategies
    keep the paper's rule. Change it with ``surrogate.solver = InferenceSolver(...)``
    or per call. ``generate`` returns physical states; ``physical_field()``
    the physical dx/dt as a differentiable torch module.
    """

    def __init__(self, field: torch.nn.Module, scaler: Standardizer, dt: float, *,
                 solver: InferenceSolver | dict | None = None, strategy: Any = None,
                 field_config: dict | None = None, provenance: dict | None = None):
        dt = checks.positive(
            "dt", dt, fix="dt is the sampling step of the data the field was trained on"
        )
        self.field = field
        self.scaler = scaler
        self.dt = dt
        if solver is None:
            solver = (
                _strategies.get(strategy).inference() if strategy is not None else InferenceSolver()
            )
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
        """A Surrogate from a physical vector field ``f(t, x)`` -> dx/dt, x (B, D) (module or
        callable).

        scaler: the standardisation the solver works in (None: identity, the
        physical states themselves). dim: the state dimension (optional; with
        scaler=None it is otherwise taken from the first x0 given to generate).
        """
        if not callable(f):
            raise TypeError(
                f"f must be a torch module or a callable f(t, x) -> dx/dt, got {type(f).__name__}"
            )
        field = _ModelTimeField(f, scaler, dt)
        if scaler is None:
            scaler = _Identity(dim if dim is not None else getattr(f, "dim", None))
        return cls(field, scaler, dt, solver=solver, provenance=dict(provenance or {}))

    @property
    def system(self) -> str:
        return str(self.provenance.get("system", "unknown"))

    @property
    def strategy(self):
        """The training strategy's config (a dict), or None for a wrapped vector field.

        The documented name of the record the Surrogate keeps as ``self.training`` (the
        provenance saved in model.pt as "strategy"); both names read the same dict.
        """
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
        # a wrapped field learns its dim
        if self.scaler.dim is None and x0.ndim == 2 and x0.shape[1] >= 1:
            self.scaler.set_dim(x0.shape[1])
        if x0.ndim != 2 or x0.shape[1] != self.dim or x0.shape[0] == 0:
            raise ValueError(
                f"x0 must have shape (B, {self.dim}) with B >= 1 or ({self.dim},), got {x0.shape}"
            )
        if not np.isfinite(x0).all():
            raise ValueError("x0 holds NaN or inf")
        return x0

    @property
    def components(self) -> list[str]:
        """The names of the state's components: the training data's (``x0, x1, ...`` when
        unnamed)."""
        names = self.provenance.get("components")
        if isinstance(names, (list, tuple)) and self.dim is not None and len(names) == self.dim:
            return [str(n) for n in names]
        return [f"x{i}" for i in range(self.dim or 0)]

    @property
    def embedding(self):
        """The :class:`dynfit.DelayEmbedding` the model was trained with, or None."""
        from .embedding import DelayEmbedding

        record = self.provenance.get("embedding")
        return DelayEmbedding.from_dict(record) if isinstance(record, dict) else None

    def _start_states(self, x0) -> np.ndarray:
        """Start states (B, D); with a delay embedding, also observed histories (B, T, d) or (T,
        d)."""
        emb = self.embedding
        if emb is not None and self.dim is not None:
            arr = np.asarray(x0, dtype=np.float64) if not isinstance(x0, (str, bytes)) else None
            d = self.dim // emb.lags
            if arr is not None and arr.ndim in (2, 3) and arr.shape[-1] == d != self.dim:
                if not np.isfinite(arr).all():
                    raise ValueError("the observed history x0 holds NaN or inf")
                return emb.state(arr)
        return self._check_x0(x0)

    def physical_field(self) -> torch.nn.Module:
        """The physical vector field as a torch module ``f(t, x)`` -> dx/dt, x (B, D);
        differentiable."""
        if isinstance(self.field, _ModelTimeField):
            return (
                self.field.f
                if isinstance(self.field.f, torch.nn.Module)
                else _Callable(self.field.f)
            )
        return _PhysicalField(self.field, self.scaler, self.dt)

    def generate(
        self, x0, n_steps: int, *, return_stats: bool = False, solver=None, on_failure: str = "warn"
    ):
        """Free run from x0 (B, D) physical: array (B, n_steps, D), row 0 = x0, spacing dt.

        solver: an InferenceSolver (or dict) for this call instead of ``self.solver``.
        With return_stats, also the solver's :class:`dynfit.Stats` (per example).
        Examples where the solver fails (NaN, step limit) are NaN from there on;
        on_failure "warn" (a RuntimeWarning naming them, the step and the
        solver status), "raise" (:class:`dynfit.SolverError`) or "ignore".
        With a delay embedding, x0 may also be observed histories (B, T, d).
        """
        from .forecast import check_free_run

        out, stats, solver = self._free_run(x0, n_steps, solver, on_failure)
        check_free_run(out, stats, self.dt, on_failure, max_steps=solver.max_steps)
        return (out, stats) if return_stats else out

    def forecast(self, x0, n_steps: int, *, t0: float = 0.0, solver=None, on_failure: str = "warn"):
        """Free run from x0 as an xarray Dataset: ``x (trajectory, time, component)``, ``status``.

        x0: physical start states (B, D) or (D,) (with a delay embedding, also
        observed histories (B, T, d): the run starts from their last delay
        vector). time: t0 + dt * (0 .. n_steps - 1), in the data's time units;
        component: the data's names; ``status`` (trajectory): the solver's
        :class:`dynfit.Status` code, ``valid_steps``: samples before the first
        non-finite one; attrs: units (CF-1.10) and the model's provenance.
        on_failure as in :meth:`generate`.
        """
        from .forecast import check_free_run, forecast_dataset

        t0 = checks.real("t0", t0, fix="t0 is the time of the start states, e.g. t0=0.0")
        out, stats, solver = self._free_run(x0, n_steps, solver, on_failure)
        check_free_run(out, stats, self.dt, on_failure, max_steps=solver.max_steps)
        attrs = {k: v for k, v in self.provenance.items() if k not in ("components", "versions")}
        attrs.update(
            source=f"dynfit {_versions()['dynfit']} Surrogate.forecast",
            solver=self.solver.to_dict() if solver is self.solver else solver.to_dict(),
        )
        return forecast_dataset(out, stats, dt=self.dt, t0=t0, components=self.components,
                                state_units=str(self.provenance.get("state_units", "1")),
                                time_units=str(self.provenance.get("time_units", "1")), attrs=attrs)

    def equations(self, threshold: float = 1e-3, *, precision: int = 4, states=None) -> str:
        """The field's polynomial library part in physical variables, one line per component.

        Terms whose physical coefficient is below ``threshold`` in magnitude are
        dropped; the last line gives the size of the MLP correction relative to
        the library part: RMS over ``states`` (physical (..., D), e.g. the
        training data), else over standard-normal standardised states (it says
        which). See :mod:`dynfit.equations`.
        """
        from .equations import equations

        return equations(self, threshold=threshold, precision=precision, states=states)

    def _free_run(self, x0, n_steps, solver, on_failure):
        from .forecast import ON_FAILURE

        n_steps = checks.integer("n_steps", n_steps, minimum=1)
        checks.choice("on_failure", on_failure, ON_FAILURE,
                      fix="'warn' (a RuntimeWarning), 'raise' (dynfit.SolverError) or 'ignore'")
        solver = self.solver if solver is None else InferenceSolver.from_dict(solver)
        x0 = self._start_states(x0)
        z0 = torch.as_tensor(self.scaler.forward(x0), dtype=self.dtype, device=self.device)
        was_training = self.field.training
        self.field.eval()
        try:
            with torch.no_grad():
                _check_field_at(self.field, z0, x0)  # a NaN field fails here, before the solve
                if n_steps > 1:
                    zs, stats = solver.solve(self.field, z0, int(n_steps) - 1)
                else:
                    zs, stats = z0[None], None
        finally:
            self.field.train(was_training)
        out = self.scaler.inverse(zs.detach().cpu().to(torch.float64).numpy()).transpose(1, 0, 2)
        return np.ascontiguousarray(out), stats, solver

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
        """Read a model written by :meth:`save`; pass ``field`` for a custom module without
        config."""
        from .io import ModelFileError, check_model_blob, load_torch

        path = Path(path)
        blob = check_model_blob(load_torch(path, what="model"), path, FORMAT)
        fix = "write it again with Surrogate.save / dynfit train"
        scaler = Standardizer.from_dict(blob["scaler"])
        dtype = getattr(torch, blob["dtype"])
        if field is None:
            if blob["field_config"] is None:
                raise ValueError(
                    f"{path} holds a custom field ({blob['field_class']}) without config; "
                    "pass field=<a module of that class> to load it"
                )
            try:
                field = build_field(blob["field_config"], scaler.dim, dtype)
            except (TypeError, ValueError) as err:
                raise ModelFileError(
                    f"model file {path} has a bad field config: {err}; {fix}"
                ) from None
        try:
            field.load_state_dict(blob["state_dict"])
        except (RuntimeError, ValueError) as err:  # ValueError: TA-BN tables of another grid
            first = str(err).strip().splitlines()
            raise ModelFileError(
                f"the weights in {path} do not fit the field {type(field).__name__} "
                f"(wrong names or shapes: {' '.join(first[:3])[:300]}); {fix}"
            ) from None
        try:
            if "solver" in blob:
                solver = InferenceSolver.from_dict(blob["solver"])
            else:  # a file that stores no solver: the training strategy's inference rule
                solver = _strategies.get(blob["strategy"]).inference()
        except (TypeError, ValueError, KeyError) as err:
            raise ModelFileError(
                f"model file {path} holds solver settings that cannot be used: {err}; {fix}"
            ) from None
        strategy = (
            blob["strategy"] if isinstance(blob["strategy"], dict) and blob["strategy"] else None
        )
        return cls(field, scaler, blob["dt"], solver=solver, strategy=strategy,
                   field_config=blob["field_config"], provenance=blob["provenance"])

    def __repr__(self) -> str:
        return (f"Surrogate(system={self.system!r}, dim={self.dim}, dt={self.dt}, "
                f"solver={self.solver}, field={type(self.field).__name__})")
