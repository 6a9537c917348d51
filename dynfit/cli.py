"""Command line: ``dynfit demo | train | evaluate | compare | plot`` (also ``python -m dynfit``).

- ``dynfit demo --out DIR``: simulate Lorenz'63 (``dynfit._demo``: netCDF,
  attractor figure, Lyapunov spectrum), train a surrogate with fit's defaults
  (polynomial + MLP field, derivative pre-fit, adaptive rkf45 rollouts;
  ``--strategy fehlberg`` for the paper's), free-run it from 50 held-out
  starts over 25 Lyapunov times and write the model, ``diagnostics.nc``
  (valid prediction time per start) and PNG figures.
- ``dynfit train CONFIG.toml [--epochs N]``: train as a TOML file says (see
  dynfit.config); then evaluate the model on the held-out part of the data
  (kept as ``held_out.nc``) and draw the training and diagnostics figures.
- ``dynfit evaluate MODEL.pt DATA --out DIR [--dt DT]``: diagnostics.nc and
  figures, for DATA a .npy, .csv, .nc or .zarr file of any trajectories
  (``--dt``: their step when the file holds none).
- ``dynfit compare [CONFIG.toml] --out DIR [flags]``: dynfit.compare; flags
  override the config (sections below).
- ``dynfit plot FILE.nc --out DIR``: the figures of a diagnostics, history or
  compare Dataset, recognised from its attributes and variables.

Every expected failure (bad input, a missing, damaged or unsafe file, a full
or read-only disk, an output folder in use by another run, Ctrl-C) ends with
one line on stderr and exit code 2; a traceback is printed only for a bug in
dynfit (exit code 1). Every file is written atomically and output folders are
locked while a command writes into them (see ``systems.files``).

A compare config (TOML; every section and key optional)::

    [data]      system, n_traj, n_steps, dt, seed, transient, path   (training data)
    [test]      n_traj, n_steps, seed, transient, path               (held-out data)
    [field]     kind, width, depth, activation
    [train]     epochs, seeds, optimizer, lbfgs_iterations, lr, batch_size
    [evaluate]  n_starts, horizon_lt, thresholds, long_steps, lyapunov_steps, lyapunov_starts,
                seed
    [[strategy]] label, name, and the strategy's options (method, step_size, eps, ...)
    [output]    dir
"""
from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from .config import COMPARE_DEFAULTS, EVALUATE_DEFAULTS, merge_tables, read_toml
# [LABEL=]NAME[:KEY=VALUE,...] -> the dict parse_spec checks (the parser lives in dynfit.strategies)
from .strategies import parse_spec_text as parse_strategy_flag

VPT_THRESHOLD = 0.4
DEMO_EPOCHS = 3  # the continuous schedule's first epochs; see docs/training.md for longer runs


def demo(out: Path, *, quick: bool = False, epochs: int | None = None, strategy: str = "continuous",
         max_horizon: int | None = None, progress: bool = True) -> dict:
    """The demo; returns a small dict of results (paths and VPT summary). Locks ``out`` while it
    writes."""
    out = Path(out)
    with _locked(out):
        return _demo(out, quick=quick, epochs=epochs, strategy=strategy, max_horizon=max_horizon,
                     progress=progress)


