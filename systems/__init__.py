"""systems: a catalogue of chaotic flows, fast integrators, trajectories as xarray."""
from ._version import __version__  # noqa: E402

import os as _os
import sys as _sys

# numba's OpenMP threading layer sets the process's OpenMP thread count, which torch shares, to its
# own at every parallel launch (every core by default): after a simulation, torch would ignore the
# user's OMP_NUM_THREADS. Cap numba at that limit, which works only before numba is imported
# (docs/systems.md, "Threads").
_limit = _os.environ.get("OMP_NUM_THREADS", "")
if _limit.isdigit() and int(_limit) >= 1 and "numba" not in _sys.modules:
    _os.environ.setdefault("NUMBA_NUM_THREADS", _limit)
del _limit

from .system import System, get, names, register  # noqa: E402
from .status import Status  # noqa: E402
from .stats import Stats  # noqa: E402
from .integrate import (  # noqa: E402
    BlowUpError,
    IntegrationError,
    Solution,
    StepLimitError,
    StepSizeUnderflowError,
)
from .simulate import simulate  # noqa: E402
from .dataset import load, save  # noqa: E402
from .lyapunov import kaplan_yorke_dimension, lyapunov_spectrum  # noqa: E402
# noqa: E402  (dysts imported on first use)
from .dysts import dysts_names, dysts_unsupported, from_dysts

__all__ = [
    "System",
    "get",
    "names",
    "register",
    "simulate",
    "Solution",
    "IntegrationError",
    "BlowUpError",
    "StepLimitError",
    "StepSizeUnderflowError",
    "Status",
    "Stats",
    "lyapunov_spectrum",
    "kaplan_yorke_dimension",
    "from_dysts",
    "dysts_names",
    "dysts_unsupported",
    "save",
    "load",
    "__version__",
]
