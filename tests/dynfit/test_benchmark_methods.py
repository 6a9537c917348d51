"""The benchmark's method adapters: interface, errors, pysindy's sanity check, batched free runs."""

import sys

import numpy as np
import pytest

import systems
from dynfit.benchmark import methods as M

DT = 0.01
NAMES = ["dynfit", "dynfit-mlp", "pysindy", "pysindy-tuned", "esn", "nvar", "torchdiffeq"]


@pytest.fixture(scope="module")
def lorenz():
    return systems.simulate("lorenz63", n_traj=2, n_steps=600, dt=DT, seed=0).x.values


def test_names_and_registry():
    assert M.method_names() == NAMES
    assert list(M.METHODS) == NAMES
    assert M.missing() == {}  # the venv has the bench extra
    assert M.missing(["dynfit", "esn"]) == {}


def test_missing_names_a_method_whose_package_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "pysindy", None)  # import pysindy now raises ImportError
    why = M.missing(["pysindy", "pysindy-tuned", "esn"])
    assert set(why) == {"pysindy", "pysindy-tuned"}
    assert "dynfit[bench]" in why["pysindy"] and "pysindy" in why["pysindy"]
    with pytest.raises(ModuleNotFoundError, match="dynfit\\[bench\\]"):
        M.make("pysindy")


def test_bad_arguments_raise_clear_errors(lorenz):
    with pytest.raises(ValueError, match="'sindy'.*did you mean"):
        M.make("sindy")
    with pytest.raises(ValueError, match="unknown method"):
        M.missing(["nope"])
    with pytest.raises(ValueError, match="variant"):
        M.make("torchdiffeq", variant="fancy")
    with pytest.raises(TypeError, match="no option"):
        M.make("esn", units=10)
    with pytest.raises(ValueError, match="budget"):
        M.make("pysindy", budget=-1.0)
    with pytest.raises(ValueError, match="seed"):
        M.make("pysindy", seed=-3)
    m = M.make("pysindy")
    with pytest.raises(RuntimeError, match="not fitted"):
        m.forecast(lorenz[:, 0], 10)
    with pytest.raises(ValueError, match="shape"):
        m.fit(lorenz[:, :10], DT)  # too short
    with pytest.raises(ValueError, match="shape"):
        m.fit(lorenz[None], DT)  # 4-D
    with pytest.raises(ValueError, match="finite"):
        m.fit(np.where(lorenz > 40, np.nan, lorenz), DT)
    with pytest.raises(ValueError, match="dt"):
        m.fit(lorenz, 0.0)
    m.fit(lorenz, DT)
    with pytest.raises(ValueError, match="starts must have shape"):
        m.forecast(lorenz[:, 0, :2], 10)
    with pytest.raises(ValueError, match="n_steps"):
        m.forecast(lorenz[:, 0], 0)
    with pytest.raises(ValueError, match="history\\[:, -1\\] must equal starts"):
        m.forecast(lorenz[:, 5], 10, history=lorenz[:, :5])
    esn = M.make("esn", quick=True)
    esn.fit(lorenz, DT)
    with pytest.raises(ValueError, match="W >= 20"):
        esn.forecast(lorenz[:, 100], 10)  # a reservoir needs its warm-up


# dynfit's one quick epoch: ~5-12 s here
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n.startswith("dynfit") else n for n in NAMES],
)
def test_each_method_fits_and_forecasts_lorenz(name, lorenz, one_thread):
    m = M.make(name, quick=True, seed=1)
    m.fit(lorenz, DT)
    i = 300
    history = lorenz[:, i - m.history_length + 1 : i + 1]
    pred = m.forecast(lorenz[:, i], 50, history=history)
    assert pred.shape == (2, 50, 3) and pred.dtype == np.float64
    np.testing.assert_array_equal(pred[:, 0], lorenz[:, i])
    assert np.isfinite(pred[:, :5]).all()
    f = m.vector_field()
    if name in ("esn", "nvar"):
        assert f is None
    else:
        assert f(lorenz[0, :4]).shape == (4, 3)
    assert m.settings["method"] == name and "fit_seconds" in m.settings
    import json

    json.dumps(m.settings)  # goes into the results' attrs


