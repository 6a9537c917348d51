"""Compare training strategies on Lorenz'63 with dynfit.compare: one table, one netCDF, figures.

The five strategies (same data, field, optimizer, epochs and seeds):

- black-box rk4: torchdiffeq fixed-step RK4 (two steps per sampling interval);
- black-box dopri5: torchdiffeq adaptive Dormand-Prince 5(4);
- batch rkf23: the paper's batch procedure, Fehlberg 3(2) with the Heun estimate;
- Fehlberg training: Fehlberg 3(2), error measured against the target;
- curriculum (ours): Fehlberg training with a solver-driven horizon schedule.

Each surrogate is judged on held-out trajectories by dynfit.diagnostics.evaluate.
Writes --out/train.nc and test.nc (the data, reused on a rerun so checkpoints resume),
compare.nc, table.md, table.csv, best_diagnostics.nc and figures.

    python examples/compare_strategies.py --out docs/results/compare_lorenz63 --train-traj 3 \
        --epochs 30 --seeds 0,1
    python examples/compare_strategies.py --quick --out /tmp/compare   # seconds, for CI
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

STRATEGIES = {
    "black-box rk4": ("torchdiffeq", {"method": "rk4", "step_size": 0.5}),
    "black-box dopri5": ("torchdiffeq", {"method": "dopri5", "rtol": 1e-5, "atol": 1e-7}),
    "batch rkf23": ("batch", {}),
    "Fehlberg training": ("fehlberg", {}),
    "curriculum (ours)": ("curriculum", {}),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/compare_lorenz63", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny CI mode (seconds)")
    p.add_argument("--epochs", type=int, default=30,
                   help="training epochs per strategy (default 30)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    p.add_argument("--train-traj", type=int, default=4, help="training trajectories (default 4)")
    p.add_argument("--train-steps", type=int, default=1000, help="samples per training trajectory")
    p.add_argument("--width", type=int, default=64, help="MLP width (default 64)")
    p.add_argument("--starts", type=int, default=30,
                   help="held-out starts for the VPT (default 30)")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated labels from {list(STRATEGIES)}")
    return p


def _data(path: Path, n_traj: int, n_steps: int, *, seed: int):
    """Simulated Lorenz'63 data, saved to ``path`` and reused from there when the sizes match.

    Reusing the file keeps a resumed run (checkpoints) on exactly the same data.
    """
    import systems

    if path.is_file():
        ds = systems.load(path)
        if ds.sizes["trajectory"] == n_traj and ds.sizes["time"] == n_steps:
            return ds
    ds = systems.simulate("lorenz63", n_traj=n_traj, n_steps=n_steps, dt=0.01, seed=seed,
                          transient=5.0, progress=False)
    systems.save(ds, path)
    return ds


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from dynfit.compare import compare

    torch.set_num_threads(1)
    labels = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in labels if s not in STRATEGIES]
    if unknown:
        raise SystemExit(f"unknown strategy label(s) {unknown}; choose from {list(STRATEGIES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.quick:
        n_traj, n_steps, width, epochs = 2, 150, 8, 1
        evaluate = {"n_starts": 3, "horizon_lt": 2.0, "long_steps": 1000, "lyapunov_steps": 50,
                    "lyapunov_starts": 1}
        test_steps, lbfgs = 300, 3
    else:
        n_traj, n_steps, width, epochs = args.train_traj, args.train_steps, args.width, args.epochs
        evaluate = {"n_starts": args.starts, "horizon_lt": 10.0, "long_steps": 10000,
                    "lyapunov_steps": 4000, "lyapunov_starts": 2}
        test_steps, lbfgs = 1500, 20
    out = Path(args.out)
    train = _data(out / "train.nc", n_traj, n_steps, seed=1)
    test = _data(out / "test.nc", 4, test_steps, seed=2)
    command = "python " + " ".join(
        shlex.quote(a)
        for a in ["examples/compare_strategies.py"] + list(sys.argv[1:] if argv is None else argv)
    )
    ds = compare(train, test_data=test, strategies=[(lab, *STRATEGIES[lab]) for lab in labels],
                 seeds=seeds, epochs=epochs,
                 field={"kind": "mlp", "width": width, "depth": 2, "activation": "silu"},
                 optimizer="lbfgs", lbfgs_iterations=lbfgs, evaluate=evaluate, out=args.out,
                 command=command, progress=False)
    print((Path(args.out) / "table.md").read_text())
    print(
        f"best: {ds.attrs['best_strategy']} (seed {ds.attrs['best_seed']}); results in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
