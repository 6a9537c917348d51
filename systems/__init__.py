"""systems: a catalogue of chaotic flows, fast integrators, trajectories as xarray."""
__version__ = "0.1.0"

from .system import System, get, names, register  # noqa: E402
from .integrate import (  # noqa: E402
    BlowUpError,
    IntegrationError,
    Solution,
    StepLimitError,
    StepSizeUnderflowError,
    integrate,
)
from .simulate import simulate  # noqa: E402
from .dataset import load, save  # noqa: E402

__all__ = [
    "System",
    "get",
    "names",
    "register",
    "simulate",
    "integrate",
    "Solution",
    "IntegrationError",
    "BlowUpError",
    "StepLimitError",
    "StepSizeUnderflowError",
    "save",
    "load",
    "__version__",
]
