"""Every setting, default and check of the application layer, and TOML configs for ``dynfit train``.

Training from a config: :func:`dynfit.train.train_from_config`.

``fit``'s options are five frozen settings objects, each field holding its
default and its check (run when the object is made)::

    WindowSettings     horizon, stride, standardize, dt, batch_size
    ModelSettings      field, dtype, device, seed, prefit, prefit_order, prefit_targets,
                       prefit_iterations, shooting, shooting_length, shooting_iterations
    OptimizerSettings  optimizer, lr, lbfgs_iterations, lbfgs_tolerance, weight_decay, schedule
    LoopSettings       epochs, on_nan, nan_retries, stall, progress, callback, jump_factor,
                       time_limit, select_by_forecast
    CheckpointSettings checkpoint_dir, resume

A TOML key is the field of the same name; each field says which section holds
it (``toml`` in its metadata; None: Python only). ``SCHEMA`` and ``DEFAULTS``
below are made from the fields, so a default or a check is written once::

    [data]      system, path, n_traj, n_steps, dt, seed, transient, noise,
                split_fraction                                      (DataSettings)
                horizon, stride, standardize                        (WindowSettings)
    [field]     kind, degree, width, depth, activation, time_dependent,
                correction                                          (FieldSettings)
                dtype                                               (ModelSettings)
    [strategy]  name, and the strategy's options (eps, safety, max_substeps, method, ...)
    [train]     optimizer, lr, lbfgs_iterations, lbfgs_tolerance, weight_decay,
                schedule                                            (OptimizerSettings)
                epochs, on_nan, time_limit, select_by_forecast      (LoopSettings)
                seed, device, prefit, prefit_order, prefit_targets,
                prefit_iterations, shooting, shooting_length,
                shooting_iterations                                 (ModelSettings)
                batch_size                                          (WindowSettings)
                resume                                              (CheckpointSettings)
    [output]    dir                                                 (OutputSettings)

Every key is checked before any work: an unknown section or key raises
ValueError naming its close matches; a value of the wrong type (``standardize =
"no"``, ``lr = "fast"``, ``epochs = 2.5``) or out of range (``split_fraction``
outside (0, 1), ``device`` other than cpu, cuda, cuda:N or auto) raises
ValueError naming the key, the value and what is expected.

``[data] dt``: the simulation step (default 0.01); for a ``.nc`` file or
``.zarr`` store its own ``dt`` attribute (or time coordinate) and for a
``.csv`` file its ``time`` column are used unless ``dt`` is given (a conflict
is an error); a ``.npy`` file needs ``dt`` (see :func:`read_trajectories`).
The held-out part (``split_fraction`` of the trajectories for training, the
rest held out) is cut along time when the data hold a single trajectory.

Also here: the compare config's schema and defaults (``dynfit compare``);
``EVALUATE_DEFAULTS`` (``dynfit.evaluate``'s defaults) is re-exported from
:mod:`dynfit.diagnostics.evaluate`.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from _dyncore import checks as _checks
from _dyncore.checks import ArgumentTypeError

from ._settings import (  # noqa: F401
    _Settings,
    _key,
    _kind,
    is_bool,
    is_bool_or_none,
    is_device,
    is_dtype,
    is_float,
    is_int,
    is_list,
    is_order,
    is_str,
    is_torch_device,
    one_of,
    setting,
)
from .diagnostics.evaluate import EVALUATE_DEFAULTS  # owned by dynfit.evaluate
from .io import TRAJECTORY_SUFFIXES, read_trajectories  # noqa: F401  (owned by dynfit.io)
from .nn.registry import COMPARE_FIELD, DEFAULT_FIELD, FieldSettings  # owned by the field registry

__all__ = [
    "EVALUATE_DEFAULTS", "WindowSettings", "ModelSettings", "OptimizerSettings", "LoopSettings",
    "CheckpointSettings", "FieldSettings", "DataSettings", "fit_settings", "settings_from_config",
    "load_config"
]

SIMULATION_DT = 0.01
DEFAULT_STRATEGY = "continuous"
# the epoch budget of a config file and of compare (fit alone: LoopSettings' 100)
CONFIG_EPOCHS = 30



def _is_field(value, name):
    """None (DEFAULT_FIELD), a FieldSettings, a config dict or a torch module."""
    import torch

    if value is None or isinstance(value, (FieldSettings, dict, torch.nn.Module)):
        return value
    raise ArgumentTypeError(
        f"{name} must be a torch module, a config dict or None, got {type(value).__name__}"
    )


def _is_callable_or_none(value, name):
    if value is not None and not callable(value):
        raise ArgumentTypeError(
            f"{name} must be a function callback(epoch, row) or None, got {type(value).__name__}"
        )
    return value


def _is_path_or_none(value, name):
    if value is not None and not isinstance(value, (str, Path)):
        raise ArgumentTypeError(
            f"{name} must be a folder (str or Path) or None, got {type(value).__name__}"
        )
    return value


# ------------------------------------------------------------------ settings objects

@dataclass(frozen=True)
class DataSettings(_Settings):
    """Where ``dynfit train`` takes its trajectories ([data]): a file or a ``systems``
    simulation."""
    system: str = setting("lorenz63", is_str(), toml="data")
    path: str | None = setting(None, is_str(optional=True), toml="data")
    n_traj: int = setting(8, is_int(1), toml="data")
    n_steps: int = setting(1000, is_int(2), toml="data")
    dt: float | None = setting(None, is_float(0, low_open=True, optional=True), toml="data")
    seed: int = setting(0, is_int(0), toml="data")
    transient: float = setting(0.0, is_float(0), toml="data")
    noise: float = setting(0.0, is_float(0), toml="data")
    split_fraction: float = setting(0.8, is_float(0, 1, low_open=True, high_open=True), toml="data")


@dataclass(frozen=True)
class WindowSettings(_Settings):
    """How trajectories become training windows: rollouts of ``horizon`` samples every ``stride``.

    standardize: per-component standardisation (False: physical units, the paper's setting).
    dt: the sampling step when the data do not carry one (numpy). batch_size: Adam's minibatch
    (None: all).
    """
    horizon: int = setting(1, is_int(1), toml="data")
    stride: int = setting(1, is_int(1), toml="data")
    standardize: bool = setting(True, is_bool, toml="data")
    dt: float | None = setting(None)  # checked with the data (dynfit.data.as_trajectories)
    batch_size: int | None = setting(None, is_int(1, optional=True), toml="train")


@dataclass(frozen=True)
class ModelSettings(_Settings):
    """The model: its field (None: DEFAULT_FIELD; a FieldSettings, a config dict or a torch module),
    dtype, device (None: cuda when available), seed, and the derivative pre-fit (``prefit``: None =
    with the continuous strategy on a fresh start; ``prefit_order``: the finite-difference order
    ("auto": chosen by the data, :func:`dynfit.prefit.auto_order`);
    ``prefit_targets``: "auto" (smoothed where the noise estimate finds noise, else differences),
    "differences", "smoothed" or "weak" (:func:`dynfit.prefit.prefit`); ``prefit_iterations``:
    the L-BFGS iteration cap of the neural part); multiple shooting after the pre-fit
    (:func:`dynfit.shooting.shoot`; ``shooting``: None = on noisy data, segments of
    ``shooting_length`` samples, at most ``shooting_iterations`` L-BFGS iterations)."""
    field: Any = setting(None, _is_field)
    dtype: str = setting("float64", is_dtype, toml="field")
    device: Any = setting(None, is_torch_device, toml="train")
    seed: int = setting(0, is_int(0), toml="train")
    prefit: bool | None = setting(None, is_bool_or_none, toml="train")
    prefit_order: int | str = setting("auto", is_order, toml="train")
    prefit_targets: str = setting(
        "auto", one_of(("auto", "differences", "smoothed", "weak")), toml="train"
    )
    prefit_iterations: int = setting(200, is_int(0), toml="train")
    shooting: bool | None = setting(None, is_bool_or_none, toml="train")
    shooting_length: int = setting(25, is_int(2), toml="train")
    shooting_iterations: int = setting(300, is_int(0), toml="train")


@dataclass(frozen=True)
class OptimizerSettings(_Settings):
    """"lbfgs" (full batch, lr 1, ``lbfgs_iterations`` per epoch, strong Wolfe; an epoch ends early
    below ``lbfgs_tolerance``, the paper's strategies only) or "adam" (lr 1e-3, ``weight_decay``,
    ``schedule`` "cosine" (decay to lr / 100 over the epochs) or "constant"). lr None: the
    default."""
    optimizer: str = setting("lbfgs", one_of(("lbfgs", "adam")), toml="train")
    lr: float | None = setting(None, is_float(0, low_open=True, optional=True), toml="train")
    lbfgs_iterations: int = setting(20, is_int(1), toml="train")
    lbfgs_tolerance: float = setting(1e-7, is_float(0, 1, low_open=True, high_open=True),
                                     toml="train")
    weight_decay: float = setting(0.0, is_float(0), toml="train")
    schedule: str = setting("cosine", one_of(("cosine", "constant")), toml="train")


@dataclass(frozen=True)
class LoopSettings(_Settings):
    """The epoch loop: at most ``epochs``; a non-finite loss, a loss more than ``jump_factor`` x the
    best at that horizon, or free runs that blow up roll back and ``on_nan`` ("retry" up to
    ``nan_retries`` times, "stop", "raise"); two epochs in a row that move the loss by less than
    ``stall`` (relative), the second after an optimizer restart, stop it; ``callback(epoch, row)``
    returning True stops it; ``progress``: a progress bar. ``time_limit``: seconds of wall time for
    the whole fit (None: none), checked inside epochs. ``select_by_forecast``: keep the weights
    whose short free runs from a few validation starts forecast best (docs/training.md)."""

    epochs: int = setting(
        100, is_int(0), toml="train", toml_check=is_int(1), toml_default=CONFIG_EPOCHS
    )
    on_nan: str = setting("retry", one_of(("retry", "stop", "raise")), toml="train")
    nan_retries: int = setting(3, is_int(0))
    stall: float = setting(1e-9, is_float(0))
    progress: bool = setting(True, is_bool)
    callback: Any = setting(None, _is_callable_or_none)
    jump_factor: float = setting(10.0, is_float(1, low_open=True))
    time_limit: float | None = setting(
        None, is_float(0, low_open=True, optional=True), toml="train"
    )
    select_by_forecast: bool = setting(True, is_bool, toml="train")


@dataclass(frozen=True)
class CheckpointSettings(_Settings):
    """A checkpoint after every epoch to ``checkpoint_dir/checkpoint.pt`` (None: none); ``resume``
    continues an existing one (False: start over)."""
    checkpoint_dir: Any = setting(None, _is_path_or_none)
    resume: bool = setting(True, is_bool, toml="train")


@dataclass(frozen=True)
class OutputSettings(_Settings):
    """Where ``dynfit train`` writes model.pt, history.nc and checkpoints/ ([output])."""
    dir: str = setting("out/train", is_str(), toml="output")


@dataclass(frozen=True)
class FitSettings:
    """The five settings objects of one ``fit``."""
    windows: WindowSettings
    model: ModelSettings
    optimizer: OptimizerSettings
    loop: LoopSettings
    checkpoint: CheckpointSettings


FIT_GROUPS = {
    "windows": WindowSettings,
    "model": ModelSettings,
    "optimizer": OptimizerSettings,
    "loop": LoopSettings,
    "checkpoint": CheckpointSettings,
}  # the fields of FitSettings
# fit's keyword arguments: every field of the five objects, by name -> its group
FIT_OPTIONS = {f.name: group for group, cls in FIT_GROUPS.items() for f in fields(cls)}


def fit_settings(
    *, windows=None, model=None, optimizer=None, loop=None, checkpoint=None, **options
) -> FitSettings:
    """``fit``'s settings from settings objects and keyword arguments (which win over the objects'
    fields).

    Raises TypeError for an unknown keyword (naming close matches) or an object of another class,
    and ValueError for a bad value (naming it). ``optimizer`` may also be the optimizer's name.
    """
    if isinstance(optimizer, str):  # fit(data, optimizer="adam")
        options["optimizer"], optimizer = optimizer, None
    given = {
        "windows": windows,
        "model": model,
        "optimizer": optimizer,
        "loop": loop,
        "checkpoint": checkpoint,
    }
    unknown = sorted(set(options) - set(FIT_OPTIONS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(FIT_OPTIONS) + list(given), n=3)
        raise TypeError(
            f"fit() got unknown keyword argument(s) {unknown}"
            f"{f'; did you mean {close}?' if close else ''} (known: {sorted(FIT_OPTIONS)})"
        )
    out = {}
    for group, cls in FIT_GROUPS.items():
        base = given[group]
        if base is not None and not isinstance(base, cls):
            raise TypeError(
                f"{group} must be a dynfit.config.{cls.__name__}, got {type(base).__name__}"
            )
        mine = {k: v for k, v in options.items() if FIT_OPTIONS[k] == group}
        out[group] = base.replace(**mine) if base is not None else cls(**mine)
    return FitSettings(**out)


# ---------------------------------------------------------- the TOML schema, made from the settings
TOML_SETTINGS = (
    DataSettings,
    WindowSettings,
    FieldSettings,
    ModelSettings,
    OptimizerSettings,
    LoopSettings,
    CheckpointSettings,
    OutputSettings,
)


def _toml_fields():
    """(section, field) of every settings field a TOML key maps onto."""
    for cls in TOML_SETTINGS:
        for f in fields(cls):
            if f.metadata.get("toml"):
                yield f.metadata["toml"], f


SCHEMA: dict[str, dict[str, Any]] = {}
DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {},
    "field": {},
    "strategy": {"name": DEFAULT_STRATEGY},
    "train": {},
    "output": {},
}
for _sec, _f in _toml_fields():
    SCHEMA.setdefault(_sec, {})[_f.name] = _f.metadata["toml_check"]
    DEFAULTS[_sec][_f.name] = _f.metadata["toml_default"]
# strategy options are checked by the strategy itself
OPEN_SECTIONS = ("strategy",)


# the compare config (dynfit compare CONFIG.toml; see dynfit.cli)
COMPARE_DEFAULTS = {
    "data": {
        "system": "lorenz63",
        "n_traj": 4,
        "n_steps": 1000,
        "dt": SIMULATION_DT,
        "seed": 1,
        "transient": 5.0,
        "path": None,
    },
    # 2000 samples of dt 0.01: the default horizon of 15 Lyapunov times on Lorenz'63 (1657) fits
    "test": {"n_traj": 4, "n_steps": 2000, "seed": 2, "transient": 5.0, "path": None},
    "field": dict(COMPARE_FIELD),
    "train": {"epochs": CONFIG_EPOCHS, "seeds": [0]}
    | {k: getattr(OptimizerSettings(), k) for k in ("optimizer", "lbfgs_iterations", "lr")}
    | {"batch_size": WindowSettings().batch_size},
    "evaluate": {k: list(v) if isinstance(v, tuple) else v for k, v in EVALUATE_DEFAULTS.items()},
    "strategy": [{"name": "black-box"}, {"name": "fehlberg"}],
    "output": {"dir": "out/compare"},
}
COMPARE_SCHEMA = {
    "data": {
        k: SCHEMA["data"][k] for k in ("system", "path", "n_traj", "n_steps", "seed", "transient")
    }
    | {"dt": is_float(0, low_open=True)},
    "test": {
        "n_traj": is_int(1),
        "n_steps": is_int(2),
        "seed": is_int(0),
        "transient": is_float(0),
        "path": is_str(optional=True),
    },
    "field": {k: SCHEMA["field"][k] for k in ("kind", "width", "depth", "activation")},
    "train": {
        "epochs": is_int(1),
        "seeds": is_list(is_int(0)),
        "optimizer": SCHEMA["train"]["optimizer"],
        "lbfgs_iterations": SCHEMA["train"]["lbfgs_iterations"],
        "lr": SCHEMA["train"]["lr"],
        "batch_size": SCHEMA["train"]["batch_size"],
    },
    "evaluate": {
        "n_starts": is_int(1),
        "horizon_lt": is_float(0, low_open=True),
        "thresholds": is_list(is_float(0, 1, low_open=True)),
        "long_steps": is_int(1000),
        "lyapunov_steps": is_int(0),
        "lyapunov_starts": is_int(1),
        "seed": is_int(0),
    },
    "output": {"dir": is_str()},
}


# evaluate's options renamed (old -> new): the old name still reads, with a DeprecationWarning
RENAMED_EVALUATE = {"horizon": "horizon_lt"}  # fit's horizon counts samples, evaluate's LT


def renamed_options(options: dict | None, renamed: dict, where: str) -> dict:
    """A copy of ``options`` with each old name of ``renamed`` under its new one (a
    DeprecationWarning each); both names given raise ValueError. where: for the messages."""
    out = dict(options or {})
    for old, new in renamed.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{where}: give {new!r} alone ({old!r} is its deprecated old name)")
        warnings.warn(f"{where}: {old!r} is deprecated, use {new!r}", DeprecationWarning,
                      stacklevel=3)
        out[new] = out.pop(old)
    return out


def check_types(cfg: dict, schema: dict) -> dict:
    """Check (and normalise) every value of ``cfg`` that ``schema`` knows; raises ValueError naming
    it."""
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
        raise ValueError(
            f'[strategy] name must be a strategy name in quotes such as "fehlberg", got '
            f"{_kind(cfg['strategy'].get('name'))}"
        )
    options = {k: v for k, v in cfg["strategy"].items() if k != "name"}
    name = cfg["strategy"]["name"]
    strategies.parse_spec((name, name, options))  # fail early on a bad strategy name or option
    return cfg


def read_toml(path) -> dict:
    """The raw contents of a TOML file; clear errors for a missing or invalid file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder; pass the TOML file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path, "rb") as fh:
        try:
            return tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path} is not valid TOML: {err}") from None
        except UnicodeDecodeError:  # a binary file (a model, a netCDF file, ...)
            raise ValueError(f"{path} is not a TOML text file (it holds binary data); pass a "
                             "dynfit config such as docs/getting_started.md's train.toml") from None


