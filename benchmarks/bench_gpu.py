"""Check the CUDA path and time it against the CPU, side by side in one run.

Three checks, each printing OK or MISMATCH and the throughput on both devices:

1. ``odesolve`` forward + backward through an MLP field (rkf45 with per-example
   MixedNorm steps and dense output, PaperRule, and fixed RK4 steps): the CUDA
   outputs and parameter gradients match the CPU's within the solver tolerance.
2. TA-BN (``MLPField(norm="tabn")`` in training mode): CUDA matches the CPU, and
   the overhead against plain BatchNorm on the GPU.
3. ``dynfit.fit(data, epochs=3, device=...)`` on a small Lorenz'63 data set: a
   few epochs on each device, finite losses, wall time per epoch.

Exits 0 with a message when no CUDA device is present (nothing to check), 1 if
a check fails. Sizes are chosen to finish in well under 5 minutes on one GPU.

    python benchmarks/bench_gpu.py            # all checks
    python benchmarks/bench_gpu.py --quick    # smaller sizes
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from dynfit.solvers import MixedNorm, PaperRule, odesolve


class _Field(torch.nn.Module):
    """3-64-64-3 tanh MLP, time-invariant."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, 3))

    def forward(self, t, y):
        return 5.0 * self.net(y / 10.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int):
    """(median seconds, last result) of fn() over repeats runs after one warm-up."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def check_solver(batch: int, n_out: int, repeats: int, other: str = "cuda") -> bool:
    """odesolve forward+backward on CPU and CUDA: equal within tolerance; throughput."""
    torch.manual_seed(0)
    cpu_field = _Field().double()
    ok = True
    y0 = torch.randn(batch, 3, dtype=torch.float64) * 8.0
    t = torch.linspace(0.0, 0.5, n_out, dtype=torch.float64)
    cases = [("rkf45 MixedNorm(1e-6, 1e-8)", dict(control=MixedNorm(rtol=1e-6, atol=1e-8))),
             ("rkf23 PaperRule(eps=1e-3)", dict(method="rkf23", control=PaperRule(eps=1e-3))),
             ("rk4 step_size=0.01", dict(method="rk4", step_size=0.01))]
    print(f"## odesolve forward + backward, MLP 3-64-64-3, batch {batch}, {n_out} outputs, float64")
    print(
        f"{'case':30s} {'cpu ms':>9s} {other + ' ms':>9s} {'cpu/' + other:>8s} {'max |dy|':>9s} "
        f"{'max |dgrad|':>11s}"
    )
    for name, kw in cases:
        res = {}
        for dev in ("cpu", other):
            device = torch.device(dev)
            field = _Field().double().to(device)
            field.load_state_dict(cpu_field.state_dict())
            y = y0.to(device)

            def run():
                field.zero_grad(set_to_none=True)
                sol = odesolve(field, y, t.to(device), **kw)
                sol.ys.square().mean().backward()
                grads = torch.cat([p.grad.flatten() for p in field.parameters()])
                return sol.ys.detach().cpu(), grads.cpu(), sol.stats.n_steps.cpu()

            res[dev] = _timed(run, device, repeats)
        (tc, (yc, gc, nc)), (tg, (yg, gg, ng)) = res["cpu"], res[other]
        dy = (yc - yg).abs().max().item()
        dg = ((gc - gg).abs().max() / gc.abs().max().clamp_min(1e-300)).item()
        # adaptive decisions may flip at round-off, so compare at the solver's tolerance
        good = dy <= 1e-5 * max(1.0, yc.abs().max().item()) and dg <= 1e-4
        ok &= good
        print(
            f"{name:30s} {tc * 1e3:9.1f} {tg * 1e3:9.1f} {tc / tg:8.2f} {dy:9.1e} {dg:11.1e}  "
            f"{'OK' if good else 'MISMATCH'} (steps cpu {int(nc.sum())}, cuda {int(ng.sum())})"
        )
    return ok


def check_tabn(batch: int, repeats: int, other: str = "cuda") -> bool:
    """TA-BN field on CUDA matches the CPU; its overhead against BatchNorm on the GPU."""
    from dynfit.nn import MLPField

    print(f"## TA-BN, MLP 40-256x8-40 (train mode), batch {batch}, float64")
    torch.manual_seed(0)
    x = torch.randn(batch, 40, dtype=torch.float64)
    ok = True
    outs = {}
    for dev in ("cpu", other):
        torch.manual_seed(1)
        field = MLPField(40, width=256, depth=8, norm="tabn").double().to(dev).train()
        y = field(torch.tensor(0.437, dtype=torch.float64, device=dev), x.to(dev))
        y.square().mean().backward()
        outs[dev] = (  # the output, the first TA-BN layer's gradient and running mean
            y.detach().cpu(),
            field.norms[0].weight.grad.cpu(),
            field.norms[0].running_mean.cpu(),
        )
    for a, b, what in zip(outs["cpu"], outs[other], ("output", "table gradient", "running mean")):
        d = (a - b).abs().max().item()
        good = d <= 1e-9 * max(1.0, a.abs().max().item())
        ok &= good
        print(f"  {what:15s} max |cpu - cuda| {d:.1e}  {'OK' if good else 'MISMATCH'}")
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from bench_tabn import time_pair

    device = torch.device(other)
    for width in (64, 256):
        res = time_pair(lambda n, w=width: MLPField(40, width=w, depth=8, norm=n).double(),
                        torch.randn(batch, 40, dtype=torch.float64), repeats=repeats, inner=20,
                        device=device, clock=time.perf_counter)
        print(
            f"  width {width:3d}: TA-BN {res['tabn'] * 1e3:.3f} ms, BN {res['bn'] * 1e3:.3f} ms, "
            f"ratio {res['ratio']:.2f}"
        )
    return ok


def check_fit(epochs: int, n_steps: int, other: str = "cuda") -> bool:
    """A few epochs of dynfit.fit on each device: finite losses; seconds per epoch."""
    import systems
    import dynfit

    print(f"## dynfit.fit, Lorenz'63 (4 trajectories x {n_steps} samples), {epochs} epochs")
    data = systems.simulate("lorenz63", n_traj=4, n_steps=n_steps, dt=0.01, transient=5.0, seed=1)
    ok = True
    wall = {}
    for dev in ("cpu", other):
        start = time.perf_counter()
        try:
            result = dynfit.fit(data, epochs=epochs, device=dev, progress=False)
        except TypeError as exc:  # another signature: fall back to the smallest call
            print(
                f"  fit(data, epochs=..., device=..., progress=False) failed ({exc}); trying "
                "fit(data, device=...)"
            )
            result = dynfit.fit(data, device=dev)
        wall[dev] = time.perf_counter() - start
        history = result[1] if isinstance(result, tuple) else getattr(result, "history", None)
        losses = None if history is None else torch.as_tensor(history["loss"].values)
        good = losses is None or bool(torch.isfinite(losses).all())
        ok &= good
        shown = "n/a" if losses is None else f"{losses[-1].item():.4g}"
        print(
            f"  {dev:5s} {wall[dev]:7.1f} s ({wall[dev] / epochs:.2f} s/epoch), last loss {shown}  "
            f"{'OK' if good else 'NON-FINITE LOSS'}"
        )
    print(f"  cpu/{other} wall time: {wall['cpu'] / wall[other]:.2f}")
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes")
    p.add_argument(
        "--device",
        default="cuda",
        help="the device checked against the CPU (default cuda; 'cpu' dry-runs this script)",
    )
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for the CPU side (default 1)")
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "bench_gpu: no CUDA device visible to torch (torch.cuda.is_available() is False); "
            "nothing to check. Run this on a machine with a GPU and a CUDA build of torch."
        )
        return 0
    torch.set_num_threads(a.threads)
    name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else a.device
    print(f"# {name}, torch {torch.__version__}, CPU side {a.threads} thread(s)")
    start = time.perf_counter()
    batch, n_out, repeats = (256, 16, 3) if a.quick else (2048, 64, 5)
    ok = check_solver(batch, n_out, repeats, a.device)
    ok &= check_tabn(256 if a.quick else 1024, repeats, a.device)
    ok &= check_fit(3, 300 if a.quick else 500, a.device)
    print(
        f"# {'all checks OK' if ok else 'SOME CHECKS FAILED'} "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
