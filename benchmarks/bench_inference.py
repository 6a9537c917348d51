"""Free runs of a surrogate at inference batches: dynfit's InferenceSolver beside torchdiffeq.

The demo's field (``PolynomialField``, pre-fitted to 8 x 1500 Lorenz'63 samples,
float64, eval mode) integrated without gradients from B = 1, 8 and 50 starts over
``--samples`` sampling intervals (one model time unit each), with the surrogates'
inference setting: rkf45 at rtol = atol = 1e-10, per-example steps. torchdiffeq
runs the same tableau (``rkf45``, registered by dynfit) at the same tolerances;
its error norm is one RMS over the batch, which at B = 1 is the same norm as
dynfit's. This is the path of ``Surrogate.generate`` (forecasts, long runs,
Lyapunov exponents of the surrogate): at these batch sizes every call costs its
fixed overhead, not its arithmetic. Prints time per sample and per batched call
(CPU time of this process, median of ``--repeats``, interleaved) and the ratios.

    python benchmarks/bench_inference.py [--samples 300] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch


def setup():
    """The demo's pre-fitted polynomial field (eval mode), scaled attractor starts (56, 3)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_training import demo_field

    field, traj, scaler = demo_field()
    field.eval()
    starts = torch.as_tensor(scaler.forward(traj[:, 100:1500:200].reshape(-1, 3)),
                             dtype=torch.float64)
    return field, starts


class Counted(torch.nn.Module):
    def __init__(self, field):
        super().__init__()
        self.field, self.calls = field, 0

    def forward(self, t, y):
        self.calls += 1
        return self.field(t, y)


def run(solver: str, field: Counted, z0: torch.Tensor, n: int) -> tuple[float, int, torch.Tensor]:
    """(CPU seconds, batched calls, final states) of one free run over n intervals."""
    import torchdiffeq

    from dynfit.strategies import InferenceSolver

    field.calls = 0
    t0 = time.process_time()
    with torch.no_grad():
        if solver == "dynfit":
            ys, _ = InferenceSolver(method="rkf45", rtol=1e-10, atol=1e-10).solve(field, z0, n)
        else:
            t = torch.arange(n + 1, dtype=z0.dtype)
            ys = torchdiffeq.odeint(field, z0, t, method="rkf45", rtol=1e-10, atol=1e-10)
    return time.process_time() - t0, field.calls, ys[-1]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=300, help="sampling intervals per free run")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 50])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    import dynfit.solvers  # noqa: F401  (registers rkf45 with torchdiffeq)

    torch.set_num_threads(1)
    field, starts = setup()
    field = Counted(field)
    z = starts.repeat((max(a.batches) + len(starts) - 1) // len(starts), 1)
    print(
        f"# load average {os.getloadavg()[0]:.2f}; PolynomialField "
        "(demo), float64, rkf45 rtol = atol = 1e-10, "
        f"{a.samples} intervals, no gradients, 1 thread, CPU time, median of {a.repeats}"
    )
    print(
        f"{'B':>3} {'solver':12s} {'ms':>8s} {'calls':>6s} {'us/call':>8s} {'us/sample/start':>15s}"
    )
    out = {}
    for B in a.batches:
        times = {"dynfit": [], "torchdiffeq": []}
        for _ in range(a.repeats):
            for solver in times:
                wall, calls, last = run(solver, field, z[:B], a.samples)
                times[solver].append(wall)
                out[B, solver] = (calls, last)
        med = {s: statistics.median(v) for s, v in times.items()}
        for s in times:
            calls = out[B, s][0]
            print(
                f"{B:3d} {s:12s} {med[s] * 1e3:8.1f} {calls:6d} {med[s] / calls * 1e6:8.1f} "
                f"{med[s] / (a.samples * B) * 1e6:15.2f}"
            )
        gap = float((out[B, "dynfit"][1] - out[B, "torchdiffeq"][1]).abs().max())
        print(
            f"{'':3s} dynfit/torchdiffeq: time {med['dynfit'] / med['torchdiffeq']:.2f}, calls "
            f"{out[B, 'dynfit'][0] / out[B, 'torchdiffeq'][0]:.2f}; "
            "largest difference of the final states "
            f"{gap:.1e} (standardised units)"
        )
        out[B] = med["dynfit"] / med["torchdiffeq"]
    return out


if __name__ == "__main__":
    main()
