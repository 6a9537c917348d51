"""dynfit: Neural ODE surrogates of dynamical systems, trained with solvers whose inside the loop can see.

One public entry point per job:

- :func:`odesolve` - batched Runge-Kutta(-Fehlberg) solve with per-example statistics
  (importing dynfit also registers ``rkf45`` and ``rkf23`` with torchdiffeq);
- :func:`fit` - train a surrogate, returning it and a per-epoch history Dataset
  (``fit(data)`` alone: the polynomial + MLP field, derivative pre-fit, adaptive rollouts);
- :class:`Surrogate` - a trained model (or a wrapped vector field): generate, forecast (a Dataset),
  equations, physical_field, save, load; :class:`DelayEmbedding` - a state from partial observations;
  :class:`Estimator` - scikit-learn style fit / predict / simulate / score;
  :class:`InferenceSolver` - how it integrates;
- :func:`evaluate`, :func:`lyapunov_spectrum`, :func:`valid_prediction_time` - diagnostics;
- :func:`compare` - several training strategies on the same data and seeds, one Dataset;
- :class:`TABatchNorm1d` and friends - temporal adaptive batch normalization.
"""
__version__ = "0.1.0"

from .solvers import MixedNorm, PaperRule, Solution, SolverError, Stats, Status, odesolve
from .nn import (
    ConvField,
    MLPField,
    PolynomialField,
    ResidualMLPField,
    TABatchNorm1d,
    TABatchNorm2d,
    frozen_statistics,
    make_norm,
    norm_penalty,
)
from .diagnostics import (
    evaluate,
    load_diagnostics,
    lyapunov_spectrum,
    summarize,
    valid_groundtruth_time,
    valid_prediction_time,
)
from .train import fit
from .strategies import InferenceSolver
from .surrogate import Surrogate
from .compare import compare, load_compare
from .embedding import DelayEmbedding, mutual_information_delay
from .estimator import Estimator

__all__ = [
    "__version__",
    "odesolve", "MixedNorm", "PaperRule", "Solution", "SolverError", "Stats", "Status",
    "PolynomialField", "MLPField", "ResidualMLPField", "ConvField", "TABatchNorm1d", "TABatchNorm2d", "make_norm",
    "frozen_statistics", "norm_penalty",
    "evaluate", "load_diagnostics", "summarize",
    "lyapunov_spectrum", "valid_prediction_time", "valid_groundtruth_time",
    "fit", "Surrogate", "InferenceSolver", "compare", "load_compare",
    "DelayEmbedding", "mutual_information_delay", "Estimator",
]
