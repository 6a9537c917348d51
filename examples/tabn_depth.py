"""TA-BN depth study: does temporal adaptive batch norm let Neural ODE vector fields go deeper?

Every model is a Neural ODE whose vector field is a plain deep MLP (L hidden
layers, a norm after each), for depths 2, 4, 8, 12, 18, four norms (none;
"bn" = population statistics pooled over time, the paper's Pop-TI;
"minibatch" = batch statistics also at test; "tabn"), 3 seeds, trained with
a fixed-step solver (rk4, one step on [0, 1]: field times 0, 1/2, 1) and with
an adaptive one (dopri5; torchdiffeq shares its steps across the batch, which
batch statistics need, and stops at 200 steps), and evaluated with both.

Tasks
- ``dynamics``: Lorenz96 (N = 40, F = 8) in the continuous-time setting: a
  vector field on the standardised state, the ODE on [0, 1] is one lag of 0.1
  time units, trained on one-lag pairs of true trajectories (sampled every
  0.05; ring rotations as augmentation). The field is one MLP applied at every
  site to its four neighbours (``tabn_models.LocalMLPField``: Lorenz96's
  tendency is local and rotation-symmetric; a dense MLP on all 40 variables
  stays above 0.7 of persistence after 280 steps, this one is below 0.01
  after 120). Judged by the test one-lag error relative to persistence and by
  the valid prediction time (VPT, Lyapunov times, threshold 0.3) of free runs
  from 16 held-out starts, beside the exact field's VPT under the same solver.
- ``digits``: scikit-learn's 8x8 digits, the paper's "unmixed" classifier (one
  Neural ODE on the 64 pixels, one linear layer); judged by test accuracy.
- ``--cifar DIR``: CIFAR-10 from the python batches in DIR with a
  convolutional field (a GPU job; not run on the CPU).

Budgets come from a convergence test, not a step count: AdamW with the
learning rate halved after 2 epochs without a 0.5% gain in validation loss;
a model has converged when the learning rate has fallen 16-fold (4 halvings)
or the validation loss has not improved by 0.1% for 5 epochs, and is marked
not converged when it hits ``--max-epochs`` (24) or diverges. The
best-validation weights are the ones tested. Before the grid, the learning
rate of each norm is tuned once at depth 8 (seed 0, fixed solver, 8 epochs;
from 1e-3, 3e-3, 1e-2) and TA-BN's grid size is chosen by a small sweep at
depth 8 (3, 5, 11, 21 points).

Models run as tasks on dask.distributed (``--cluster local:N`` or a scheduler
address); each result is written to ``OUT/runs/<key>.json`` as it finishes, so
a rerun resumes. The assembled study is ``OUT/tabn_depth.nc`` (dims task,
norm, depth, seed, solver, eval_solver), ``OUT/tabn_depth.md`` (the tables)
and ``OUT/tabn_depth.png`` (metric against depth per norm, seeds as error bars).

    python examples/tabn_depth.py --out docs/results --cluster local:2
    python examples/tabn_depth.py --quick --out /tmp/tabn     # CI mode (seconds)
    python examples/tabn_depth.py --cifar ~/data/cifar-10-batches-py --tasks cifar --cluster local:1
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import pickle
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torchdiffeq import odeint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tabn_models import LocalMLPField, UnmixedClassifier  # noqa: E402

from dynfit.nn import NORM_KINDS, norm_penalty  # noqa: E402

DEPTHS = (2, 4, 8, 12, 18)
SEEDS = (0, 1, 2)
SOLVERS = ("fixed", "adaptive")
TASKS = ("dynamics", "digits")
LR_GRID = (1e-3, 3e-3, 1e-2)
TABN_GRID = (3, 5, 11, 21)
TUNE_DEPTH = 8
PENALTY = 1e-4     # weight of TA-BN's L2 penalty on its grid parameters (the paper's regulariser)
VPT_THRESHOLD = 0.3
LAG = 2            # samples of 0.05 per ODE interval: one lag = 0.1 time units
DT = 0.05
N_L96 = 40
FORCING = 8.0

WIDTH = {"dynamics": 32, "digits": 64, "cifar": 64}
BATCH = {"dynamics": 16, "digits": 128, "cifar": 256}
MAX_STEPS = 200    # adaptive steps per solve before a model counts as failed (torchdiffeq's limit)

# the two solvers; the tolerance of the adaptive one is per task
TOL = {"dynamics": 1e-3, "digits": 1e-3, "cifar": 1e-3}


def solver_options(solver: str, task: str) -> dict:
    """torchdiffeq arguments of the fixed (one rk4 step on [0, 1]) or adaptive (dopri5) solver."""
    if solver == "fixed":
        return {"method": "rk4", "options": {"step_size": 1.0}}
    if solver == "adaptive":
        return {"method": "dopri5", "rtol": TOL[task], "atol": TOL[task],
                "options": {"max_num_steps": MAX_STEPS}}
    raise ValueError(f"solver must be 'fixed' or 'adaptive', got {solver!r}")


@dataclass(frozen=True)
class Spec:
    """One model of the study: what to train and how."""

    task: str
    norm: str
    depth: int
    seed: int
    solver: str
    lr: float
    num_points: int
    width: int
    batch: int
    max_epochs: int
    quick: bool = False
    role: str = "grid"  # "grid", "tune-lr" or "tune-grid"

    @property
    def key(self) -> str:
        return (
            f"{self.role}-{self.task}-{self.norm}-d{self.depth}-s{self.seed}-{self.solver}"
            f"-lr{self.lr:g}-m{self.num_points}-w{self.width}-e{self.max_epochs}"
            + ("-quick" if self.quick else "")
        )


# ---------------------------------------------------------------- data


@functools.lru_cache(maxsize=2)
def lorenz96_data(quick: bool) -> dict:
    """True Lorenz96 trajectories (standardised, float32) split into train / validation / test."""
    import systems

    n_traj, n_steps = (4, 160) if quick else (11, 600)
    ds = systems.simulate("lorenz96", n_traj=n_traj, n_steps=n_steps, dt=DT, transient=20.0,
                          seed=2024, method="dop853", rtol=1e-10, atol=1e-10, progress=False)
    x = ds["x"].values  # (traj, time, 40)
    n_test = 1 if quick else 4
    train, val, test = x[: -n_test - 1], x[-n_test - 1 : -n_test], x[-n_test:]
    mu, sd = float(train.mean()), float(train.std())

    def pairs(block, every=1):
        z = (block - mu) / sd
        return (
            torch.tensor(z[:, :-LAG:every].reshape(-1, N_L96), dtype=torch.float32),
            torch.tensor(z[:, LAG::every].reshape(-1, N_L96), dtype=torch.float32),
        )

    # training pairs start every eighth sample, 0.4 time units apart (neighbours: nearly one pair)
    return {"train": pairs(train, 8), "val": pairs(val), "test": pairs(test),
            "test_traj": torch.tensor((test - mu) / sd, dtype=torch.float32), "mu": mu, "sd": sd,
            "lyapunov_time": systems.get("lorenz96").lyapunov_time}


@functools.lru_cache(maxsize=1)
def digits_data(quick: bool) -> dict:
    """scikit-learn's digits, pixels in [0, 1]: train / validation / test (fixed, stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    xtr, xva, ytr, yva = train_test_split(xtr, ytr, test_size=0.15, random_state=0, stratify=ytr)
    if quick:
        xtr, ytr = xtr[:128], ytr[:128]
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    g = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return {"train": (f(xtr), g(ytr)), "val": (f(xva), g(yva)), "test": (f(xte), g(yte))}


