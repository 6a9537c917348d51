"""The per-trajectory counts of a solve: an alias of :mod:`_dyncore.stats` (the shared base)."""
from _dyncore.stats import Stats, __all__  # noqa: F401
