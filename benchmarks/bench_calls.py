"""Plain module calls against direct calls (``dynfit.nn.direct_calls``): a training epoch and an
inference free run, for fit's default field and a TA-BN field, side by side in one run.

Training: ``fit`` for one epoch on 2 x 300 Lorenz'63 samples (the default field with its
default strategy; an MLP field with TA-BN, width 32, depth 2, with the "fehlberg" strategy,
whose steps share one time), timed as CPU time of the whole ``fit`` call (set-up and pre-fit
included). Inference: ``Surrogate.generate`` from B starts over ``--samples``
steps (eval mode, no gradients), CPU time. After one untimed round (warm-up: compilation,
caches), cases are interleaved over ``--repeats`` rounds and
the medians printed with the ratio direct / plain (below 1: direct calls are faster); each
case also checks that both paths give the same numbers to the bit.

    python benchmarks/bench_calls.py [--repeats 3] [--samples 200] [--batches 1 8]

``--per-call`` times single field calls instead (microseconds, CPU time, best of ``--repeats``
rounds of 200 calls at random times): TA-BN MLP fields in training (forward + backward) and
eval (no gradients). With code from before ``direct_calls`` existed on PYTHONPATH it times that
code's only path, so the cost of the split can be read against an older commit:

    git archive d544d72 | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python benchmarks/bench_calls.py --per-call
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import numpy as np
import torch

FIELDS = {
    "default": (None, "continuous"),
    "tabn": ({"kind": "mlp", "width": 32, "depth": 2, "activation": "silu", "norm": "tabn",
              "num_points": 11, "t_max": 1.0}, "fehlberg"),
}


def _path(direct: bool):
    from dynfit.nn import direct_calls

    return direct_calls() if direct else contextlib.nullcontext()


def train(train_data, name: str, direct: bool):
    """(CPU seconds of fit, surrogate, loss history) for one epoch."""
    from dynfit.train import fit

    field, strategy = FIELDS[name]
    t0 = time.process_time()
    with _path(direct):
        sur, hist = fit(train_data, field=field, strategy=strategy, optimizer="lbfgs", epochs=1,
                        seed=0, progress=False)
    cpu = time.process_time() - t0
    return cpu, sur, hist["loss"].values


def free_run(sur, x0: np.ndarray, n: int, direct: bool):
    """(CPU seconds, states) of one free run from x0 (B, D) over n steps."""
    t0 = time.process_time()
    with _path(direct):
        ys = sur.generate(x0, n)
    return time.process_time() - t0, np.asarray(ys)


CALLS = {  # name: (dim, width, depth, num_points, batch, training)
    "MLP 40-64x8 B=128 train": (40, 64, 8, 101, 128, True),
    "MLP 3-32x2 B=8 train": (3, 32, 2, 11, 8, True),
    "MLP 3-32x2 B=8 eval": (3, 32, 2, 11, 8, False),
    "MLP 40-64x8 B=1 eval": (40, 64, 8, 101, 1, False),
}


def per_call(repeats: int) -> dict:
    """Microseconds per TA-BN field call, {(case, path): best of repeats}."""
    from dynfit.nn import MLPField

    try:
        from dynfit.nn import direct_calls
    except ImportError:  # code from before the switch: one path
        direct_calls = None
    paths = {"only path": contextlib.nullcontext}
    if direct_calls is not None:
        paths = {"plain": contextlib.nullcontext, "direct": direct_calls}
    gen = torch.Generator().manual_seed(0)
    ts = [torch.rand((), generator=gen, dtype=torch.float64) for _ in range(200)]
    out = {}
    for name, (dim, width, depth, points, batch, training) in CALLS.items():
        torch.manual_seed(0)
        field = MLPField(dim, width=width, depth=depth, norm="tabn", num_points=points,
                         dtype=torch.float64).train(training)
        x = torch.randn(batch, dim, dtype=torch.float64)
        for _ in range(repeats + 1):  # interleaved; round 0 warms up
            for path, ctx in paths.items():
                t0 = time.process_time()
                with ctx():
                    for t in ts:
                        if training:
                            field.zero_grad(set_to_none=True)
                            field(t, x).pow(2).mean().backward()
                        else:
                            with torch.no_grad():
                                field(t, x)
                us = (time.process_time() - t0) / len(ts) * 1e6
                out.setdefault((name, path), []).append(us)
    best = {key: min(v[1:]) for key, v in out.items()}
    print(f"# TA-BN field calls, float64, 1 thread, CPU time, best of {repeats}; "
          f"load average {os.getloadavg()[0]:.2f}")
    for (name, path), us in best.items():
        print(f"{name:26s} {path:10s} {us:9.1f} us")
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--samples", type=int, default=200, help="steps per free run")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--per-call", action="store_true", help="time single TA-BN field calls")
    a = p.parse_args(argv)
    if a.per_call:
        torch.set_num_threads(1)
        return per_call(a.repeats)
    import systems

    torch.set_num_threads(1)
    data = systems.simulate("lorenz63", n_traj=2, n_steps=300, dt=0.01, seed=1, transient=5.0)
    starts = data["x"].values[:, ::37].reshape(-1, 3)
    starts = np.concatenate([starts] * (max(a.batches) // len(starts) + 1))
    times: dict = {}
    results: dict = {}
    load0 = os.getloadavg()[0]
    for r in range(a.repeats + 1):  # interleaved: load on the machine hits every case alike
        for name in FIELDS:
            for direct in (False, True):
                cpu, sur, loss = train(data, name, direct)
                times.setdefault((name, "fit 1 epoch", direct), []).append(cpu)
                results[name, "loss", direct] = loss
                for b in a.batches:
                    cpu, ys = free_run(sur, starts[:b], a.samples, direct)
                    times.setdefault((name, f"generate B={b}", direct), []).append(cpu)
                    results[name, f"generate B={b}", direct] = ys
    print(f"# torch {torch.__version__}, 1 thread; load average {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; medians of {a.repeats}; generate: {a.samples} steps")
    print(f"{'field':8s} {'measure':14s} {'plain s':>9s} {'direct s':>9s} {'direct/plain':>13s}")
    ratios = {}
    for name, what in dict.fromkeys((n, w) for n, w, _ in times):
        plain = statistics.median(times[name, what, False][1:])  # round 0: the warm-up
        fast = statistics.median(times[name, what, True][1:])
        ratios[name, what] = fast / plain
        print(f"{name:8s} {what:14s} {plain:9.3f} {fast:9.3f} {fast / plain:13.3f}")
    same = all(np.array_equal(results[k[:2] + (False,)], results[k[:2] + (True,)])
               for k in results if not k[2])
    print(f"# both paths give the same losses and free runs to the bit: {same}")
    return ratios


if __name__ == "__main__":
    main()