def cifar_data(folder: str):
    """CIFAR-10 from the python batches in ``folder`` (data_batch_1..5, test_batch),
    channel-standardised.

    The batches are the dataset's own pickle files: they are read with pickle, so
    only point this at a copy of CIFAR-10 you trust.
    """
    root = Path(folder).expanduser()
    if (
        not (root / "test_batch").exists()
        and (root / "cifar-10-batches-py" / "test_batch").exists()
    ):
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


def task_data(task: str, quick: bool, cifar: str | None = None) -> dict:
    """train / val / test tensors of a task (``cifar``: the CIFAR-10 folder, for task "cifar")."""
    if task == "dynamics":
        return lorenz96_data(quick)
    if task == "digits":
        return digits_data(quick)
    (xtr, ytr), (xte, yte) = cifar_data(cifar)
    n_val = 5000 if len(xtr) > 10000 else max(1, len(xtr) // 5)
    return {"train": (xtr[n_val:], ytr[n_val:]), "val": (xtr[:n_val], ytr[:n_val]),
            "test": (xte, yte)}


# ---------------------------------------------------------------- models


class Lorenz96Exact(torch.nn.Module):
    """The true Lorenz96 field in the study's coordinates (standardised state, time in lags)."""

    def __init__(self, mu: float, sd: float):
        super().__init__()
        self.mu, self.sd, self.scale = mu, sd, LAG * DT

    def forward(self, t, z):
        x = z * self.sd + self.mu
        dx = (x.roll(-1, -1) - x.roll(2, -1)) * x.roll(1, -1) - x + FORCING
        return dx * self.scale / self.sd


def build(spec: Spec, data: dict) -> torch.nn.Module:
    torch.manual_seed(spec.seed)
    if spec.task == "dynamics":
        return LocalMLPField(width=spec.width, depth=spec.depth, activation="silu", norm=spec.norm,
                             num_points=spec.num_points)
    image = spec.task == "cifar"
    kw = dict(width=spec.width, depth=spec.depth, norm=spec.norm, num_points=spec.num_points,
              **solver_options(spec.solver, spec.task))
    if image:
        return UnmixedClassifier(3, 10, image=True, state_channels=16, pool=4, **kw)
    return UnmixedClassifier(data["train"][0].shape[1], 10, image=False, **kw)


def use_solver(model, solver: str, task: str) -> None:
    """Point an UnmixedClassifier at the fixed or the adaptive solver."""
    opts = solver_options(solver, task)
    model.method, model.options = opts["method"], opts.get("options")
    model.rtol, model.atol = opts.get("rtol", 1e-3), opts.get("atol", 1e-3)


def flow(field, x, solver: str, task: str = "dynamics"):
    """One lag of the Neural ODE: x (B, 40) -> (B, 40)."""
    span = torch.tensor([0.0, 1.0], dtype=x.dtype)
    return odeint(field, x, span, **solver_options(solver, task))[-1]


# ---------------------------------------------------------------- training


def _batches(n: int, batch: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    batch = min(batch, n)
    for i in range(0, n - batch + 1, batch):
        yield perm[i : i + batch]


def _loss(spec: Spec, model, x, y, solver: str):
    if spec.task == "dynamics":
        return (flow(model, x, solver) - y).pow(2).mean()
    use_solver(model, solver, spec.task)
    return torch.nn.functional.cross_entropy(model(x), y)


@torch.no_grad()
def _mean_loss(spec: Spec, model, xs, ys, solver: str, batch: int = 512) -> float:
    total, n = 0.0, 0
    for i in range(0, len(xs), batch):
        x, y = xs[i : i + batch], ys[i : i + batch]
        total += float(_loss(spec, model, x, y, solver)) * len(x)
        n += len(x)
    return total / n


def train(spec: Spec, model, data: dict) -> dict:
    """Train to convergence (see the module docstring); returns the record of how it went."""
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1000 + spec.seed)
    t0 = time.perf_counter()
    try:
        epoch, steps, train_loss, best_state, best, lr, reason, converged, step_time = _loop(
            spec, model, data, opt, gen
        )
    except AssertionError as err:  # torchdiffeq gave up
        if not _solver_failure(err):
            raise
        epoch, steps, train_loss, best_state, best, lr = -1, -1, math.nan, None, math.nan, spec.lr
        reason, converged, step_time = f"the adaptive solver failed in training ({err})", False, 0.0
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"epochs": epoch, "steps": steps, "train_loss": train_loss, "val_loss": best,
            "converged": converged, "stop_reason": reason, "wall_time": time.perf_counter() - t0,
            "time_per_step": step_time / max(steps, 1), "final_lr": lr}


