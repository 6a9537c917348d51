"""Neural network pieces for vector fields: TA-BN and the comparison norms, deep fields, and the
field registry (kind -> class, ``build_field``; :mod:`dynfit.nn.registry`)."""
from .fields import ACTIVATIONS, ConvField, MLPField, PolynomialField, ResidualMLPField, make_activation
from .fourier import FourierField
from .registry import FIELD_KINDS, FieldSettings, build_field, register_field
from .norm import (
    NORM_KINDS,
    MiniBatchNorm1d,
    MiniBatchNorm2d,
    NoNorm,
    PopBatchNorm1d,
    PopBatchNorm2d,
    TABatchNorm1d,
    TABatchNorm2d,
    frozen_statistics,
    make_norm,
    norm_penalty,
    share_tables,
    statistics_frozen,
)

__all__ = [
    "ACTIVATIONS",
    "ConvField",
    "FourierField",
    "MLPField",
    "PolynomialField",
    "ResidualMLPField",
    "make_activation",
    "FIELD_KINDS",
    "FieldSettings",
    "build_field",
    "register_field",
    "NORM_KINDS",
    "MiniBatchNorm1d",
    "MiniBatchNorm2d",
    "NoNorm",
    "PopBatchNorm1d",
    "PopBatchNorm2d",
    "TABatchNorm1d",
    "TABatchNorm2d",
    "frozen_statistics",
    "make_norm",
    "norm_penalty",
    "share_tables",
    "statistics_frozen",
]
