"""Status codes and step-control defaults: an alias of :mod:`_dyncore.status` (the shared base)."""
from _dyncore.status import FAC_MAX, FAC_MIN, SAFETY, SAFETY_PI, Status, __all__  # noqa: F401