def _loop(spec: Spec, model, data: dict, opt, gen):
    xtr, ytr = data["train"]
    xva, yva = data["val"]
    best, best_state, since_best, since_gain, lr = math.inf, None, 0, 0, spec.lr
    plateau_ref = math.inf
    steps, reason, converged, train_loss = 0, "budget", False, math.nan
    step_time = 0.0
    epoch = 0
    for epoch in range(1, spec.max_epochs + 1):
        model.train()
        running, count = 0.0, 0
        for idx in _batches(len(xtr), spec.batch, gen):
            x, y = xtr[idx], ytr[idx]
            if spec.task == "dynamics":  # Lorenz96 is symmetric under rotating the ring
                shift = int(torch.randint(N_L96, (1,), generator=gen))
                x, y = x.roll(shift, 1), y.roll(shift, 1)
            ts = time.perf_counter()
            loss = _loss(spec, model, x, y, spec.solver)
            total = loss + PENALTY * norm_penalty(model)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            step_time += time.perf_counter() - ts
            steps += 1
            running += float(loss.detach()) * len(x)
            count += len(x)
        train_loss = running / max(count, 1)
        model.eval()
        val = _mean_loss(spec, model, xva, yva, spec.solver)
        if not (math.isfinite(val) and math.isfinite(train_loss)):
            reason = "diverged (non-finite loss)"
            break
        if val < best * (1 - 1e-3):
            since_best = 0
        else:
            since_best += 1
        if val < best:
            best, best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}
        # learning-rate halving on a 3-epoch plateau (0.5% gain)
        if val < plateau_ref * (1 - 5e-3):
            plateau_ref, since_gain = val, 0
        else:
            since_gain += 1
            if since_gain >= 2:
                lr *= 0.5
                for g in opt.param_groups:
                    g["lr"] = lr
                since_gain, plateau_ref = 0, min(plateau_ref, val)
        if lr <= spec.lr / 16:
            reason, converged = "converged (learning rate fell 16-fold)", True
            break
        if since_best >= 5:
            reason, converged = "converged (no 0.1% gain for 5 epochs)", True
            break
    return epoch, steps, train_loss, best_state, best, lr, reason, converged, step_time


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def free_run(field, starts, n_lags: int, solver: str):
    """Compose the learned one-lag flow n_lags times: starts (B, 40) -> (B, n_lags + 1, 40).

    A run that leaves the attractor (|x| > 100 standard deviations, or not
    finite) is frozen at 100 from there on: its error stays above every
    threshold and the others go on without it.
    """
    out = [starts]
    x = starts.clone()
    alive = torch.ones(len(x), dtype=torch.bool)
    for _ in range(n_lags):
        if alive.any():
            try:
                x[alive] = flow(field, x[alive], solver)
            # the adaptive solver gave up on some row: freeze them all
            except AssertionError as err:
                if not _solver_failure(err):
                    raise
                x[alive] = 100.0
        bad = ~torch.isfinite(x).all(1) | (x.abs() > 100).any(1)
        x[bad] = 100.0
        alive &= ~bad
        out.append(x.clone())
    return torch.stack(out, 1)