@pytest.mark.parametrize("name", ["esn", "nvar", "torchdiffeq", "pysindy-tuned"])
def test_fits_are_reproducible_for_a_seed(name, lorenz, one_thread):
    a, b = M.make(name, quick=True, seed=3), M.make(name, quick=True, seed=3)
    a.fit(lorenz, DT)
    b.fit(lorenz, DT)
    h = lorenz[:, 181:201]
    np.testing.assert_array_equal(
        a.forecast(lorenz[:, 200], 30, h), b.forecast(lorenz[:, 200], 30, h)
    )


def test_pysindy_defaults_recover_lorenz63(lorenz):
    """The issue's sanity check: sigma, rho, beta to 1e-2 relative, the other terms to 5e-2, the
    rest of the degree-2 library exactly zero."""
    m = M.make("pysindy")
    m.fit(lorenz, DT)
    names = m.model.feature_library.get_feature_names()
    coef = {(i, n): c for i in range(3) for n, c in zip(names, m.model.coefficients()[i])}
    sigma, rho, beta = 10.0, 28.0, 8.0 / 3.0
    for key, want, tol in [
        ((0, "x0"), -sigma, 1e-2),
        ((0, "x1"), sigma, 1e-2),
        ((1, "x0"), rho, 1e-2),
        ((2, "x2"), -beta, 1e-2),
        ((1, "x1"), -1.0, 5e-2),
        ((1, "x0 x2"), -1.0, 5e-2),
        ((2, "x0 x1"), 1.0, 5e-2),
    ]:
        assert abs(coef.pop(key) - want) <= tol * abs(want), key
    assert all(c == 0.0 for c in coef.values())


def test_fast_sindy_field_matches_predict():
    import pysindy as ps

    x = systems.simulate("lorenz63", n_traj=1, n_steps=400, dt=DT, seed=2).x.values[0]
    model = ps.SINDy(
        feature_library=M._sindy_library("poly3+fourier2"), optimizer=ps.STLSQ(threshold=1e-3)
    )
    model.fit(x, t=DT)
    f = M._sindy_field(model)
    assert f.__name__ == "fast"
    np.testing.assert_allclose(f(x[:7]), model.predict(x[:7]), rtol=1e-11, atol=1e-9)


def test_batched_reservoir_runs_match_reservoirpy(lorenz):
    """The batched closed loops do reservoirpy's own updates: same numbers as its nodes stepped."""
    esn = M.make("esn", quick=True)
    esn.fit(lorenz, DT)
    z = esn.scaler(lorenz[0, 200:260])
    res, ridge = esn.model["reservoir"], esn.model["readout"]
    res.reset()
    states = res.run(z)
    _, own_states = esn._states(
        {
            "units": res.units,
            "sr": res.sr,
            "lr": res.lr,
            "input_scaling": res.input_scaling,
            "bias": res.bias,
        },
        z[None],
    )
    np.testing.assert_allclose(own_states[0], states[:-1], rtol=1e-12, atol=1e-12)
    s, own = states[-1], [z[-1]]
    for _ in range(4):  # u += readout([state, u]); state <- reservoir(u)
        own.append(own[-1] + ridge.run(np.concatenate([s, own[-1]])[None])[0])
        s = res.step(own[-1])
    np.testing.assert_allclose(
        M.ESNMethod._run(esn.model, z[None], 5)[0], own, rtol=1e-12, atol=1e-12
    )

    nvar = M.make("nvar", quick=True)
    nvar.fit(lorenz, DT)
    z = nvar.scaler(lorenz[1, 300:320])
    node, ridge = nvar.model["nvar"], nvar.model["readout"]
    node.reset()
    node.store = np.zeros_like(node.store)
    feats = node.run(z)[-1]
    own, u = [z[-1]], z[-1]
    for _ in range(4):
        u = u + feats @ ridge.Wout + ridge.bias
        own.append(u)
        feats = node.step(u)
    np.testing.assert_allclose(
        M.NVARMethod._run(nvar.model, z[None], 5)[0], own, rtol=1e-12, atol=1e-12
    )


