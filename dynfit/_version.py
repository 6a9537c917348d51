"""dynfit's version, below the package namespace so that base modules (io) can read it."""
__version__ = "0.1.0"