def _solver_failure(err: AssertionError) -> bool:
    """torchdiffeq's ways of giving up: its step limit or a step that underflows."""
    return "max_num_steps" in str(err) or "underflow" in str(err)


def vpt_starts(data: dict, quick: bool):
    """Held-out starts and their true continuations, every 100 samples of each test trajectory."""
    traj = data["test_traj"]  # (n, T, 40), spaced DT
    # 100 lags = 10 time units = 16.5 Lyapunov times
    n_lags = 20 if quick else 100
    span = n_lags * LAG
    starts, truths = [], []
    for k in range(traj.shape[0]):
        for s in range(0, traj.shape[1] - span, 100 if not quick else 40):
            starts.append(traj[k, s])
            truths.append(traj[k, s : s + span + 1 : LAG])
    return torch.stack(starts), torch.stack(truths), n_lags


def vpt(field, data: dict, solver: str, quick: bool) -> float:
    """Mean VPT (Lyapunov times, threshold 0.3) of free runs from the held-out starts."""
    from dynfit import valid_prediction_time

    starts, truths, n_lags = vpt_starts(data, quick)
    pred = free_run(field, starts, n_lags, solver)
    v = valid_prediction_time(truths.double().numpy(), pred.double().numpy(), dt=LAG * DT,
                              lyapunov_time=data["lyapunov_time"], std=1.0,
                              thresholds=(VPT_THRESHOLD,))
    return float(np.mean(v))


@torch.no_grad()
def evaluate(spec: Spec, model, data: dict) -> dict:
    """Test metrics with both solvers: {"error": {...}, "vpt": {...}}."""
    out = {"error": {}, "vpt": {}}
    for solver in SOLVERS:
        try:
            _evaluate_with(spec, model, data, solver, out)
        except AssertionError as err:  # torchdiffeq gave up
            if not _solver_failure(err):
                raise
            out["error"][solver] = out["vpt"][solver] = math.nan
    return out


def _evaluate_with(spec: Spec, model, data: dict, solver: str, out: dict) -> None:
    xte, yte = data["test"]
    if spec.task == "dynamics":
        pred = torch.cat([flow(model, xte[i : i + 512], solver) for i in range(0, len(xte), 512)])
        persistence = float((xte - yte).pow(2).mean())
        mse = float((pred - yte).pow(2).mean())
        out["error"][solver] = mse / persistence if math.isfinite(mse) else math.nan
        out["vpt"][solver] = vpt(model, data, solver, spec.quick)
        return
    use_solver(model, solver, spec.task)
    correct = sum(
        int((model(xte[i : i + 512]).argmax(1) == yte[i : i + 512]).sum())
        for i in range(0, len(xte), 512)
    )
    out["error"][solver] = 1.0 - correct / len(yte)
    out["vpt"][solver] = math.nan


def run_one(spec: Spec, out_dir: str | None = None, cifar: str | None = None) -> dict:
    """Train and test one model (a dask task); the result is also written to OUT/runs/<key>.json."""
    torch.set_num_threads(1)
    data = task_data(spec.task, spec.quick, cifar)
    model = build(spec, data)
    record = train(spec, model, data)
    record.update(evaluate(spec, model, data))
    record["spec"] = asdict(spec)
    record["n_parameters"] = sum(p.numel() for p in model.parameters())
    if out_dir is not None:
        from systems.files import atomic_write_bytes

        atomic_write_bytes(Path(out_dir) / "runs" / f"{spec.key}.json", json.dumps(record).encode())
    return record


def exact_vpt(quick: bool) -> dict:
    """The true Lorenz96 field's VPT under the study's fixed and adaptive solvers (same starts)."""
    data = lorenz96_data(quick)
    exact = Lorenz96Exact(data["mu"], data["sd"])
    return {s: vpt(exact, data, s, quick) for s in SOLVERS}


# ---------------------------------------------------------------- running


def _load(out: Path, spec: Spec) -> dict | None:
    path = out / "runs" / f"{spec.key}.json"
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("spec") == asdict(spec) else None


def run_all(
    specs: list[Spec], out: Path, client, cifar: str | None, label: str, *, run: bool = True
) -> dict:
    """Run the specs not already in OUT/runs (on the dask client, or here); {key: record}."""
    results = {s.key: r for s in specs if (r := _load(out, s)) is not None}
    todo = [s for s in specs if s.key not in results] if run else []
    print(f"{label}: {len(results)} done before, {len(todo)} to run", flush=True)
    if not todo:
        return results
    t0 = time.perf_counter()
    if client is None:
        for i, s in enumerate(todo, 1):
            results[s.key] = r = run_one(s, str(out), cifar)
            _progress(label, i, len(todo), s, r, t0)
        return results
    from distributed import as_completed

    futures = {
        client.submit(run_one, s, str(out), cifar, key=f"tabn-{s.key}", pure=False): s for s in todo
    }
    for i, fut in enumerate(as_completed(futures), 1):
        s = futures[fut]
        results[s.key] = r = fut.result()
        _progress(label, i, len(todo), s, r, t0)
    return results


