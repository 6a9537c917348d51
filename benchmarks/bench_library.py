"""The default field (library chosen by the data, noise-robust pre-fit) against the degree-2 one.

Train: ``--n-traj`` x ``--n-steps`` samples of a ``systems`` flow (dt: 0.01 for Lorenz'63, else
the system's), observation noise ``--noise`` (a fraction of each component's std), ``--epochs``
epochs. Test: 20 clean held-out starts (seed 7), free runs of ``--horizon`` Lyapunov times; VPT
at normalised error 0.4, in Lyapunov times (capped at the horizon).

    OMP_NUM_THREADS=1 python benchmarks/bench_library.py lorenz63 --noise 0.05 --field auto
    OMP_NUM_THREADS=1 python benchmarks/bench_library.py thomas --field poly

``--field poly``: ``field={"kind": "poly", "degree": 2}, prefit_targets="differences"`` (the
default before the selection); ``auto``: ``fit``'s default. ``--targets``: the pre-fit's and the
selection's targets for ``--field auto`` ("smoothed": the noisy-data path before the weak form);
``--seed``: the training data's and its noise's seed (held-out starts: seed 7). Prints one JSON
row.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings


def run(system: str, *, noise: float, field: str, epochs: int, n_traj: int = 5,
        n_steps: int = 2000, horizon: float = 15.0, n_starts: int = 20, targets: str = "auto",
        seed: int = 1) -> dict:
    import numpy as np
    import torch

    import dynfit
    import systems
    from dynfit.diagnostics.vpt import valid_prediction_time

    torch.set_num_threads(1)
    flow = systems.get(system) if system in systems.names() else systems.from_dysts(system)
    dt = 0.01 if system == "lorenz63" else flow.dt
    lt = 1.0 / flow.lyapunov_max
    data = systems.simulate(flow, n_traj=n_traj, n_steps=n_steps, dt=dt, seed=seed,
                            transient=500 * dt, noise=noise)
    n = int(round(horizon * lt / dt)) + 1
    held = systems.simulate(flow, n_traj=n_starts, n_steps=n, dt=dt, seed=7,
                            transient=500 * dt).x.values
    std = held.reshape(-1, held.shape[2]).std(axis=0)
    kw = {"prefit_targets": targets}
    if field == "poly":
        kw = {"field": {"kind": "poly", "degree": 2}, "prefit_targets": "differences"}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sur, hist = dynfit.fit(data, epochs=epochs, progress=False, **kw)
        wall = time.perf_counter() - t0
        pred = sur.generate(held[:, 0], n, on_failure="ignore")
    blown = ~np.isfinite(pred).all(axis=(1, 2))
    vpt = valid_prediction_time(held, np.nan_to_num(pred, nan=1e6), dt=dt, lyapunov_time=lt,
                                std=std, thresholds=0.4)[:, 0]
    a = hist.attrs
    return {"system": system, "noise": noise, "field": field, "epochs": epochs, "seed": seed,
            "vpt_mean": round(float(vpt.mean()), 2), "vpt_median": round(float(np.median(vpt)), 2),
            "vpt_min": round(float(vpt.min()), 2), "blown": int(blown.sum()),
            "fit_wall_s": round(wall, 1),
            "library": a.get("library"), "prefit_targets": a.get("prefit_targets"),
            "noise_estimate": a.get("noise_estimate"), "weak_width": a.get("prefit_weak_width"),
            "prefit_field_error": a.get("prefit_field_error"),
            "shooting_iterations": a.get("shooting_iterations"),
            "shooting_misfit": a.get("shooting_misfit"),
            "shooting_parameters": a.get("shooting_parameters"),
            "shooting_kept": a.get("shooting_kept"),
            "stop_reason": a.get("stop_reason")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("system")
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--field", choices=("auto", "poly"), default="auto")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--horizon", type=float, default=15.0)
    p.add_argument("--targets", choices=("auto", "differences", "smoothed", "weak"),
                   default="auto", help="prefit_targets (field auto; poly uses differences)")
    p.add_argument("--seed", type=int, default=1, help="seed of the training data and its noise")
    a = p.parse_args(argv)
    row = run(a.system, noise=a.noise, field=a.field, epochs=a.epochs, horizon=a.horizon,
              targets=a.targets, seed=a.seed)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
