"""systems: a catalogue of chaotic flows, fast integrators, trajectories as xarray."""
from .system import System, get, names, register

__version__ = "0.1.0"

__all__ = ["System", "get", "names", "register", "__version__"]
