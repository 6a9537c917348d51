"""The pre-fit's difference order: ``fit`` with ``epochs=0`` (pre-fit only) at several orders, on
the forecasting benchmark's problems.

For each flow the benchmark's problem (protocol ``--protocol``, noise 0, seed ``--seed``: the data,
held-out starts and clean truth of ``dynfit benchmark``) is made, or read from ``--cache`` (a
benchmark run's ``problems`` folder). The default field is pre-fitted at each ``--orders`` entry
(an even integer or "auto") and free-run from the held-out starts; prints one JSON row per flow and
order: mean VPT at normalised error 0.4 (Lyapunov times), the order used, the pre-fit's targets,
the field error and the fit's CPU seconds.

    OMP_NUM_THREADS=1 python benchmarks/bench_prefit_order.py Lorenz ChenLee --orders 8,auto
"""
from __future__ import annotations

import argparse
import json
import time


def run(system: str, order, *, protocol: str = "gilpin", seed: int = 0, cache=None) -> dict:
    import numpy as np
    import torch

    import dynfit
    from dynfit.benchmark.protocols import make_problem
    from dynfit.benchmark.scores import forecast_scores

    problem = make_problem(system, protocol, noise=0.0, seed=seed, cache=cache)
    torch.set_num_threads(1)  # again: numba's parallel launch resets it (docs/systems.md)
    t0 = time.process_time()
    sur, hist = dynfit.fit(problem.train, dt=problem.dt, epochs=0, seed=seed, progress=False,
                           prefit_order=order)
    cpu = time.process_time() - t0
    vpt = forecast_scores(problem, sur.generate(problem.starts, problem.n_forecast))["vpt"][:, 1]
    return {"system": system, "protocol": protocol, "seed": seed, "prefit_order": order,
            "order_used": int(hist.attrs["prefit_order"]),
            "targets": str(hist.attrs["prefit_targets"]),
            "field_error": float(hist.attrs["field_error"]),
            "vpt_mean": round(float(np.mean(vpt)), 2),
            "vpt": [round(float(v), 2) for v in vpt], "fit_cpu_seconds": round(cpu, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("systems", nargs="+", help="catalogue or dysts flow names")
    parser.add_argument("--orders", default="8,auto",
                        help="comma-separated difference orders (even integers or 'auto')")
    parser.add_argument("--protocol", default="gilpin", choices=("gilpin", "ensemble"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None,
                        help="a benchmark run's problems folder (read, and written when missing)")
    args = parser.parse_args(argv)
    orders = [o if o == "auto" else int(o) for o in args.orders.split(",")]
    for system in args.systems:
        for order in orders:
            print(json.dumps(run(system, order, protocol=args.protocol, seed=args.seed,
                                 cache=args.cache)), flush=True)


if __name__ == "__main__":
    main()
