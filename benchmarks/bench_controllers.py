"""Benchmark: step counts of the PI controller against the I controller (MixedNorm).

Two batches, per-example steps, rtol = atol = --tol (default 1e-6), each example's counts
summed over the batch:
- Van der Pol, mu log-spaced over [10, 100] (stiff-ish: relaxation oscillations whose slow
  branches put an explicit method at its stability limit), t in [0, --t-vdp];
- Lorenz'63 from 16 starts on the attractor, t in [0, --t-lorenz].
For each method and controller the script prints accepted and rejected steps,
example-evaluations of the field (a batched call on n examples counts n), batched calls,
the largest error at the end against a tight solve (rtol = atol = 1e-11) relative to
max |y|, and the ratio PI / I of each count, side by side.

    python benchmarks/bench_controllers.py            # full run
    python benchmarks/bench_controllers.py --quick    # small, for CI
"""
from __future__ import annotations

import argparse

import torch

from dynfit.solvers import MixedNorm, PIController, odesolve

F64 = torch.float64


def vdp(t, y):
    """Van der Pol with its stiffness mu carried in the state: y = (u, v, mu)."""
    u, v, mu = y.unbind(-1)
    return torch.stack([v, mu * (1 - u * u) * v - u, torch.zeros_like(mu)], -1)


def lorenz(t, y):
    x, yy, z = y.unbind(-1)
    return torch.stack([10.0 * (yy - x), x * (28.0 - z) - yy, x * yy - 8.0 / 3.0 * z], -1)


def problems(quick: bool, t_vdp: float, t_lorenz: float):
    """(name, field, y0 (B, D), t (T,)) of the two batches."""
    n = 4 if quick else 8
    mu = torch.logspace(1, 2, n, dtype=F64)
    y_vdp = torch.stack([torch.full_like(mu, 2.0), torch.zeros_like(mu), mu], -1)
    g = torch.Generator().manual_seed(0)
    y_l = torch.tensor([[1.0, 1.0, 20.0]], dtype=F64) + torch.randn(16, 3, generator=g, dtype=F64)
    y_l = odesolve(lorenz, y_l, torch.tensor([0.0, 5.0], dtype=F64),
                   control=MixedNorm(1e-8, 1e-8)).ys[-1]  # on the attractor
    if quick:
        y_l = y_l[:4]
    t_v = torch.linspace(0, t_vdp, 11, dtype=F64)
    return [(f"Van der Pol mu=10..100 (B={n})", vdp, y_vdp, t_v),
            (f"Lorenz'63 (B={y_l.shape[0]})", lorenz, y_l,
             torch.linspace(0, t_lorenz, 11, dtype=F64))]


def counts(field, y0, t, method, control, exact):
    s = odesolve(field, y0, t, method=method, control=control, max_steps=200_000)
    st = s.stats
    err = float((s.ys[-1] - exact).abs().max() / exact.abs().max())
    return {"accepted": int(st.n_accepted.sum()), "rejected": int(st.n_rejected.sum()),
            "f-evals": int(st.n_f_evals_per_example.sum()), "calls": int(st.n_f_evals),
            "error": err}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small batches and short spans (CI)")
    ap.add_argument("--tol", type=float, default=1e-6, help="rtol = atol (default 1e-6)")
    ap.add_argument("--t-vdp", type=float, default=None,
                    help="Van der Pol span (default 40; quick 10)")
    ap.add_argument("--t-lorenz", type=float, default=None,
                    help="Lorenz span (default 20; quick 5)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_vdp = args.t_vdp or (10.0 if args.quick else 40.0)
    t_lorenz = args.t_lorenz or (5.0 if args.quick else 20.0)
    methods = ("rkf45",) if args.quick else ("rkf45", "dopri5")
    controls = {"I (MixedNorm)": MixedNorm(args.tol, args.tol),
                "PI (0.7, 0.4)": PIController(args.tol, args.tol)}
    keys = ("accepted", "rejected", "f-evals", "calls")
    results = {}
    for name, field, y0, t in problems(args.quick, t_vdp, t_lorenz):
        exact = odesolve(field, y0, t, method="dopri5", control=MixedNorm(1e-11, 1e-11),
                         max_steps=1_000_000).ys[-1]
        print(f"\n# {name}, t in [0, {float(t[-1]):g}], rtol = atol = {args.tol:g}, "
              f"counts summed over the batch")
        print(f"{'method':8s} {'controller':15s} " + " ".join(f"{k:>9s}" for k in keys)
              + f" {'rel. error':>10s}")
        for method in methods:
            row = {c: counts(field, y0, t, method, ctrl, exact) for c, ctrl in controls.items()}
            results[(name, method)] = row
            for c, r in row.items():
                print(f"{method:8s} {c:15s} " + " ".join(f"{r[k]:9d}" for k in keys)
                      + f" {r['error']:10.2e}")
            (i, pi) = row.values()
            print(f"{method:8s} {'PI / I':15s} "
                  + " ".join(f"{pi[k] / i[k]:9.3f}" if i[k] else f"{'-':>9s}" for k in keys)
                  + f" {pi['error'] / i['error']:10.3f}")
    return results


if __name__ == "__main__":
    main()