def test_free_run_isolates_a_blow_up():
    """One start escaping to infinity is NaN from there on; the other integrates exactly
    (dx/dt = -x)."""

    def f(z):
        return np.where(z > 1.5, z**3, -z)

    z0 = np.array([[1.0], [2.0]])
    solve = M._solve_ivp_run(f, 0.1, center=np.zeros(1), bound=1e3)
    out = M._free_run(solve, z0, 30, chunk=7, center=np.zeros(1), bound=1e3)
    np.testing.assert_allclose(out[0, :, 0], np.exp(-0.1 * np.arange(30)), rtol=1e-8)
    assert np.isnan(out[1, -1]).all() and out[1, 0, 0] == 2.0


def test_validation_split_shapes():
    x = np.random.default_rng(0).normal(size=(5, 300, 2))
    v = M.Validation.split(x, history=10, horizon=50, n_starts=6)
    assert v.train.shape == (4, 300, 2)  # one held-out trajectory of five
    assert v.history.shape[1:] == (10, 2) and v.truth.shape[1:] == (51, 2)
    np.testing.assert_array_equal(v.history[:, -1], v.truth[:, 0])
    assert v.score(v.truth) == (1.0, 0.0)
    assert v.score(np.full_like(v.truth, np.nan))[0] == 0.0
    v = M.Validation.split(x[:2], history=1, horizon=50)
    assert v.train.shape == (2, 240, 2) and v.history[:, -1].shape[0] > 0
    assert v.truth.shape[1] - 1 == (300 - 1 - 240) // 2  # half the held-out part


def test_validation_split_denoises_noisy_data_only():
    """Searches score candidates from smoothed starts against a smoothed truth on noisy data
    (the benchmark's test starts are clean), and leave clean data alone."""
    clean = systems.simulate("lorenz63", n_traj=5, n_steps=800, dt=DT, seed=3).x.values
    noisy = clean + 0.05 * clean.std(axis=(0, 1)) * np.random.default_rng(1).standard_normal(
        clean.shape
    )
    v_clean = M.Validation.split(clean, horizon=100)
    v_noisy = M.Validation.split(noisy, horizon=100)
    assert not v_clean.denoised and v_noisy.denoised
    np.testing.assert_array_equal(v_clean.truth, M.Validation.split(clean, horizon=100).truth)
    truth_clean = v_clean.truth  # same split, same windows
    raw = np.abs(M.Validation.split(noisy, horizon=100).train - noisy[:4]).max()
    assert raw == 0.0  # the training part is never touched
    err_raw = np.sqrt(np.mean((noisy[4:][:, :101] - clean[4:][:, :101]) ** 2))
    err_smoothed = np.sqrt(np.mean((v_noisy.truth - truth_clean) ** 2))
    assert err_smoothed < 0.5 * err_raw, (err_smoothed, err_raw)


def test_budget_clock_is_cpu_time(monkeypatch):
    """The budget counts the process's CPU seconds, not wall time (a busy machine must not
    shrink a fit's compute)."""
    now = [10.0]
    monkeypatch.setattr(M.time, "process_time", lambda: now[0])
    clock = M._Clock(5.0)
    now[0] = 13.0
    assert clock.elapsed() == 3.0 and clock.left() == 2.0 and not clock.up()
    now[0] = 15.0
    assert clock.up() and clock.up(0.8)
    assert not M._Clock(None).up() and M._Clock(None).left() == float("inf")


def test_pysindy_tuned_always_tries_the_default_first(lorenz):
    """Tuned >= default on validation by construction: ps.SINDy()'s configuration is the
    search's first free-run candidate, and the chosen one scores at least as well."""
    m = M.make("pysindy-tuned", quick=True)
    m.fit(lorenz, DT)
    log = m.settings["search"]
    assert {k: log[0][k] for k in M.SINDY_DEFAULT} == M.SINDY_DEFAULT
    chosen = next(r for r in log if all(r[k] == v for k, v in m.settings["chosen"].items()))
    assert chosen["score"] >= log[0]["score"]
    assert {r["differentiation"] for r in log} >= {"finite", "finite4"}
