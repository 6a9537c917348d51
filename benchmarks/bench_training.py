"""Training cost per field evaluation: long rollouts against one-step windows, side by side in one run.

One forward + backward pass of the default (continuous) strategy's rollout
over the demo's data (8 x 1500 Lorenz'63 samples), for horizons 1, 8 and 128,
with windows starting every `horizon` samples (each sample once per pass, the
schedule's choice) and, for the long horizon, overlapping windows (a start
every 16 samples: more rows per batched call). Prints wall time per field
evaluation (rows) and per batched call, and the ratio to horizon 1.

    python benchmarks/bench_training.py [--repeats 3] [--rtol 1e-9]
"""
from __future__ import annotations

import argparse
import time

import torch


def one_pass(field, strat, x0, tg, h) -> tuple[float, int, int]:
    """(seconds, rows evaluated, batched calls) of one rollout + backward."""
    from dynfit import strategies

    field.zero_grad()
    t0 = time.perf_counter()
    ys, st = strat.rollout(field, x0, h, tg)
    loss = (ys - tg[:h]).pow(2).sum(-1).mean()
    loss.backward()
    wall = time.perf_counter() - t0
    s = strategies.summary(st, h)
    return wall, int(s["n_f_evals"]), int(st.n_f_evals)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rtol", type=float, default=1e-9)
    args = ap.parse_args(argv)
    import systems
    from dynfit.data import make_windows
    from dynfit.nn.fields import PolynomialField
    from dynfit.prefit import prefit
    from dynfit.strategies import ContinuousStrategy

    torch.set_num_threads(1)
    data = systems.simulate("lorenz63", n_traj=8, n_steps=1500, dt=0.01, seed=1, transient=5.0)
    traj = data.x.values
    base = make_windows(traj, horizon=1, stride=1, standardize=True, dt=0.01)
    torch.manual_seed(0)
    field = PolynomialField(3, dtype=torch.float64)
    prefit(field, base.scaler.forward(traj), iterations=40)
    strat = ContinuousStrategy()
    strat.rtol = args.rtol
    rows = []
    for h, stride in ((1, 1), (8, 8), (128, 128), (128, 16)):
        w = make_windows(traj, horizon=h, stride=stride, scaler=base.scaler, dt=0.01)
        x0, tg = w.tensors(dtype=torch.float64)
        best = None
        for _ in range(args.repeats):
            r = one_pass(field, strat, x0, tg, h)
            best = r if best is None or r[0] < best[0] else best
        wall, evals, calls = best
        rows.append((h, stride, x0.shape[0], wall, evals, calls))
    ref = rows[0][3] / rows[0][4]
    print(f"continuous strategy, rkf45 at rtol {args.rtol:g}, forward + backward, best of {args.repeats}")
    print(f"{'horizon':>7} {'stride':>6} {'windows':>7} {'wall s':>8} {'rows':>9} {'calls':>6} "
          f"{'us/row':>8} {'ratio to H=1':>12}")
    for h, stride, n, wall, evals, calls in rows:
        per = wall / max(evals, 1)
        print(f"{h:7d} {stride:6d} {n:7d} {wall:8.3f} {evals:9d} {calls:6d} {per * 1e6:8.2f} {per / ref:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
