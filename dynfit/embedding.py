"""Delay embedding: a state from partial observations (Takens).

When the data observe fewer variables than the system has (Lorenz'63 through
x only), a surrogate of the observed components alone is a low-dimensional
ODE that cannot reproduce the flow (a 1-D autonomous ODE is monotone: it can
neither oscillate nor be chaotic). :class:`DelayEmbedding` makes a state of
each observed component and its copies delayed by ``tau``, ``2 tau``, ...
samples: ``fit(data, embed=DelayEmbedding(lags=3, tau=10))`` trains on those
states, and the surrogate remembers the embedding (saved with it), so that
``forecast`` and ``generate`` start from a delay vector.

State layout for observed components (c_1, ..., c_d): lag-major blocks,
``(c_1(t), ..., c_d(t), c_1(t - tau dt), ..., c_d(t - (lags-1) tau dt))``;
the names are ``c``, ``c_lag{tau}``, ``c_lag{2 tau}``, ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from systems import checks

__all__ = ["DelayEmbedding", "mutual_information_delay"]


@dataclass(frozen=True)
class DelayEmbedding:
    """Delay coordinates: ``lags`` copies (the observation included) ``tau`` samples apart.

    lags: copies of each observed component in the state (>= 2; the state
    dimension is ``lags`` times the observed one). tau: the delay between
    copies, in samples (>= 1). A common choice of tau is the first minimum of
    the observation's mutual information (:func:`mutual_information_delay`);
    lags >= 2 d + 1 (d the attractor's dimension) is Takens' sufficient
    condition, fewer often do (Lorenz'63: lags = 3).
    """

    lags: int = 3
    tau: int = 1

    def __post_init__(self) -> None:
        checks.integer(
            "lags",
            self.lags,
            minimum=2,
            fix="lags counts the copies of each observed component in the state, e.g. lags=3",
        )
        checks.integer("tau", self.tau, minimum=1,
                       fix="tau is the delay between copies in samples, e.g. tau=10")

    @property
    def window(self) -> int:
        """Samples consumed before the first delay vector: (lags - 1) tau."""
        return (self.lags - 1) * self.tau

    def observed_dim(self, dim: int) -> int:
        """The number of observed components of an embedded state of dimension ``dim``."""
        if dim % self.lags:
            raise ValueError(
                f"a state of {dim} components is not a delay vector of {self.lags} lags"
            )
        return dim // self.lags

    def transform(self, x) -> np.ndarray:
        """Delay vectors of observations x (N, T, d) or (T, d): (N, T - window, d lags) (or 2-D).

        Row i of the result is the delay vector at sample ``i + window`` of x.
        """
        arr = np.asarray(x, dtype=np.float64)
        single = arr.ndim == 2
        if single:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"observations must have shape (N, T, d) or (T, d), got {arr.shape}")
        n, t, d = arr.shape
        if t <= self.window:
            raise ValueError(
                f"observations of {t} samples are too short for {self.lags} lags {self.tau} "
                f"samples apart: a delay vector needs {self.window + 1}; lower lags or tau"
            )
        end = t - self.window
        parts = [
            arr[:, self.window - k * self.tau : self.window - k * self.tau + end]
            for k in range(self.lags)
        ]
        out = np.concatenate(parts, axis=2)
        return out[0] if single else out

    def state(self, history) -> np.ndarray:
        """The delay vector at the last sample of each history (B, T, d) or (T, d): (B, d lags)."""
        arr = np.asarray(history, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        return self.transform(arr)[:, -1]

    def names(self, observed: list[str]) -> list[str]:
        """Names of the embedded components: the observed names, then ``name_lag{k tau}`` blocks."""
        return [
            str(c) if k == 0 else f"{c}_lag{k * self.tau}"
            for k in range(self.lags)
            for c in observed
        ]

    def to_dict(self) -> dict:
        return {"kind": "delay", "lags": int(self.lags), "tau": int(self.tau)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "DelayEmbedding":
        if not isinstance(d, Mapping) or d.get("kind", "delay") != "delay":
            raise ValueError(
                f"not a delay embedding record: {d!r}; expected {{'kind': 'delay', 'lags': L, "
                "'tau': T}"
            )
        return cls(lags=d["lags"], tau=d["tau"])


def check_embed(embed: Any) -> "DelayEmbedding | None":
    """``embed`` as a DelayEmbedding (or None); a clear TypeError otherwise."""
    if embed is None or isinstance(embed, DelayEmbedding):
        return embed
    raise TypeError(
        f"embed must be a dynfit.DelayEmbedding(lags=..., tau=...) or None, got "
        f"{type(embed).__name__} {embed!r}"
    )


def _embed_trajectories(
    embed: DelayEmbedding, trajectories: np.ndarray, dt: float, attrs: dict
) -> tuple[np.ndarray, dict]:
    """(embedded trajectories (N, T - window, d lags), attrs with the embedded component names)."""
    out = embed.transform(trajectories)
    attrs = dict(attrs)
    d = trajectories.shape[2]
    observed = list(attrs.get("components") or [f"x{i}" for i in range(d)])
    attrs["components"] = embed.names(observed)
    attrs["embedding"] = embed.to_dict()
    attrs["observed_components"] = observed
    attrs["time_offset"] = float(embed.window * dt)
    return out, attrs


def _time_dependent(field: Any) -> bool:
    """Whether a field spec (None, a FieldSettings, a config dict or a module) depends on time."""
    if field is None:
        return False
    if hasattr(field, "config") and callable(field.config) and not hasattr(field, "forward"):
        field = field.config()
    if isinstance(field, Mapping):
        return bool(field.get("time_dependent", False))
    return bool(getattr(field, "time_dependent", False))


def prepare_state(
    trajectories: np.ndarray, dt: float, attrs: dict, embed: Any, field: Any = None
) -> tuple[np.ndarray, dict]:
    """The training states: the trajectories (N, T, D), delay-embedded when ``embed`` is given.

    Refuses a 1-D autonomous fit (field ``field`` not time-dependent): a 1-D
    autonomous ODE is monotone, it cannot oscillate nor be chaotic.
    """
    embed = check_embed(embed)
    if embed is not None:
        return _embed_trajectories(embed, trajectories, dt, attrs)
    if trajectories.shape[2] == 1 and not _time_dependent(field):
        raise ValueError(
            "the data observe 1 component: an autonomous 1-D ODE dx/dt = f(x) is monotone, it can "
            "neither oscillate nor be chaotic, so it cannot model a system seen through one "
            "variable. Pass embed=dynfit.DelayEmbedding(lags=3, tau=...) (the observation and its "
            "delayed copies form the state; tau e.g. dynfit.mutual_information_delay(x)), or a "
            "time-dependent field (field={'kind': 'mlp', 'time_dependent': True}) for a forced "
            "1-D system"
        )
    return trajectories, attrs


def mutual_information_delay(x, *, max_lag: int = 200, bins: int = 32) -> int:
    """The first local minimum of the mutual information between x(t) and x(t + k dt), k =
    1..max_lag.

    x: one observed component, (T,) or (N, T) (histogram estimate over every
    trajectory). The usual choice of ``tau`` for :class:`DelayEmbedding`
    (Fraser & Swinney 1986). Returns max_lag when the curve has no minimum.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise ValueError(
            f"x must be one finite component shaped (T,) or (N, T), got shape {arr.shape}"
        )
    max_lag = checks.integer("max_lag", max_lag, minimum=1)
    max_lag = min(max_lag, arr.shape[1] - 2)
    if max_lag < 2:
        raise ValueError(f"a series of {arr.shape[1]} samples is too short to estimate a delay")
    edges = np.histogram_bin_edges(arr, bins=checks.integer("bins", bins, minimum=2))

    def mi(k: int) -> float:
        a, b = arr[:, :-k].reshape(-1), arr[:, k:].reshape(-1)
        joint, _, _ = np.histogram2d(a, b, bins=[edges, edges])
        p = joint / joint.sum()
        pa, pb = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
        nz = p > 0
        return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())

    values = [mi(k) for k in range(1, max_lag + 1)]
    for k in range(1, len(values) - 1):
        if values[k] < values[k - 1] and values[k] <= values[k + 1]:
            return k + 1
    return max_lag
