"""Command line: ``dynfit demo | train | evaluate | compare | plot``.

- ``dynfit demo --out DIR``: simulate Lorenz'63 (``systems.demo``: netCDF,
  attractor figure, Lyapunov spectrum), train a surrogate with our
  curriculum strategy (Fehlberg training whose rollout horizon grows to 128
  steps as the solver accepts; ``--strategy fehlberg`` for the paper's), free-run it from held-out starts and write the model,
  ``diagnostics.nc`` (valid prediction time per start) and PNG figures.
- ``dynfit train CONFIG.toml``: train as a TOML file says (see dynfit.config).
- ``dynfit evaluate | compare | plot``: diagnostics, strategy comparisons and
  figures of saved files (see dynfit.commands).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

VPT_THRESHOLD = 0.4


def demo(out: Path, *, quick: bool = False, epochs: int | None = None, strategy: str = "curriculum",
         max_horizon: int = 128, progress: bool = True) -> dict:
    """The demo; returns a small dict of results (paths and VPT summary)."""
    import torch
    import xarray as xr

    import systems
    from dynfit.diagnostics import valid_prediction_time
    from dynfit.train import fit

    torch.set_num_threads(1)  # one thread: the same numbers as examples/lorenz_strategies.py
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    system = systems.get("lorenz63")
    n_train, n_steps = (2, 300) if quick else (8, 1500)
    n_test, horizon = (4, 200) if quick else (50, 1500)
    epochs = epochs if epochs is not None else (2 if quick else 300)
    t0 = time.perf_counter()
    if not quick:  # the systems side: trajectories as netCDF, the attractor, the true Lyapunov spectrum
        from systems.demo import run_demo

        run_demo(out)
    train = systems.simulate("lorenz63", n_traj=n_train, n_steps=n_steps, dt=0.01, seed=1, transient=5.0)
    test = systems.simulate("lorenz63", n_traj=n_test, n_steps=horizon, dt=0.01, seed=2, transient=5.0)
    print(f"simulated {n_train} training and {n_test} held-out trajectories of Lorenz'63", flush=True)
    field = {"kind": "mlp", "width": 32 if quick else 64, "depth": 2, "activation": "silu"}
    options = {"max_horizon": max_horizon} if strategy == "curriculum" else None
    sur, hist = fit(train, field=field, strategy=strategy, strategy_options=options, optimizer="lbfgs",
                    epochs=epochs, seed=0, checkpoint_dir=out / "checkpoints", progress=progress)
    sur.save(out / "model.pt")
    hist.to_netcdf(out / "history.nc")

    truth = test.x.values                                      # (B, T, D)
    pred, stats = sur.generate(truth[:, 0], horizon, return_stats=True)
    std = train.x.values.reshape(-1, 3).std(axis=0)
    lt = system.lyapunov_time
    vpt = valid_prediction_time(truth, pred, dt=sur.dt, lyapunov_time=lt, std=std,
                                thresholds=VPT_THRESHOLD)[..., 0]
    diag = xr.Dataset(
        {"vpt": (("start",), vpt),
         "mean_substeps": (("start",), stats["substeps"].mean(axis=1)),
         "accepted_fraction": (("start",), stats["accepted"].mean(axis=1)),
         "truth": (("start", "time", "component"), truth),
         "generated": (("start", "time", "component"), pred)},
        coords={"start": np.arange(n_test), "time": np.arange(horizon) * sur.dt,
                "component": list(system.components)},
        attrs={"system": "lorenz63", "vpt_threshold": VPT_THRESHOLD, "lyapunov_time": lt,
               "vpt_units": "Lyapunov times", "strategy": sur.strategy.name, "epochs": int(hist.sizes["epoch"]),
               "training_n_f_evals": int(hist.n_f_evals.sum()), "wall_time_s": time.perf_counter() - t0},
    )
    diag.to_netcdf(out / "diagnostics.nc")
    figures = _demo_figures(hist, diag, out)
    result = {"model": out / "model.pt", "diagnostics": out / "diagnostics.nc", "figures": figures,
              "vpt_mean": float(vpt.mean()), "vpt_median": float(np.median(vpt)),
              "wall_time_s": time.perf_counter() - t0}
    print(f"valid prediction time (threshold {VPT_THRESHOLD}) over {n_test} held-out starts: mean "
          f"{result['vpt_mean']:.2f}, median {result['vpt_median']:.2f}, range {vpt.min():.2f}-{vpt.max():.2f} "
          f"Lyapunov times; {result['wall_time_s']:.0f} s; results in {out}")
    return result


def _demo_figures(hist, diag, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].semilogy(hist.epoch, hist.loss)
    axes[0].set_title("training loss")
    axes[1].plot(hist.epoch, hist.accepted_fraction)
    axes[1].set_title("accepted fraction")
    axes[2].plot(hist.epoch, hist.mean_substeps)
    axes[2].set_title("substeps (rejected examples)")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    paths.append(out / "training.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    lt = diag.attrs["lyapunov_time"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 6), sharex=True)
    best = int(np.argsort(diag.vpt.values)[len(diag.vpt) // 2])  # a typical (median) start
    t = diag.time.values / lt
    for i, ax in enumerate(axes):
        ax.plot(t, diag.truth.values[best, :, i], "k", lw=1, label="truth")
        ax.plot(t, diag.generated.values[best, :, i], "C1", lw=1, label="surrogate")
        ax.axvline(float(diag.vpt[best]), color="C3", ls="--", lw=1)
        ax.set_ylabel(str(diag.component.values[i]))
    axes[0].legend(loc="upper right")
    axes[-1].set_xlabel("time (Lyapunov times); dashed: valid prediction time")
    fig.tight_layout()
    paths.append(out / "trajectory.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].hist(diag.vpt.values, bins=15)
    axes[0].set_xlabel("valid prediction time (Lyapunov times)")
    axes[0].set_title(f"{diag.sizes['start']} held-out starts, threshold {diag.attrs['vpt_threshold']}")
    g = diag.generated.values.reshape(-1, 3)
    g = g[np.isfinite(g).all(axis=1)]
    tr = diag.truth.values.reshape(-1, 3)
    axes[1].plot(tr[:, 0], tr[:, 2], ",", color="k", alpha=0.3, label="truth")
    axes[1].plot(g[:, 0], g[:, 2], ",", color="C1", alpha=0.3, label="surrogate")
    axes[1].set_xlabel("x")
    axes[1].set_ylabel("z")
    axes[1].set_title("attractor (x, z)")
    fig.tight_layout()
    paths.append(out / "vpt.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _demo_cmd(args: argparse.Namespace) -> int:
    demo(Path(args.out), quick=args.quick, epochs=args.epochs, strategy=args.strategy,
         max_horizon=args.max_horizon, progress=not args.no_progress)
    return 0


def _train_cmd(args: argparse.Namespace) -> int:
    from dynfit.config import load_config, run

    cfg = load_config(args.config)
    sur, hist, _ = run(cfg, out=args.out, progress=not args.no_progress)
    out = Path(args.out or cfg["output"]["dir"])
    print(f"trained {sur!r} for {hist.sizes['epoch']} epochs; final loss {float(hist.loss[-1]):.4g}, "
          f"accepted fraction {float(hist.accepted_fraction[-1]):.3f}; wrote {out / 'model.pt'} and "
          f"{out / 'history.nc'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynfit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo_p = sub.add_parser("demo", help="simulate Lorenz'63, train, generate; write model, netCDF and figures")
    demo_p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo_p.add_argument("--quick", action="store_true", help="a tiny run for tests (seconds)")
    demo_p.add_argument("--epochs", type=int, default=None, help="training epochs (default 300, quick 2)")
    demo_p.add_argument("--strategy", default="curriculum", help="training strategy (default curriculum)")
    demo_p.add_argument("--max-horizon", type=int, default=128, help="longest rollout of the curriculum")
    demo_p.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo_p.set_defaults(func=_demo_cmd)
    train_p = sub.add_parser("train", help="train a surrogate as a TOML config says")
    train_p.add_argument("config", help="CONFIG.toml (sections data, field, strategy, train, output)")
    train_p.add_argument("--out", default=None, help="output folder (default: [output] dir)")
    train_p.add_argument("--no-progress", action="store_true", help="no progress bar")
    train_p.set_defaults(func=_train_cmd)
    from .commands import add_commands

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"dynfit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
