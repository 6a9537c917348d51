"""Reproduce Allauzen, Petrilli Maffei Dardis and Plath (2022) on the paper's own data.

MLP 3-50-50-3 ReLU in float64, full-batch L-BFGS (lr 1, 20 iterations per
epoch, strong Wolfe), Fehlberg 3(2) with eps 0.1 and S 0.9, one-step pairs of
the raw (unscaled) training trajectory in rescaled time, 200 epochs, several
seeds; strategies "black-box" (the batch procedure), "fehlberg" (Fehlberg
training) and "curriculum" (ours). Writes to --out:

- history.nc: loss, accepted_fraction, mean_substeps, max_substeps, n_f_evals
  over (strategy, seed, epoch);
- generation.nc: the paper's generation_error (sum of squared errors of a free
  run from the first point / (T-1)), its spread under 1e-10 perturbations of
  the start, diverged, over (strategy, seed, dataset); the constant-mean
  predictor's score; vpt (valid prediction time, Lyapunov times, threshold
  0.4) from starts along the test trajectory over (strategy, seed, start),
  and vpt_diverged (those free runs that left 10 x the data's range);
  density_kl and wasserstein over (strategy, seed): distances between the
  state-space distribution of the VPT free runs (first steps dropped) and
  the attractor's, from a long true run made with ``systems``;
- figures: training.png, generation.png, vpt.png.

Trained models are kept in --out/models, so a second call only evaluates
(a killed run resumes from its checkpoints).

    python examples/reproduce_allauzen2022.py --out docs/results/allauzen2022
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "allauzen2022"
STRATEGIES = ("black-box", "fehlberg", "curriculum")
LYAPUNOV_TIME = 1.0 / 0.9056      # Lorenz'63, docs/references.md section 4
DT = 0.01
# steps of a free run dropped before its states count for the measure
ATTRACTOR_FROM = 500


def load_data(path: Path, quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(train (T, 3), test (T, 3), source) from the paper's files, or simulated alike."""
    f1, f2 = path / "dataset1.npy", path / "dataset2.npy"
    if f1.exists() and f2.exists():
        d1, d2, src = np.load(f1), np.load(f2), f"paper files in {path}"
    else:
        import systems

        ds = systems.simulate("lorenz63", n_traj=1, n_steps=10_000, dt=DT, method="rkf45",
                              rtol=1e-10, atol=1e-12, x0=np.array([0.01, 0.0, 0.0]))
        x = ds.x.values[0]
        d1, d2, src = x[:5000], x[5000:], "simulated with systems (paper files absent)"
    if quick:
        d1, d2 = d1[:400], d2[:400]
    return d1, d2, src


def paper_field():
    import torch

    from dynfit.nn.fields import MLPField

    return MLPField(3, width=50, depth=2, activation="relu", dtype=torch.float64)


def train_all(
    train: np.ndarray,
    out: Path,
    strategies,
    seeds,
    epochs: int,
    quick: bool,
    *,
    eval_only=False,
    max_horizon: int = 8,
    accept_threshold: float = 0.9,
):
    """Train (or load) every (strategy, seed); returns {(strategy, seed): (Surrogate, history)}.

    With eval_only, only the models already in out/models are loaded.
    """
    import torch
    import xarray as xr

    from dynfit.surrogate import Surrogate
    from dynfit.train import fit

    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    runs = {}
    for strategy in strategies:
        for seed in seeds:
            tag = f"{strategy}-seed{seed}"
            mpath, hpath = models / f"{tag}.pt", models / f"{tag}.history.nc"
            if mpath.exists() and hpath.exists():
                runs[strategy, seed] = (Surrogate.load(mpath), xr.load_dataset(hpath))
                continue
            if eval_only:
                print(f"{tag}: no trained model in {models}, left out", flush=True)
                continue
            torch.manual_seed(seed)
            options = None
            if strategy == "curriculum":
                options = {"max_horizon": min(4, max_horizon) if quick else max_horizon,
                           "accept_threshold": accept_threshold}
            t0 = time.perf_counter()
            sur, hist = fit(train, field=paper_field(), strategy=strategy, strategy_options=options,
                            optimizer="lbfgs", epochs=epochs, seed=seed, dt=DT, standardize=False,
                            checkpoint_dir=out / "checkpoints" / tag, progress=not quick,
                            provenance={"system": "lorenz63", "data": "allauzen2022"})
            print(
                f"{tag}: {time.perf_counter() - t0:.0f} s, final loss {float(hist.loss[-1]):.4g}, "
                f"accepted {float(hist.accepted_fraction[-1]):.3f}",
                flush=True,
            )
            sur.field_config = {"kind": "mlp", "width": 50, "depth": 2, "activation": "relu"}
            sur.save(mpath)
            hist.to_netcdf(hpath)
            runs[strategy, seed] = (sur, hist)
    return runs


