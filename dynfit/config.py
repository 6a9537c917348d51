"""Training configurations in TOML for ``dynfit train CONFIG.toml``.

Sections and keys (all optional except a data source)::

    [data]      system, n_traj, n_steps, dt, seed, transient, noise   (simulate with systems)
                path                                                   (or: a .nc or .npy file)
                horizon, stride, standardize, split_fraction
    [field]     kind ("poly" | "mlp" | "residual"), degree (poly), width, depth, activation, time_dependent, dtype
    [strategy]  name, and the strategy's options (eps, safety, max_substeps, method, ...)
    [train]     optimizer, epochs, seed, lr, batch_size, lbfgs_iterations, lbfgs_tolerance, weight_decay, device
    [output]    dir

Every key is checked before any work: an unknown section or key raises
ValueError naming its close matches; a value of the wrong type (``standardize =
"no"``, ``lr = "fast"``, ``epochs = 2.5``) or out of range (``split_fraction``
outside (0, 1), ``device`` other than cpu, cuda, cuda:N or auto) raises
ValueError naming the key, the value and what is expected.

``[data] dt``: the simulation step (default 0.01); for a ``.nc`` file its own
``dt`` attribute is used unless ``dt`` is given (a conflict is an error); a
``.npy`` file needs ``dt``. The held-out part (``split_fraction`` of the
trajectories for training, the rest held out) is cut along time when the data
hold a single trajectory.
"""
from __future__ import annotations

import copy
import difflib
import math
import numbers
import re
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "SCHEMA", "COMPARE_SCHEMA", "load_config", "validate", "run", "check_types",
           "check_fit_arguments"]

SIMULATION_DT = 0.01

DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"system": "lorenz63", "path": None, "n_traj": 8, "n_steps": 1000, "dt": None, "seed": 0,
             "transient": 0.0, "noise": 0.0, "horizon": 1, "stride": 1, "standardize": True,
             "split_fraction": 0.8},
    "field": {"kind": "poly", "width": 32, "depth": 2, "activation": "silu", "time_dependent": False,
              "dtype": "float64"},
    "strategy": {"name": "continuous"},
    "train": {"optimizer": "lbfgs", "epochs": 30, "seed": 0, "lr": None, "batch_size": None,
              "lbfgs_iterations": 20, "lbfgs_tolerance": 1e-7, "weight_decay": 0.0, "device": None},
    "output": {"dir": "out/train"},
}
# strategy options are checked by the strategy itself
OPEN_SECTIONS = ("strategy",)


# ------------------------------------------------------------------ typed checks
def _kind(value) -> str:
    return f"{value!r} (a {type(value).__name__})"


def is_int(minimum: int | None = None, optional: bool = False):
    """An integer (not a bool, not 2.5) >= minimum."""
    def check(value, name):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an integer{f' >= {minimum}' if minimum is not None else ''}, "
                             f"got {_kind(value)}; write it without quotes or decimals, e.g. {name.split()[-1]} = "
                             f"{max(minimum or 0, 1)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        return int(value)
    check.expects = "integer"
    return check


def is_float(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False, optional: bool = False):
    """A finite number (int or float, not a bool or string) in the given range."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    rng = " and ".join(x for x in (lo, hi) if x)

    def check(value, name):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number{' ' + rng if rng else ''}, got {_kind(value)}; "
                             "write a number without quotes, e.g. 0.01")
        v = float(value)
        if (low is not None and (v < low or (low_open and v == low))) or \
                (high is not None and (v > high or (high_open and v == high))):
            raise ValueError(f"{name} must be {rng}, got {value!r}")
        return v
    check.expects = "number"
    return check


def is_bool(value, name):
    """true or false (TOML booleans; "no", 0 and 1 are refused)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false (a TOML boolean, without quotes), got {_kind(value)}")
    return value


def is_str(choices=None, optional: bool = False):
    def check(value, name):
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string in quotes, got {_kind(value)}")
        if choices is not None and value not in choices:
            raise _unknown(f"value of {name}", value, choices)
        return value
    return check


