"""Per-trajectory statistics of a solve: one :class:`Stats` type for both integrators.

``systems.integrate`` (numba kernels) fills it with numpy arrays and
``dynfit.odesolve`` (torch) with tensors on the solve's device; the names mean
the same thing in both:

- ``n_steps = n_accepted + n_rejected``: Runge-Kutta steps attempted, per trajectory;
- ``n_f_evals_per_example``: right-hand-side evaluations that included the trajectory;
- ``n_f_evals``: calls of the right-hand side (an int). dynfit evaluates a batch per
  call, so a call counts once however many rows it holds; ``systems`` integrates
  one trajectory per call, so there it is the sum of ``n_f_evals_per_example``;
- ``status``: :class:`systems.Status` codes.

The solver-internal fields (``error_rate``, ``accepted``, ``substeps``, ``h``
and the per-interval histories) are filled by ``dynfit.odesolve``, which the
training loop reads; ``systems`` leaves those it does not track as None.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .status import Status

__all__ = ["Stats"]


def _numpy(v) -> np.ndarray:
    """A numpy copy of a numpy array or a torch tensor (any device), without importing torch."""
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


@dataclass(kw_only=True)
class Stats:
    """Per-trajectory (per-example) statistics of a solve; arrays of shape (B,).

    n_steps, n_accepted, n_rejected, n_f_evals_per_example, status: always set.
    error_rate: error measure of the first attempt on the last output interval
        (dynfit MixedNorm: the scaled RMS error of the first attempt reaching into it,
        accepted if <= 1; PaperRule: r = |A1 - A2|_1 / h, or |reference - A2|_1 / h).
        NaN with fixed steps; None where not tracked (systems).
    accepted: no attempt was rejected (PaperRule: the attempt was accepted on every interval).
    substeps: steps kept on the last interval (PaperRule: 1 if accepted, else n; MixedNorm:
        accepted steps ending inside it; fixed steps: steps per interval); None in systems.
    h: last step size taken (positive); None in systems.
    interval_error_rate, interval_accepted, interval_substeps: (T-1, B) histories of
        r, acceptance and substeps per output interval (PaperRule only, else None).
    n_f_evals: calls of the right-hand side in the forward pass (see the module docstring).
    n_f_evals_backward: vector-Jacobian products through the field run so far by backward
        passes through this solve (dynfit; 0 before backward and in systems).
    method, control: the solver's method and step control, for the record.
    """

    n_steps: object
    n_accepted: object
    n_rejected: object
    status: object
    n_f_evals_per_example: object
    error_rate: object = None
    accepted: object = None
    substeps: object = None
    h: object = None
    interval_error_rate: object = None
    interval_accepted: object = None
    interval_substeps: object = None
    n_f_evals: int = 0
    method: str = ""
    control: str = ""
    counter: object = field(default=None, repr=False, compare=False)

    @property
    def n_f_evals_backward(self) -> int:
        return 0 if self.counter is None else int(self.counter.backward_calls)

    @property
    def success(self) -> bool:
        """True when every trajectory finished."""
        return bool((_numpy(self.status) == Status.SUCCESS).all())

    def failed(self) -> dict[int, Status]:
        """{trajectory index: Status} for the trajectories that did not finish."""
        codes = _numpy(self.status).reshape(-1)
        return {int(i): Status(int(codes[i])) for i in np.flatnonzero(codes != Status.SUCCESS)}

    def _per_example(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "counter" and getattr(self, f.name) is not None
                and not isinstance(getattr(self, f.name), (int, str))}

    def to_xarray(self):
        """xarray.Dataset with dims ("example",) (and ("interval", "example") for the
        PaperRule histories); the scalars become attrs."""
        import xarray as xr

        data = {}
        for name, v in self._per_example().items():
            arr = _numpy(v)
            dims = ("interval", "example") if name.startswith("interval_") else ("example",)
            data[name] = (dims, arr.astype("int8") if name == "status" else arr)
        ds = xr.Dataset(data)
        ds["status"].attrs["codes"] = ", ".join(f"{s.value}={s.name}" for s in Status)
        ds.attrs.update(n_f_evals=int(self.n_f_evals), n_f_evals_backward=self.n_f_evals_backward,
                        method=self.method, control=self.control)
        return ds

    def __repr__(self) -> str:
        ns = _numpy(self.n_steps).astype(np.float64).reshape(-1)
        b = ns.size
        acc = "" if self.accepted is None else \
            f", accepted {_numpy(self.accepted).astype(np.float64).mean() if b else 0.0:.0%}"
        return (f"Stats({self.method}, {self.control}, B={b}, n_f_evals={self.n_f_evals}, "
                f"n_steps mean {ns.mean() if b else 0.0:.1f} max {int(ns.max()) if b else 0}{acc}, "
                f"failed {len(self.failed())})")
