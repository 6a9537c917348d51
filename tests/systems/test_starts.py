"""Starts drawn on the attractor from a few long spin-up chains: spread, decorrelated,
reproducible."""
import numpy as np
import pytest

import systems
from systems.simulate import (
    chain_states,
    gap_time,
    spin_up_time,
    n_chains,
    sample_initial_conditions,
)


def test_chain_count():
    assert [n_chains(n) for n in (1, 3, 8, 9, 256, 257, 1024)] == [1, 3, 8, 8, 8, 9, 32]


def test_same_rng_same_starts_and_all_distinct():
    s = systems.get("lorenz63")
    a = sample_initial_conditions(s, 50, np.random.default_rng(3))
    b = sample_initial_conditions(s, 50, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert len({tuple(v) for v in a}) == 50
    c = sample_initial_conditions(s, 50, np.random.default_rng(4))
    assert not np.allclose(a, c)


def test_gap_is_three_lyapunov_times():
    s = systems.get("lorenz63")
    assert gap_time(s) == pytest.approx(3.0 / s.lyapunov_max)
    assert spin_up_time(s) == pytest.approx(50.0 / s.lyapunov_max)


@pytest.mark.parametrize("name", ["lorenz63", "rossler"])
def test_starts_of_one_chain_are_decorrelated_and_spread_like_the_attractor(name):
    """Consecutive states of a chain: correlation near 0; all states: the attractor's mean and
    spread."""
    s = systems.get(name)
    states = chain_states(s, 256, np.random.default_rng(0), method="rkf45", rtol=1e-9, atol=1e-9)
    assert states.shape == (8, 32, 3)
    a, b = states[:, :-1].reshape(-1, 3), states[:, 1:].reshape(-1, 3)
    lag1 = [abs(np.corrcoef(a[:, i], b[:, i])[0, 1]) for i in range(3)]
    # 248 pairs: sampling noise ~0.06; one Lyapunov time apart gives ~0.5-0.7
    assert max(lag1) < 0.3, lag1
    long = systems.simulate(name, n_traj=4, n_steps=20000, dt=0.01, seed=1)["x"].values.reshape(
        -1, 3
    )
    flat = states.reshape(-1, 3)
    np.testing.assert_allclose((flat.mean(0) - long.mean(0)) / long.std(0), 0.0, atol=0.25)
    np.testing.assert_allclose(flat.std(0) / long.std(0), 1.0, atol=0.25)
