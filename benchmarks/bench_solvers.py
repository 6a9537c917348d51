"""Benchmark: dynfit.solvers.odesolve against torchdiffeq.odeint on a batch of Lorenz windows.

A batch of windows (default 256, each `--window` observation steps of 0.01) is cut
from an RKF45 Lorenz'63 trajectory; the vector field is an MLP 3-64-64-3 (tanh)
fitted briefly to the Lorenz vector field, so that the batch mixes easy and hard
stretches of the attractor like a training batch does. For each method (rkf45 -
registered with torchdiffeq by dynfit - and dopri5) and tolerance, the solvers
run forward + backward (squared error against the windows) on CPU, in one process,
interleaved; the script prints wall time per forward+backward (median), batched
calls of the field, example-evaluations (rows: a batched call on n examples counts
n), the largest error against a tight solve (rtol = atol = 1e-10) and the ratios.

Four solvers, two like-for-like pairs:
- dynfit (default MixedNorm: per-example steps, each example meets the tolerance)
  against torchdiffeq-max (norm = max over examples of their RMS: the same
  per-example guarantee, with one shared step);
- dynfit-batch (MixedNorm(norm="batch"): one RMS over the whole batch, one shared
  step) against torchdiffeq (its default norm, the same one RMS over the batch,
  so a hard example's error is averaged with the easy ones').
The script prints dynfit/torchdiffeq (the issue's headline figure, different
norms), dynfit-batch/torchdiffeq (same norm) and dynfit/torchdiffeq-max.

    python benchmarks/bench_solvers.py            # full run
    python benchmarks/bench_solvers.py --quick    # small, for CI
    python benchmarks/bench_solvers.py --accuracy # orders, DOP853 agreement, adjoint check
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchdiffeq

from dynfit.solvers import MixedNorm, odesolve


# CPU time of this process: other jobs on a shared machine do not inflate one side
CLOCK = time.process_time


def vdp(t, y):
    """Van der Pol with its stiffness mu carried in the state: y = (u, v, mu)."""
    u, v, mu = y.unbind(-1)
    return torch.stack([v, mu * (1 - u * u) * v - u, torch.zeros_like(mu)], -1)


def mixed(method="dopri5", rtol=1e-6, atol=1e-8, repeats=5):
    """A batch mixing easy and stiff examples: 224 Van der Pol oscillators with mu = 0.5 and
    32 with mu = 20, over [0, 2] with 9 outputs; forward + backward; evaluations counted in rows."""
    y0 = torch.tensor([[2.0, 0.0, 0.5]] * 224 + [[2.0, 0.0, 20.0]] * 32, dtype=torch.float64)
    t = torch.linspace(0.0, 2.0, 9, dtype=torch.float64)
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)  # a parameter to differentiate
    field = Counted(lambda t, y: w * vdp(t, y))
    target = torch.zeros(9, 256, 3, dtype=torch.float64)
    print(f"# mixed batch: 224 Van der Pol mu=0.5 + 32 mu=20, t in [0, 2], 9 outputs, {method}, "
          f"rtol {rtol:g}, atol {atol:g}, forward + backward, median of {repeats}")
    res = {}
    for _ in range(repeats):
        for solver in ("dynfit", "dynfit-batch", "torchdiffeq", "torchdiffeq-max"):
            res.setdefault(solver, []).append(
                run_once(solver, field, target, t, method, rtol, atol, y0=y0)
            )
    for solver, rs in res.items():
        print(
            f"{solver:16s} {statistics.median(r[0] for r in rs) * 1e3:9.1f} ms  "
            f"calls {rs[0][1]:5d}  rows {rs[0][2]:8d}"
        )
    for ours, other in (
        ("dynfit", "torchdiffeq"),
        ("dynfit", "torchdiffeq-max"),
        ("dynfit-batch", "torchdiffeq"),
    ):
        wd, wt = (statistics.median(r[0] for r in res[s]) for s in (ours, other))
        print(
            f"{'':16s}{ours}/{other}: time {wd / wt:.2f}, "
            f"rows {res[ours][0][2] / res[other][0][2]:.2f}"
        )
    return res


def lorenz(t, y):
    x, v, z = y.unbind(-1)
    return torch.stack([10.0 * (v - x), x * (28.0 - z) - v, x * v - 8.0 / 3.0 * z], -1)


class Counted(torch.nn.Module):
    """Wraps a field and counts batched calls and rows."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.calls = 0
        self.rows = 0

    def forward(self, t, y):
        self.calls += 1
        self.rows += y.shape[0]
        return self.net(t, y)


