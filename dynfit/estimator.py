"""A scikit-learn style estimator over :func:`dynfit.fit` and :class:`dynfit.Surrogate`.

``Estimator(**fit_options).fit(X, t)`` trains a surrogate on trajectories X:
(n_samples, n_features) for one trajectory (rows are times, the scikit-learn
layout) or (N, T, D) for several, with ``t`` the sampling step (a number) or
the sample times (T,) (uniform). Then ``predict(X)`` gives the state one step
``dt`` after each row of X, ``simulate(x0, n_steps or t)`` a free run and
``score(X, t)`` the coefficient of determination R^2 of the one-step
predictions along X (the scikit-learn convention for regressors: 1 is
perfect; it is defined for any data, short or long, unlike a valid
prediction time, which needs a Lyapunov time and long held-out runs:
``dynfit.evaluate`` gives those).

scikit-learn is not needed to use it: ``get_params``/``set_params`` follow
its conventions, so pipelines, ``clone`` and grid searches work when it is
installed.
"""
from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np

from systems import checks

__all__ = ["Estimator"]


class Estimator:
    """fit / predict / simulate / score over :func:`dynfit.fit`.

    Every constructor argument is a ``dynfit.fit`` option kept as given
    (``field``, ``epochs``, ``strategy``, ``embed``, ...; None: fit's default);
    ``options`` a dict of any other fit keyword arguments.
    After ``fit``: ``surrogate_`` (the :class:`dynfit.Surrogate`), ``history_``
    (the training history), ``dt_``, ``n_features_in_``.
    """

    def __init__(
        self,
        *,
        field=None,
        epochs=None,
        strategy=None,
        embed=None,
        horizon=None,
        optimizer=None,
        lr=None,
        seed=0,
        device=None,
        dtype="float64",
        prefit=None,
        progress=False,
        options=None,
    ):
        self.field = field
        self.epochs = epochs
        self.strategy = strategy
        self.embed = embed
        self.horizon = horizon
        self.optimizer = optimizer
        self.lr = lr
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.prefit = prefit
        self.progress = progress
        self.options = options

    # ------------------------------------------------------------------ scikit-learn protocol
    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments as a dict (scikit-learn's protocol)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params) -> "Estimator":
        """Set constructor arguments; unknown names raise ValueError naming the known ones."""
        known = self._get_param_names()
        for name, value in params.items():
            if name not in known:
                raise ValueError(f"Estimator has no parameter {name!r}; known: {known}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != type(self)().get_params()[k]}
        return f"Estimator({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def __sklearn_tags__(self):
        from sklearn.utils import Tags, RegressorTags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=False),
                    regressor_tags=RegressorTags(), transformer_tags=None, classifier_tags=None)

    # ------------------------------------------------------------------ fitting
    def _fit_options(self) -> dict:
        options = {
            k: v
            for k, v in self.get_params().items()
            if v is not None and k not in ("embed", "options")
        }
        extra = self.options or {}
        if not isinstance(extra, dict):
            raise TypeError(
                f"options must be a dict of further dynfit.fit keyword arguments, got "
                f"{type(extra).__name__}"
            )
        return {**options, **extra}

    def fit(self, X, t=None) -> "Estimator":
        """Train on X (n_samples, n_features) (one trajectory) or (N, T, D); t: the step or
        the times (T,).

        t None: X must carry its step (an xarray Dataset/DataArray with a time coordinate or
        attrs['dt']). Returns self.
        """
        from .train import fit

        data, dt = _trajectories(X, t)
        self.surrogate_, self.history_ = fit(data, dt=dt, embed=self.embed, **self._fit_options())
        self.dt_ = float(self.surrogate_.dt)
        self.n_features_in_ = (
            int(data.shape[-1]) if isinstance(data, np.ndarray) else self.surrogate_.dim
        )
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "surrogate_"):
            try:
                from sklearn.exceptions import NotFittedError
            except ImportError:  # pragma: no cover - scikit-learn is optional
                NotFittedError = ValueError
            raise NotFittedError("this Estimator is not fitted yet: call fit(X, t) first")

    def _states(self, X, name: str = "X") -> np.ndarray:
        arr = _numeric(X, name)
        if arr.ndim != 2 or arr.shape[0] < 1:
            raise ValueError(
                f"{name} must be states shaped (n_samples, n_features), got shape {arr.shape}"
            )
        if arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{name} has {arr.shape[1]} features but the Estimator was fitted with "
                f"{self.n_features_in_}"
            )
        return arr

    # ------------------------------------------------------------------ using it
    def predict(self, X) -> np.ndarray:
        """The state one step dt after each row of X: (n_samples, n_features) -> the same."""
        self._check_fitted()
        x = self._states(X)
        return self.surrogate_.generate(x, 2, on_failure="warn")[:, 1]

    def simulate(self, x0, t) -> np.ndarray:
        """A free run from x0 (n_features,) or (B, n_features): (n_steps, n_features) or (B,
        n_steps, ...).

        t: the number of samples (row 0 = x0) or the sample times (uniform, spaced dt_).
        """
        self._check_fitted()
        x = _numeric(x0, "x0")
        single = x.ndim == 1
        n_steps = _n_steps(t, self.dt_)
        out = self.surrogate_.generate(x[None] if single else x, n_steps, on_failure="warn")
        return out[0] if single else out

    def score(self, X, t=None) -> float:
        """R^2 of the one-step predictions along X (one trajectory (n_samples, n_features)).

        The sum over features of squared errors of predict(X[:-1]) against
        X[1:], over the total sum of squares of X[1:] around its mean. t must
        match the fitted step when given.
        """
        self._check_fitted()
        x = self._states(X)
        if x.shape[0] < 2:
            raise ValueError(f"score needs at least 2 samples along X, got {x.shape[0]}")
        if t is not None:
            dt = _step(t, x.shape[0])
            if not math.isclose(dt, self.dt_, rel_tol=1e-9):
                raise ValueError(
                    f"X is sampled at dt = {dt:g} but the Estimator was fitted at dt = "
                    f"{self.dt_:g}; resample X or fit again"
                )
        pred = self.predict(x[:-1])
        truth = x[1:]
        ss_res = float(((truth - pred) ** 2).sum())
        ss_tot = float(((truth - truth.mean(axis=0)) ** 2).sum())
        if ss_tot == 0.0:
            return 1.0 if ss_res == 0.0 else 0.0
        return 1.0 - ss_res / ss_tot


