"""Command-line subcommands ``dynfit evaluate | compare | plot`` on saved files.

``add_commands(subparsers)`` adds them to the ``dynfit`` parser; each sets
``func`` to a function of the parsed arguments returning an exit code.

- ``dynfit evaluate MODEL.pt DATA.nc --out DIR``: diagnostics.nc and figures.
- ``dynfit compare [CONFIG.toml] --out DIR [flags]``: dynfit.compare; flags
  override the config (sections below).
- ``dynfit plot FILE.nc --out DIR``: the figures of a diagnostics, history or
  compare Dataset, recognised from its attributes and variables.

A compare config (TOML; every section and key optional)::

    [data]      system, n_traj, n_steps, dt, seed, transient, path   (training data)
    [test]      n_traj, n_steps, seed, transient, path               (held-out data)
    [field]     kind, width, depth, activation
    [train]     epochs, seeds, optimizer, lbfgs_iterations, lr, batch_size
    [evaluate]  n_starts, horizon, thresholds, long_steps, lyapunov_steps, lyapunov_starts, seed
    [[strategy]] label, name, and the strategy's options (method, step_size, eps, ...)
    [output]    dir
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
from pathlib import Path

from .config import merge_tables, read_toml

__all__ = ["add_commands", "COMPARE_DEFAULTS", "load_compare_config", "parse_strategy_flag", "plot_file"]

COMPARE_DEFAULTS = {
    "data": {"system": "lorenz63", "n_traj": 4, "n_steps": 1000, "dt": 0.01, "seed": 1, "transient": 5.0,
             "path": None},
    "test": {"n_traj": 4, "n_steps": 1500, "seed": 2, "transient": 5.0, "path": None},
    "field": {"kind": "mlp", "width": 64, "depth": 2, "activation": "silu"},
    "train": {"epochs": 30, "seeds": [0], "optimizer": "lbfgs", "lbfgs_iterations": 20, "lr": None,
              "batch_size": None},
    "evaluate": {"n_starts": 20, "horizon": 10.0, "thresholds": [0.3, 0.4, 0.5], "long_steps": 10000,
                 "lyapunov_steps": 1000, "lyapunov_starts": 2, "seed": 0},
    "strategy": [{"name": "black-box"}, {"name": "fehlberg"}],
    "output": {"dir": "out/compare"},
}


# ------------------------------------------------------------------ evaluate
def _evaluate_cmd(args) -> int:
    from .diagnostics import evaluate, summarize
    from .plot import plot_diagnostics
    from .surrogate import Surrogate

    thresholds = _floats(args.thresholds, "--thresholds")
    sur = _load_model(args.model, Surrogate)
    data = _load_systems_file(args.data)
    out = Path(args.out)
    ds = evaluate(sur, data, n_starts=args.starts, horizon=args.horizon, thresholds=thresholds,
                  long_steps=args.long_steps, lyapunov_steps=args.lyapunov_steps, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out / "diagnostics.nc")
    figures = {} if args.no_figures else plot_diagnostics(ds, out)
    s = summarize(ds)
    vpt = ", ".join(f"{h:g}: {s[f'vpt_median_{h:g}']:.2f}" for h in ds["threshold"].values)
    print(f"{sur!r} on {args.data}: median VPT [Lyapunov times] by threshold {vpt}; largest exponent "
          f"{s['lyapunov_max_surrogate']:.3f} (truth {s['lyapunov_max_truth']:.3f}); density divergence "
          f"{s['density_divergence']:.3g} nats; wrote {out / 'diagnostics.nc'} and {len(figures)} figures")
    return 0


def _load_model(path, cls):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        return cls.load(path)
    except (ValueError, TypeError, FileNotFoundError):
        raise
    except Exception as err:
        raise ValueError(f"{path} is not a dynfit model ({type(err).__name__}: {str(err)[:200]}); pass a "
                         "MODEL.pt written by Surrogate.save, dynfit train or dynfit demo") from None


def _load_systems_file(path):
    ds = _open_netcdf(path)
    if "x" not in ds or ds["x"].dims != ("trajectory", "time", "component") or not ds.attrs.get("system"):
        raise ValueError(f"{path} is not a systems trajectory file (needs variable x(trajectory, time, component) "
                         "and attrs['system']); write one with systems.save(systems.simulate(...), path)")
    return ds


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers such as 0.3,0.4,0.5, got {text!r}") from None


# ------------------------------------------------------------------ compare
def validate_compare_config(raw: dict) -> dict:
    """Defaults filled in; unknown sections and keys raise ValueError naming close matches."""
    cfg = merge_tables(COMPARE_DEFAULTS, raw, skip=("strategy",))
    if "strategy" in raw:
        values = raw["strategy"]
        if isinstance(values, dict):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
            raise ValueError("[[strategy]] must be an array of tables, each with a name (and a label)")
        cfg["strategy"] = [dict(v) for v in values]
    from .compare import parse_strategy

    for entry in cfg["strategy"]:
        parse_strategy(entry)  # fail early on an unknown strategy or option
    return cfg


def load_compare_config(path) -> dict:
    """Read and validate a compare TOML file."""
    return validate_compare_config(read_toml(path))


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_strategy_flag(text: str) -> dict:
    """``[LABEL=]NAME[:KEY=VALUE,KEY=VALUE]`` -> {"label", "name", **options}.

    Example: ``"black-box rk4=torchdiffeq:method=rk4,step_size=0.5"``.
    """
    head, _, opts = str(text).partition(":")
    label, _, name = head.rpartition("=")
    name = name.strip()
    entry = {"label": label.strip() or name, "name": name}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"strategy option {item!r} in {text!r} must read KEY=VALUE, e.g. "
                             "'black-box rk4=torchdiffeq:method=rk4,step_size=0.5'")
        entry[key.strip()] = _value(val.strip())
    return entry


def _compare_cmd(args) -> int:
    import systems
    from .compare import compare

    cfg = load_compare_config(args.config) if args.config else copy.deepcopy(COMPARE_DEFAULTS)
    overrides = {("data", "system"): args.system, ("data", "n_traj"): args.train_traj,
                 ("data", "n_steps"): args.train_steps, ("data", "path"): args.train_data,
                 ("test", "path"): args.test_data, ("field", "width"): args.width,
                 ("train", "epochs"): args.epochs, ("train", "optimizer"): args.optimizer,
                 ("train", "lbfgs_iterations"): args.lbfgs_iterations,
                 ("evaluate", "n_starts"): args.starts, ("evaluate", "horizon"): args.horizon,
                 ("evaluate", "long_steps"): args.long_steps, ("evaluate", "lyapunov_steps"): args.lyapunov_steps,
                 ("output", "dir"): args.out}
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
        test = systems.simulate(train.attrs["system"], n_traj=te["n_traj"], n_steps=te["n_steps"],
                                dt=float(train["time"].values[1] - train["time"].values[0]), seed=te["seed"],
                                transient=te["transient"], progress=False)
    ev = dict(cfg["evaluate"])
    ev["thresholds"] = tuple(ev["thresholds"])
    fit_kwargs = {k: tr[k] for k in ("optimizer", "lbfgs_iterations", "lr", "batch_size") if tr[k] is not None}
    command = args.command_line
    if command is None and Path(sys.argv[0]).name == "dynfit":
        command = "dynfit " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    ds = compare(train, test_data=test, strategies=cfg["strategy"], seeds=tr["seeds"], epochs=int(tr["epochs"]),
                 field=cfg["field"], evaluate=ev, out=cfg["output"]["dir"], command=command,
                 progress=not args.no_progress, **fit_kwargs)
    out = Path(cfg["output"]["dir"])
    print((out / "table.md").read_text())
    print(f"best: {ds.attrs['best_strategy']} (seed {ds.attrs['best_seed']}); wrote {out / 'compare.nc'}, "
          f"table.md, table.csv and figures")
    return 0


# ------------------------------------------------------------------ plot
def _open_netcdf(path):
    from .diagnostics._checks import read_netcdf

    return read_netcdf(path, hint="pass a file written by dynfit evaluate, dynfit compare or dynfit train")


def kind_of(ds) -> str:
    """'diagnostics', 'compare', 'history', 'systems' or 'unknown' from a Dataset's attrs and variables."""
    from .compare import FORMAT as COMPARE
    from .diagnostics import FORMAT as DIAGNOSTICS

    fmt = ds.attrs.get("format")
    if fmt == DIAGNOSTICS:
        return "diagnostics"
    if fmt == COMPARE:
        return "compare"
    if "epoch" in ds.dims and all(v in ds for v in ("loss", "accepted_fraction", "mean_substeps")):
        return "history"
    if "x" in ds and ds["x"].dims == ("trajectory", "time", "component"):
        return "systems"
    return "unknown"


