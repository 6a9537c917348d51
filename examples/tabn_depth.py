"""Depth experiments for TA-BN: test error per normalisation and vector-field depth.

Two tasks, each a Neural ODE whose vector field is an MLP of depth L with a
norm after every hidden layer (none, plain BatchNorm "Pop-TI", mini-batch BN,
TA-BN), trained in the same way and tested in eval mode:

1. Dynamics: Lorenz96 (N=40, F=8) sampled every 0.05 time units; the Neural
   ODE maps a standardised state to the state 0.1 time units later (rescaled
   so the ODE runs on [0, 1]). Error: test MSE relative to persistence
   (predicting no change), so 1.0 means "learned nothing".
2. Images: scikit-learn's 8x8 digits (offline), the "unmixed" classifier
   (one Neural ODE on the 64 pixels + one linear layer). Error: test accuracy.
   ``--cifar DIR`` instead runs CIFAR-10 from local python pickle batches with
   a convolutional vector field (use a GPU).

Training uses fixed-step rk4 (default one step on [0, 1]: times 0, 0.5, 1) and
TA-BN with a grid on exactly those times (num_points = 2 / step + 1; the paper
advises M close to the solver's number of evaluations). Lorenz96 training
batches are augmented by random rotations of the ring (the system's symmetry).
Each model is tested in eval mode with rk4 (the default training solver) and,
to expose time-dependence, with dopri5 (rtol=atol=1e-3), which visits other
times. ``--train-solver dopri5`` trains with dopri5 instead (as the paper).

    python examples/tabn_depth.py                  # full mode, writes docs/results/tabn_depth.md
    python examples/tabn_depth.py --quick          # CI mode (seconds)
    python examples/tabn_depth.py --train-solver dopri5 --depths 4 8 --out docs/results/tabn_depth_dopri5.md
    python examples/tabn_depth.py --cifar ~/data/cifar-10-batches-py --device cuda
"""
from __future__ import annotations

import argparse
import math
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchdiffeq import odeint

from dynfit.nn import NORM_KINDS, MLPField
from dynfit.nn.classifier import UnmixedClassifier

TRAIN_SOLVER = {"method": "rk4", "options": {"step_size": 0.5}}
TEST_SOLVERS = {
    "rk4": {"method": "rk4", "options": {"step_size": 0.5}},
    "dopri5": {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3},
}
NUM_POINTS = 5  # TA-BN grid on the rk4 evaluation times (multiples of step / 2)


def set_train_solver(solver: str, step: float, num_points: int | None) -> str:
    """Configure training: rk4 with ``step`` (grid on its times) or dopri5 (rtol=atol=1e-3).

    rk4 visits the multiples of step / 2, so the TA-BN grid gets 2 / step + 1
    points unless ``num_points`` is given; dopri5 uses ``num_points`` (default 11).
    Returns a description for the report.
    """
    global NUM_POINTS
    if solver == "dopri5":
        TRAIN_SOLVER.clear()
        TRAIN_SOLVER.update(TEST_SOLVERS["dopri5"])
        NUM_POINTS = num_points or 11
        return "dopri5 (rtol=atol=1e-3)"
    n = round(1.0 / step)
    if n < 1 or abs(n * step - 1.0) > 1e-12:
        raise ValueError(f"--train-step must divide 1 (e.g. 1, 0.5, 0.25), got {step}")
    TRAIN_SOLVER.clear()
    TRAIN_SOLVER.update({"method": "rk4", "options": {"step_size": step}})
    TEST_SOLVERS["rk4"]["options"] = {"step_size": step}
    NUM_POINTS = num_points or 2 * n + 1
    return f"rk4 step {step}"


PENALTY = 1e-4  # weight of TA-BN's L2 penalty on its grid parameters


# ---------------------------------------------------------------- data


def lorenz96_data(n_traj: int, n_steps: int, seed: int) -> np.ndarray:
    """Lorenz96 N=40, F=8 trajectories (n_traj, n_steps, 40) sampled every 0.05."""
    try:
        import systems

        ds = systems.simulate("lorenz96", n_traj=n_traj, n_steps=n_steps, dt=0.05, transient=10.0,
                              seed=seed, progress=False)
        return ds["x"].values
    except ImportError:  # fallback without the systems package
        from scipy.integrate import solve_ivp

        def rhs(_, x, forcing=8.0):
            return (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + forcing

        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n_traj):
            x0 = 8.0 + rng.normal(0.0, 1.0, 40)
            ts = 10.0 + 0.05 * np.arange(n_steps)
            sol = solve_ivp(rhs, (0.0, ts[-1]), x0, t_eval=ts, method="DOP853", rtol=1e-9, atol=1e-9)
            out.append(sol.y.T)
        return np.stack(out)


