"""Benchmark of the ``systems`` integrators against scipy, side by side in one run.

1. Lorenz'63 ensemble, n_traj x n_samples (dt 0.01) with RKF45 at rtol=atol=1e-9
   (numba, parallel over trajectories) against scipy ``solve_ivp`` RK45 at the
   same tolerances, one trajectory at a time on a subset, scaled to the
   ensemble: the speed ratio (target >= 300x).
2. RK4 ensemble throughput in member-steps per second (target >= 5e7 on 2 cores).
3. Start-up: import + first call in two fresh processes (the compiled kernels
   must load from numba's cache, not recompile).
4. ``simulate`` with starts drawn on the attractor against the same run with
   given starts, interleaved (target <= 1.5x), and the drawn-start run against
   scipy per trajectory (target >= 300x).
5. With --zarr: ``simulate("lorenz96", n_traj=1024, n_steps=4000, dt=0.01,
   chunks=128)`` saved to zarr in a fresh process; its peak resident memory
   against the ensemble's size (target < 0.8 GiB for 1.2 GiB).

    python benchmarks/bench_systems.py            # the full sizes (1024 x 10,000)
    python benchmarks/bench_systems.py --quick    # a small mode for CI
    python benchmarks/bench_systems.py --zarr --no-startup   # adds the zarr memory check (minutes)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time

import numpy as np


def _lorenz_py(sigma: float, rho: float, beta: float):
    """Plain-Python Lorenz'63 field, the fastest fair right-hand side for scipy."""

    def f(t, x):
        return np.array(
            [sigma * (x[1] - x[0]), x[0] * (rho - x[2]) - x[1], x[0] * x[1] - beta * x[2]]
        )

    return f


def bench_rkf45_vs_scipy(n_traj: int, n_samples: int, n_scipy: int, tol: float) -> dict:
    from scipy.integrate import solve_ivp

    import systems
    from systems.integrate import integrate
    from systems.simulate import sample_initial_conditions

    s = systems.get("lorenz63")
    x0 = sample_initial_conditions(s, n_traj, np.random.default_rng(0))
    t = 0.01 * np.arange(n_samples)
    integrate(s, x0[:2], t[:3], rtol=tol, atol=tol)  # load/compile outside the timing

    t0, c0 = time.perf_counter(), time.process_time()
    sol = integrate(s, x0, t, rtol=tol, atol=tol)
    ours, ours_cpu = time.perf_counter() - t0, time.process_time() - c0

    f = _lorenz_py(*s.param_array())
    t0, c0 = time.perf_counter(), time.process_time()
    err = 0.0
    for i in range(n_scipy):
        ref = solve_ivp(f, (t[0], t[-1]), x0[i], method="RK45", rtol=tol, atol=tol, t_eval=t)
        err = max(err, float(np.max(np.abs(ref.y.T[: min(200, n_samples)] - sol.x[i, :200]))))
    scipy_each = (time.perf_counter() - t0) / n_scipy
    scipy_cpu_each = (time.process_time() - c0) / n_scipy
    scipy_total = scipy_each * n_traj

    systems.simulate("lorenz63", n_traj=2, n_steps=3, dt=0.01, seed=0)  # load the kernels
    t0, c0 = time.perf_counter(), time.process_time()
    systems.simulate("lorenz63", n_traj=n_traj, n_steps=n_samples, dt=0.01, rtol=tol, atol=tol,
                     seed=0)
    drawn, drawn_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "drawn_s": drawn,
        "ratio_drawn": scipy_total / drawn,
        "ratio_drawn_cpu_2cores": scipy_cpu_each * n_traj / (drawn_cpu / 2),
        "n_traj": n_traj,
        "n_samples": n_samples,
        "ours_s": ours,
        "scipy_per_traj_s": scipy_each,
        "scipy_scaled_s": scipy_total,
        "ratio": scipy_total / ours,
        # CPU-time view, insensitive to other load: ours spread over the cores it used
        "ours_cpu_s": ours_cpu,
        "ratio_cpu_2cores": scipy_cpu_each * n_traj / (ours_cpu / 2),
        "mean_steps": float(sol.n_accepted.mean() + sol.n_rejected.mean()),
        "agreement_first_2s": err,
    }


