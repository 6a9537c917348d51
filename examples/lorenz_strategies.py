"""Compare training strategies on Lorenz'63 by valid prediction time from held-out starts.

Beyond the paper's single trajectory: several training trajectories,
standardised states, an MLP with SiLU, full-batch L-BFGS; each strategy is
trained with the same budget of epochs and judged by the valid prediction
time (threshold 0.4, Lyapunov times) of free runs from held-out initial
conditions, beside the field evaluations it spent in training, over several
seeds. Writes --out/strategies.nc (vpt over strategy, seed and start;
training evaluations and wall time per strategy and seed; vpt_exact_field,
the exact Lorenz field free-run with the same inference solver) and
--out/vpt.png.

    python examples/lorenz_strategies.py --out out/lorenz_strategies
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

STRATEGIES = ("continuous", "black-box", "fehlberg", "curriculum", "torchdiffeq")


def exact_field_default_vpt(train, truth, std, lyapunov_time, dt=0.01):
    """VPT (start,) of the exact Lorenz'63 field run by the default inference (rkf45, 1e-10)."""
    import torch

    import dynfit
    from dynfit.data import Standardizer
    from dynfit.diagnostics import valid_prediction_time

    sigma, rho, beta = (float(train.attrs[f"param_{k}"]) for k in ("sigma", "rho", "beta"))

    def f(t, x):
        return torch.stack(
            [sigma * (x[:, 1] - x[:, 0]), x[:, 0] * (rho - x[:, 2]) - x[:, 1],
             x[:, 0] * x[:, 1] - beta * x[:, 2]],
            dim=1,
        )

    sur = dynfit.Surrogate.from_vector_field(f, dt, scaler=Standardizer.fit(train.x.values))
    pred = sur.generate(truth[:, 0], truth.shape[1])
    return valid_prediction_time(truth, pred, dt=dt, lyapunov_time=lyapunov_time, std=std,
                                 thresholds=0.4)[..., 0]


