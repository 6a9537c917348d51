"""The training history's record: one row per epoch, its variables with their units.

Owned by :mod:`dynfit.train` (which re-exports every name here): ``fit`` makes the rows,
the strategies read them (``row.loss``, ``row.horizon``), the checkpoint stores them as
dicts and the history Dataset (dim ``epoch``) has one variable per field. Torch-free, so
that the readers of a history file (plot, compare, the CLI) use it without the trainer.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["HistoryRow", "HISTORY_VARS", "HISTORY_UNITS"]


def _var(units: str, long_name: str, kind: type = float):
    """A field of the record: its CF units, its long name and its type (int: 0 when missing)."""
    default = 0 if kind is int else math.nan
    return dataclasses.field(default=default,
                             metadata={"units": units, "long_name": long_name, "kind": kind})


@dataclass(frozen=True)
class HistoryRow:
    """One epoch of training. Losses are in squared standardised units (summed over
    components, averaged over windows and samples); ``units`` in each field's metadata is
    what the history netCDF writes. A missing value reads as NaN (0 for counts).
    ``row["loss"]`` and ``row.get("loss")`` still work for code written against dict rows.
    """

    loss: float = _var("1", "loss at the weights kept (squared standardised units)")
    misfit: float = _var("1", "misfit: RMS error per component (standardised units)")
    rtol: float = _var("1", "relative tolerance of the training solver")
    accepted_fraction: float = _var("1", "accepted fraction (examples or steps)")
    mean_substeps: float = _var("1", "mean substeps")
    max_substeps: int = _var("1", "max substeps", int)
    mean_steps: float = _var("1", "solver steps attempted per sample")
    n_f_evals: int = _var("1", "field evaluations summed over examples", int)
    horizon: int = _var("1", "rollout horizon (samples per window)", int)
    lr: float = _var("1", "learning rate")
    wall_time: float = _var("s", "wall-clock time of the epoch")
    retries: int = _var("1", "retries after a rolled-back epoch", int)
    restarts: int = _var("1", "optimizer restarts (an epoch that moved nothing)", int)
    loss_start: float = _var("1", "loss at the epoch's first weights, same rtol and horizon "
                                  "(squared standardised units)")
    forecast: float = _var("1", "samples a validation free run stays below normalised error "
                                "0.4 (mean)")

    def __getitem__(self, key: str):
        if key not in HISTORY_VARS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in HISTORY_VARS else default

    def to_dict(self) -> dict:
        """Plain values by variable name (what a checkpoint stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> HistoryRow:
        """A row from a dict (a checkpoint's, old ones included): unknown keys are ignored,
        missing or None values read as NaN (0 for counts)."""
        kept = {k: v for k, v in row.items() if k in HISTORY_VARS and v is not None}
        return cls(**kept)


def as_rows(history) -> list[HistoryRow]:
    """``history`` (rows, or dicts as older code and checkpoints hold them) as HistoryRows."""
    return [r if isinstance(r, HistoryRow) else HistoryRow.from_dict(r) for r in history]


_FIELDS = {f.name: f for f in dataclasses.fields(HistoryRow)}
HISTORY_VARS = tuple(_FIELDS)
HISTORY_UNITS = {name: f.metadata["units"] for name, f in _FIELDS.items()}
REQUIRED = ("loss", "accepted_fraction", "mean_substeps")  # in every history since the first


def history_attrs(var: str) -> dict:
    """CF attrs (``units``, ``long_name``) of history variable ``var``."""
    f = _FIELDS[var]
    return {"units": f.metadata["units"], "long_name": f.metadata["long_name"]}


def history_dataset(rows: list, attrs: dict):
    """The history Dataset (dim ``epoch``) of rows (HistoryRow or dicts); attrs: the run's
    provenance (only str, int and float values are kept)."""
    import xarray as xr

    rows = as_rows(rows)
    data = {}
    for name, f in _FIELDS.items():
        dtype = np.int64 if f.metadata["kind"] is int else np.float64
        values = np.asarray([getattr(r, name) for r in rows], dtype=dtype)
        data[name] = ("epoch", values, history_attrs(name))
    clean = {k: v for k, v in attrs.items() if isinstance(v, (str, int, float))}
    return xr.Dataset(data, coords={"epoch": np.arange(len(rows))}, attrs=clean)


def is_history(ds) -> bool:
    """Whether Dataset ``ds`` is a training history (this version's or an older one)."""
    return "epoch" in ds.dims and all(v in ds for v in REQUIRED)