def load_config(path) -> dict:
    """Read and validate a training TOML file."""
    return validate(read_toml(path))


def _section(cls, cfg: dict, **extra):
    """A settings object from its fields' keys in a validated config (checked again on the way
    in)."""
    values = {
        f.name: cfg[f.metadata["toml"]][f.name] for f in fields(cls) if f.metadata.get("toml")
    }
    return cls(**values, **extra)


def settings_from_config(cfg: dict, *, out=None, progress: bool = True) -> dict:
    """A validated config as settings objects: {"data", "output", "strategy", "options", and fit's
    five}.

    ``options``: the strategy's options; the checkpoints go to ``out/checkpoints``.
    """
    data = _section(DataSettings, cfg)
    output = OutputSettings(dir=str(out)) if out is not None else _section(OutputSettings, cfg)
    field = _section(FieldSettings, cfg)
    return {
        "data": data,
        "output": output,
        "strategy": cfg["strategy"]["name"],
        "options": {k: v for k, v in cfg["strategy"].items() if k != "name"},
        "windows": _section(WindowSettings, cfg, dt=None if data.path is None else data.dt),
        "model": _section(ModelSettings, cfg, field=field),
        "optimizer": _section(OptimizerSettings, cfg),
        "loop": _section(LoopSettings, cfg, progress=progress),
        "checkpoint": _section(
            CheckpointSettings, cfg, checkpoint_dir=Path(output.dir) / "checkpoints"
        ),
    }


def load_data(d: DataSettings):
    """The trajectories a config names: a file (.npy, .csv, .nc, .zarr) or a systems simulation."""
    if d.path:
        data = read_trajectories(d.path, what="[data] path")
        if not hasattr(data, "data_vars") and d.dt is None:
            raise ValueError(
                f"[data] path {d.path} holds no sampling step (a bare array); give [data] dt = "
                "<the step between samples>"
            )
        return data
    import systems

    return systems.simulate(
        d.system,
        n_traj=d.n_traj,
        n_steps=d.n_steps,
        dt=SIMULATION_DT if d.dt is None else d.dt,
        seed=d.seed,
        transient=d.transient,
        noise=d.noise,
    )
