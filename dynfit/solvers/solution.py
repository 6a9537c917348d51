"""What a solve returns: :class:`Solution`, per-example :class:`Stats`, :class:`Status` codes, :class:`SolverError`."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
import torch

from systems.status import Status  # one enum for both packages (re-exported here)

__all__ = ["Status", "Stats", "Solution", "SolverError"]




_ADVICE = {
    Status.MAX_STEPS: "hit the step limit max_steps={max_steps}; raise max_steps, loosen rtol/atol (or eps), "
    "or check the vector field (a field that blows up needs ever smaller steps)",
    Status.STEP_UNDERFLOW: "needed a step size below floating-point resolution; loosen rtol/atol, "
    "use float64, or check the vector field for a singularity or blow-up",
    Status.NONFINITE: "produced NaN or inf; check the vector field and its parameters (NaN weights, "
    "division by zero, blow-up) or shorten the output interval",
}


@dataclass
class Stats:
    """Per-example statistics of a solve; tensors of shape (B,) on y0's device.

    n_steps = n_accepted + n_rejected: Runge-Kutta steps attempted.
    error_rate: error measure of the first attempt on the last output interval
        (MixedNorm: the scaled RMS error of the first attempt reaching into it, accepted
        if <= 1; PaperRule: r = |A1 - A2|_1 / h, or |reference - A2|_1 / h). For a window
        t = (t0, t1) this is the first attempt of the solve. NaN with fixed steps.
    accepted: no attempt was rejected (PaperRule: the attempt was accepted on every interval).
    substeps: steps kept on the last interval (PaperRule: 1 if accepted, else n; MixedNorm:
        accepted steps ending inside it; fixed steps: steps per interval).
    h: last step size taken (positive). status: :class:`Status` codes.
    n_f_evals_per_example: evaluations of the field that included each example.
    interval_error_rate, interval_accepted, interval_substeps: (T-1, B) histories of
        r, acceptance and substeps per output interval (PaperRule only, else None).
    n_f_evals: batched calls of the field in the forward pass (each call counted once).
    n_f_evals_backward: vector-Jacobian products through the field run so far by backward
        passes through this solve (0 before backward; exact once it has run).
    """

    n_steps: torch.Tensor
    n_accepted: torch.Tensor
    n_rejected: torch.Tensor
    error_rate: torch.Tensor
    accepted: torch.Tensor
    substeps: torch.Tensor
    h: torch.Tensor
    status: torch.Tensor
    n_f_evals_per_example: torch.Tensor
    interval_error_rate: torch.Tensor | None = None
    interval_accepted: torch.Tensor | None = None
    interval_substeps: torch.Tensor | None = None
    n_f_evals: int = 0
    method: str = ""
    control: str = ""
    counter: object = field(default=None, repr=False, compare=False)

    @property
    def n_f_evals_backward(self) -> int:
        return 0 if self.counter is None else int(self.counter.backward_calls)

    @property
    def success(self) -> bool:
        """True when every example finished."""
        return bool((self.status == Status.SUCCESS).all())

    def failed(self) -> dict[int, Status]:
        """{example index: Status} for the examples that did not finish."""
        bad = (self.status != Status.SUCCESS).nonzero().flatten().tolist()
        codes = self.status.tolist()
        return {i: Status(codes[i]) for i in bad}

    def _per_example(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}

    def to_xarray(self):
        """xarray.Dataset with dims ("example",) (and ("interval", "example") for the
        PaperRule histories); scalars become attrs."""
        import xarray as xr

        data = {}
        for name, v in self._per_example().items():
            arr = v.detach().cpu().numpy()
            dims = ("interval", "example") if name.startswith("interval_") else ("example",)
            data[name] = (dims, arr.astype("int8") if name == "status" else arr)
        ds = xr.Dataset(data)
        ds["status"].attrs["codes"] = ", ".join(f"{s.value}={s.name}" for s in Status)
        ds.attrs.update(
            n_f_evals=int(self.n_f_evals),
            n_f_evals_backward=self.n_f_evals_backward,
            method=self.method,
            control=self.control,
        )
        return ds

    def __repr__(self) -> str:
        B = self.n_steps.numel()
        ns = self.n_steps.float()
        return (
            f"Stats({self.method}, {self.control}, B={B}, n_f_evals={self.n_f_evals}, "
            f"n_steps mean {ns.mean().item():.1f} max {int(self.n_steps.max()) if B else 0}, "
            f"accepted {self.accepted.float().mean().item():.0%}, failed {len(self.failed())})"
        )


@dataclass
class Solution:
    """ys: (T, B, D) solution at the output times ts (T,); stats: :class:`Stats`."""

    ts: torch.Tensor
    ys: torch.Tensor
    stats: Stats = field(repr=False)

    def to_xarray(self):
        """xarray.Dataset: ys with dims ("time", "example", "component") plus the stats."""
        ds = self.stats.to_xarray()
        ds["ys"] = (("time", "example", "component"), self.ys.detach().cpu().numpy())
        ds = ds.assign_coords(time=self.ts.detach().cpu().numpy())
        return ds


class SolverError(RuntimeError):
    """A solve that could not finish every example; ``.stats`` and ``.solution`` hold what was done.

    ys of an example that failed are NaN from the first output time it did not reach.
    """

    def __init__(self, message: str, stats: Stats, solution: Solution | None = None):
        super().__init__(message)
        self.stats = stats
        self.solution = solution


def failure_message(stats: Stats, t_reached: torch.Tensor, max_steps: int) -> str:
    """One line per failure kind, naming (up to 10) examples and the time each reached."""
    failed = stats.failed()
    B = stats.status.numel()
    lines = [f"odesolve: {len(failed)} of {B} examples did not finish:"]
    for code in (Status.NONFINITE, Status.STEP_UNDERFLOW, Status.MAX_STEPS):
        ex = [i for i, s in failed.items() if s == code]
        if not ex:
            continue
        shown = ", ".join(f"{i} (t={t_reached[i].item():.6g})" for i in ex[:10])
        more = f" and {len(ex) - 10} more" if len(ex) > 10 else ""
        lines.append(f"  {code.name}: examples {shown}{more} " + _ADVICE[code].format(max_steps=max_steps) + ".")
    lines.append("The exception's .stats and .solution hold the statistics and the outputs reached so far.")
    return "\n".join(lines)