def _demo(out: Path, *, quick: bool, epochs: int | None, strategy: str, max_horizon: int | None,
          progress: bool) -> dict:
    import torch

    import systems
    from dynfit.diagnostics import evaluate
    from dynfit.train import fit

    from .io import write_netcdf
    from .plot import plot_diagnostics, plot_training

    torch.set_num_threads(1)  # one thread: the same numbers as examples/lorenz_strategies.py
    n_train, n_steps = (2, 300) if quick else (8, 1500)
    n_test, horizon = (4, 200) if quick else (50, 2800)  # 2800 samples = 25 Lyapunov times
    epochs = epochs if epochs is not None else (1 if quick else DEMO_EPOCHS)
    t0 = time.perf_counter()
    # the systems side: trajectories as netCDF, the attractor, the true Lyapunov spectrum
    if not quick:
        from ._demo import demo_data

        demo_data(out)
    train = systems.simulate(
        "lorenz63", n_traj=n_train, n_steps=n_steps, dt=0.01, seed=1, transient=5.0
    )
    # the truth must outlast the forecasts: DOP853 at 1e-13 (the data's rkf45 at 1e-9 parts from it
    # after ~20 LT)
    test = systems.simulate(
        "lorenz63",
        n_traj=n_test,
        n_steps=horizon,
        dt=0.01,
        seed=2,
        transient=5.0,
        method="dop853",
        rtol=1e-13,
        atol=1e-13,
    )
    print(
        f"simulated {n_train} training and {n_test} held-out trajectories of Lorenz'63", flush=True
    )
    # fit's defaults: the polynomial + MLP field, pre-fit, adaptive rollouts
    if strategy == "continuous":
        field, options = None, ({"max_horizon": max_horizon} if max_horizon else None)
    else:  # the paper's strategies train an MLP field
        field = {"kind": "mlp", "width": 32 if quick else 64, "depth": 2, "activation": "silu"}
        options = {"max_horizon": max_horizon or 128} if strategy == "curriculum" else None
    sur, hist = fit(
        train,
        field=field,
        strategy=strategy,
        strategy_options=options,
        optimizer="lbfgs",
        epochs=epochs,
        seed=0,
        checkpoint_dir=out / "checkpoints",
        progress=progress,
    )
    sur.save(out / "model.pt")
    write_netcdf(hist, out / "history.nc")

    # the demo's files are those of `dynfit evaluate` (and `dynfit plot` redraws them)
    diag = evaluate(
        sur,
        test,
        n_starts=n_test,
        horizon_lt=1.5 if quick else 25.0,
        thresholds=(0.3, 0.4, 0.5),
        long_steps=1000 if quick else 20_000,
        lyapunov_steps=100 if quick else 2000,
        reference_solvers=(("DOP853", 1e-12),),
        seed=0,
    )
    diag.attrs.update(
        {
            "demo_truth": "systems.simulate dop853 rtol=atol=1e-13",
            "strategy": sur.strategy["name"],
            "epochs": int(hist.sizes["epoch"]),
            "training_n_f_evals": int(hist.n_f_evals.sum()),
            "stop_reason": str(hist.attrs.get("stop_reason", "")),
            "wall_time_s": time.perf_counter() - t0,
        }
    )
    write_netcdf(diag, out / "diagnostics.nc")
    figures = [out / "training.png"]
    plot_training(hist, figures[0], show=False)
    figures += list(plot_diagnostics(diag, out).values())
    vpt = diag["vpt"].sel(threshold=VPT_THRESHOLD).values
    result = {"model": out / "model.pt", "diagnostics": out / "diagnostics.nc", "figures": figures,
              "vpt_mean": float(vpt.mean()), "vpt_median": float(np.median(vpt)),
              "wall_time_s": time.perf_counter() - t0}
    n_capped = int(diag["vpt_capped"].sel(threshold=VPT_THRESHOLD).sum())
    capped = f"; {n_capped} reached the horizon (capped: lower bounds)" if n_capped else ""
    print(
        f"valid prediction time (threshold {VPT_THRESHOLD}) over {n_test} held-out starts: mean "
        f"{result['vpt_mean']:.2f}, median {_vpt_text(diag)}, range "
        f"{vpt.min():.2f}-{vpt.max():.2f} "
        f"Lyapunov times{capped}; {result['wall_time_s']:.0f} s; results in {out}"
    )
    return result


def _demo_cmd(args: argparse.Namespace) -> int:
    demo(Path(args.out), quick=args.quick, epochs=args.epochs, strategy=args.strategy,
         max_horizon=args.max_horizon, progress=not args.no_progress)
    return 0


