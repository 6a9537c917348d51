"""Diagnostics of chaotic surrogates: VPT, Lyapunov spectra, attractor statistics, evaluate.

Definitions: docs/diagnostics.md and REFERENCES.md section 5.
"""
from .lyapunov import lyapunov_spectrum, system_lyapunov_spectrum
from .reference import DEFAULT_REFERENCE_SOLVERS, ExactSurrogate, integrate, reference_solutions
from .vpt import first_exceedance, normalised_error, valid_groundtruth_time, valid_prediction_time

__all__ = [
    "lyapunov_spectrum", "system_lyapunov_spectrum",
    "DEFAULT_REFERENCE_SOLVERS", "ExactSurrogate", "integrate", "reference_solutions",
    "first_exceedance", "normalised_error", "valid_groundtruth_time", "valid_prediction_time",
]
