"""Neural network pieces for vector fields: TA-BN (:mod:`~dynfit.nn.tabn`, read side by side by
:mod:`~dynfit.nn.tabn_tables`) and the comparison norms (:mod:`~dynfit.nn.baseline_norms`), norms
by name (:mod:`~dynfit.nn.norm`), deep fields, the field registry (kind -> class,
``build_field``; :mod:`dynfit.nn.registry`) and the switch for direct layer calls
(:func:`direct_calls`, :mod:`dynfit.nn.calls`)."""
from .baseline_norms import MiniBatchNorm1d, MiniBatchNorm2d, NoNorm, PopBatchNorm1d, PopBatchNorm2d
from .calls import direct_calls
from .fields import (ACTIVATIONS, ConvField, MLPField, PolynomialField, ResidualMLPField,
                     make_activation)
from .fourier import FourierField
from .registry import FIELD_KINDS, FieldSettings, build_field, register_field
from .norm import NORM_KINDS, make_norm, norm_penalty
from .running_stats import frozen_statistics, statistics_frozen
from .tabn import TABatchNorm1d, TABatchNorm2d
from .tabn_tables import share_tables

__all__ = [
    "ConvField", "FourierField", "MLPField", "PolynomialField", "ResidualMLPField", "FIELD_KINDS",
    "FieldSettings", "build_field", "register_field", "NORM_KINDS", "TABatchNorm1d",
    "TABatchNorm2d", "frozen_statistics", "make_norm", "norm_penalty", "share_tables",
    "direct_calls"
]