def _train_cmd(args: argparse.Namespace) -> int:  # train_from_config locks the output folder
    from _dyncore import checks

    from dynfit.config import load_config
    from dynfit.train import train_from_config

    cfg = load_config(args.config)
    if args.epochs is not None:
        cfg["train"]["epochs"] = checks.integer("--epochs", args.epochs, minimum=1)
    from dynfit.distributed import context

    sur, hist, held = train_from_config(cfg, out=args.out, progress=not args.no_progress)
    out = Path(args.out or cfg["output"]["dir"])
    ddp = context()
    if ddp is not None and not ddp.is_main:  # torchrun: rank 0 wrote the files and reports
        return 0
    if hist.sizes["epoch"]:
        trained = (f"trained {sur!r} for {hist.sizes['epoch']} epochs; final loss "
                   f"{float(hist.loss[-1]):.4g}, accepted fraction "
                   f"{float(hist.accepted_fraction[-1]):.3f}")
    else:  # the pre-fit's field at its floor: no epoch ran, and the history says why
        trained = f"fitted {sur!r} with no epoch ({hist.attrs.get('stop_reason', '')})"
    print(f"{trained}; wrote {out / 'model.pt'} and {out / 'history.nc'}", flush=True)
    if args.no_evaluate:
        return 0
    with _locked(out):
        ds, n_fig = _evaluate_held_out(sur, hist, held, out)
    print(
        f"held-out part ({ds.attrs['n_starts']} starts): median VPT {_vpt_text(ds)} Lyapunov times "
        f"({_lyapunov_text(ds)}); wrote {out / 'held_out.nc'}, {out / 'diagnostics.nc'} and "
        f"{n_fig} figures"
    )
    return 0


def _evaluate_held_out(sur, hist, held, out: Path):
    """Evaluate ``sur`` on the held-out data of ``dynfit train``; writes held_out.nc, diagnostics.nc
    and the figures (training.png and those of dynfit evaluate). Returns (diagnostics, number of
    figures).

    Settings sized for a quick check after training: a horizon of at most half the held-out length
    (15 Lyapunov times at most), up to 20 starts, a 5000-sample long run, 500 Lyapunov steps.
    """
    import xarray as xr

    from .data import as_trajectories
    from .diagnostics import evaluate
    from .io import write_netcdf
    from .plot import plot_diagnostics, plot_training

    x, dt, attrs = as_trajectories(
        held, dt=None if isinstance(held, (xr.Dataset, xr.DataArray)) else sur.dt
    )
    n_traj, n_time, _ = x.shape
    if isinstance(held, xr.Dataset):
        held_ds = held
    else:
        held_ds = xr.Dataset(
            {"x": (("trajectory", "time", "component"), x)},
            coords={"time": ("time", np.arange(n_time) * dt, {"units": "1"})},
            attrs={"dt": dt, "created_by": "dynfit train (the held-out part of [data] path)"},
        )
    write_netcdf(held_ds, out / "held_out.nc")
    opts = dict(EVALUATE_DEFAULTS, long_steps=5000, lyapunov_steps=500)
    lt = attrs.get("lyapunov_time")
    if lt:  # known: a horizon that leaves room for many starts
        opts["horizon_lt"] = min(opts["horizon_lt"], 0.5 * (n_time - 1) * dt / float(lt))
        n_h = int(round(opts["horizon_lt"] * float(lt) / dt)) + 1
        opts["n_starts"] = min(opts["n_starts"], n_traj * (n_time - n_h + 1))
    else:  # estimated: the free runs may reach the data's end, one start per trajectory then
        opts["n_starts"] = min(opts["n_starts"], n_traj)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a capped horizon is flagged in vpt_capped
        ds = evaluate(sur, held_ds, **opts)
    write_netcdf(ds, out / "diagnostics.nc")
    plot_training(hist, out / "training.png", show=False)
    return ds, 1 + len(plot_diagnostics(ds, out))


