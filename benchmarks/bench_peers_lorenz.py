"""Each benchmark method's valid prediction time on Lorenz'63, on a small ensemble protocol.

Train: 5 trajectories x 2000 samples at dt = 0.01 (clean). Test: 20 held-out starts on the
attractor (another seed), 1500 steps each, 100 samples of history before each start (the
reservoir models warm up on it). VPT at normalised error 0.4 in Lyapunov times (1 / 0.9056).

    python benchmarks/bench_peers_lorenz.py [--methods esn,nvar] [--budget 90] [--quick]

Prints one markdown row per method (mean / median VPT, fit CPU and wall seconds); ``--budget``:
each fit's budget in CPU seconds; ``--quick``: tiny data and settings (CI). Run it with
OMP_NUM_THREADS=1 (the fits are single-threaded, as in the benchmark).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

LYAPUNOV_TIME = 1 / 0.9056


def run(methods, *, budget: float | None, quick: bool, seed: int = 0,
        variant: str | None = None) -> list[dict]:
    import systems
    from dynfit import valid_prediction_time
    from dynfit.benchmark import methods as M

    n_train, t_train, n_test, steps, hist = ((2, 600, 4, 200, 100) if quick
                                             else (5, 2000, 20, 1500, 100))
    dt = 0.01
    train = systems.simulate("lorenz63", n_traj=n_train, n_steps=t_train, dt=dt,
                             seed=seed).x.values
    test = systems.simulate("lorenz63", n_traj=n_test, n_steps=hist + steps, dt=dt,
                            seed=seed + 1000).x.values
    history, truth = test[:, :hist], test[:, hist - 1:hist - 1 + steps]
    std = train.reshape(-1, 3).std(axis=0)
    rows = []
    for name in methods:
        opts = {"variant": variant} if variant and name == "torchdiffeq" else {}
        m = M.make(name, seed=seed, budget=budget, quick=quick, **opts)
        t0, c0 = time.perf_counter(), time.process_time()
        m.fit(train, dt)
        fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        pred = m.forecast(truth[:, 0], steps, history=history)
        vpt = valid_prediction_time(truth, pred, dt=dt, lyapunov_time=LYAPUNOV_TIME, std=std,
                                    thresholds=0.4)[:, 0]
        row = {"method": name + (f"[{variant}]" if opts else ""), "vpt_mean": float(vpt.mean()),
               "vpt_median": float(np.median(vpt)), "vpt_min": float(vpt.min()),
               "vpt_max": float(vpt.max()), "cap": (steps - 1) * dt / LYAPUNOV_TIME,
               "fit_seconds": fit_s, "fit_cpu_seconds": cpu_s, "chosen": m.settings.get("chosen"),
               "stop_reason": m.settings.get("stop_reason")}
        rows.append(row)
        print(f"| {row['method']} | {row['vpt_mean']:.2f} | {row['vpt_median']:.2f} | "
              f"{row['vpt_min']:.2f}-{row['vpt_max']:.2f} | {cpu_s:.1f} | {fit_s:.1f} | "
              f"{json.dumps(row['chosen'])} |", flush=True)
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--budget", type=float, default=90.0,
                        help="each fit's budget in CPU seconds (single-threaded)")
    parser.add_argument("--variant", default=None, help="torchdiffeq variant (gilpin, strong)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny data and settings (CI)")
    args = parser.parse_args(argv)
    from dynfit.benchmark.methods import method_names

    names = args.methods.split(",") if args.methods else method_names()
    print("| method | VPT mean (LT) | median | range | fit CPU s | fit wall s | chosen |\n"
          "|---|---|---|---|---|---|---|")
    return run(names, budget=args.budget, quick=args.quick, seed=args.seed, variant=args.variant)


if __name__ == "__main__":
    main()