def dynamics_pairs(quick: bool, seed: int, lag: int = 2):
    """Standardised (x_i, x_{i+lag}) pairs: train and test tensors of shape (n, 40)."""
    n_traj, n_steps = (3, 120) if quick else (10, 400)
    data = lorenz96_data(n_traj, n_steps, seed)
    train, test = data[:-2], data[-2:]
    mu, sd = train.mean(), train.std()

    def pairs(block):
        z = (block - mu) / sd
        return (torch.tensor(z[:, :-lag].reshape(-1, 40), dtype=torch.float32),
                torch.tensor(z[:, lag:].reshape(-1, 40), dtype=torch.float32))

    return pairs(train), pairs(test)


def digits_data(seed: int):
    """scikit-learn's digits: (x_train, y_train), (x_test, y_test), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.25, random_state=seed, stratify=y)
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return (f(xtr), torch.tensor(ytr)), (f(xte), torch.tensor(yte))


def cifar_data(folder: str):
    """CIFAR-10 from the python pickle batches in ``folder`` (data_batch_1..5, test_batch)."""
    root = Path(folder).expanduser()
    if not (root / "test_batch").exists() and (root / "cifar-10-batches-py" / "test_batch").exists():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in names + ["test_batch"] if not (root / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"--cifar {folder}: missing {missing}; expected the python version of CIFAR-10 "
            "(cifar-10-python.tar.gz unpacked: data_batch_1..5 and test_batch)"
        )

    def load(name):
        with open(root / name, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.float32).reshape(-1, 3, 32, 32) / 255.0
        return x, np.asarray(d[b"labels"], dtype=np.int64)

    parts = [load(n) for n in names]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = load("test_batch")
    mean = xtr.mean(axis=(0, 2, 3), keepdims=True)
    std = xtr.std(axis=(0, 2, 3), keepdims=True)
    t = lambda a: torch.tensor((a - mean) / std)  # noqa: E731
    return (t(xtr), torch.tensor(ytr)), (t(xte), torch.tensor(yte))


# ---------------------------------------------------------------- training


def _batches(n: int, batch: int, steps: int, gen: torch.Generator):
    batch = min(batch, n)
    while steps > 0:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            if steps == 0:
                return
            steps -= 1
            yield perm[i:i + batch]


def _penalty(model: torch.nn.Module) -> torch.Tensor:
    from dynfit.nn import norm_penalty

    return PENALTY * norm_penalty(model)


def run_dynamics(depth: int, norm: str, data, args, device) -> dict:
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(args.seed)
    field = MLPField(40, width=args.width, depth=depth, norm=norm, num_points=NUM_POINTS).to(device)
    opt = torch.optim.Adam(field.parameters(), lr=args.lr)
    span = torch.tensor([0.0, 1.0], device=device)
    gen = torch.Generator().manual_seed(args.seed)
    field.train()
    for idx in _batches(len(xtr), args.batch, args.steps, gen):
        # Lorenz96 is symmetric under rotating the ring: augment by a random roll
        shift = int(torch.randint(40, (1,), generator=gen))
        x, y = xtr[idx].roll(shift, 1).to(device), ytr[idx].roll(shift, 1).to(device)
        pred = odeint(field, x, span, **TRAIN_SOLVER)[-1]
        loss = (pred - y).pow(2).mean() + _penalty(field)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    field.eval()
    out = {}
    persistence = (xte - yte).pow(2).mean().item()
    with torch.no_grad():
        for name, solver in TEST_SOLVERS.items():
            errs = []
            for i in range(0, len(xte), args.eval_batch):
                x, y = xte[i:i + args.eval_batch].to(device), yte[i:i + args.eval_batch].to(device)
                pred = odeint(field, x, span, **solver)[-1]
                errs.append((pred - y).pow(2).sum().item())
            mse = sum(errs) / yte.numel()
            out[name] = mse / persistence if math.isfinite(mse) else float("nan")
    return out


def run_images(depth: int, norm: str, data, args, device, *, image: bool) -> dict:
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(args.seed)
    if image:
        model = UnmixedClassifier(xtr.shape[1], 10, image=True, state_channels=args.cifar_channels,
                                  width=args.width, depth=depth, norm=norm, num_points=NUM_POINTS,
                                  pool=4, **TRAIN_SOLVER)
    else:
        model = UnmixedClassifier(xtr.shape[1], 10, image=False, width=args.width, depth=depth,
                                  norm=norm, num_points=NUM_POINTS, **TRAIN_SOLVER)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    steps = args.image_steps if not image else args.cifar_epochs * (len(xtr) // args.batch)
    for idx in _batches(len(xtr), args.batch, steps, gen):
        x, y = xtr[idx].to(device), ytr[idx].to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y) + _penalty(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    out = {}
    with torch.no_grad():
        for name, solver in TEST_SOLVERS.items():
            model.method, model.options = solver["method"], solver.get("options")
            model.rtol, model.atol = solver.get("rtol", 1e-3), solver.get("atol", 1e-3)
            correct = 0
            for i in range(0, len(xte), args.eval_batch):
                x, y = xte[i:i + args.eval_batch].to(device), yte[i:i + args.eval_batch].to(device)
                correct += (model(x).argmax(1) == y).sum().item()
            out[name] = correct / len(yte)
    return out


# ---------------------------------------------------------------- report


def _table(title: str, results: dict, depths, norms, fmt: str, what: str) -> str:
    lines = [f"### {title}", "", what, ""]
    head = "| depth | " + " | ".join(f"{n} (rk4 / dopri5)" for n in norms) + " |"
    lines += [head, "|---:|" + "---:|" * len(norms)]
    for d in depths:
        cells = []
        for n in norms:
            r = results[(d, n)]
            cells.append(f"{fmt.format(r['rk4'])} / {fmt.format(r['dopri5'])}")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI mode: tiny data, 2 depths, few steps")
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 12, 18])
    parser.add_argument("--norms", nargs="+", default=list(NORM_KINDS), choices=list(NORM_KINDS))
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per model")
    parser.add_argument("--image-steps", type=int, default=150, help="optimiser steps per digits model")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-solver", default="rk4", choices=["rk4", "dopri5"])
    parser.add_argument("--train-step", type=float, default=1.0, help="rk4 step on [0, 1] for training")
    parser.add_argument("--num-points", type=int, default=None, help="TA-BN grid size (default: "
                        "the rk4 evaluation times, or 11 with dopri5)")
    parser.add_argument("--tasks", nargs="+", default=["dynamics", "digits"], choices=["dynamics", "digits"])
    parser.add_argument("--cifar", metavar="DIR", help="CIFAR-10 python batches folder (replaces digits)")
    parser.add_argument("--cifar-epochs", type=int, default=4)
    parser.add_argument("--cifar-channels", type=int, default=16, help="ODE state channels (zero-augmented)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="markdown file for the tables "
                        "(default docs/results/tabn_depth.md in full mode, none in --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.depths = args.depths if argv and "--depths" in argv else [2, 4]
        args.steps = min(args.steps, 6)
        args.image_steps = min(args.image_steps, 6)
        args.width = min(args.width, 16)
        args.cifar_epochs = 1
    out_path = args.out if args.out is not None else (None if args.quick else "docs/results/tabn_depth.md")
    train_desc = set_train_solver(args.train_solver, args.train_step, args.num_points)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tables, results = [], {}
    start = time.perf_counter()

    tasks = list(args.tasks)
    if args.cifar and "digits" in tasks:
        tasks[tasks.index("digits")] = "cifar"
    for task in tasks:
        if task == "dynamics":
            data = dynamics_pairs(args.quick, args.seed)
        elif task == "digits":
            data = digits_data(args.seed)
        else:
            data = cifar_data(args.cifar)
        res = {}
        for depth in args.depths:
            for norm in args.norms:
                t0 = time.perf_counter()
                if task == "dynamics":
                    r = run_dynamics(depth, norm, data, args, device)
                else:
                    r = run_images(depth, norm, data, args, device, image=task == "cifar")
                res[(depth, norm)] = r
                print(f"{task:8s} depth {depth:2d} {norm:9s} rk4 {r['rk4']:.4f} dopri5 {r['dopri5']:.4f}"
                      f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
        results[task] = res
        if task == "dynamics":
            tables.append(_table(
                "Lorenz96 (N=40): test MSE relative to persistence (lower is better)", res, args.depths,
                args.norms, "{:.3f}",
                f"{len(data[0][0])} training pairs (augmented by random ring rotations), "
                f"{len(data[1][0])} test pairs, lag 0.1 time units; {args.steps} Adam steps."))
        else:
            name = "CIFAR-10" if task == "cifar" else "digits (8x8, scikit-learn)"
            tables.append(_table(f"{name}: test accuracy (higher is better)", res, args.depths,
                                 args.norms, "{:.3f}",
                                 f"{len(data[0][0])} training / {len(data[1][0])} test images; "
                                 + (f"{args.cifar_epochs} epochs." if task == "cifar"
                                    else f"{args.image_steps} Adam steps.")))
    elapsed = time.perf_counter() - start
    settings = (
        f"Settings: depths {args.depths}, width {args.width}, batch {args.batch}, Adam lr {args.lr}, "
        f"{args.steps} (dynamics) / {args.image_steps} (digits) steps per model, seed {args.seed}, train solver {train_desc}, TA-BN grid "
        f"num_points={NUM_POINTS} on [0, 1], TA-BN penalty {PENALTY}; eval mode, test batches of "
        f"{args.eval_batch}. Device {device}, {torch.get_num_threads()} thread(s), torch "
        f"{torch.__version__}, {platform.machine()}; total {elapsed:.0f} s."
    )
    report = "\n".join(tables) + "\n" + settings + "\n"
    print(report)
    if out_path:
        path = Path(out_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = sys.argv[1:] if argv is None else list(argv)
        cmd = " ".join(["python examples/tabn_depth.py"] + flags)
        path.write_text(
            "# TA-BN depth experiments\n\n"
            f"Made by `{cmd}` (examples/tabn_depth.py). Entries: test with rk4 / "
            "dopri5 (rtol=atol=1e-3, other times) at test.\n\n" + report
        )
        print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