class MLPField(torch.nn.Module):
    """3-64-64-3 tanh MLP on standardised states: f(y) = s * net((y - m) / s)."""

    def __init__(self, mean, scale, width=64, dtype=torch.float64):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, width, dtype=dtype),
            torch.nn.Tanh(),
            torch.nn.Linear(width, width, dtype=dtype),
            torch.nn.Tanh(),
            torch.nn.Linear(width, 3, dtype=dtype),
        )

    def forward(self, t, y):
        return self.net((y - self.mean) / self.scale) * self.scale * 5.0


def make_data(n_windows, window, dtype, seed):
    """(windows (window+1, B, 3), t (window+1,)) cut from an RKF45 Lorenz run at dt = 0.01."""
    g = torch.Generator().manual_seed(seed)
    dt, n = 0.01, n_windows * 2 + window + 1
    t = torch.arange(n + 500, dtype=dtype) * dt
    y0 = torch.tensor([[1.0, 1.0, 1.0]], dtype=dtype)
    traj = odesolve(
        lorenz, y0, t, method="rkf45", control=MixedNorm(rtol=1e-10, atol=1e-10), max_steps=10**6
    ).ys[500:, 0]  # drop the transient
    starts = torch.randperm(len(traj) - window - 1, generator=g)[:n_windows]
    idx = starts[None, :] + torch.arange(window + 1)[:, None]
    return traj[idx], t[: window + 1] - t[0], traj


