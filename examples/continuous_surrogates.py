"""The default surrogate (`dynfit.fit(data)`) on a chaotic flow, judged as forecasts are judged.

For each seed: simulate training trajectories (the demo's protocol: 8 x 1500
samples at the catalogue's dt) and 50 held-out starts, train with every
default of :func:`dynfit.fit`, free-run the surrogate with its default
inference solver and report

- the valid prediction time (threshold 0.4, Lyapunov times) against a truth
  made by DOP853 at 1e-13, beside the exact field run by the same inference
  path (``Surrogate.from_vector_field``): what the solver alone allows;
- the surrogate's largest Lyapunov exponent (``dynfit.lyapunov_spectrum`` on
  ``physical_field()``) against the truth's;
- the state-space density divergence (KL) of a long free run against a long
  true run, beside the floor given by two independent true runs;
- training time and what the history says about the solver and the stop.

Writes --out/continuous.nc and --out/table.md.

    python examples/continuous_surrogates.py --out docs/results/continuous --seeds 0,1,2
    python examples/continuous_surrogates.py --system rossler \
        --out docs/results/continuous_rossler --seeds 0
    python examples/continuous_surrogates.py --system rossler --horizon 20 --out OUT --epochs 24 \
        --max-stride 8      # overlapping windows past horizon 8 (docs/training.md compares)
    python examples/continuous_surrogates.py --quick --out /tmp/cont      # seconds, for CI
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def exact_field(system):
    """The system's own right-hand side as a torch callable f(t, x) (B, D) -> (B, D)."""
    import torch

    def f(t, x):
        xs = x.detach().cpu().numpy()
        ts = np.broadcast_to(np.asarray(torch.as_tensor(t).detach().cpu(), dtype=float).reshape(-1),
                             (len(xs),))
        out = np.stack([_rhs(system, row, float(tt)) for row, tt in zip(xs, ts)])
        return torch.as_tensor(out, dtype=x.dtype, device=x.device)

    return f


def _rhs(system, x, t):
    out = np.empty_like(x)
    system.rhs(np.ascontiguousarray(x), t, system.param_array(), out)
    return out