def _progress(label, i, n, spec, rec, t0) -> None:
    err = rec["error"]
    print(
        f"[{label} {i}/{n}, {time.perf_counter() - t0:.0f} s] {spec.task} {spec.norm:9s} depth "
        f"{spec.depth:2d} "
        f"seed {spec.seed} {spec.solver:8s} lr {spec.lr:g} M {spec.num_points}: error fixed "
        f"{err['fixed']:.4g} "
        f"adaptive {err['adaptive']:.4g}, {rec['epochs']} epochs, {rec['stop_reason']}",
        flush=True,
    )


def tune(args, out: Path, client) -> dict:
    """Learning rate per (task, norm), TA-BN's grid size per task: depth 8, seed 0, fixed solver."""
    base = dict(depth=TUNE_DEPTH, seed=0, solver="fixed", max_epochs=args.tune_epochs,
                quick=args.quick)
    lr_specs = [
        Spec(task=t, norm=n, lr=lr, num_points=5, role="tune-lr", **base, **_size(args, t))
        for t in args.tasks
        for n in args.norms
        for lr in args.lrs
    ]
    res = run_all(lr_specs, out, client, args.cifar, "tune learning rates",
                  run=not args.assemble_only)
    chosen = {}
    for t in args.tasks:
        for n in args.norms:
            cands = [
                (res[s.key]["val_loss"], s.lr) for s in lr_specs if s.task == t and s.norm == n
            ]
            finite = [c for c in cands if math.isfinite(c[0])]
            chosen[(t, n)] = {"lr": min(finite)[1] if finite else min(args.lrs), "num_points": 5}
    grid_specs = []
    if "tabn" in args.norms:
        grid_specs = [
            Spec(task=t, norm="tabn", lr=chosen[(t, "tabn")]["lr"], num_points=m, role="tune-grid",
                 **base, **_size(args, t))
            for t in args.tasks
            for m in args.grids
        ]
        res.update(
            run_all(grid_specs, out, client, args.cifar, "tune TA-BN grid",
                    run=not args.assemble_only)
        )
        for t in args.tasks:
            cands = [(res[s.key]["val_loss"], s.num_points) for s in grid_specs if s.task == t]
            finite = [c for c in cands if math.isfinite(c[0])]
            chosen[(t, "tabn")]["num_points"] = min(finite)[1] if finite else 5
    return {"chosen": chosen, "lr_specs": lr_specs, "grid_specs": grid_specs, "results": res}


def _size(args, task: str) -> dict:
    """Width and batch of a task: the flags when given, else the defaults of WIDTH and BATCH."""
    return {"width": args.width or WIDTH[task], "batch": args.batch or BATCH[task]}


def grid_specs(args, chosen: dict) -> list[Spec]:
    """The study's models, cheapest first: by solver, then seed, then task, depth, norm."""
    return [
        Spec(task=t, norm=n, depth=d, seed=s, solver=v, lr=chosen[(t, n)]["lr"],
             num_points=chosen[(t, n)]["num_points"], max_epochs=args.max_epochs, quick=args.quick,
             **_size(args, t))
        for v in args.solvers
        for s in args.seeds
        for t in args.tasks
        for d in args.depths
        for n in args.norms
    ]


# ---------------------------------------------------------------- results