def exact_field_vpt(train, truth, std, lyapunov_time, dt=0.01, eps=0.1):
    """VPT (start,) of the *exact* Lorenz'63 field free-run with the Fehlberg strategies'
    inference rule.

    The surrogate's frame (standardised states, one sampling interval = one
    model time unit) and its solver (Fehlberg 3(2) with tolerance eps,
    per-example substeps) with the true vector field: what the solver alone
    allows.
    """
    import torch

    from dynfit import strategies
    from dynfit.data import Standardizer
    from dynfit.diagnostics import valid_prediction_time
    from dynfit.surrogate import Surrogate

    scaler = Standardizer.fit(train.x.values)
    m, s = torch.tensor(scaler.mean), torch.tensor(scaler.std)
    sigma, rho, beta = (float(train.attrs[f"param_{k}"]) for k in ("sigma", "rho", "beta"))

    class Exact(torch.nn.Module):
        def forward(self, t, z):
            x = z * s + m
            dx = torch.stack(
                [sigma * (x[:, 1] - x[:, 0]), x[:, 0] * (rho - x[:, 2]) - x[:, 1],
                 x[:, 0] * x[:, 1] - beta * x[:, 2]],
                dim=1,
            )
            return dt * dx / s

    sur = Surrogate(Exact(), scaler, dt, strategy=strategies.get("fehlberg", eps=eps))
    pred = sur.generate(truth[:, 0], truth.shape[1])
    return valid_prediction_time(truth, pred, dt=dt, lyapunov_time=lyapunov_time, std=std,
                                 thresholds=0.4)[..., 0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/lorenz_strategies")
    p.add_argument("--quick", action="store_true", help="tiny CI mode")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--starts", type=int, default=50, help="held-out initial conditions")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", default="0", help="comma-separated training seeds, e.g. 0,1,2")
    p.add_argument("--max-horizon", type=int, default=8,
                   help="longest rollout of the curriculum strategy")
    p.add_argument("--width", type=int, default=64, help="hidden width of the MLP 3-W-W-3 field")
    p.add_argument("--train-traj", type=int, default=8,
                   help="training trajectories of 1500 samples")
    p.add_argument(
        "--lbfgs-tolerance",
        type=float,
        default=1e-7,
        help="L-BFGS gradient tolerance (torch's default 1e-7 stalls small standardised losses)",
    )
    p.add_argument("--horizon", type=int, default=1500,
                   help="free-run length in samples (1500 = 13.6 Lyapunov times; 2800 = 25)")
    p.add_argument(
        "--accurate-truth",
        action="store_true",
        help="held-out truth by DOP853 at 1e-13 (needed past ~20 Lyapunov times) instead of rkf45 "
        "at 1e-9",
    )
    p.add_argument(
        "--eps",
        type=float,
        default=0.1,
        help="error-rate tolerance of the Fehlberg 3(2) strategies, in training and at inference",
    )
    args = p.parse_args(argv)

    import torch
    import xarray as xr

    import systems
    from dynfit.diagnostics import valid_prediction_time
    from dynfit.train import fit

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    n_train, n_steps, n_test, horizon = (
        (2, 200, 4, 150) if args.quick else (args.train_traj, 1500, args.starts, args.horizon)
    )
    epochs = 2 if args.quick else args.epochs
    width = 16 if args.quick else args.width
    train = systems.simulate("lorenz63", n_traj=n_train, n_steps=n_steps, dt=0.01, seed=1,
                             transient=5.0)
    accurate = {"method": "dop853", "rtol": 1e-13, "atol": 1e-13} if args.accurate_truth else {}
    test = systems.simulate("lorenz63", n_traj=n_test, n_steps=horizon, dt=0.01, seed=2,
                            transient=5.0, **accurate)
    truth = test.x.values
    std = train.x.values.reshape(-1, 3).std(axis=0)
    lt = systems.get("lorenz63").lyapunov_time

    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    vpt_exact = exact_field_vpt(train, truth, std, lt, eps=args.eps)
    vpt_exact_default = exact_field_default_vpt(train, truth, std, lt)
    print(
        f"exact Lorenz field with the default inference path (rkf45, 1e-10): VPT mean "
        f"{vpt_exact_default.mean():.2f}, median {np.median(vpt_exact_default):.2f}, "
        f"min {vpt_exact_default.min():.2f}",
        flush=True,
    )
    print(
        f"exact Lorenz field with the same inference solver: VPT mean {vpt_exact.mean():.2f}, "
        f"median {np.median(vpt_exact):.2f}, max {vpt_exact.max():.2f} Lyapunov times",
        flush=True,
    )
    vpt = np.full((len(strategies), len(seeds), n_test), np.nan)
    evals = np.zeros((len(strategies), len(seeds)), np.int64)
    wall = np.zeros((len(strategies), len(seeds)))
    for i, name in enumerate(strategies):
        options = (
            {"method": "rk4", "step_size": 0.5} if name == "torchdiffeq" else {"eps": args.eps}
        )
        if name == "curriculum":
            options["max_horizon"] = args.max_horizon
        field = {"kind": "mlp", "width": width, "depth": 2, "activation": "silu"}
        if name == "continuous":  # fit's defaults: the polynomial + MLP field and its own schedule
            field, options = None, None
        for j, seed in enumerate(seeds):
            sur, hist = fit(train, field=field, strategy=name, strategy_options=options,
                            epochs=epochs, seed=seed, lbfgs_tolerance=args.lbfgs_tolerance,
                            progress=not args.quick,
                            checkpoint_dir=out / "checkpoints" / f"{name}-seed{seed}")
            wall[i, j] = float(hist.wall_time.sum())  # training epochs only, resumed ones included
            evals[i, j] = int(hist.n_f_evals.sum())
            pred = sur.generate(truth[:, 0], horizon)
            v = valid_prediction_time(truth, pred, dt=0.01, lyapunov_time=lt, std=std,
                                      thresholds=0.4)[..., 0]
            vpt[i, j] = v
            print(
                f"{name} seed {seed}: VPT mean {np.mean(v):.2f}, median {np.median(v):.2f}, "
                f"range {v.min():.2f}-{v.max():.2f} Lyapunov times; {evals[i, j]:.3g} training "
                f"evaluations; {wall[i, j]:.0f} s",
                flush=True,
            )
        means = vpt[i].mean(axis=1)
        print(
            f"{name}: VPT mean over seeds {means.mean():.2f} (per-seed means "
            f"{np.round(means, 2).tolist()}), "
            f"median over seeds and starts {np.median(vpt[i]):.2f}",
            flush=True,
        )
    ds = xr.Dataset(
        {"vpt": (("strategy", "seed", "start"), vpt),
         "training_n_f_evals": (("strategy", "seed"), evals),
         "wall_time": (("strategy", "seed"), wall), "vpt_exact_field": (("start",), vpt_exact),
         "vpt_exact_field_default": (("start",), vpt_exact_default)},
        coords={"strategy": strategies, "seed": seeds, "start": np.arange(n_test)},
        attrs={"vpt_threshold": 0.4, "lyapunov_time": lt, "epochs": epochs,
               "max_horizon": args.max_horizon, "eps": args.eps, "train_trajectories": n_train,
               "lbfgs_tolerance": args.lbfgs_tolerance, "horizon_samples": horizon,
               "truth": "dop853 1e-13" if args.accurate_truth else "rkf45 1e-9",
               "field": f"MLP 3-{width}-{width}-3 SiLU float64", "optimizer": "lbfgs"},
    )
    ds.to_netcdf(out / "strategies.nc")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.boxplot([v.ravel() for v in vpt], tick_labels=strategies)
    ax.set_ylabel("valid prediction time (Lyapunov times)")
    ax.set_title(f"Lorenz'63, {n_test} held-out starts x {len(seeds)} seeds, {epochs} epochs each")
    fig.tight_layout()
    fig.savefig(out / "vpt.png", dpi=100)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