def run(
    system_name: str,
    seed: int,
    *,
    n_train: int,
    n_steps: int,
    n_test: int,
    horizon_lt: float,
    epochs: int | None,
    long_steps: int,
    lyap_steps: int,
    progress: bool,
    save=None,
    max_stride: int | None = None,
) -> dict:
    import torch

    import dynfit
    import systems
    from dynfit.diagnostics import valid_prediction_time
    from dynfit.diagnostics.measure import density_divergence

    torch.set_num_threads(1)
    system = systems.get(system_name)
    dt, lt = system.dt, system.lyapunov_time
    n_h = int(round(horizon_lt * lt / dt)) + 1
    train = systems.simulate(system, n_traj=n_train, n_steps=n_steps, dt=dt, seed=100 + seed,
                             transient=5 * lt)
    test = systems.simulate(system, n_traj=n_test, n_steps=n_h, dt=dt, seed=200 + seed,
                            transient=5 * lt, method="dop853", rtol=1e-13, atol=1e-13)
    t0 = time.perf_counter()
    kw = {} if epochs is None else {"epochs": epochs}
    # overlapping windows beyond this horizon (ContinuousStrategy(max_stride=...))
    if max_stride is not None:
        kw["strategy_options"] = {"max_stride": max_stride}
    sur, hist = dynfit.fit(train, seed=seed, progress=progress, **kw)
    train_s = time.perf_counter() - t0
    if save is not None:
        sur.save(save / f"model_seed{seed}.pt")
    std = train.x.values.reshape(-1, system.dim).std(0)
    truth = test.x.values
    t1 = time.perf_counter()
    pred = sur.generate(truth[:, 0], n_h)
    gen_s = time.perf_counter() - t1
    vpt = valid_prediction_time(truth, pred, dt=dt, lyapunov_time=lt, std=std, thresholds=0.4)[
        ..., 0
    ]
    exact = dynfit.Surrogate.from_vector_field(exact_field(system), dt, scaler=sur.scaler,
                                               solver=sur.solver)
    vpt_exact = valid_prediction_time(truth, exact.generate(truth[:, 0], n_h), dt=dt,
                                      lyapunov_time=lt, std=std, thresholds=0.4)[..., 0]
    lam = dynfit.lyapunov_spectrum(sur.physical_field(), truth[:4, 0], dt=dt, n_steps=lyap_steps,
                                   transient=lyap_steps // 10)
    # long: the reference
    lam_true = systems.lyapunov_spectrum(system, n_steps=max(10 * lyap_steps, 1000), dt=dt)
    runs = systems.simulate(system, n_traj=2, n_steps=long_steps, dt=dt, seed=300 + seed,
                            transient=5 * lt)
    long_pred = sur.generate(runs.x.values[0, 0], long_steps)[0]
    cut = long_steps // 10
    kl = density_divergence(runs.x.values[0, cut:], long_pred[cut:])
    kl_floor = density_divergence(runs.x.values[0, cut:], runs.x.values[1, cut:])
    return {
        "vpt": vpt,
        "vpt_exact": vpt_exact,
        "lambda1": float(lam[0]),
        "lambda1_true": float(lam_true[0]),
        "kl": float(kl),
        "kl_floor": float(kl_floor),
        "train_s": train_s,
        "generate_s": gen_s,
        "epochs": int(hist.sizes["epoch"]),
        "stop_reason": str(hist.attrs.get("stop_reason", "")),
        "prefit_field_error": float(hist.attrs.get("prefit_field_error", np.nan)),
        "final_rtol": float(hist.rtol.values[-1]) if hist.sizes["epoch"] else np.nan,
        "mean_steps": float(hist.mean_steps.values.mean()) if hist.sizes["epoch"] else np.nan,
        "max_horizon_reached": int(hist.horizon.values.max()) if hist.sizes["epoch"] else 0,
        "training_n_f_evals": float(hist.n_f_evals.values.sum()) if hist.sizes["epoch"] else 0.0,
        "min_accepted": float(hist.accepted_fraction.values.min())
        if hist.sizes["epoch"]
        else np.nan,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--system", default="lorenz63",
                    help="a name from systems.names() (default lorenz63)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    ap.add_argument("--epochs", type=int, default=None, help="epoch budget (default: fit's)")
    ap.add_argument("--horizon", type=float, default=25.0,
                    help="free-run length in Lyapunov times (default 25)")
    ap.add_argument(
        "--lyapunov-steps",
        type=int,
        default=20_000,
        help="steps of the surrogate's Lyapunov estimate (4 starts; the truth's runs 10x longer)",
    )
    ap.add_argument(
        "--max-stride",
        type=int,
        default=None,
        help="windows start at most this many samples apart (overlapping beyond; default: "
        "disjoint)",
    )
    ap.add_argument("--quick", action="store_true", help="a tiny run for CI (seconds)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    import xarray as xr

    from systems.files import atomic_path

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    size = (
        dict(n_train=2, n_steps=300, n_test=4, horizon_lt=2.0, epochs=1, long_steps=600,
             lyap_steps=200)
        if args.quick
        else dict(n_train=8, n_steps=1500, n_test=50, horizon_lt=args.horizon, epochs=args.epochs,
                  long_steps=20_000, lyap_steps=args.lyapunov_steps)
    )
    out = Path(args.out)
    results = [
        run(args.system, s, progress=not args.no_progress, save=out, max_stride=args.max_stride,
            **size)
        for s in seeds
    ]
    ds = xr.Dataset(
        {
            "vpt": (
                ("seed", "start"),
                np.stack([r["vpt"] for r in results]),
                {"units": "Lyapunov times"},
            ),
            "vpt_exact_field": (
                ("seed", "start"),
                np.stack([r["vpt_exact"] for r in results]),
                {"units": "Lyapunov times"},
            ),
            **{
                k: (("seed",), np.array([r[k] for r in results]))
                for k in (
                    "lambda1",
                    "lambda1_true",
                    "kl",
                    "kl_floor",
                    "train_s",
                    "generate_s",
                    "epochs",
                    "prefit_field_error",
                    "final_rtol",
                    "mean_steps",
                    "min_accepted",
                    "max_horizon_reached",
                    "training_n_f_evals",
                )
            },
            "stop_reason": (("seed",), np.array([r["stop_reason"] for r in results], dtype=str)),
        },
        coords={"seed": seeds},
        attrs={
            "system": args.system,
            "vpt_threshold": 0.4,
            "max_stride": str(args.max_stride),
            "command": "python "
            + " ".join(
                ["examples/continuous_surrogates.py"] + list(sys.argv[1:] if argv is None else argv)
            ),
        },
    )
    with atomic_path(out / "continuous.nc") as tmp:
        ds.to_netcdf(tmp)
    lines = [
        f"# Default `dynfit.fit` on {args.system}",
        "",
        f"Command: `{ds.attrs['command']}`",
        "",
        "| seed | VPT mean / median / min (LT) | exact "
        "field, same solver | lambda1 (true) | KL (floor) "
        "| train s | epochs | longest horizon | stop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, r in zip(seeds, results):
        v, ve = r["vpt"], r["vpt_exact"]
        lines.append(
            f"| {s} | {v.mean():.2f} / {np.median(v):.2f} / {v.min():.2f} | {ve.mean():.2f} | "
            f"{r['lambda1']:.4f} ({r['lambda1_true']:.4f}) | {r['kl']:.3f} ({r['kl_floor']:.3f}) | "
            f"{r['train_s']:.0f} | {r['epochs']} | {r['max_horizon_reached']} | "
            f"{r['stop_reason'][:60]} |"
        )
    allv = np.concatenate([r["vpt"] for r in results])
    lines += ["", f"All seeds: VPT mean {allv.mean():.2f}, median {np.median(allv):.2f}."]
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
