"""Training configurations in TOML for ``dynfit train CONFIG.toml``.

Sections and keys (all optional except a data source)::

    [data]      system, n_traj, n_steps, dt, seed, transient, noise   (simulate with systems)
                path                                                   (or: a .nc or .npy file)
                horizon, stride, standardize, split_fraction
    [field]     kind ("mlp" | "residual"), width, depth, activation, time_dependent, dtype
    [strategy]  name, and the strategy's options (eps, safety, max_substeps, method, ...)
    [train]     optimizer, epochs, seed, lr, batch_size, lbfgs_iterations, lbfgs_tolerance, weight_decay, device
    [output]    dir

An unknown section or key raises ValueError naming it and its close matches.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "load_config", "validate", "run"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"system": "lorenz63", "path": None, "n_traj": 8, "n_steps": 1000, "dt": 0.01, "seed": 0,
             "transient": 0.0, "noise": 0.0, "horizon": 1, "stride": 1, "standardize": True,
             "split_fraction": 0.8},
    "field": {"kind": "mlp", "width": 64, "depth": 2, "activation": "silu", "time_dependent": False,
              "dtype": "float64"},
    "strategy": {"name": "fehlberg"},
    "train": {"optimizer": "lbfgs", "epochs": 30, "seed": 0, "lr": None, "batch_size": None,
              "lbfgs_iterations": 20, "lbfgs_tolerance": 1e-7, "weight_decay": 0.0, "device": None},
    "output": {"dir": "out/train"},
}
# strategy options are checked by the strategy itself
OPEN_SECTIONS = ("strategy",)


def _unknown(kind: str, name: str, known) -> ValueError:
    """A ValueError naming an unknown config name, its close matches and the known ones."""
    close = difflib.get_close_matches(str(name), list(known), n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (known: {sorted(known)})")


def merge_tables(defaults: dict, raw: dict, *, open_sections=(), skip=()) -> dict:
    """A deep copy of ``defaults`` with the tables of ``raw`` merged in.

    An unknown section, or an unknown key outside ``open_sections``, raises
    ValueError naming its close matches; sections in ``skip`` are left to the caller.
    """
    if not isinstance(raw, dict):
        raise TypeError(f"config must be a table (dict), got {type(raw).__name__}")
    cfg = copy.deepcopy(defaults)
    for section, values in raw.items():
        if section not in defaults:
            raise _unknown("config section", section, defaults)
        if section in skip:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"config section [{section}] must be a table, got {values!r}")
        for key, value in values.items():
            if section not in open_sections and key not in defaults[section]:
                raise _unknown(f"key in [{section}]", key, defaults[section])
            cfg[section][key] = value
    return cfg


def validate(raw: dict) -> dict:
    """Defaults filled in; unknown sections/keys raise ValueError with close matches."""
    cfg = merge_tables(DEFAULTS, raw, open_sections=OPEN_SECTIONS)
    if cfg["field"]["dtype"] not in ("float32", "float64"):
        raise ValueError(f"[field] dtype must be 'float32' or 'float64', got {cfg['field']['dtype']!r}")
    from . import strategies

    options = {k: v for k, v in cfg["strategy"].items() if k != "name"}
    strategies.get(cfg["strategy"]["name"], **options)  # fail early on a bad strategy option
    return cfg


def read_toml(path) -> dict:
    """The raw contents of a TOML file; clear errors for a missing or invalid file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path, "rb") as fh:
        try:
            return tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path} is not valid TOML: {err}") from None


def load_config(path) -> dict:
    """Read and validate a training TOML file."""
    return validate(read_toml(path))


def load_data(cfg: dict):
    """The trajectories a config names: a file or a systems simulation."""
    d = cfg["data"]
    if d["path"]:
        path = Path(d["path"])
        if not path.exists():
            raise FileNotFoundError(f"[data] path {path} does not exist")
        if path.suffix == ".npy":
            import numpy as np

            return np.load(path)
        import xarray as xr

        return xr.load_dataset(path)
    import systems

    return systems.simulate(d["system"], n_traj=d["n_traj"], n_steps=d["n_steps"], dt=d["dt"],
                            seed=d["seed"], transient=d["transient"], noise=d["noise"])


def run(cfg: dict, *, out=None, progress: bool = True):
    """Train as configured; writes model.pt, history.nc and checkpoints/ to the output folder."""
    import torch

    from .data import split
    from .train import fit

    out = Path(out or cfg["output"]["dir"])
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg)
    d = cfg["data"]
    try:
        train, held = split(data, by="trajectory", fraction=d["split_fraction"])
    except ValueError:
        train, held = data, None
    field = {k: v for k, v in cfg["field"].items() if k != "dtype"}
    t = cfg["train"]
    sur, hist = fit(train, field=field, strategy=cfg["strategy"]["name"],
                    strategy_options={k: v for k, v in cfg["strategy"].items() if k != "name"},
                    optimizer=t["optimizer"], epochs=t["epochs"], seed=t["seed"], device=t["device"],
                    dtype=getattr(torch, cfg["field"]["dtype"]), horizon=d["horizon"], stride=d["stride"],
                    standardize=d["standardize"], dt=None if d["path"] is None else d["dt"], lr=t["lr"],
                    batch_size=t["batch_size"], lbfgs_iterations=t["lbfgs_iterations"],
                    lbfgs_tolerance=t["lbfgs_tolerance"], weight_decay=t["weight_decay"], checkpoint_dir=out / "checkpoints", progress=progress)
    sur.save(out / "model.pt")
    hist.to_netcdf(out / "history.nc")
    return sur, hist, held