def is_device(value, name):
    """cpu, cuda, cuda:N or auto (auto: cuda when available); None for auto."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda|cuda:\d+|auto", value):
        raise ValueError(f"{name} must be 'cpu', 'cuda', 'cuda:N' (N a device number) or 'auto', got "
                         f"{_kind(value)}")
    return value


def is_list(item, *, non_empty: bool = True):
    def check(value, name):
        if not isinstance(value, (list, tuple)) or (non_empty and not value):
            raise ValueError(f"{name} must be a{' non-empty' if non_empty else ''} list such as [1, 2], got "
                             f"{_kind(value)}")
        return [item(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return check


SCHEMA = {
    "data": {"system": is_str(), "path": is_str(optional=True), "n_traj": is_int(1), "n_steps": is_int(2),
             "dt": is_float(0, low_open=True, optional=True), "seed": is_int(0), "transient": is_float(0),
             "noise": is_float(0), "horizon": is_int(1), "stride": is_int(1), "standardize": is_bool,
             "split_fraction": is_float(0, 1, low_open=True, high_open=True)},
    "field": {"kind": is_str(("poly", "mlp", "residual")), "degree": is_int(1), "width": is_int(0),
              "depth": is_int(1), "activation": is_str(),
              "time_dependent": is_bool, "dtype": is_str(("float32", "float64"))},
    "train": {"optimizer": is_str(("lbfgs", "adam")), "epochs": is_int(1), "seed": is_int(0),
              "lr": is_float(0, low_open=True, optional=True), "batch_size": is_int(1, optional=True),
              "lbfgs_iterations": is_int(1), "lbfgs_tolerance": is_float(0, low_open=True),
              "weight_decay": is_float(0), "device": is_device},
    "output": {"dir": is_str()},
}


# the compare config (dynfit compare CONFIG.toml; see dynfit.cli)
COMPARE_SCHEMA = {
    "data": {k: SCHEMA["data"][k] for k in ("system", "path", "n_traj", "n_steps", "seed", "transient")}
    | {"dt": is_float(0, low_open=True)},
    "test": {"n_traj": is_int(1), "n_steps": is_int(2), "seed": is_int(0), "transient": is_float(0),
             "path": is_str(optional=True)},
    "field": {k: SCHEMA["field"][k] for k in ("kind", "width", "depth", "activation")},
    "train": {"epochs": is_int(1), "seeds": is_list(is_int(0)), "optimizer": SCHEMA["train"]["optimizer"],
              "lbfgs_iterations": is_int(1), "lr": SCHEMA["train"]["lr"], "batch_size": SCHEMA["train"]["batch_size"]},
    "evaluate": {"n_starts": is_int(1), "horizon": is_float(0, low_open=True),
                 "thresholds": is_list(is_float(0, 1, low_open=True)), "long_steps": is_int(1000),
                 "lyapunov_steps": is_int(0), "lyapunov_starts": is_int(1), "seed": is_int(0)},
    "output": {"dir": is_str()},
}


def check_fit_arguments(**kwargs) -> dict:
    """Check ``fit``'s keyword arguments with the same rules as the TOML config; returns them.

    Known names: epochs (>= 0 here), seed, lr, batch_size, lbfgs_iterations,
    lbfgs_tolerance, weight_decay, standardize, horizon, stride, device
    (also a torch.device), optimizer. Raises ValueError naming the argument,
    the value and what is expected.
    """
    rules = {"epochs": is_int(0), "seed": SCHEMA["train"]["seed"], "lr": SCHEMA["train"]["lr"],
             "batch_size": SCHEMA["train"]["batch_size"], "lbfgs_iterations": SCHEMA["train"]["lbfgs_iterations"],
             "lbfgs_tolerance": is_float(0, 1, low_open=True, high_open=True),
             "weight_decay": SCHEMA["train"]["weight_decay"], "standardize": is_bool,
             "horizon": SCHEMA["data"]["horizon"], "stride": SCHEMA["data"]["stride"],
             "optimizer": SCHEMA["train"]["optimizer"]}
    out = {}
    for name, value in kwargs.items():
        if name == "device":
            out[name] = value if value is None or type(value).__name__ == "device" else \
                _device(is_device(value, "device"))
        elif name in rules:
            out[name] = rules[name](value, name)
        else:
            raise TypeError(f"check_fit_arguments got an unknown argument {name!r}")
    return out


def check_types(cfg: dict, schema: dict) -> dict:
    """Check (and normalise) every value of ``cfg`` that ``schema`` knows; raises ValueError naming it."""
    for section, checks in schema.items():
        values = cfg.get(section)
        if not isinstance(values, dict):
            continue
        for key, check in checks.items():
            if key in values:
                values[key] = check(values[key], f"[{section}] {key}")
    return cfg


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
    cfg = check_types(merge_tables(DEFAULTS, raw, open_sections=OPEN_SECTIONS), SCHEMA)
    from . import strategies

    if not isinstance(cfg["strategy"].get("name"), str):
        raise ValueError(f"[strategy] name must be a strategy name in quotes such as \"fehlberg\", got "
                         f"{_kind(cfg['strategy'].get('name'))}")
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
    """The trajectories a config names: a file (.nc or .npy) or a systems simulation."""
    d = cfg["data"]
    if d["path"]:
        path = Path(d["path"])
        if not path.is_file():
            raise FileNotFoundError(f"[data] path {path} does not exist (or is not a file)")
        if path.suffix == ".npy":
            import numpy as np

            if d["dt"] is None:
                raise ValueError(f"[data] path {path} is a numpy file, which holds no sampling step; "
                                 "give [data] dt = <the step between samples>")
            try:
                return np.load(path, allow_pickle=False)
            except Exception as err:  # numpy raises ValueError, OSError, EOFError, ... for a damaged file
                raise ValueError(f"[data] path {path} is not a readable .npy array ({type(err).__name__}: "
                                 f"{str(err)[:120]}); save one with numpy.save") from None
        if path.suffix not in (".nc", ".nc4", ".netcdf"):
            raise ValueError(f"[data] path {path} must be a netCDF (.nc) file from systems.save or a .npy "
                             "array shaped (T, D) or (N, T, D)")
        from .diagnostics._checks import read_netcdf

        return read_netcdf(path, "data", "write one with systems.save(systems.simulate(...), path)")
    import systems

    dt = SIMULATION_DT if d["dt"] is None else d["dt"]
    return systems.simulate(d["system"], n_traj=d["n_traj"], n_steps=d["n_steps"], dt=dt,
                            seed=d["seed"], transient=d["transient"], noise=d["noise"])


def _device(name):
    """A config device for fit: None for auto; refuses cuda where there is none."""
    if name in (None, "auto"):
        return None
    import torch

    if name.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= n:
            raise ValueError(f"device {name!r} was asked for but this machine has {n} CUDA device(s); use 'cpu' or "
                             "'auto'")
    return name


def _split(data, fraction: float):
    """(train, held-out): by trajectory, or along time for a single trajectory."""
    from .data import as_trajectories, split

    try:
        n_traj = as_trajectories(data)[0].shape[0] if not hasattr(data, "sizes") else (
            data.sizes.get("trajectory", 1))
    except ValueError:
        n_traj = 1
    if n_traj >= 2 and 0 < round(fraction * n_traj) < n_traj:
        return split(data, by="trajectory", fraction=fraction)
    return split(data, by="time", fraction=fraction)


def run(cfg: dict, *, out=None, progress: bool = True):
    """Train as configured; writes model.pt, history.nc and checkpoints/ to the output folder.

    The output folder is locked while it runs (a second run into it refuses),
    and every file is written atomically.
    """
    import torch

    from systems.files import FolderLock

    from .io import write_netcdf
    from .train import fit

    import contextlib

    from .distributed import context

    out = Path(out or cfg["output"]["dir"])
    t = cfg["train"]
    device = _device(t["device"])
    ddp = context(device)  # under torchrun: rank 0 alone locks the folder and writes
    writer = ddp is None or ddp.is_main
    with FolderLock(out) if writer else contextlib.nullcontext():
        data = load_data(cfg)
        d = cfg["data"]
        train, held = _split(data, d["split_fraction"])
        field = {k: v for k, v in cfg["field"].items() if k != "dtype"}
        sur, hist = fit(train, field=field, strategy=cfg["strategy"]["name"],
                        strategy_options={k: v for k, v in cfg["strategy"].items() if k != "name"},
                        optimizer=t["optimizer"], epochs=t["epochs"], seed=t["seed"], device=device,
                        dtype=getattr(torch, cfg["field"]["dtype"]), horizon=d["horizon"], stride=d["stride"],
                        standardize=d["standardize"], dt=None if d["path"] is None else d["dt"], lr=t["lr"],
                        batch_size=t["batch_size"], lbfgs_iterations=t["lbfgs_iterations"],
                        lbfgs_tolerance=t["lbfgs_tolerance"], weight_decay=t["weight_decay"],
                        checkpoint_dir=out / "checkpoints", progress=progress)
        if writer:
            sur.save(out / "model.pt")
            write_netcdf(hist, out / "history.nc")
    return sur, hist, held
