"""Multiple shooting (dynfit.shooting): segments, noise averaged instead of differentiated, fit's
default on noisy data, bad input."""
import numpy as np
import pytest
import torch

import dynfit
import systems
from dynfit.shooting import held_out_segments, segments, shoot


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small tensors: one torch thread (conftest's one_thread) for every test here."""


def test_segments_are_consecutive_and_share_their_ends():
    z = np.arange(2 * 11 * 1, dtype=float).reshape(2, 11, 1)
    first, tg = segments(z, 4)
    assert first.tolist() == [0, 4]
    assert tg.shape == (5, 4, 1)  # length + 1 samples, N * K segments
    assert tg[:, 0, 0].tolist() == [0, 1, 2, 3, 4] and tg[:, 1, 0].tolist() == [4, 5, 6, 7, 8]
    assert tg[:, 2, 0].tolist() == [11, 12, 13, 14, 15]


def test_held_out_segments_are_a_fifth_by_trajectory_or_along_one():
    assert held_out_segments(5, 3).reshape(5, 3)[:, 0].tolist() == [0, 0, 0, 0, 1]
    assert held_out_segments(1, 10).tolist() == [0] * 8 + [1] * 2
    assert not held_out_segments(1, 1).any()


def test_too_short_for_a_segment_names_the_fix():
    with pytest.raises(ValueError, match="shooting_length"):
        segments(np.zeros((1, 5, 2)), 8)


class _Linear(torch.nn.Module):
    """dz/dt = coef z (a library field with one term per component)."""

    def __init__(self, a):
        super().__init__()
        self.coef = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def features(self, z):
        return z

    def forward(self, t, z):
        return z @ self.coef


def _rotation(n_traj=4, n=201, w=0.1, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    phase = rng.uniform(0, 2 * np.pi, n_traj)[:, None]
    z = np.stack([np.cos(w * t + phase), np.sin(w * t + phase)], axis=-1)
    return z + noise * rng.standard_normal(z.shape), z


def test_shooting_recovers_a_rotation_from_noisy_samples_better_than_its_start():
    # dz/dt = [[0, w], [-w, 0]] z (row-vector convention): 10% noise, start 20% off in w
    w = 0.1
    noisy, clean = _rotation(noise=0.1)
    field = _Linear([[0.0, 0.8 * w], [-0.8 * w, 0.0]])
    info = shoot(field, noisy, clean, length=20, iterations=100)
    est = field.coef.detach().numpy()
    assert abs(est[0, 1] - w) < 0.02 * w and abs(est[1, 0] + w) < 0.02 * w, est
    assert abs(est[0, 0]) < 0.01 * w and abs(est[1, 1]) < 0.01 * w, est
    # the misfit is the noise's (0.1 per component), not more; segments meet
    assert 0.09 < info["shooting_misfit"] < 0.105 and info["shooting_gap"] < 0.02
    assert info["shooting_misfit_start"] > info["shooting_misfit"]
    assert info["shooting_segments"] == 4 * 10 and info["shooting_parameters"] == "all"
    assert info["shooting_kept"] == 1
    assert info["shooting_held_out"] < info["shooting_held_out_start"]


def test_a_non_finite_trial_state_is_an_infinite_loss_not_an_error():
    """L-BFGS line-search trials can make a segment's start state non-finite (DoublePendulum in the
    catalogue): the loss is then infinite, with a gradient, and the forecast error infinite."""
    from dynfit.shooting import _Problem

    _, z = _rotation(n_traj=2, n=101)
    p = _Problem(_Linear([[0.0, 0.1], [-0.1, 0.0]]), z, z, 25, 1e-8, 1.0, 4000, "cpu",
                 torch.float64)
    rows = torch.ones(p.s.shape[0], dtype=torch.bool)
    assert np.isfinite(float(p.loss(rows)))
    with torch.no_grad():
        p.s[1, 0] = float("nan")
    loss = p.loss(rows)
    loss.backward()
    assert float(loss) == np.inf and torch.isfinite(p.s.grad).all()
    assert p.forecast_error(rows) == np.inf


def test_one_trajectory_is_validated_on_its_tail():
    # the held-out fifth is the trajectory's last segments: scored by one run to its end
    w = 0.1
    noisy, clean = _rotation(n_traj=1, n=401, noise=0.1, seed=2)
    field = _Linear([[0.0, 0.8 * w], [-0.8 * w, 0.0]])
    info = shoot(field, noisy, clean, length=20, iterations=60)
    assert info["shooting_kept"] == 1, info
    assert info["shooting_held_out"] < info["shooting_held_out_start"]
    assert abs(float(field.coef.detach()[0, 1]) - w) < 0.05 * w


def test_an_exact_field_on_clean_data_stays_exact():
    _, clean = _rotation()
    field = _Linear([[0.0, 0.1], [-0.1, 0.0]])
    info = shoot(field, clean, clean, length=25, iterations=20)
    assert info["shooting_misfit"] < 1e-7
    np.testing.assert_allclose(field.coef.detach().numpy(), [[0, 0.1], [-0.1, 0]], atol=1e-8)


def test_library_only_leaves_the_other_weights_alone():
    noisy, clean = _rotation(noise=0.05)
    field = _Linear([[0.0, 0.09], [-0.09, 0.0]])
    field.extra = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    shoot(field, noisy, clean, length=20, iterations=20, parameters="library")
    assert torch.equal(field.extra.detach(), torch.ones(3, dtype=torch.float64))
    assert abs(float(field.coef.detach()[0, 1]) - 0.1) < 0.005


def test_bad_input_is_refused_before_any_work():
    noisy, clean = _rotation()
    field = _Linear([[0.0, 0.1], [-0.1, 0.0]])
    with pytest.raises(ValueError, match="shooting_length"):
        shoot(field, noisy, clean, length=1)
    with pytest.raises(ValueError, match="states"):
        shoot(field, noisy, clean[:, :10])
    with pytest.raises(ValueError, match="parameters"):
        shoot(field, noisy, clean, parameters="some")
    with pytest.raises(ValueError, match="shooting_length"):
        dynfit.fit(noisy, shooting_length=1, progress=False)


def _field_error(sur, flow, states):
    truth = np.stack([flow.derivative(x) for x in states])
    return float(np.sqrt(((sur.vector_field(states) - truth) ** 2).mean() / (truth ** 2).mean()))


def test_fit_shoots_on_noisy_data_and_keeps_only_a_field_that_forecasts_better():
    # Lorenz'63, 2% noise: the weak-form pre-fit's field, then shooting; the shot field is kept
    # only if its held-out forecasts are better, otherwise the pre-fit's field stays as it was
    flow = systems.get("lorenz63")
    noisy = systems.simulate(flow, n_traj=2, n_steps=600, dt=0.01, seed=3, noise=0.02,
                             transient=5.0)
    clean = systems.simulate(flow, n_traj=2, n_steps=600, dt=0.01, seed=3, transient=5.0)
    torch.set_num_threads(1)  # numba's OpenMP launch raised it (docs/systems.md, "Threads")
    states = clean.x.values.reshape(-1, 3)[::7]
    kw = {"epochs": 0, "progress": False, "select_by_forecast": False}
    before, h0 = dynfit.fit(noisy, shooting=False, **kw)
    after, h1 = dynfit.fit(noisy, shooting_iterations=20, **kw)
    assert "shooting_misfit" not in h0.attrs
    a = h1.attrs
    assert a["shooting_parameters"] == "library" and a["shooting_iterations"] > 0
    assert a["shooting_segments"] == 2 * 23 and a["shooting_rtol"] == pytest.approx(1e-5)
    if a["shooting_kept"]:
        assert a["shooting_held_out"] < a["shooting_held_out_start"]
        assert 0.015 < a["shooting_misfit"] < 0.025  # the noise level, standardised units
        e0, e1 = _field_error(before, flow, states), _field_error(after, flow, states)
        assert e1 < 1.5 * e0, (e0, e1)
    else:
        assert not a["shooting_held_out"] < a["shooting_held_out_start"]
        np.testing.assert_array_equal(after.vector_field(states), before.vector_field(states))


def test_clean_data_are_not_shot_by_default():
    clean = systems.simulate("lorenz63", n_traj=1, n_steps=300, dt=0.01, seed=1)
    _, hist = dynfit.fit(clean, epochs=0, progress=False, select_by_forecast=False)
    assert "shooting_misfit" not in hist.attrs