def fit_field(traj, steps, seed, dtype):
    torch.manual_seed(seed)
    field = MLPField(traj.mean(0), traj.std(0), dtype=dtype)
    target = lorenz(None, traj)
    opt = torch.optim.Adam(field.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((field(None, traj) - target) / traj.std(0)).square().mean()
        loss.backward()
        opt.step()
    return field, loss.item()


def max_norm(B):
    """torchdiffeq norm: the largest per-example RMS (a per-example guarantee like dynfit's)."""
    return lambda x: x.reshape(B, -1).square().mean(dim=1).sqrt().max()


def run_once(solver, field, windows, t, method, tol, atol=None, y0=None):
    atol = tol if atol is None else atol
    field.calls = field.rows = 0
    y0 = (windows[0] if y0 is None else y0).clone()
    t0 = CLOCK()
    reported = None
    if solver in ("dynfit", "dynfit-batch"):
        ctrl = MixedNorm(rtol=tol, atol=atol,
                         norm="batch" if solver == "dynfit-batch" else "example")
        sol = odesolve(field, y0, t, method=method, control=ctrl)
        ys, reported = sol.ys, sol.stats.n_f_evals
    elif solver == "dynfit-compiled":
        sol = odesolve(field.net, y0, t, method=method, control=MixedNorm(rtol=tol, atol=atol),
                       compile=True)
        ys, reported = sol.ys, None
        field.calls, field.rows = sol.stats.n_f_evals, int(sol.stats.n_f_evals_per_example.sum())
    elif solver == "torchdiffeq":
        ys = torchdiffeq.odeint(field, y0, t, method=method, rtol=tol, atol=atol)
    else:
        ys = torchdiffeq.odeint(field, y0, t, method=method, rtol=tol, atol=atol,
                                options=dict(norm=max_norm(len(y0))))
    loss = (ys - windows).square().mean()
    n_fwd_calls, n_fwd_rows = field.calls, field.rows
    loss.backward()
    wall = CLOCK() - t0
    if reported is not None and reported != n_fwd_calls:
        raise RuntimeError(f"dynfit reported {reported} evaluations, the field saw {n_fwd_calls}")
    return wall, n_fwd_calls, n_fwd_rows, ys.detach()


def accuracy():
    """Print what the tests check: observed orders, agreement with DOP853, adjoint gradients."""
    import numpy as np
    from scipy.integrate import solve_ivp

    f64 = torch.float64

    def lorenz_np(t, y):
        return lorenz(None, torch.as_tensor(y)).numpy()

    y0 = torch.tensor([[1.0, 1.0, 1.0], [-5.0, 3.0, 20.0]], dtype=f64)
    t_end = 0.5
    exact = np.stack(
        [
            solve_ivp(lorenz_np, (0, t_end), y, method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
            for y in y0.numpy()
        ]
    )
    t = torch.tensor([0.0, t_end], dtype=f64)
    ns = np.array([40, 80, 160, 320])
    print("# observed order, fixed steps, Lorenz over [0, 0.5], h = 0.5/n for n in", ns.tolist())
    for method in ("rkf45", "rkf23"):
        for path in ("odesolve", "torchdiffeq"):
            errs = []
            for n in ns:
                h = t_end / n
                if path == "odesolve":
                    y1 = odesolve(lorenz, y0, t, method=method, step_size=h).ys[-1]
                else:
                    y1 = torchdiffeq.odeint(lorenz, y0, t, method=method, rtol=1e6, atol=1e6,
                                            options=dict(first_step=h, max_step=h))[-1]
                errs.append(np.abs(y1.numpy() - exact).max())
            slope = np.polyfit(np.log(t_end / ns), np.log(errs), 1)[0]
            print(
                f"{method:6s} {path:12s} order {slope:.3f}  errors "
                f"{' '.join(f'{e:.2e}' for e in errs)}"
            )
    y0 = torch.tensor([[1.0, 1.0, 1.0], [-5.0, 3.0, 20.0], [0.1, 0.2, 30.0]], dtype=f64)
    t = torch.linspace(0, 1, 11, dtype=f64)
    ref = np.stack(
        [
            solve_ivp(lorenz_np, (0, 1), y, method="DOP853", rtol=1e-12, atol=1e-12,
                      t_eval=t.numpy()).y.T
            for y in y0.numpy()
        ],
        axis=1,
    )
    print("# Lorenz over [0, 1], 11 outputs, rtol = atol = 1e-8, max |y - DOP853(1e-12)|")
    for method in ("rkf45", "rkf23", "dopri5"):
        ours = odesolve(lorenz, y0, t, method=method, control=MixedNorm(rtol=1e-8, atol=1e-8),
                        max_steps=10**5).ys
        td = torchdiffeq.odeint(lorenz, y0, t, method=method, rtol=1e-8, atol=1e-8)
        print(
            f"{method:6s} odesolve {np.abs(ours.numpy() - ref).max():.2e}  "
            f"torchdiffeq {np.abs(td.numpy() - ref).max():.2e}"
        )
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16, dtype=f64), torch.nn.Tanh(),
                              torch.nn.Linear(16, 3, dtype=f64))
    field = lambda t, y: net(y)  # noqa: E731
    y0 = torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -0.7]], dtype=f64)
    t = torch.linspace(0, 1, 4, dtype=f64)

    def grads(solve):
        net.zero_grad()
        y = y0.clone().requires_grad_(True)
        solve(y).square().sum().backward()
        return torch.cat([y.grad.flatten()] + [p.grad.flatten() for p in net.parameters()])

    tol = dict(rtol=1e-10, atol=1e-10)
    direct = grads(lambda y: torchdiffeq.odeint(field, y, t, method="rkf45", **tol))
    adj = grads(
        lambda y: torchdiffeq.odeint_adjoint(field, y, t, method="rkf45",
                                             adjoint_params=tuple(net.parameters()), **tol)
    )
    ours = grads(lambda y: odesolve(field, y, t, control=MixedNorm(**tol)).ys)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    print(
        f"# gradients, rkf45 at 1e-10: |adjoint - direct| / |direct| = {rel(adj, direct):.1e}, "
        f"|odesolve - direct| / |direct| = {rel(ours, direct):.1e}"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256, help="number of windows")
    p.add_argument("--window", type=int, default=20, help="observation steps (of 0.01) per window")
    p.add_argument("--methods", nargs="+", default=["rkf45", "dopri5"])
    p.add_argument("--tols", nargs="+", type=float, default=[1e-4, 1e-6])
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance (default: each rtol)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time odesolve(compile=True) (torch.compile of the field; slow to compile)",
    )
    p.add_argument("--mixed", action="store_true",
                   help="also run the batch mixing easy and stiff examples")
    p.add_argument("--clock", choices=("process", "wall"), default="process",
                   help="CPU time of this process (default; robust to other load) or wall time")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--fit-steps", type=int, default=300,
                   help="Adam steps fitting the MLP to the Lorenz field")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--float32", action="store_true", help="float32 instead of float64")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small sizes for CI")
    p.add_argument("--accuracy", action="store_true",
                   help="print orders, DOP853 agreement and adjoint check, then stop")
    a = p.parse_args(argv)
    if a.accuracy:
        torch.set_num_threads(a.threads)
        accuracy()
        return {}
    if a.quick:
        a.batch, a.window, a.repeats, a.fit_steps, a.tols = 32, 5, 1, 20, [1e-4]
    torch.set_num_threads(a.threads)
    global CLOCK
    CLOCK = time.process_time if a.clock == "process" else time.perf_counter
    dtype = torch.float32 if a.float32 else torch.float64
    windows, t, traj = make_data(a.batch, a.window, dtype, a.seed)
    net, fit_loss = fit_field(traj, a.fit_steps, a.seed, dtype)
    field = Counted(net)
    print(f"# load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the start")
    print(
        f"# {a.batch} windows x {a.window} steps of 0.01, MLP 3-64-64-3 tanh (fit loss "
        f"{fit_loss:.3g}), "
        f"{dtype}, {a.threads} thread(s), {a.clock} time, median of {a.repeats}"
    )
    with torch.no_grad():
        exact = odesolve(net, windows[0], t, control=MixedNorm(rtol=1e-10, atol=1e-10)).ys
        steps = odesolve(net, windows[0], t,
                         control=MixedNorm(rtol=a.tols[-1], atol=a.tols[-1])).stats.n_steps.float()
    print(
        f"# per-example dynfit steps at tol {a.tols[-1]:g}: min {steps.min():.0f}, median "
        f"{steps.median():.0f}, "
        f"max {steps.max():.0f} (mean/max {steps.mean() / steps.max():.2f})"
    )
    print(
        f"{'method':7s} {'tol':>7s} {'solver':15s} {'ms/fwd+bwd':>10s} {'calls':>6s} {'rows':>8s} "
        f"{'us/call':>8s} {'us/row':>7s} {'max err':>8s}"
    )
    results = {}
    solvers = ("dynfit", "torchdiffeq", "torchdiffeq-max", "dynfit-batch") + (
        ("dynfit-compiled",) if a.compile else ()
    )
    if a.compile:  # compile before timing
        for method in a.methods:
            for tol in a.tols:
                run_once("dynfit-compiled", field, windows, t, method, tol, a.atol)
    for method in a.methods:
        for tol in a.tols:
            runs = {s: [] for s in solvers}
            for _ in range(a.repeats):  # interleaved, so that load on the machine hits all alike
                for solver in runs:
                    runs[solver].append(run_once(solver, field, windows, t, method, tol, a.atol))
            for solver, rs in runs.items():
                wall = statistics.median(r[0] for r in rs)
                calls, rows, err = rs[0][1], rs[0][2], (rs[0][3] - exact).abs().max().item()
                results[method, tol, solver] = (wall, calls, rows, err)
                print(
                    f"{method:7s} {tol:7.0e} {solver:15s} {wall * 1e3:10.1f} {calls:6d} {rows:8d} "
                    f"{wall / calls * 1e6:8.0f} {wall / rows * 1e6:7.2f} {err:8.1e}"
                )
            wd, cd, rd, _ = results[method, tol, "dynfit"]
            if a.compile:
                wc = results[method, tol, "dynfit-compiled"][0]
                wt = results[method, tol, "torchdiffeq"][0]
                print(
                    f"{'':16s}dynfit-compiled/torchdiffeq: time {wc / wt:.2f}; "
                    f"dynfit-compiled/dynfit: {wc / wd:.2f}"
                )
            for ours, other in (
                ("dynfit", "torchdiffeq"),
                ("dynfit", "torchdiffeq-max"),
                ("dynfit-batch", "torchdiffeq"),
            ):
                wd, cd, rd, _ = results[method, tol, ours]
                wt, ct, rt, _ = results[method, tol, other]
                print(
                    f"{'':16s}{ours}/{other}: time {wd / wt:.2f}, "
                    f"calls {cd / ct:.2f}, rows {rd / rt:.2f}, "
                    f"time per call {(wd / cd) / (wt / ct):.2f}, time per row "
                    f"{(wd / rd) / (wt / rt):.2f}"
                )
    if a.mixed:
        mixed(a.methods[-1], a.tols[-1], a.tols[-1] if a.atol is None else a.atol, a.repeats)
    return results


if __name__ == "__main__":
    main()