def history_dataset(runs, strategies, seeds):
    import xarray as xr

    variables = (
        "loss",
        "accepted_fraction",
        "mean_substeps",
        "max_substeps",
        "n_f_evals",
        "horizon",
        "wall_time",
        "retries",
    )
    n_epoch = max(int(h.sizes["epoch"]) for _, h in runs.values())
    data = {v: np.full((len(strategies), len(seeds), n_epoch), np.nan) for v in variables}
    for i, s in enumerate(strategies):
        for j, seed in enumerate(seeds):
            if (s, seed) not in runs:
                continue
            h = runs[s, seed][1]
            for v in variables:
                data[v][i, j, : h.sizes["epoch"]] = h[v].values if v in h else 0
    return xr.Dataset(
        {v: (("strategy", "seed", "epoch"), a) for v, a in data.items()},
        coords={"strategy": list(strategies), "seed": list(seeds), "epoch": np.arange(n_epoch)},
    )


def generation_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """The paper's measure: sum of squared errors of the free run / (T - 1)."""
    return float(((pred - truth) ** 2).sum() / (len(truth) - 1))


def vpt(pred: np.ndarray, truth: np.ndarray, std: np.ndarray, threshold: float = 0.4) -> np.ndarray:
    """Valid prediction time (Lyapunov times) of free runs pred against truth, both (B, T, D)."""
    from dynfit.diagnostics import valid_prediction_time

    return valid_prediction_time(truth, pred, dt=DT, lyapunov_time=LYAPUNOV_TIME, std=std,
                                 thresholds=threshold)[..., 0]


def reference_attractor(x0: np.ndarray, n_steps: int) -> np.ndarray:
    """(n_steps, 3) true Lorenz'63 run from x0 (the paper's parameters): the attractor."""
    import systems

    ds = systems.simulate("lorenz63", n_traj=1, n_steps=n_steps, dt=DT, method="rkf45", rtol=1e-10,
                          atol=1e-12, x0=np.asarray(x0, dtype=np.float64))
    return ds.x.values[0]


def measure_distances(truth: np.ndarray, run: np.ndarray) -> tuple[float, float]:
    """(state-space density KL [nats], mean per-component W1 [truth std]) of a long run."""
    from dynfit.diagnostics import density_divergence, wasserstein

    return density_divergence(truth, run), float(np.mean(wasserstein(truth, run)))