def assemble(args, specs: list[Spec], results: dict, tuning: dict, exact: dict | None, wall: float):
    """The study as an xarray Dataset (dims task, norm, depth, seed, solver, eval_solver)."""
    import xarray as xr

    import dynfit

    coords = {"task": list(args.tasks), "norm": list(args.norms), "depth": list(args.depths),
              "seed": list(args.seeds), "solver": list(args.solvers), "eval_solver": list(SOLVERS)}
    shape5 = tuple(len(coords[k]) for k in ("task", "norm", "depth", "seed", "solver"))
    nan5 = lambda: np.full(shape5, np.nan)  # noqa: E731
    error, vpt_ = np.full(shape5 + (2,), np.nan), np.full(shape5 + (2,), np.nan)
    loss, val, epochs, steps, wall_t, per_step, params = (nan5() for _ in range(7))
    converged = np.zeros(shape5, dtype=bool)
    reason = np.full(shape5, "not run", dtype=object)
    for s in specs:
        r = results.get(s.key)
        if r is None:  # --assemble-only before the study finished
            continue
        i = (
            coords["task"].index(s.task),
            coords["norm"].index(s.norm),
            coords["depth"].index(s.depth),
            coords["seed"].index(s.seed),
            coords["solver"].index(s.solver),
        )
        for j, e in enumerate(SOLVERS):
            error[i + (j,)] = r["error"][e]
            vpt_[i + (j,)] = r["vpt"][e]
        loss[i], val[i], epochs[i], steps[i] = (
            r["train_loss"],
            r["val_loss"],
            r["epochs"],
            r["steps"],
        )
        wall_t[i], params[i] = r["wall_time"], r["n_parameters"]
        per_step[i] = r["time_per_step"] if r["steps"] > 0 else np.nan
        converged[i], reason[i] = r["converged"], r["stop_reason"]
    d5 = ("task", "norm", "depth", "seed", "solver")
    ds = xr.Dataset(
        {
            "error": (
                d5 + ("eval_solver",),
                error,
                {
                    "long_name": "test error: dynamics, one-lag MSE relative to persistence; "
                    "images, 1 - accuracy"
                },
            ),
            "vpt": (
                d5 + ("eval_solver",),
                vpt_,
                {"units": "Lyapunov times", "threshold": VPT_THRESHOLD,
                 "long_name": "mean valid prediction time of free runs"},
            ),
            "loss": (d5, loss, {"long_name": "final training loss (mean over the last epoch)"}),
            "val_loss": (d5, val, {"long_name": "best validation loss (the tested weights)"}),
            "epochs": (d5, epochs),
            "steps": (d5, steps, {"long_name": "optimiser steps used"}),
            "converged": (d5, converged),
            "stop_reason": (d5, reason.astype(str)),
            "wall_time": (d5, wall_t, {"units": "s"}),
            "time_per_step": (
                d5,
                per_step,
                {"units": "s", "long_name": "wall time per optimiser step"},
            ),
            "n_parameters": (d5, params),
        },
        coords=coords,
    )
    lr_rows = [
        [s.task, s.norm, s.lr, tuning["results"][s.key]["val_loss"]] for s in tuning["lr_specs"]
    ]
    grid_rows = [
        [s.task, s.num_points, tuning["results"][s.key]["val_loss"]] for s in tuning["grid_specs"]
    ]
    ds.attrs.update(
        {
            "title": "TA-BN depth study",
            "command": " ".join(
                ["python examples/tabn_depth.py"] + [a for a in args.argv if a != "--assemble-only"]
            ),
            "assembled_only": int(args.assemble_only),
            "model_wall_time_s": float(np.nansum(wall_t))
            + sum(
                tuning["results"][s.key]["wall_time"]
                for s in tuning["lr_specs"] + tuning["grid_specs"]
            ),
            "dynfit_version": dynfit.__version__,
            "torch_version": torch.__version__,
            "machine": platform.machine(),
            "width": json.dumps({t: _size(args, t)["width"] for t in args.tasks}),
            "batch": json.dumps({t: _size(args, t)["batch"] for t in args.tasks}),
            "max_epochs": args.max_epochs,
            "tabn_penalty": PENALTY,
            "fixed_solver": "rk4, one step on [0, 1]",
            "adaptive_solver": json.dumps({t: f"dopri5 rtol=atol={TOL[t]:g}" for t in args.tasks}),
            "chosen": json.dumps({f"{t}/{n}": v for (t, n), v in tuning["chosen"].items()}),
            "tune_lr": json.dumps(lr_rows),
            "tune_grid": json.dumps(grid_rows),
            "wall_time_total_s": wall,
            "exact_field_vpt": json.dumps(exact or {}),
            "lyapunov_time": lorenz96_data(args.quick)["lyapunov_time"]
            if "dynamics" in args.tasks
            else math.nan,
        }
    )
    return ds


def _cell(a) -> str:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return "n/a"
    return f"{a.mean():.3g} ± {a.std():.2g}" if a.size > 1 else f"{a.mean():.3g}"


