"""Diagnostics of chaotic surrogates: VPT, Lyapunov spectra, attractor statistics, evaluate.

Definitions: docs/diagnostics.md and docs/references.md section 5.
"""

from .dimension import correlation_dimension, correlation_sum
from .evaluate import FORMAT, describe_vpt, evaluate, load_diagnostics, summarize
from .lyapunov import lyapunov_from_data, lyapunov_spectrum, system_lyapunov_spectrum
from .measure import density_divergence, wasserstein
from .reference import DEFAULT_REFERENCE_SOLVERS, ExactSurrogate, integrate, reference_solutions
from .spectrum import power_spectrum, spectrum_distance
from .vpt import (
    first_exceedance,
    normalised_error,
    normalized_error,
    valid_groundtruth_time,
    valid_prediction_time,
)

__all__ = [
    "evaluate", "load_diagnostics", "summarize", "describe_vpt", "lyapunov_spectrum",
    "system_lyapunov_spectrum", "lyapunov_from_data", "valid_prediction_time",
    "valid_groundtruth_time", "normalized_error", "normalised_error", "density_divergence",
    "wasserstein", "power_spectrum", "spectrum_distance", "correlation_dimension",
    "ExactSurrogate", "reference_solutions"
]