def plot_file(path, out) -> dict:
    """Draw the figures that fit the dynfit Dataset in ``path``; returns {name: path}."""
    from . import plot
    from .compare import load_compare, plot_compare
    from .diagnostics import load_diagnostics

    path, out = Path(path), Path(out)
    ds = _open_netcdf(path)
    kind = kind_of(ds)
    if kind == "diagnostics":
        return plot.plot_diagnostics(load_diagnostics(path), out)
    if kind == "compare":
        best = path.with_name("best_diagnostics.nc")
        best_ds = load_diagnostics(best) if best.is_file() else None
        return plot_compare(load_compare(path), out, best_diagnostics=best_ds)
    if kind == "history":
        paths = {"training": out / "training.png"}
        plot.plot_training(ds, paths["training"], show=False)
        if "n_f_evals" in ds:
            paths["error_vs_evaluations"] = out / "error_vs_evaluations.png"
            plot.plot_error_vs_evaluations(ds, paths["error_vs_evaluations"], show=False)
        return paths
    if kind == "systems":
        raise ValueError(f"{path} holds simulated trajectories (systems), not a dynfit result; evaluate a "
                         f"model on it with: dynfit evaluate MODEL.pt {path} --out DIR")
    raise ValueError(f"{path} is not a dynfit Dataset (attrs['format'] = {ds.attrs.get('format')!r}, variables "
                     f"{sorted(ds.data_vars)[:8]}); dynfit plot reads diagnostics.nc (dynfit evaluate), "
                     "compare.nc (dynfit compare) or history.nc (dynfit train)")


