"""A dysts flow through our ensemble kernels against dysts' own ``make_trajectory``, side by side.

``systems.simulate(systems.from_dysts("Aizawa"), n_traj=64, ...)`` (DOP853,
numba, parallel over trajectories) against dysts' ``make_trajectory`` for the
same 64 starts (scipy ``solve_ivp`` one trajectory at a time, calling dysts'
compiled right-hand side) with the same method and tolerances, on the same
sample times. Reports both wall times and their ratio, CPU times, and the
largest difference between the two over the first Lyapunov time (1 /
dysts' estimate), relative to the attractor's size. dysts' default method
(Radau, implicit) is timed on a few starts and scaled to 64.

    python benchmarks/bench_dysts.py            # 64 starts, 1000 samples (T = 50)
    python benchmarks/bench_dysts.py --quick    # 16 starts, 200 samples
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def bench(name: str, n_traj: int, n_samples: int, dt: float, tol: float, n_radau: int) -> dict:
    import dysts.flows

    import systems
    from systems.simulate import sample_initial_conditions

    s = systems.from_dysts(name)
    starts = sample_initial_conditions(s, n_traj, np.random.default_rng(0))
    kw = dict(n_steps=n_samples, dt=dt, method="dop853", rtol=tol, atol=tol)
    # load/compile outside the timing
    systems.simulate(s, n_traj=2, x0=starts[:2], **{**kw, "n_steps": 3})

    t0, c0 = time.perf_counter(), time.process_time()
    ds = systems.simulate(s, n_traj=n_traj, x0=starts, **kw)
    ours, ours_cpu = time.perf_counter() - t0, time.process_time() - c0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = getattr(dysts.flows, name)()
        obj.dt = dt  # resample=False: make_trajectory samples every obj.dt from 0 to (n - 1) dt
        mk = dict(resample=False, postprocess=False, standardize=False, rtol=tol, atol=tol)
        t0, c0 = time.perf_counter(), time.process_time()
        ref = obj.make_trajectory(n_samples, init_cond=starts, method="DOP853", **mk)
        theirs, theirs_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        obj.make_trajectory(n_samples, init_cond=starts[:n_radau], method="Radau", **mk)
        radau_each = (time.perf_counter() - t0) / n_radau

    ref = np.asarray(ref).reshape(n_traj, n_samples, s.dim)
    x = ds.x.values
    t_lyap = 1.0 / s.lyapunov_max
    k = int(np.searchsorted(ds.time.values, t_lyap, side="right"))
    scale = float(x.reshape(-1, s.dim).std(axis=0).max())
    return {
        "system": s.name,
        "source": ds.attrs["source"],
        "n_traj": n_traj,
        "n_samples": n_samples,
        "T": dt * (n_samples - 1),
        "tol": tol,
        "ours_s": ours,
        "dysts_dop853_s": theirs,
        "ratio": theirs / ours,
        "ours_cpu_s": ours_cpu,
        "dysts_cpu_s": theirs_cpu,
        "ratio_cpu": theirs_cpu / ours_cpu,
        "dysts_radau_scaled_s": radau_each * n_traj,
        "ratio_vs_radau": radau_each * n_traj / ours,
        "lyapunov_time": t_lyap,
        "max_diff_first_lyapunov_time": float(np.max(np.abs(x[:, :k] - ref[:, :k]))) / scale,
        "max_diff_whole_run": float(np.max(np.abs(x - ref))) / scale,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 starts, 200 samples")
    ap.add_argument("--system", default="Aizawa")
    ap.add_argument("--tol", type=float, default=1e-9)
    args = ap.parse_args(argv)
    n_traj, n_samples, n_radau = (16, 200, 2) if args.quick else (64, 1000, 4)
    r = bench(args.system, n_traj, n_samples, 0.05, args.tol, n_radau)
    print(
        f"{r['system']} ({r['source']}): {r['n_traj']} "
        f"trajectories x {r['n_samples']} samples, T = {r['T']:g}, "
        f"DOP853 at rtol = atol = {r['tol']:g}"
    )
    print(f"  systems.simulate          {r['ours_s']:8.3f} s wall  {r['ours_cpu_s']:8.3f} s CPU")
    print(
        f"  dysts make_trajectory     {r['dysts_dop853_s']:8.3f} "
        f"s wall  {r['dysts_cpu_s']:8.3f} s CPU"
    )
    print(f"  speed ratio               {r['ratio']:8.1f} x wall   {r['ratio_cpu']:8.1f} x CPU")
    print(
        f"  dysts default (Radau)     {r['dysts_radau_scaled_s']:8.3f} s wall for {r['n_traj']} "
        f"(scaled): {r['ratio_vs_radau']:.0f} x"
    )
    print(
        "  max |ours - dysts| / attractor std over the first Lyapunov time "
        f"({r['lyapunov_time']:.3g}): "
        f"{r['max_diff_first_lyapunov_time']:.2e}; over the whole run: "
        f"{r['max_diff_whole_run']:.2e}"
    )
    return r


if __name__ == "__main__":
    main()
