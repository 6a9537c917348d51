"""DelayEmbedding: delay vectors, names, fit(..., embed=...), the remembered embedding, and
the refusal of 1-D data."""

import numpy as np
import pytest

import dynfit
import systems
from dynfit.embedding import DelayEmbedding, mutual_information_delay
from dynfit.surrogate import Surrogate


def test_delay_vectors_hold_the_delayed_samples():
    emb = DelayEmbedding(lags=3, tau=2)
    x = np.arange(2 * 10 * 2, dtype=float).reshape(2, 10, 2)
    out = emb.transform(x)
    assert out.shape == (2, 10 - 4, 6) and emb.window == 4
    for i in range(out.shape[1]):
        np.testing.assert_array_equal(out[:, i],
                                      np.concatenate([x[:, i + 4], x[:, i + 2], x[:, i]], axis=1))
    np.testing.assert_array_equal(emb.state(x), out[:, -1])
    assert emb.names(["u", "v"]) == ["u", "v", "u_lag2", "v_lag2", "u_lag4", "v_lag4"]
    assert DelayEmbedding.from_dict(emb.to_dict()) == emb


@pytest.mark.parametrize("kw", [{"lags": 1}, {"lags": 2.5}, {"tau": 0}, {"tau": "3"}])
def test_bad_embeddings_are_refused(kw):
    with pytest.raises(ValueError):
        DelayEmbedding(**kw)


def test_too_short_observations_are_refused():
    with pytest.raises(ValueError, match="too short"):
        DelayEmbedding(lags=3, tau=5).transform(np.zeros((1, 10, 1)))


def test_mutual_information_delay_of_lorenz_x():
    """Lorenz'63 x: the first minimum of the mutual information is near 0.16 time units (Fraser &
    Swinney's criterion; the literature's value, measured here as 17 samples of 0.01)."""
    x = systems.simulate("lorenz63", n_traj=4, n_steps=1500, dt=0.01, seed=0,
                         transient=10.0).x.values[..., 0]
    assert 12 <= mutual_information_delay(x, max_lag=60) <= 22
    with pytest.raises(ValueError, match="too short"):
        mutual_information_delay(np.zeros(3))


def test_one_dimensional_autonomous_fit_is_refused_with_the_fix():
    x = systems.simulate("lorenz63", n_traj=1, n_steps=60, dt=0.01, seed=0).x[..., :1]
    with pytest.raises(ValueError,
                       match=r"cannot be chaotic|neither oscillate nor be chaotic.*DelayEmbedding"):
        dynfit.fit(x, epochs=1, progress=False)
    with pytest.raises(TypeError, match="embed must be"):
        dynfit.fit(x, embed=3, epochs=1, progress=False)


@pytest.mark.slow
def test_fit_with_embedding_remembers_it_and_forecasts_from_a_history(tmp_path, one_thread):
    data = systems.simulate("lorenz63", n_traj=1, n_steps=80, dt=0.01, seed=0, transient=2.0)
    emb = DelayEmbedding(lags=3, tau=5)
    sur, _ = dynfit.fit(data.x[..., :1], embed=emb, field={"kind": "mlp", "width": 8, "depth": 1},
                        epochs=1, lbfgs_iterations=2, progress=False, prefit=False)
    assert sur.dim == 3 and sur.components == ["x", "x_lag5", "x_lag10"]
    sur.save(tmp_path / "m.pt")
    back = Surrogate.load(tmp_path / "m.pt")
    assert back.embedding == emb and back.components == sur.components
    history = data.x.values[0, :40, :1]  # (T, 1) observed x
    ds = back.forecast(history, 5, on_failure="ignore")
    np.testing.assert_allclose(ds["x"].values[0, 0], emb.state(history)[0], rtol=1e-12)
    np.testing.assert_array_equal(
        ds["x"].values, back.forecast(emb.state(history), 5, on_failure="ignore")["x"].values
    )
    assert back.generate(history[None], 5, on_failure="ignore").shape == (1, 5, 3)