def tables(ds) -> str:
    """Markdown: a table per (task, training solver, eval solver, metric), mean ± std of seeds."""
    lines = []
    for task in ds.task.values:
        sub = ds.sel(task=task)
        metrics = [
            (
                "error",
                "one-lag test MSE / persistence (lower is better)"
                if task == "dynamics"
                else "test error = 1 - accuracy (lower is better)",
            )
        ]
        if task == "dynamics":
            metrics.append(
                ("vpt", f"VPT, Lyapunov times (threshold {VPT_THRESHOLD}; higher is better)")
            )
        for solver in sub.solver.values:
            for name, what in metrics:
                for ev in sub.eval_solver.values:
                    lines += [f"### {task}: {what}; trained {solver}, tested {ev}", "",
                              "| depth | " + " | ".join(str(n) for n in sub.norm.values) + " |",
                              "|---:|" + "---:|" * sub.norm.size]
                    for d in sub.depth.values:
                        cells = [
                            _cell(
                                sub[name].sel(norm=n, depth=d, solver=solver, eval_solver=ev).values
                            )
                            for n in sub.norm.values
                        ]
                        lines.append(f"| {d} | " + " | ".join(cells) + " |")
                    lines.append("")
            lines += [
                f"### {task}, trained {solver}: epochs used "
                "/ converged seeds / final training loss",
                "",
                "| depth | " + " | ".join(str(n) for n in sub.norm.values) + " |",
                "|---:|" + "---:|" * sub.norm.size,
            ]
            for d in sub.depth.values:
                cells = []
                for n in sub.norm.values:
                    c = sub.sel(norm=n, depth=d, solver=solver)
                    cells.append(
                        f"{c.epochs.mean().item():.0f} / {int(c.converged.sum())}of{c.seed.size} / "
                        f"{_cell(c.loss.values)}"
                    )
                lines.append(f"| {d} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def overhead(ds) -> str:
    """TA-BN / BN wall time per optimiser step, per task and training solver (median ratio)."""
    out = []
    for task in ds.task.values:
        for solver in ds.solver.values:
            if "tabn" not in ds.norm.values or "bn" not in ds.norm.values:
                continue
            a = ds.time_per_step.sel(task=task, solver=solver, norm="tabn")
            b = ds.time_per_step.sel(task=task, solver=solver, norm="bn")
            ratio = (a / b).values
            ratio = ratio[np.isfinite(ratio)]
            if ratio.size == 0:
                continue
            r = np.median(ratio)
            out.append(
                f"- {task}, trained {solver}: TA-BN / BN wall time per step, median over depths "
                f"and seeds: {r:.2f}"
            )
    return "\n".join(out)


def answers(ds) -> str:
    """The plain statements the study is for, computed from the Dataset (means over seeds).

    For each task and training solver (tested with the same solver): the best
    shallow model (depth <= 4, any norm), each norm's best depth and whether it
    beats its own depth-4 error at a greater depth, and where TA-BN stands.
    """
    out = []
    lt = ds.attrs.get("lyapunov_time", math.nan)
    for task in ds.task.values:
        for solver in ds.solver.values:
            err = ds.error.sel(task=task, solver=solver, eval_solver=solver).mean("seed")
            shallow = err.where(err.depth <= 4)
            if not np.isfinite(shallow.values).any():
                continue
            si = np.unravel_index(np.nanargmin(shallow.values), shallow.shape)
            best_shallow = float(shallow.values[si])
            out.append(
                f"- **{task}, trained and tested {solver}**: best shallow model "
                f"{err.norm.values[si[0]]} at depth {int(err.depth.values[si[1]])}: "
                f"{best_shallow:.3g}."
            )
            for norm in err.norm.values:
                e = err.sel(norm=norm).values
                if not np.isfinite(e).any():
                    out.append(f"  - {norm}: no finite result.")
                    continue
                k = int(np.nanargmin(e))
                d4 = float(err.sel(norm=norm, depth=4)) if 4 in err.depth.values else math.nan
                deeper = err.sel(norm=norm).where(err.depth > 4).values
                gain = (
                    f"deeper than 4 helps ({np.nanmin(deeper):.3g} vs {d4:.3g} at depth 4)"
                    if np.isfinite(deeper).any() and np.nanmin(deeper) < d4
                    else "no depth beyond 4 beats depth 4"
                )
                out.append(
                    f"  - {norm}: best at depth {int(err.depth.values[k])} ({e[k]:.3g}, "
                    f"{e[k] / best_shallow:.2f}x the best shallow); {gain}; depth "
                    f"{int(err.depth.values[-1])}: {e[-1]:.3g}."
                )
            if task == "dynamics":
                v = ds.vpt.sel(task=task, solver=solver, eval_solver=solver).mean("seed")
                i = np.unravel_index(np.nanargmin(err.values), err.shape)
                out.append(
                    f"  - best model: {err.norm.values[i[0]]} at depth "
                    f"{int(err.depth.values[i[1]])}, "
                    f"one-lag error {float(err.values[i]):.3g} of persistence, VPT "
                    f"{float(v.values[i]):.2f} Lyapunov times (Lyapunov time {lt:.3f})."
                )
    return "\n".join(out)


def figure(ds, path: Path) -> None:
    """Metric vs depth per norm (mean over seeds, std as error bars); rows: training solver
    (tested with the same one), columns: the task's metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from systems.files import atomic_save

    columns = [
        (t, m)
        for t in ds.task.values
        for m in (("error", "vpt") if t == "dynamics" else ("error",))
    ]
    rows = list(ds.solver.values)
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(4.2 * len(columns), 3.4 * len(rows)),
                             squeeze=False)
    for r, solver in enumerate(rows):
        for c, (task, metric) in enumerate(columns):
            ax = axes[r][c]
            for norm in ds.norm.values:
                v = ds[metric].sel(task=task, solver=solver, eval_solver=solver, norm=norm)
                ax.errorbar(ds.depth.values, v.mean("seed"), yerr=v.std("seed"), marker="o",
                            capsize=3, label=norm)
            ax.set_title(f"{task}: trained and tested {solver}", fontsize=10)
            ax.set_xlabel("depth (hidden layers)")
            if metric == "error":
                ax.set_yscale("log")
                ax.set_ylabel(
                    "one-lag MSE / persistence"
                    if task == "dynamics"
                    else "test error (1 - accuracy)"
                )
            else:
                ax.set_ylabel("VPT (Lyapunov times)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, dpi=110))
    plt.close(fig)


def report(ds, exact: dict | None) -> str:
    head = [
        "# TA-BN depth study",
        "",
        f"Made by `{ds.attrs['command']}`; dynfit {ds.attrs['dynfit_version']}, "
        f"torch {ds.attrs['torch_version']}; the trainings' wall times add up to "
        f"{ds.attrs['model_wall_time_s'] / 3600:.1f} h (run two at a time on a loaded 2-core CPU)"
        + (" (tables assembled from the stored runs)." if ds.attrs["assembled_only"] else "."),
        "",
    ]
    chosen = json.loads(ds.attrs["chosen"])
    head += [
        "Chosen at depth 8 (seed 0, fixed solver): "
        + "; ".join(
            f"{k} lr {v['lr']:g}"
            + (f", grid {v['num_points']} points" if k.endswith("tabn") else "")
            for k, v in chosen.items()
        ),
        "",
    ]
    head += [
        "Learning-rate sweep (validation loss): "
        + "; ".join(
            f"{t}/{n} lr {lr:g}: {v:.3g}" for t, n, lr, v in json.loads(ds.attrs["tune_lr"])
        ),
        "",
    ]
    if ds.attrs["tune_grid"] != "[]":
        head += [
            "TA-BN grid sweep (validation loss): "
            + "; ".join(
                f"{t} {m} points: {v:.3g}" for t, m, v in json.loads(ds.attrs["tune_grid"])
            ),
            "",
        ]
    if exact:
        head += [
            f"Exact Lorenz96 field, same starts: VPT {exact['fixed']:.2f} LT (fixed solver), "
            f"{exact['adaptive']:.2f} LT (adaptive).",
            "",
        ]
    return (
        "\n".join(head)
        + "\n## Summary\n\n"
        + answers(ds)
        + "\n\n## TA-BN overhead\n\n"
        + overhead(ds)
        + "\n\n## Tables (mean ± std over seeds)\n\n"
        + tables(ds)
        + "\n"
    )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for runs/, tabn_depth.nc, .md, .png")
    p.add_argument("--quick", action="store_true",
                   help="CI mode: tiny data, depths 2 and 4, few epochs")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS) + ["cifar"])
    p.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    p.add_argument("--norms", nargs="+", default=list(NORM_KINDS), choices=list(NORM_KINDS))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    p.add_argument("--lrs", type=float, nargs="+", default=list(LR_GRID))
    p.add_argument("--grids", type=int, nargs="+", default=list(TABN_GRID),
                   help="TA-BN grid sizes to try")
    p.add_argument("--width", type=int, default=None,
                   help="hidden width (default 32 dynamics, 64 images)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default 16 windows dynamics, 128 images)")
    p.add_argument("--max-epochs", type=int, default=24)
    p.add_argument("--tune-epochs", type=int, default=8)
    p.add_argument(
        "--cluster",
        default=None,
        help="dask: local:N worker processes or tcp://HOST:PORT "
        "(default: run here, one model after another)",
    )
    p.add_argument("--cifar", metavar="DIR",
                   help="CIFAR-10 python batches (task 'cifar'; use a GPU machine)")
    p.add_argument("--tune-only", action="store_true", help="stop after the tuning sweeps")
    p.add_argument(
        "--assemble-only",
        action="store_true",
        help="train nothing: assemble the results already in OUT/runs (missing models: 'not run')",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if "cifar" in args.tasks and not args.cifar:
        p.error("--tasks cifar needs --cifar DIR (the CIFAR-10 python batches)")
    for name in ("width", "batch", "max_epochs", "tune_epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.depths) < 1:
        p.error(f"--depths must all be >= 1, got {args.depths}")
    if args.quick:
        if "--depths" not in args.argv:
            args.depths = [2, 4]
        if "--seeds" not in args.argv:
            args.seeds = [0]
        args.lrs, args.grids = args.lrs[:1] if "--lrs" not in args.argv else args.lrs, [3, 5]
        args.width, args.max_epochs, args.tune_epochs = (
            min(args.width or 16, 16),
            min(args.max_epochs, 2),
            1,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    import contextlib

    from dynfit.sweep import connect

    ctx = (
        connect(args.cluster)
        if args.cluster and not args.assemble_only
        else contextlib.nullcontext(None)
    )
    with ctx as client:
        tuning = tune(args, out, client)
        if args.tune_only:
            return {"tuning": tuning}
        specs = grid_specs(args, tuning["chosen"])
        results = run_all(specs, out, client, args.cifar, "study", run=not args.assemble_only)
    exact = exact_vpt(args.quick) if "dynamics" in args.tasks else None
    ds = assemble(args, specs, results, tuning, exact, time.perf_counter() - t0)
    from systems.files import atomic_save, atomic_write_bytes

    atomic_save(out / "tabn_depth.nc", ds.to_netcdf)
    text = report(ds, exact)
    atomic_write_bytes(out / "tabn_depth.md", text.encode())
    figure(ds, out / "tabn_depth.png")
    print(text)
    print(f"wrote {out / 'tabn_depth.nc'}, {out / 'tabn_depth.md'}, {out / 'tabn_depth.png'}")
    return {"dataset": ds, "tuning": tuning, "exact": exact}


if __name__ == "__main__":
    main()
