"""The argument checks of both packages: an alias of :mod:`_dyncore.checks` (the shared base)."""
from _dyncore.checks import (  # noqa: F401
    ArgumentTypeError, boolean, choice, finite_array, float_dtype, integer, positive, real, __all__,
)
