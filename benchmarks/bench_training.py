"""Training cost per field evaluation: long rollouts against one-step windows, in one run.

One forward + backward pass of the default (continuous) strategy's rollout
over the demo's data (8 x 1500 Lorenz'63 samples), for horizons 1, 8, 32 and
128: with overlapping windows (``ContinuousStrategy(max_stride=8).stride``:
disjoint windows up to ``max_stride`` samples, then a start every
``max_stride`` samples, so that long-horizon batches stay large; opt-in) and
with disjoint windows (a start every ``horizon`` samples, each sample once per
pass: the strategy's default). Prints the time per field evaluation (rows) and per batched
call, and the ratio to horizon 1 (of the best times, and the median of the ratios within each
round). Times are CPU time of this process (best of
``--repeats``; ``--clock wall`` for wall time), with the load average printed.

    python benchmarks/bench_training.py [--repeats 3] [--rtol 1e-9]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


CLOCK = time.process_time


def demo_field():
    """The demo's training data and field: (pre-fitted PolynomialField (float64), trajectories
    (8, 1500, 3), the standardising scaler). Also used by bench_inference.py."""
    import systems
    from dynfit.data import make_windows
    from dynfit.nn.fields import PolynomialField
    from dynfit.prefit import prefit

    data = systems.simulate("lorenz63", n_traj=8, n_steps=1500, dt=0.01, seed=1, transient=5.0)
    traj = data.x.values
    scaler = make_windows(traj, horizon=1, stride=1, standardize=True, dt=0.01).scaler
    torch.manual_seed(0)
    field = PolynomialField(3, dtype=torch.float64)
    prefit(field, scaler.forward(traj), iterations=40)
    return field, traj, scaler


def one_pass(field, strat, x0, tg, h) -> tuple[float, int, int]:
    """(seconds, rows evaluated, batched calls) of one rollout + backward."""
    from dynfit import strategies

    field.zero_grad()
    t0 = CLOCK()
    ys, st = strat.rollout(field, x0, h, tg)
    loss = (ys - tg[:h]).pow(2).sum(-1).mean()
    loss.backward()
    wall = CLOCK() - t0
    s = strategies.summary(st, h)
    return wall, int(s["n_f_evals"]), int(st.n_f_evals)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rtol", type=float, default=1e-9)
    ap.add_argument("--clock", choices=("process", "wall"), default="process",
                    help="CPU time of this process (default; robust to other load) or wall time")
    ap.add_argument(
        "--max-stride",
        type=int,
        default=8,
        help="ContinuousStrategy(max_stride=...) for the overlapping-window rows (default 8; "
        "the strategy's own default is disjoint windows)",
    )
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    from dynfit.data import make_windows
    from dynfit.strategies import ContinuousStrategy

    torch.set_num_threads(1)
    field, traj, scaler = demo_field()
    strat = ContinuousStrategy(max_stride=args.max_stride)
    strat.rtol = args.rtol
    cases = [(1, 1, "both")]
    for h in (8, 32, 128):
        chosen = strat.stride(h, 1)
        cases += [(h, chosen, "overlapping" if chosen != h else "both")] + (
            [(h, h, "disjoint")] if chosen != h else []
        )
    load0 = os.getloadavg()
    windows = {}
    for h, stride, _ in cases:
        w = make_windows(traj, horizon=h, stride=stride, scaler=scaler, dt=0.01)
        windows[h, stride] = w.tensors(dtype=torch.float64)
    best, rounds = {}, []
    for _ in range(args.repeats):  # interleaved: load on the machine hits every case alike
        per_row = {}
        for h, stride, _ in cases:
            x0, tg = windows[h, stride]
            r = one_pass(field, strat, x0, tg, h)
            per_row[h, stride] = r[0] / max(r[1], 1)
            if (h, stride) not in best or r[0] < best[h, stride][0]:
                best[h, stride] = r
        rounds.append({key: v / per_row[1, 1] for key, v in per_row.items()})
    ref = best[1, 1][0] / best[1, 1][1]
    print(
        f"continuous strategy, rkf45 at rtol {args.rtol:g}, forward + backward, best of "
        f"{args.repeats}, "
        f"{args.clock} time; load average {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"max_stride {strat.max_stride}"
    )
    print(
        f"{'horizon':>7} {'stride':>6} {'windows':>7} {'windows are':>11} {'time s':>8} "
        f"{'rows':>9} {'calls':>6} "
        f"{'us/row':>8} {'ratio to H=1':>12} {'median':>6}"
    )
    for h, stride, kind in cases:
        wall, evals, calls = best[h, stride]
        per = wall / max(evals, 1)
        print(
            f"{h:7d} {stride:6d} {windows[h, stride][0].shape[0]:7d} {kind:>11} {wall:8.3f} "
            f"{evals:9d} {calls:6d} {per * 1e6:8.2f} {per / ref:12.2f} "
            f"{statistics.median(r[h, stride] for r in rounds):6.2f}"
        )
    print(
        "ratio to H=1: best time per row over best time per row; median: the median over rounds of "
        "the ratio within one round (less sensitive to the machine drifting between rounds)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
