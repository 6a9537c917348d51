"""``dynfit benchmark [CONFIG] --protocol ... --systems ... --methods ... --noise ... --seeds ...
--out DIR``.

CONFIG (optional) is a TOML file with one ``[benchmark]`` table whose keys are the
flags' names (``protocol``, ``systems``, ``methods``, ``noise``, ``seeds``, ``out``,
``budget``, ``cluster``, ``quick``; lists or comma-separated strings); flags win.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_benchmark_command"]

_KEYS = ("protocol", "systems", "methods", "noise", "seeds", "out", "budget", "cluster", "quick")


def add_benchmark_command(subparsers) -> None:
    p = subparsers.add_parser(
        "benchmark",
        help="forecasting benchmark against pysindy, reservoirpy and torchdiffeq over many flows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config", nargs="?", default=None, help="CONFIG.toml with a [benchmark] table (optional)"
    )
    p.add_argument("--protocol", default=None, help="gilpin or ensemble (default ensemble)")
    p.add_argument(
        "--systems",
        default=None,
        help="comma-separated flows (catalogue or dysts names; 'panel', 'catalogue' = all 112)",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated: dynfit, dynfit-mlp, pysindy, pysindy-tuned, esn, nvar, torchdiffeq",
    )
    p.add_argument(
        "--noise",
        default=None,
        help="comma-separated noise levels, fractions of each std (default 0)",
    )
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0)")
    p.add_argument("--out", default=None, help="output folder (default out/benchmark)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="CPU seconds of fitting per task (default 60, quick 10)",
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="local:N | tcp://HOST:PORT",
        help="run the tasks on dask.distributed (default: here, one after another)",
    )
    p.add_argument("--quick", action="store_true", default=None, help="tiny data and fits (CI)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_benchmark_cmd)


def _from_config(path) -> dict:
    from ..config import read_toml

    raw = read_toml(path)
    unknown = sorted(set(raw) - {"benchmark"})
    if unknown:
        raise ValueError(
            f"config {path}: unknown section(s) {unknown}; "
            "a benchmark config has one [benchmark] table"
        )
    table = raw.get("benchmark", {})
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ValueError(
            f"config {path}: unknown key(s) {unknown} in [benchmark]; known: {list(_KEYS)}"
        )
    return table


def _benchmark_cmd(args) -> int:
    from . import run

    cfg = _from_config(args.config) if args.config else {}
    for key in _KEYS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if not cfg.get("systems") or not cfg.get("methods"):
        raise ValueError(
            "dynfit benchmark needs --systems and --methods (or a CONFIG with them), e.g. "
            "--systems lorenz63,Chua --methods dynfit,pysindy-tuned,esn"
        )
    noise = [float(x) for x in _list(cfg.get("noise", "0"), "--noise")]
    seeds = [_int(x) for x in _list(cfg.get("seeds", "0"), "--seeds")]
    ds = run(
        _list(cfg["systems"], "--systems"),
        _list(cfg["methods"], "--methods"),
        protocol=cfg.get("protocol", "ensemble"),
        noise=noise,
        seeds=seeds,
        out=Path(cfg.get("out", "out/benchmark")),
        cluster=cfg.get("cluster"),
        quick=bool(cfg.get("quick")),
        budget=cfg.get("budget"),
        progress=not args.no_progress,
    )
    print((Path(cfg.get("out", "out/benchmark")) / "leaderboard.md").read_text())
    return 0 if ds.sizes["system"] else 2


def _list(value, flag: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    items = [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise ValueError(f"{flag} is empty; give comma-separated values")
    return items


def _int(text) -> int:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(
            f"--seeds: {text!r} is not a whole number; give seeds like 0,1,2"
        ) from None
    if value != int(value) or value < 0:
        raise ValueError(f"--seeds: {text!r} is not a whole number >= 0; give seeds like 0,1,2")
    return int(value)