def _plot_cmd(args) -> int:
    paths = plot_file(args.file, args.out)
    print(f"wrote {len(paths)} figures to {args.out}: {', '.join(Path(p).name for p in paths.values())}")
    return 0


# ------------------------------------------------------------------ parser
def add_commands(subparsers) -> None:
    """Add ``evaluate``, ``compare`` and ``plot`` to the ``dynfit`` subparsers."""
    ev = subparsers.add_parser("evaluate", help="diagnostics of a saved surrogate on a systems netCDF file")
    ev.add_argument("model", help="MODEL.pt written by Surrogate.save (dynfit train / demo)")
    ev.add_argument("data", help="held-out trajectories: a netCDF file from systems.save(systems.simulate(...))")
    ev.add_argument("--out", default="out/evaluate", help="output folder (default out/evaluate)")
    ev.add_argument("--starts", type=int, default=20, help="held-out starts (default 20)")
    ev.add_argument("--horizon", type=float, default=15.0, help="rollout length in Lyapunov times (default 15)")
    ev.add_argument("--thresholds", default="0.3,0.4,0.5", help="VPT thresholds in (0, 1] (default 0.3,0.4,0.5)")
    ev.add_argument("--long-steps", type=int, default=20000, help="samples of the long runs (default 20000)")
    ev.add_argument("--lyapunov-steps", type=int, default=2000, help="Lyapunov averaging steps (0: skip)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the starts (default 0)")
    ev.add_argument("--no-figures", action="store_true", help="write diagnostics.nc only")
    ev.set_defaults(func=_evaluate_cmd)

    cp = subparsers.add_parser("compare", help="train several strategies on the same data; table and figures",
                               description=__doc__.split("A compare config")[1].strip(),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("config", nargs="?", default=None, help="CONFIG.toml (optional; flags override it)")
    cp.add_argument("--out", default=None, help="output folder (default [output] dir or out/compare)")
    cp.add_argument("--strategy", action="append", default=None, metavar="[LABEL=]NAME[:K=V,...]",
                    help="a strategy, repeatable, e.g. fehlberg or "
                         "'black-box rk4=torchdiffeq:method=rk4,step_size=0.5'")
    cp.add_argument("--seeds", default=None, help="comma-separated training seeds")
    cp.add_argument("--epochs", type=int, default=None)
    cp.add_argument("--system", default=None, help="system to simulate (default lorenz63)")
    cp.add_argument("--train-traj", type=int, default=None, help="training trajectories")
    cp.add_argument("--train-steps", type=int, default=None, help="samples per training trajectory")
    cp.add_argument("--train-data", default=None, help="training data netCDF (instead of simulating)")
    cp.add_argument("--test-data", default=None, help="held-out data netCDF (instead of simulating)")
    cp.add_argument("--width", type=int, default=None, help="MLP width")
    cp.add_argument("--optimizer", default=None, help="lbfgs or adam")
    cp.add_argument("--lbfgs-iterations", type=int, default=None)
    cp.add_argument("--starts", type=int, default=None, help="held-out starts")
    cp.add_argument("--horizon", type=float, default=None, help="rollout length in Lyapunov times")
    cp.add_argument("--thresholds", default=None, help="VPT thresholds, comma-separated")
    cp.add_argument("--long-steps", type=int, default=None, help="samples of the long runs")
    cp.add_argument("--lyapunov-steps", type=int, default=None, help="Lyapunov averaging steps")
    cp.add_argument("--no-progress", action="store_true", help="no progress bars")
    cp.set_defaults(func=_compare_cmd, command_line=None)

    pl = subparsers.add_parser("plot", help="figures of a saved diagnostics, history or compare netCDF file")
    pl.add_argument("file", help="diagnostics.nc, history.nc or compare.nc")
    pl.add_argument("--out", default="out/plot", help="output folder (default out/plot)")
    pl.set_defaults(func=_plot_cmd)