def _vpt_text(ds) -> str:
    """The median VPT at 0.4 as text, capped ones marked (see diagnostics.describe_vpt)."""
    from .diagnostics import describe_vpt

    return describe_vpt(ds, VPT_THRESHOLD)


def _lyapunov_text(ds) -> str:
    return (f"1 Lyapunov time = {float(ds.attrs['lyapunov_time']):.4g} time units, "
            f"{ds.attrs.get('lyapunov_time_source', 'system')}")



# ------------------------------------------------------------------ evaluate, compare, plot
# the compare config's defaults (COMPARE_DEFAULTS) and evaluate's (EVALUATE_DEFAULTS) live in
# dynfit.config


# ------------------------------------------------------------------ evaluate
def _evaluate_cmd(args) -> int:
    from .diagnostics import evaluate, summarize
    from .io import write_netcdf
    from .plot import plot_diagnostics
    from .surrogate import Surrogate

    from .io import read_trajectories
    from .diagnostics import describe_vpt

    thresholds = _floats(args.thresholds, "--thresholds")
    lyapunov_time = args.lyapunov_time
    if lyapunov_time not in (None, "data", "surrogate"):
        lyapunov_time = (
            _floats(lyapunov_time, "--lyapunov-time")[0] if lyapunov_time.strip() else None
        )
    sur = _load_model(args.model, Surrogate)
    data = read_trajectories(args.data, what="DATA")
    out = Path(args.out)
    with _locked(out):
        ds = evaluate(sur, data, dt=args.dt, lyapunov_time=lyapunov_time, n_starts=args.starts,
                      horizon_lt=args.horizon_lt, thresholds=thresholds, long_steps=args.long_steps,
                      lyapunov_steps=args.lyapunov_steps, seed=args.seed)
        write_netcdf(ds, out / "diagnostics.nc")
        figures = {} if args.no_figures else plot_diagnostics(ds, out)
    s = summarize(ds)
    vpt = ", ".join(f"{h:g}: {describe_vpt(ds, h)}" for h in ds["threshold"].values)
    print(
        f"{sur!r} on {args.data}: median VPT [Lyapunov times] by threshold {vpt} "
        f"({_lyapunov_text(ds)}); largest exponent {s['lyapunov_max_surrogate']:.3f} (truth "
        f"{s['lyapunov_max_truth']:.3f}); density divergence {s['density_divergence']:.3g} nats; "
        f"wrote {out / 'diagnostics.nc'} and {len(figures)} figures"
    )
    return 0


def _load_model(path, cls):
    """``cls.load(path)``; Surrogate.load reads with weights_only=True and raises ModelFileError."""
    return cls.load(Path(path))


def _load_systems_file(path):
    ds = _open_netcdf(path)
    if (
        "x" not in ds
        or ds["x"].dims != ("trajectory", "time", "component")
        or not ds.attrs.get("system")
    ):
        raise ValueError(
            f"{path} is not a systems trajectory file (needs variable x(trajectory, time, "
            "component) and attrs['system']); write one with "
            "systems.save(systems.simulate(...), path)"
        )
    return ds


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"{flag} must be comma-separated numbers such as 0.3,0.4,0.5, got {text!r}"
        ) from None


# ------------------------------------------------------------------ compare
def validate_compare_config(raw: dict) -> dict:
    """Defaults filled in; unknown sections and keys raise ValueError naming close matches."""
    from .config import COMPARE_SCHEMA, RENAMED_EVALUATE, check_types, renamed_options

    raw = dict(raw)
    if isinstance(raw.get("evaluate"), dict):  # [evaluate] horizon: the old name of horizon_lt
        raw["evaluate"] = renamed_options(raw["evaluate"], RENAMED_EVALUATE, "[evaluate]")
    cfg = check_types(merge_tables(COMPARE_DEFAULTS, raw, skip=("strategy",)), COMPARE_SCHEMA)
    if "strategy" in raw:
        values = raw["strategy"]
        if isinstance(values, dict):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
            raise ValueError(
                "[[strategy]] must be an array of tables, each with a name (and a label)"
            )
        cfg["strategy"] = [dict(v) for v in values]
    from .strategies import parse_spec

    for entry in cfg["strategy"]:
        parse_spec(entry)  # fail early on an unknown strategy or option
    return cfg


