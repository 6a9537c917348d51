"""The version of ``systems`` (below every module, so that provenance reads it without a cycle)."""
__version__ = "0.1.0"
