"""Overhead of TA-BN against plain BatchNorm in the same vector field.

Times one forward + backward of a field call (train mode, statistics
updated) for ``norm="tabn"`` and ``norm="bn"``, interleaved so both see the
same machine load, and prints the median times and their ratio.

    python benchmarks/bench_tabn.py            # MLP and conv fields
    python benchmarks/bench_tabn.py --quick    # fewer repetitions

Times are CPU time of this process (``time.process_time``) by default, so that
other processes on a shared machine do not inflate one side; ``--clock wall``
uses wall time (on CUDA the wall clock is always used, with synchronisation).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from dynfit.nn import ConvField, MLPField


def _step(field, t, x):
    field.zero_grad(set_to_none=True)
    field(t, x).pow(2).mean().backward()


def time_pair(
    make, x, *, repeats: int, inner: int, device, clock=time.process_time, grid: bool = False
) -> dict:
    """Median seconds per forward+backward for TA-BN and BN fields built by ``make(norm)``.

    Times are uniform on [0, 1]; ``grid=True`` draws them from TA-BN's grid (the default
    101 points), as the stage times of a fixed-step solver aligned with the grid are.
    """
    fields = {norm: make(norm).to(device).train() for norm in ("tabn", "bn")}
    x = x.to(device)
    gen = torch.Generator().manual_seed(0)
    times = {norm: [] for norm in fields}
    for norm, field in fields.items():  # warm-up
        for _ in range(3):
            _step(field, torch.tensor(0.5, device=device), x)
    for _ in range(repeats):
        ts = torch.rand(inner, generator=gen)
        ts = (torch.round(ts * 100) / 100 if grid else ts).tolist()
        for norm, field in fields.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            for t in ts:
                _step(field, torch.tensor(t, device=device), x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[norm].append((clock() - start) / inner)
    med = {norm: statistics.median(v) for norm, v in times.items()}
    return {"tabn": med["tabn"], "bn": med["bn"], "ratio": med["tabn"] / med["bn"]}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (CI)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--clock",
        choices=("process", "wall"),
        default="process",
        help="CPU time of this process (default; robust to other load) or wall time",
    )
    parser.add_argument("--out", default=None, help="also write the table as markdown to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    clock = (
        time.perf_counter if (args.clock == "wall" or device.type == "cuda") else time.process_time
    )
    repeats, inner = (3, 5) if args.quick else (15, 20)

    def mlp(width, depth):
        return lambda n: MLPField(40, width=width, depth=depth, norm=n)

    cases = [
        ("MLP 40-64x8-40, batch 128", mlp(64, 8), torch.randn(128, 40)),
        ("MLP 40-64x8-40, batch 128, grid times", mlp(64, 8), torch.randn(128, 40)),
        ("MLP 40-256x8-40, batch 256", mlp(256, 8), torch.randn(256, 40)),
        ("MLP 40-64x18-40, batch 128", mlp(64, 18), torch.randn(128, 40)),
        ("Conv 16ch w32x4, 8x8, batch 64", lambda n: ConvField(16, width=32, depth=4, norm=n),
         torch.randn(64, 16, 8, 8)),
    ]
    rows = []
    header = (
        f"device {device}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
        f"{'wall' if clock is time.perf_counter else 'process CPU'} time; "
        f"median of {repeats} rounds of {inner} interleaved forward+backward calls (train mode)"
    )
    print(header)
    print(f"{'field':40s} {'TA-BN ms':>9s} {'BN ms':>9s} {'ratio':>6s}")
    for name, make, x in cases:
        res = time_pair(make, x, repeats=repeats, inner=inner, device=device, clock=clock,
                        grid=name.endswith("grid times"))
        res["field"] = name
        rows.append(res)
        print(f"{name:40s} {1e3 * res['tabn']:9.3f} {1e3 * res['bn']:9.3f} {res['ratio']:6.2f}")
    if args.out:
        lines = [
            "# TA-BN overhead against plain BatchNorm",
            "",
            "Made by `python benchmarks/bench_tabn.py --out " + args.out + "`; " + header + ".",
            "",
            "| field | TA-BN ms | BatchNorm ms | ratio |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['field']} | {1e3 * r['tabn']:.3f} | {1e3 * r['bn']:.3f} | {r['ratio']:.2f} |"
            for r in rows
        ]
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