def load_compare_config(path) -> dict:
    """Read and validate a compare TOML file."""
    return validate_compare_config(read_toml(path))


def _compare_cmd(args) -> int:
    import systems
    from .compare import compare

    cfg = load_compare_config(args.config) if args.config else copy.deepcopy(COMPARE_DEFAULTS)
    overrides = {
        ("data", "system"): args.system,
        ("data", "n_traj"): args.train_traj,
        ("data", "n_steps"): args.train_steps,
        ("data", "path"): args.train_data,
        ("test", "path"): args.test_data,
        ("field", "width"): args.width,
        ("train", "epochs"): args.epochs,
        ("train", "optimizer"): args.optimizer,
        ("train", "lbfgs_iterations"): args.lbfgs_iterations,
        ("evaluate", "n_starts"): args.starts,
        ("evaluate", "horizon_lt"): args.horizon_lt,
        ("evaluate", "long_steps"): args.long_steps,
        ("evaluate", "lyapunov_steps"): args.lyapunov_steps,
        ("output", "dir"): args.out,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            cfg[section][key] = value
    if args.seeds is not None:
        cfg["train"]["seeds"] = [int(s) for s in _floats(args.seeds, "--seeds")]
    if args.thresholds is not None:
        cfg["evaluate"]["thresholds"] = _floats(args.thresholds, "--thresholds")
    if args.strategy:
        cfg["strategy"] = [parse_strategy_flag(s) for s in args.strategy]
    cfg = validate_compare_config(cfg)

    d, te, tr = cfg["data"], cfg["test"], cfg["train"]
    if d["path"]:
        train = _load_systems_file(d["path"])
    else:
        train = systems.simulate(d["system"], n_traj=d["n_traj"], n_steps=d["n_steps"], dt=d["dt"],
                                 seed=d["seed"], transient=d["transient"], progress=False)
    if te["path"]:
        test = _load_systems_file(te["path"])
    else:
        test = systems.simulate(
            train.attrs["system"],
            n_traj=te["n_traj"],
            n_steps=te["n_steps"],
            dt=float(train["time"].values[1] - train["time"].values[0]),
            seed=te["seed"],
            transient=te["transient"],
            progress=False,
        )
    ev = dict(cfg["evaluate"])
    ev["thresholds"] = tuple(ev["thresholds"])
    fit_kwargs = {
        k: tr[k] for k in ("optimizer", "lbfgs_iterations", "lr", "batch_size") if tr[k] is not None
    }
    command = args.command_line
    if command is None and Path(sys.argv[0]).name == "dynfit":
        command = "dynfit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = Path(cfg["output"]["dir"])
    with _locked(out):
        ds = compare(
            train,
            test_data=test,
            strategies=cfg["strategy"],
            seeds=tr["seeds"],
            epochs=int(tr["epochs"]),
            field=cfg["field"],
            evaluate=ev,
            out=out,
            command=command,
            progress=not args.no_progress,
            cluster=getattr(args, "cluster", None),
            **fit_kwargs,
        )
    print((out / "table.md").read_text())
    print(
        f"best: {ds.attrs['best_strategy']} (seed {ds.attrs['best_seed']}); wrote "
        f"{out / 'compare.nc'}, table.md, table.csv and figures"
    )
    return 0


# ------------------------------------------------------------------ plot
def _open_netcdf(path):
    from .io import read_netcdf

    return read_netcdf(
        path, hint="pass a file written by dynfit evaluate, dynfit compare or dynfit train"
    )


def kind_of(ds) -> str:
    """'diagnostics', 'compare', 'history', 'systems' or 'unknown' from a Dataset's attrs and
    variables."""
    from ._history import is_history
    from .diagnostics import FORMAT as DIAGNOSTICS
    from .tables import FORMAT as COMPARE

    fmt = ds.attrs.get("format")
    if fmt == DIAGNOSTICS:
        return "diagnostics"
    if fmt == COMPARE:
        return "compare"
    if is_history(ds):
        return "history"
    if "x" in ds and ds["x"].dims == ("trajectory", "time", "component"):
        return "systems"
    return "unknown"


def plot_file(path, out) -> dict:
    """Draw the figures that fit the dynfit Dataset in ``path``; returns {name: path}."""
    from . import plot
    from .compare import load_compare
    from .diagnostics import load_diagnostics

    path, out = Path(path), Path(out)
    ds = _open_netcdf(path)
    kind = kind_of(ds)
    if kind == "diagnostics":
        return plot.plot_diagnostics(load_diagnostics(path), out)
    if kind == "compare":
        best = path.with_name("best_diagnostics.nc")
        best_ds = load_diagnostics(best) if best.is_file() else None
        return plot.plot_compare(load_compare(path), out, best_diagnostics=best_ds)
    if kind == "history":
        paths = {"training": out / "training.png"}
        plot.plot_training(ds, paths["training"], show=False)
        if "n_f_evals" in ds:
            paths["error_vs_evaluations"] = out / "error_vs_evaluations.png"
            plot.plot_error_vs_evaluations(ds, paths["error_vs_evaluations"], show=False)
        return paths
    if kind == "systems":
        raise ValueError(
            f"{path} holds simulated trajectories (systems), not a dynfit result; evaluate a "
            f"model on it with: dynfit evaluate MODEL.pt {path} --out DIR"
        )
    raise ValueError(
        f"{path} is not a dynfit Dataset (attrs['format'] = {ds.attrs.get('format')!r}, variables "
        f"{sorted(ds.data_vars)[:8]}); dynfit plot reads diagnostics.nc (dynfit evaluate), "
        "compare.nc (dynfit compare) or history.nc (dynfit train)"
    )


def _plot_cmd(args) -> int:
    with _locked(Path(args.out)):
        paths = plot_file(args.file, args.out)
    print(
        f"wrote {len(paths)} figures to {args.out}: "
        f"{', '.join(Path(p).name for p in paths.values())}"
    )
    return 0


# ------------------------------------------------------------------ parser
def _add_file_commands(subparsers) -> None:
    """The subcommands on saved files: ``evaluate``, ``compare`` (its parser: ``cp`` below) and
    ``plot``."""
    ev = subparsers.add_parser(
        "evaluate", help="diagnostics of a saved surrogate on held-out trajectories"
    )
    ev.add_argument("model", help="MODEL.pt written by Surrogate.save (dynfit train / demo)")
    ev.add_argument(
        "data",
        help="held-out trajectories: .npy (N, T, D) or (T, D), .csv (a column per "
        "component, optional time column), .nc or .zarr (variable x)",
    )
    ev.add_argument("--out", default="out/evaluate", help="output folder (default out/evaluate)")
    ev.add_argument("--dt", type=float, default=None,
                    help="time between samples (needed for .npy and a .csv without a time column)")
    ev.add_argument(
        "--lyapunov-time",
        default=None,
        metavar="T | data | surrogate",
        help="the VPT's time unit (default: the system's, else estimated from the data)",
    )
    e = EVALUATE_DEFAULTS
    thresholds = ",".join(f"{h:g}" for h in e["thresholds"])
    ev.add_argument(
        "--starts",
        type=int,
        default=e["n_starts"],
        help=f"held-out starts (default {e['n_starts']})",
    )
    _horizon_flags(ev, e["horizon_lt"])
    ev.add_argument(
        "--thresholds", default=thresholds, help=f"VPT thresholds in (0, 1] (default {thresholds})"
    )
    ev.add_argument("--long-steps", type=int, default=e["long_steps"],
                    help=f"samples of the long runs (default {e['long_steps']})")
    ev.add_argument("--lyapunov-steps", type=int, default=e["lyapunov_steps"],
                    help=f"Lyapunov averaging steps (default {e['lyapunov_steps']}; 0: skip)")
    ev.add_argument(
        "--seed", type=int, default=e["seed"], help=f"seed of the starts (default {e['seed']})"
    )
    ev.add_argument("--no-figures", action="store_true", help="write diagnostics.nc only")
    ev.set_defaults(func=_evaluate_cmd)

    cp = subparsers.add_parser(
        "compare",
        help="train several strategies on the same data; table and figures",
        description="A compare config" + __doc__.split("A compare config")[1].rstrip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cp.add_argument(
        "config", nargs="?", default=None, help="CONFIG.toml (optional; flags override it)"
    )
    cp.add_argument(
        "--out", default=None, help="output folder (default [output] dir or out/compare)"
    )
    cp.add_argument("--strategy", action="append", default=None, metavar="[LABEL=]NAME[:K=V,...]",
                    help="a strategy, repeatable, e.g. fehlberg or "
                         "'black-box rk4=torchdiffeq:method=rk4,step_size=0.5'")
    cp.add_argument("--seeds", default=None, help="comma-separated training seeds")
    cp.add_argument("--epochs", type=int, default=None)
    cp.add_argument("--system", default=None, help="system to simulate (default lorenz63)")
    cp.add_argument("--train-traj", type=int, default=None, help="training trajectories")
    cp.add_argument("--train-steps", type=int, default=None, help="samples per training trajectory")
    cp.add_argument(
        "--train-data", default=None, help="training data netCDF (instead of simulating)"
    )
    cp.add_argument(
        "--test-data", default=None, help="held-out data netCDF (instead of simulating)"
    )
    cp.add_argument("--width", type=int, default=None, help="MLP width")
    cp.add_argument("--optimizer", default=None, help="lbfgs or adam")
    cp.add_argument("--lbfgs-iterations", type=int, default=None)
    cp.add_argument("--starts", type=int, default=None, help="held-out starts")
    _horizon_flags(cp, None)
    cp.add_argument("--thresholds", default=None, help="VPT thresholds, comma-separated")
    cp.add_argument("--long-steps", type=int, default=None, help="samples of the long runs")
    cp.add_argument("--lyapunov-steps", type=int, default=None, help="Lyapunov averaging steps")
    cp.add_argument("--no-progress", action="store_true", help="no progress bars")
    cp.add_argument(
        "--cluster",
        default=None,
        metavar="local:N | tcp://HOST:PORT",
        help="run each (strategy, seed) fit as a task on dask.distributed: a local cluster of "
        "N worker processes, or an existing scheduler (see docs/scaling.md)",
    )
    cp.set_defaults(func=_compare_cmd, command_line=None)

    pl = subparsers.add_parser(
        "plot", help="figures of a saved diagnostics, history or compare netCDF file"
    )
    pl.add_argument("file", help="diagnostics.nc, history.nc or compare.nc")
    pl.add_argument("--out", default="out/plot", help="output folder (default out/plot)")
    pl.set_defaults(func=_plot_cmd)


class _DeprecatedFlag(argparse.Action):
    """An old flag that still works: stores into the new flag's dest, says to use the new one."""

    def __call__(self, parser, namespace, values, option_string=None):
        import warnings

        new = "--" + self.dest.replace("_", "-")
        warnings.warn(f"{option_string} is deprecated, use {new}", DeprecationWarning, stacklevel=2)
        print(f"dynfit: {option_string} is deprecated, use {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _horizon_flags(parser, default) -> None:
    """--horizon-lt (rollouts in Lyapunov times) and its deprecated old spelling --horizon."""
    shown = "" if default is None else f" (default {default:g})"
    parser.add_argument("--horizon-lt", type=float, default=default, dest="horizon_lt",
                        help=f"rollout length in Lyapunov times{shown}")
    parser.add_argument("--horizon", type=float, dest="horizon_lt", action=_DeprecatedFlag,
                        help=argparse.SUPPRESS)


def _train_flags(train_p) -> None:
    """``dynfit train``'s flags beyond the config: --epochs, --no-evaluate."""
    train_p.add_argument(
        "--epochs", type=int, default=None, help="training epochs (overrides [train] epochs)"
    )
    train_p.add_argument("--no-evaluate", action="store_true",
                         help="skip the evaluation on the held-out part (and its figures)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="dynfit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"dynfit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_p = sub.add_parser(
        "demo", help="simulate Lorenz'63, train, generate; write model, netCDF and figures"
    )
    demo_p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo_p.add_argument("--quick", action="store_true", help="a tiny run for tests (seconds)")
    demo_p.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs (default {DEMO_EPOCHS}, quick 1)")
    demo_p.add_argument(
        "--strategy", default="continuous", help="training strategy (default continuous)"
    )
    demo_p.add_argument(
        "--max-horizon",
        type=int,
        default=None,
        help="longest training rollout (default: the strategy's own; curriculum 128)",
    )
    demo_p.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo_p.set_defaults(func=_demo_cmd)
    train_p = sub.add_parser("train", help="train a surrogate as a TOML config says")
    train_p.add_argument(
        "config", help="CONFIG.toml (sections data, field, strategy, train, output)"
    )
    train_p.add_argument("--out", default=None, help="output folder (default: [output] dir)")
    train_p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _train_flags(train_p)
    train_p.set_defaults(func=_train_cmd)
    _add_file_commands(sub)
    from .benchmark.cli import add_benchmark_command

    add_benchmark_command(sub)
    return parser


# ------------------------------------------------------------------ errors and the entry point
def _locked(folder):
    """The output folder's lock (a second run into it refuses with FolderLockedError)."""
    from systems.files import FolderLock

    return FolderLock(folder)


def _expected_errors() -> tuple:
    from systems.files import FolderLockedError
    from systems.integrate import IntegrationError

    from .solvers.solution import SolverError
    from .sweep import SweepError

    return (
        ValueError,
        TypeError,
        OSError,
        FolderLockedError,
        SolverError,
        IntegrationError,
        FloatingPointError,
        MemoryError,
        KeyboardInterrupt,
        SweepError,
    )


def _one_line(err: BaseException) -> str:
    """The message of an expected failure as one line."""
    if isinstance(err, KeyboardInterrupt):
        return (
            "interrupted; every file already written is complete (partial ones are removed) and a "
            "training run resumes from its last checkpoint when run again"
        )
    if isinstance(err, MemoryError):
        text = str(err) or "out of memory"
        return f"{text}; use smaller sizes (fewer trajectories, steps or starts)"
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) or (
            isinstance(err, FileNotFoundError) and err.filename):
        if err.strerror and err.filename:
            text = f"{err.strerror}: {err.filename}"
        elif err.strerror:
            text = err.strerror
        else:
            text = str(err)
        if err.errno is not None and text.startswith(f"[Errno {err.errno}] "):
            text = text[len(f"[Errno {err.errno}] "):]
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 expected failure, 1 bug)."""
    args = build_parser().parse_args(argv)
    try:
        # a diverging surrogate overflows by design (its VPT measures when): no floating-point
        # warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return args.func(args)
    except _expected_errors() as err:
        print(f"dynfit {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: show where, and ask for a report
        import traceback

        traceback.print_exc()
        print(
            f"dynfit {args.command}: internal error ({type(err).__name__}); this is a bug in "
            "dynfit: please "
            "report it with the command you ran and the traceback above",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
