"""dynfit: Neural ODE surrogates of dynamical systems, trained through solvers the loop can see.

One public entry point per job:

- :func:`odesolve` - batched Runge-Kutta(-Fehlberg) solve with per-example statistics
  (importing dynfit also registers ``rkf45`` and ``rkf23`` with torchdiffeq);
- :func:`fit` - train a surrogate, returning it and a per-epoch history Dataset
  (``fit(data)`` alone: the polynomial + MLP field, derivative pre-fit, adaptive rollouts);
- :class:`Surrogate` - a trained model (or a wrapped vector field): generate, forecast (a Dataset),
  equations, physical_field, save, load; :class:`DelayEmbedding` - a state from partial
  observations; :class:`Estimator` - scikit-learn style fit / predict / simulate / score;
  :class:`InferenceSolver` - how it integrates;
- :func:`evaluate`, :func:`lyapunov_spectrum`, :func:`valid_prediction_time` - diagnostics;
- :func:`compare` - several training strategies on the same data and seeds, one Dataset;
- :class:`TABatchNorm1d` and friends - temporal adaptive batch normalization.
"""
from ._version import __version__

import importlib
import sys
import types

from .solvers import (MixedNorm, PaperRule, PIController, Solution, SolverError, Stats, Status,
                      odesolve)

# Everything else loads on first use (PEP 562), so that ``import dynfit.solvers`` needs
# neither numba nor the training stack: name -> the submodule that defines it.
_LAZY = {
    **dict.fromkeys([
        "ConvField", "MLPField", "PolynomialField", "ResidualMLPField", "TABatchNorm1d",
        "TABatchNorm2d", "frozen_statistics", "make_norm", "norm_penalty",
    ], ".nn"),
    **dict.fromkeys([
        "evaluate", "load_diagnostics", "lyapunov_spectrum", "summarize", "valid_groundtruth_time",
        "valid_prediction_time",
    ], ".diagnostics"),
    "fit": ".train",
    "InferenceSolver": ".inference",
    "Surrogate": ".surrogate",
    **dict.fromkeys(["compare", "load_compare"], ".compare"),
    **dict.fromkeys(["DelayEmbedding", "mutual_information_delay"], ".embedding"),
    "Estimator": ".estimator",
}


def __getattr__(name: str):
    """The lazily loaded names of ``__all__``, and submodules (``dynfit.train``) on first use."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """dynfit's module type: importing a submodule that shares its name with a lazily loaded
    function (``dynfit.compare``) does not rebind that name to the submodule."""

    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, types.ModuleType):
            return  # the import system binding the submodule; __getattr__ gives the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "__version__",
    "odesolve", "MixedNorm", "PIController", "PaperRule", "Solution", "SolverError", "Stats",
    "Status",
    "PolynomialField", "MLPField", "ResidualMLPField", "ConvField", "TABatchNorm1d",
    "TABatchNorm2d", "make_norm", "frozen_statistics", "norm_penalty",
    "evaluate", "load_diagnostics", "summarize",
    "lyapunov_spectrum", "valid_prediction_time", "valid_groundtruth_time",
    "fit", "Surrogate", "InferenceSolver", "compare", "load_compare",
    "DelayEmbedding", "mutual_information_delay", "Estimator",
]