def bench_drawn_vs_given(n_traj: int, n_steps: int, repeats: int = 3) -> dict:
    """simulate with starts drawn on the attractor vs given starts, interleaved; best of
    ``repeats``."""
    import systems
    from systems.simulate import sample_initial_conditions

    s = systems.get("lorenz63")
    x0 = sample_initial_conditions(s, n_traj, np.random.default_rng(5))
    kw = dict(n_traj=n_traj, n_steps=n_steps, dt=0.01, progress=False)
    systems.simulate(s, n_traj=2, n_steps=3, dt=0.01, seed=0)
    given, drawn, given_cpu, drawn_cpu = [], [], [], []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        systems.simulate(s, x0=x0, **kw)
        given.append(time.perf_counter() - t0)
        given_cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        systems.simulate(s, seed=r, **kw)
        drawn.append(time.perf_counter() - t0)
        drawn_cpu.append(time.process_time() - c0)
    return {"n_traj": n_traj, "n_steps": n_steps, "given_s": min(given), "drawn_s": min(drawn),
            "ratio": min(drawn) / min(given),
            "ratio_median": float(np.median(np.array(drawn) / np.array(given))),
            "ratio_cpu": min(drawn_cpu) / min(given_cpu)}


_ZARR = textwrap.dedent(
    """
    import resource, sys, tempfile, time
    from pathlib import Path
    import systems
    n_traj, n_steps, chunks = map(int, sys.argv[1:4])
    t0 = time.perf_counter()
    ds = systems.simulate("lorenz96", n_traj=n_traj, n_steps=n_steps, dt=0.01, chunks=chunks,
                          seed=0)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=sys.argv[4]) as d:
        path = systems.save(ds, Path(d) / "l96.zarr")
        t2 = time.perf_counter()
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        back = systems.load(path)
        last = slice(-3, None) ok = bool((back["x"].isel(trajectory=last).values
                   == ds["x"].isel(trajectory=last).values).all())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(ds["x"].nbytes, peak, t1 - t0, t2 - t1, size, int(ok))
    """
)


def bench_zarr_memory(n_traj: int, n_steps: int, chunks: int, folder: str) -> dict:
    """Peak RSS of a fresh process that simulates a lazy Lorenz-96 ensemble and saves it to zarr."""
    out = subprocess.run(
        [sys.executable, "-c", _ZARR, str(n_traj), str(n_steps), str(chunks), folder],
        capture_output=True,
        text=True,
        check=True,
    )
    nbytes, peak, draw, save, size, ok = out.stdout.split()
    return {"n_traj": n_traj, "n_steps": n_steps, "chunks": chunks,
            "ensemble_gib": int(nbytes) / 2**30, "peak_gib": int(peak) / 2**30,
            "draw_s": float(draw), "save_s": float(save), "on_disk_gib": int(size) / 2**30,
            "last_chunk_equal": bool(int(ok))}


def bench_rk4_throughput(n_traj: int, n_samples: int, repeats: int = 3) -> dict:
    import systems
    from systems.integrate import integrate
    from systems.simulate import sample_initial_conditions

    s = systems.get("lorenz63")
    x0 = sample_initial_conditions(s, n_traj, np.random.default_rng(1))
    t = 0.01 * np.arange(n_samples)
    integrate(s, x0[:2], t[:3], method="rk4")
    best, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        integrate(s, x0, t, method="rk4")
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    steps = n_traj * (n_samples - 1)
    return {
        "n_traj": n_traj,
        "n_samples": n_samples,
        "seconds": best,
        "member_steps_per_s": steps / best,
        "member_steps_per_cpu_s": steps / best_cpu,
    }


_STARTUP = textwrap.dedent(
    """
    import time; t0 = time.perf_counter()
    import numpy as np, systems
    from systems.integrate import integrate, kernels
    t1 = time.perf_counter()
    s = systems.get("lorenz63")
    integrate(s, s.x0, np.linspace(0, 1, 101))
    t2 = time.perf_counter()
    st = kernels(s, 6)._ensemble_adaptive.stats
    hits, misses = sum(st.cache_hits.values()), sum(st.cache_misses.values())
    print(f"{t1 - t0:.3f} {t2 - t1:.3f} {hits} {misses}")
    """
)