def evaluate(
    runs, datasets: dict, strategies, seeds, *, n_perturb: int, vpt_every: int, vpt_len: int
):
    import xarray as xr

    train = datasets["dataset1"]
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    bound = 10 * np.abs(train).max()
    names = list(datasets)
    shape = (len(strategies), len(seeds), len(names))
    ge, spread, div = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, bool)
    test = datasets["dataset2"]
    starts = np.arange(0, len(test) - vpt_len, vpt_every)
    vp = np.full((len(strategies), len(seeds), len(starts)), np.nan)
    vp_div = np.zeros((len(strategies), len(seeds), len(starts)), bool)
    kl, w1 = np.full(shape[:2], np.nan), np.full(shape[:2], np.nan)
    drop = min(ATTRACTOR_FROM, vpt_len // 4)
    attractor = reference_attractor(test[-1], n_steps=20 * len(test))
    rng = np.random.default_rng(0)
    examples = {}
    for i, s in enumerate(strategies):
        for j, seed in enumerate(seeds):
            if (s, seed) not in runs:
                continue
            sur = runs[s, seed][0]
            for k, name in enumerate(names):
                truth = datasets[name]
                x0 = truth[0] + np.concatenate(
                    [np.zeros((1, 3)), 1e-10 * rng.standard_normal((n_perturb, 3))]
                )
                pred = sur.generate(x0, len(truth))
                errs = np.array([generation_error(p, truth) for p in pred])
                ge[i, j, k] = errs[0]
                spread[i, j, k] = np.nanstd(errs[1:]) if n_perturb > 1 else np.nan
                bad = ~np.isfinite(pred[0]).all() or np.abs(pred[0]).max() > bound
                div[i, j, k] = bool(bad)
                examples.setdefault((s, name), pred[0])
            x0 = test[starts]
            pred = sur.generate(x0, vpt_len)
            truth = np.stack([test[a : a + vpt_len] for a in starts])
            vp[i, j] = vpt(pred, truth, std)
            vp_div[i, j] = ~np.isfinite(pred).all(axis=(1, 2)) | (
                np.abs(pred).max(axis=(1, 2)) > bound
            )
            kl[i, j], w1[i, j] = measure_distances(attractor, pred[:, drop:])
    const = {
        name: generation_error(np.broadcast_to(mean, d.shape), d) for name, d in datasets.items()
    }
    half = len(attractor) // 2
    floor = measure_distances(attractor[:half], attractor[half:])  # two halves of the true run
    ds = xr.Dataset(
        {
            "generation_error": (("strategy", "seed", "dataset"), ge),
            "generation_error_spread": (("strategy", "seed", "dataset"), spread),
            "diverged": (("strategy", "seed", "dataset"), div),
            "constant_mean_error": (("dataset",), np.array([const[n] for n in names])),
            "vpt": (("strategy", "seed", "start"), vp),
            "vpt_diverged": (("strategy", "seed", "start"), vp_div),
            "density_kl": (("strategy", "seed"), kl),
            "wasserstein": (("strategy", "seed"), w1),
        },
        coords={"strategy": list(strategies), "seed": list(seeds), "dataset": names,
                "start": starts},
        attrs={
            "vpt_threshold": 0.4,
            "lyapunov_time": LYAPUNOV_TIME,
            "vpt_std": std.tolist(),
            "perturbation": 1e-10,
            "n_perturbations": n_perturb,
            "vpt_horizon_steps": vpt_len,
            "diverged_bound": bound,
            "measure_reference": f"true run of {len(attractor)} samples from dataset2's last point "
            "(systems, rkf45, rtol 1e-10); model: the VPT free runs pooled, first "
            f"{drop} steps of each dropped; floor: the true run's two halves",
            "measure_drop": drop,
            "density_kl_truth_floor": floor[0],
            "wasserstein_truth_floor": floor[1],
        },
    )
    return ds, examples


def figures(hist, gen, examples, datasets, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for s in hist.strategy.values:
        h = hist.sel(strategy=s)
        for ax, var, label, ylabel in zip(
            axes,
            ("loss", "accepted_fraction", "mean_substeps"),
            ("training loss", "accepted fraction", "substeps (rejected examples)"),
            ("SSE / (T-1) [state units^2]", "accepted [fraction of examples]", "substeps [count]"),
        ):
            y = h[var].values
            med = np.nanmedian(y, axis=0)
            (line,) = ax.plot(hist.epoch, med, label=s)
            ax.fill_between(hist.epoch, np.nanmin(y, axis=0), np.nanmax(y, axis=0),
                            color=line.get_color(), alpha=0.2)
            ax.set_title(label)
            ax.set_ylabel(ylabel)
            ax.set_xlabel("epoch")
    axes[0].set_yscale("log")
    axes[1].legend()
    fig.suptitle("Training on the paper's data: median and range over seeds")
    fig.tight_layout()
    paths.append(out / "training.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    strategies = list(hist.strategy.values)
    fig, axes = plt.subplots(len(strategies), 1, figsize=(11, 2.4 * len(strategies)), sharex=True)
    axes = np.atleast_1d(axes)
    truth = datasets["dataset2"]
    n = min(len(truth), 1500)
    t = np.arange(n) * DT
    for ax, s in zip(axes, strategies):
        ax.plot(t, truth[:n, 0], "k", lw=1, label="truth (dataset2)")
        if (s, "dataset2") in examples:
            ax.plot(t, np.clip(examples[s, "dataset2"][:n, 0], -30, 30), lw=1,
                    label=f"{s} (first seed)")
        ax.set_ylabel("x [state units]")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time [time units]")
    fig.suptitle("Free run from the first test point against the true trajectory")
    fig.tight_layout()
    paths.append(out / "generation.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    vals = [gen.vpt.sel(strategy=s).values.ravel() for s in strategies]
    ax.boxplot([v[np.isfinite(v)] for v in vals], tick_labels=strategies)
    ax.set_ylabel("valid prediction time (Lyapunov times)")
    ax.set_title(
        f"VPT (threshold 0.4), {gen.sizes['start']} test starts x {gen.sizes['seed']} seeds"
    )
    fig.tight_layout()
    paths.append(out / "vpt.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def summary(hist, gen) -> str:
    lines = [
        "strategy | seeds | acc. epoch 0 | acc. last | min acc. | first epoch >= 95% | substeps "
        "epoch 0 | last | "
        "max substeps | gen. err. dataset1 (median) | dataset2 "
        "(median) | spread 1e-10 (median) | diverged | "
        "VPT median | VPT mean | VPT runs diverged | density KL (median) | W1 (median)",
        "---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---",
    ]
    for s in hist.strategy.values:
        h, g = hist.sel(strategy=s), gen.sel(strategy=s)
        if not np.isfinite(h.loss.values).any():
            continue
        acc = h.accepted_fraction.values
        last = [a[np.isfinite(a)][-1] for a in acc if np.isfinite(a).any()]
        sub = h.mean_substeps.values
        sub_last = [a[np.isfinite(a)][-1] for a in sub if np.isfinite(a).any()]
        ok = [a for a in acc if np.isfinite(a).any()]
        first95 = [int(np.argmax(a >= 0.95)) if (a >= 0.95).any() else -1 for a in ok]
        lines.append(
            f"{s} | {len(ok)} | {np.nanmedian(acc[:, 0]):.3f} | {np.median(last):.3f} | "
            f"{np.nanmin(acc):.3f} | {first95} | "
            f"{np.nanmedian(sub[:, 0]):.1f} | {np.median(sub_last):.1f} | "
            f"{int(np.nanmax(h.max_substeps))} | "
            f"{np.nanmedian(g.generation_error.sel(dataset='dataset1')):.1f} | "
            f"{np.nanmedian(g.generation_error.sel(dataset='dataset2')):.1f} | "
            f"{np.nanmedian(g.generation_error_spread):.1f} | {int(g.diverged.sum())}/"
            f"{len(ok) * g.sizes['dataset']} | "
            f"{np.nanmedian(g.vpt):.2f} | {np.nanmean(g.vpt):.2f} | "
            f"{int(g.vpt_diverged.sum())}/{int(np.isfinite(g.vpt).sum())} | "
            f"{np.nanmedian(g.density_kl):.3f} | {np.nanmedian(g.wasserstein):.3f}"
        )
    const = ", ".join(
        f"{d}: {float(v):.1f}" for d, v in zip(gen.dataset.values, gen.constant_mean_error.values)
    )
    lines.append(f"\nconstant prediction at the training mean: {const}")
    lines.append(
        "two halves of a long true run (the measure's noise floor): "
        f"density KL {gen.attrs['density_kl_truth_floor']:.3f}, "
        f"W1 {gen.attrs['wasserstein_truth_floor']:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/allauzen2022", help="output folder")
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="folder with dataset1.npy and dataset2.npy")
    p.add_argument("--quick", action="store_true",
                   help="small CI mode: short data, 3 epochs, 2 seeds")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0..n-1)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="comma-separated strategy names")
    p.add_argument("--max-horizon", type=int, default=32,
                   help="longest rollout of the curriculum strategy")
    p.add_argument("--accept-threshold", type=float, default=0.9,
                   help="accepted fraction at which the curriculum lengthens its rollouts")
    p.add_argument("--seed-list", default=None,
                   help="comma-separated seeds (overrides --seeds), to split runs")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate the models already trained in --out")
    p.add_argument("--train-only", action="store_true",
                   help="train and save the models, skip the evaluation")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    seeds = list(range(2 if args.quick else args.seeds))
    if args.seed_list:
        seeds = [int(x) for x in args.seed_list.split(",")]
    epochs = 3 if args.quick else args.epochs
    train, test, source = load_data(Path(args.data), args.quick)
    print(f"data: {source}; train {train.shape}, test {test.shape}", flush=True)

    runs = train_all(train, out, strategies, seeds, epochs, args.quick, eval_only=args.eval_only,
                     max_horizon=args.max_horizon, accept_threshold=args.accept_threshold)
    if not runs:
        raise SystemExit(f"no trained model for {strategies} in {out / 'models'}")
    if args.train_only:
        return 0
    hist = history_dataset(runs, strategies, seeds)
    hist.attrs.update(
        {"data": source, "epochs": epochs, "optimizer": "lbfgs (lr 1, 20 it., strong Wolfe)",
         "eps": 0.1, "safety": 0.9, "field": "MLP 3-50-50-3 ReLU float64"}
    )
    hist.to_netcdf(out / "history.nc")
    datasets = {"dataset1": train, "dataset2": test}
    gen, examples = evaluate(runs, datasets, strategies, seeds, n_perturb=2 if args.quick else 5,
                             vpt_every=100 if args.quick else 50,
                             vpt_len=150 if args.quick else 2000)
    gen.attrs["data"] = source
    gen.to_netcdf(out / "generation.nc")
    figures(hist, gen, examples, datasets, out)
    text = summary(hist, gen)
    (out / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