# ------------------------------------------------------------------ helpers
def _numeric(X, name: str) -> np.ndarray:
    if isinstance(X, (str, bytes)) or X is None:
        raise TypeError(f"{name} must be an array of numbers, got {type(X).__name__}")
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise TypeError(
            f"sparse input is not supported: {name} must be dense states; pass {name}.toarray()"
        )
    if np.iscomplexobj(X):
        raise ValueError(
            f"Complex data not supported in {name}: pass real and imaginary parts as features"
        )
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must hold numbers, got an array of {np.asarray(X).dtype}"
        ) from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf; clean or drop those samples")
    return arr


def _step(t, n_samples: int) -> float:
    """The sampling step from a number or from times (n_samples,) that must be uniform."""
    if np.ndim(t) == 0:
        return checks.positive("t", t,
                               fix="t is the time between samples (a number) or the sample times")
    times = _numeric(t, "t").reshape(-1)
    if times.size != n_samples or n_samples < 2:
        raise ValueError(
            f"t holds {times.size} times but X has {n_samples} samples; pass one time per "
            "sample or the step as a number"
        )
    steps = np.diff(times)
    dt = float(steps.mean())
    if dt <= 0 or np.abs(steps - dt).max() > 1e-6 * abs(dt):
        raise ValueError(
            "the sample times t must increase uniformly (a constant step); resample the data "
            "or pass the step as a number"
        )
    return dt


def _n_steps(t, dt: float) -> int:
    if np.ndim(t) == 0:
        return checks.integer("t", t, minimum=1,
                              fix="pass the number of samples or the sample times")
    times = _numeric(t, "t").reshape(-1)
    n = times.size
    if n < 1:
        raise ValueError("t holds no times")
    if n > 1 and not math.isclose(_step(times, n), dt, rel_tol=1e-6):
        raise ValueError(
            f"the times t are spaced {_step(times, n):g} but the surrogate steps {dt:g}"
        )
    return n


def _trajectories(X, t) -> tuple[Any, float | None]:
    """(data for fit, dt): numpy (N, T, D) from (T, D) or (N, T, D), or xarray as given."""
    try:
        import xarray as xr

        if isinstance(X, (xr.Dataset, xr.DataArray)):
            return X, None if t is None else _step(t, X.sizes.get("time", 0))
    except ImportError:  # pragma: no cover - xarray is a dependency
        pass
    arr = _numeric(X, "X")
    if arr.ndim not in (2, 3):
        raise ValueError(
            "X must be one trajectory (n_samples, n_features) "
            f"or several (N, T, D), got shape {arr.shape}"
        )
    if t is None:
        raise ValueError(
            "numpy X carries no sampling step: pass t, the time between samples (fit(X, 0.01)) "
            "or the sample times"
        )
    return arr, _step(t, arr.shape[-2])