def bench_startup() -> list[dict]:
    rows = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _STARTUP], capture_output=True, text=True,
                             check=True)
        imp, first, hits, misses = out.stdout.split()
        rows.append(
            {"import_s": float(imp), "first_call_s": float(first), "cache_hits": int(hits),
             "cache_misses": int(misses)}
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes (64 x 1000, 2 scipy trajectories)")
    p.add_argument("--n-traj", type=int, default=None, help="ensemble size (default 1024)")
    p.add_argument("--n-samples", type=int, default=None,
                   help="samples per trajectory (default 10,000)")
    p.add_argument("--n-scipy", type=int, default=None,
                   help="trajectories timed with scipy (default 8)")
    p.add_argument("--tol", type=float, default=1e-9,
                   help="rtol = atol for RKF45 and RK45 (default 1e-9)")
    p.add_argument("--no-startup", action="store_true",
                   help="skip the fresh-process start-up check")
    p.add_argument("--zarr", action="store_true",
                   help="also the zarr memory check (Lorenz-96 1024 x 4000, minutes)")
    p.add_argument("--zarr-dir", default=".",
                   help="folder for the zarr check's temporary store (default .)")
    args = p.parse_args(argv)
    n_traj = args.n_traj or (64 if args.quick else 1024)
    n_samples = args.n_samples or (1000 if args.quick else 10_000)
    n_scipy = args.n_scipy or (2 if args.quick else 8)

    import numba

    print(
        f"cores: {os.cpu_count()}, numba threads: {numba.config.NUMBA_NUM_THREADS}, load avg: "
        f"{os.getloadavg()}"
    )
    r = bench_rkf45_vs_scipy(n_traj, n_samples, n_scipy, args.tol)
    print(
        f"RKF45 {r['n_traj']} x {r['n_samples']} Lorenz'63 (dt 0.01, tol {args.tol:g}): "
        f"{r['ours_s']:.3f} s "
        f"({r['mean_steps']:.0f} steps/trajectory)\n"
        f"scipy RK45 same tolerances: {r['scipy_per_traj_s']:.3f} s/trajectory x {r['n_traj']} = "
        f"{r['scipy_scaled_s']:.1f} s (timed on {n_scipy})\n"
        f"speed ratio (wall clock): {r['ratio']:.0f}x (target "
        ">= 300x); by CPU time, ours spread over 2 cores: "
        f"{r['ratio_cpu_2cores']:.0f}x; max difference over the first 2 time units: "
        f"{r['agreement_first_2s']:.1e}\n"
        f"simulate {r['n_traj']} x {r['n_samples']} with starts drawn on the attractor: "
        f"{r['drawn_s']:.3f} s; "
        f"scipy per trajectory / ours per trajectory: {r['ratio_drawn']:.0f}x wall clock (target "
        f">= 300x), {r['ratio_drawn_cpu_2cores']:.0f}x by CPU time spread over 2 cores"
    )
    g = bench_drawn_vs_given(64 if args.quick else 256, 500 if args.quick else 2000)
    print(
        f"simulate {g['n_traj']} x {g['n_steps']} Lorenz'63: "
        f"given starts {g['given_s']:.3f} s, drawn starts "
        f"{g['drawn_s']:.3f} s (best of 3 each, interleaved): drawn / given = {g['ratio']:.2f} "
        f"(median of the 3 pairs {g['ratio_median']:.2f}; "
        f"by CPU time {g['ratio_cpu']:.2f}; target <= 1.5)"
    )
    q = bench_rk4_throughput(n_traj, n_samples)
    print(
        f"RK4 {q['n_traj']} x {q['n_samples']} (dt 0.01): {q['seconds']:.3f} s, "
        f"{q['member_steps_per_s']:.3g} member-steps/s wall clock (target >= 5e7 on 2 cores); "
        f"{q['member_steps_per_cpu_s']:.3g} per CPU-second, x2 = "
        f"{2 * q['member_steps_per_cpu_s']:.3g} on 2 free cores"
    )
    if args.zarr:
        z = bench_zarr_memory(256 if args.quick else 1024, 1000 if args.quick else 4000,
                              32 if args.quick else 128, args.zarr_dir)
        print(
            f"zarr: simulate('lorenz96', n_traj={z['n_traj']}, n_steps={z['n_steps']}, "
            f"chunks={z['chunks']}) "
            f"= {z['ensemble_gib']:.2f} GiB saved in {z['save_s']:.0f} s (starts drawn in "
            f"{z['draw_s']:.1f} s); "
            f"peak RSS {z['peak_gib']:.2f} GiB (target < 0.8), "
            f"{z['peak_gib'] / z['ensemble_gib']:.2f} of the "
            f"ensemble; {z['on_disk_gib']:.2f} GiB on disk; read back equal: "
            f"{z['last_chunk_equal']}"
        )
    if not args.no_startup:
        for i, row in enumerate(bench_startup(), 1):
            print(
                f"fresh process {i}: import {row['import_s']:.2f} s, first call "
                f"{row['first_call_s']:.2f} s, "
                f"kernel cache hits {row['cache_hits']}, misses {row['cache_misses']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
