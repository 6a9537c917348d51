"""What a solve returns: :class:`Solution`, per-example :class:`Stats`, :class:`Status` codes,
:class:`SolverError`."""
from __future__ import annotations

from dataclasses import dataclass, field
import torch

from _dyncore.stats import Stats  # one Stats type for both packages (re-exported here)
from _dyncore.status import Status  # one enum for both packages (re-exported here)

__all__ = ["Status", "Stats", "Solution", "SolverError"]




_ADVICE = {
    Status.MAX_STEPS: "hit the step limit max_steps={max_steps}; raise max_steps, loosen "
    "rtol/atol (or eps), or check the vector field (a field that blows up needs ever smaller "
    "steps)",
    Status.STEP_UNDERFLOW: "needed a step size below floating-point resolution; loosen rtol/atol, "
    "use float64, or check the vector field for a singularity or blow-up",
    Status.NONFINITE: "produced NaN or inf; check the vector field and its parameters "
    "(NaN weights, division by zero, blow-up) or shorten the output interval",
}


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
        advice = _ADVICE[code].format(max_steps=max_steps)
        lines.append(f"  {code.name}: examples {shown}{more} {advice}.")
    lines.append("The exception's .stats and .solution hold the statistics and the outputs "
                 "reached so far.")
    return "\n".join(lines)
