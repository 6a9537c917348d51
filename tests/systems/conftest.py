"""Fixtures shared by the systems tests."""
import numpy as np
import pytest
from numba import njit

import systems


@njit(cache=True)
def _square(x, t, p, out):  # u' = k u^2: u(t) = u0 / (1 - k u0 t), blows up at t = 1 / (k u0)
    out[0] = p[0] * x[0] * x[0]


@pytest.fixture(scope="session")
def blowup():
    """A one-dimensional user System with parameter k whose solutions blow up in finite time."""
    return systems.System(
        name="test_blowup_k", rhs=_square, jac=None, param_names=("k",), params={"k": 1.0},
        components=("u",), x0=np.array([1.0]), dt=0.1,
    )
