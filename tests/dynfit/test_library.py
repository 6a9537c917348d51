"""Feature libraries, LibraryField, the library chosen by the data, noise-robust pre-fit targets."""
import json

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from dynfit.nn.fields import LibraryField, PolynomialField
from dynfit.nn.library import Library, check_spec, spec_n_terms
from dynfit.prefit import derivative_estimates, derivative_targets, prefit
from dynfit.selection import select_library, stlsq
from dynfit.smoothing import noise_is_white, noise_level, savgol_derivatives, savgol_window
from dynfit.surrogate import Surrogate, build_field
from dynfit.data import Standardizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _lorenz(t, x):
    return [10.0 * (x[1] - x[0]), x[0] * (28.0 - x[2]) - x[1], x[0] * x[1] - 8.0 / 3.0 * x[2]]


def _thomas(t, x, b=0.18):
    return [np.sin(x[1]) - b * x[0], np.sin(x[2]) - b * x[1], np.sin(x[0]) - b * x[2]]


def _trajectories(rhs, x0s, n, dt, transient):
    out = []
    for x0 in x0s:
        t = transient + dt * np.arange(n)
        sol = solve_ivp(rhs, (0.0, t[-1]), x0, t_eval=t, method="DOP853", rtol=1e-12, atol=1e-12)
        out.append(sol.y.T)
    return np.array(out)


@pytest.fixture(scope="module")
def lorenz():
    """4 Lorenz'63 trajectories of 1500 samples at dt = 0.01 (physical units) and their scaler."""
    starts = [[1.0, 1.0, 20.0], [-3.0, 2.0, 25.0], [5.0, -4.0, 15.0], [0.5, 3.0, 30.0]]
    x = _trajectories(_lorenz, starts, 1500, 0.01, 5.0)
    return x, Standardizer.fit(x)


@pytest.fixture(scope="module")
def thomas():
    starts = [[0.1, 0.5, -0.3], [1.0, -1.0, 0.5], [-2.0, 0.3, 1.0]]
    x = _trajectories(_thomas, starts, 1200, 0.1, 50.0)
    return x, Standardizer.fit(x)


def test_library_features_and_names():
    spec = {"poly": 2, "trig": [[1.0, 2.0]] * 2, "trig_times": 1, "rational": True}
    lib = Library(2, spec)
    z = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    f = lib(z)[0]
    names = lib.term_names(["x", "y"])
    assert len(names) == lib.n_terms == f.numel() == spec_n_terms(check_spec(spec, 2), 2)
    x, y = 0.3, -0.7
    want = {"1": 1.0, "x": x, "x*y": x * y, "y^2": y * y, "sin(x)": np.sin(x),
            "cos(2*y)": np.cos(2 * y), "y*sin(2*x)": y * np.sin(2 * x),
            "1/(1+x^2)": 1 / (1 + x * x), "x/(1+y^2)": x / (1 + y * y)}
    for name, value in want.items():
        assert float(f[names.index(name)]) == pytest.approx(value, rel=1e-14)
    with pytest.raises(ValueError, match="unknown library key"):
        Library(2, {"poly": 2, "fourier": 3})
    with pytest.raises(ValueError, match="no terms"):
        Library(2, {"poly": 0})


def test_polynomial_field_term_names():
    field = PolynomialField(2, degree=2, width=0)
    assert field.term_names(["x", "y"]) == ["1", "x", "y", "x^2", "x*y", "y^2"]


def test_library_field_save_load_roundtrip(tmp_path):
    cfg = {"kind": "library", "library": {"poly": 1, "trig": [[1.0, 2.0]] * 3}, "width": 8,
           "depth": 1,
           "correction": "residual"}
    field = build_field(cfg, 3, torch.float64)
    torch.manual_seed(0)
    with torch.no_grad():
        field.coef.normal_()
        field.mask.bernoulli_(torch.full_like(field.mask, 0.5))
        field.mlp.out.weight.normal_()
    sur = Surrogate(field, Standardizer.identity(3), 0.1, field_config=cfg)
    back = Surrogate.load(sur.save(tmp_path / "m.pt"))
    x = np.random.default_rng(0).standard_normal((5, 3))
    assert np.array_equal(back.vector_field(x), sur.vector_field(x))
    assert torch.equal(back.field.mask, field.mask)


def test_stlsq_recovers_sparse_coefficients():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((400, 6))
    coef = np.zeros((6, 2))
    coef[1, 0], coef[4, 0], coef[2, 1] = 2.0, -0.5, 1.5
    got = stlsq(feats, feats @ coef + 1e-6 * rng.standard_normal((400, 2)), 1e-3)
    assert np.array_equal(got != 0, coef != 0)
    np.testing.assert_allclose(got, coef, atol=1e-6)


def test_selection_picks_degree_2_on_lorenz_and_recovers_it(lorenz):
    x, scaler = lorenz
    z = scaler.forward(x)
    spec, mask, report = select_library(z, scale=scaler.std)
    assert report["chosen"] == "poly2" and spec["poly"] == 2
    assert not spec["trig"] and not spec["rational"]
    assert report["targets"] == "differences"
    json.dumps(report)  # plain data
    field = LibraryField(3, library=spec, width=0, dtype=torch.float64)
    field.mask.copy_(torch.as_tensor(mask))
    info = prefit(field, z)
    assert info["field_error"] < 1e-6
    # the physical Lorenz field from the standardised coefficients, at random states
    xs = np.random.default_rng(1).uniform([-15, -20, 5], [15, 20, 40], (50, 3))
    with torch.no_grad():
        dz = field(0.0, torch.as_tensor(scaler.forward(xs))).numpy()
    dx = dz * scaler.std / 0.01
    want = np.array([_lorenz(0, v) for v in xs])
    np.testing.assert_allclose(dx, want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_selection_picks_trig_on_a_sine_flow(thomas):
    x, scaler = thomas
    spec, mask, report = select_library(scaler.forward(x), scale=scaler.std)
    assert spec["trig"], report["chosen"]
    assert "trig_phys" in report["chosen"]
    assert spec["poly"] <= 2
    names = Library(3, spec).term_names(["x", "y", "z"])
    active = {names[k] for k in np.flatnonzero(mask.any(axis=1))}
    assert {"x", "y", "z"} <= active  # the -b x terms
    field = LibraryField(3, library=spec, width=0, dtype=torch.float64)
    field.mask.copy_(torch.as_tensor(mask))
    assert prefit(field, scaler.forward(x))["field_error"] < 1e-6


def test_noise_level_within_factor_of_added_noise(lorenz):
    x, scaler = lorenz
    z = scaler.forward(x)
    rng = np.random.default_rng(2)
    for level in (0.01, 0.05):
        est = noise_level(z + level * rng.standard_normal(z.shape))
        assert np.all(est > level / 1.5) and np.all(est < level * 1.5)
        assert noise_is_white(z + level * rng.standard_normal(z.shape)).all()
    assert not noise_is_white(z).any()
    assert np.all(noise_level(z) < 1e-6)


def test_smoothed_derivatives_beat_differences_on_noisy_data(lorenz):
    x, scaler = lorenz
    z = scaler.forward(x)
    noisy = z + 0.05 * np.random.default_rng(3).standard_normal(z.shape)

    def error(states, derivs):  # against the true field at the clean states of the same samples
        return np.linalg.norm(derivs - states) / np.linalg.norm(states)

    _, raw = derivative_estimates(noisy, 8)
    _, exact = derivative_estimates(z, 8)  # accurate to ~1e-7 on clean data
    raw_err = error(exact, raw)
    w = savgol_window(noisy, noise_level(noisy))
    _, smooth = savgol_derivatives(noisy, w)
    p = int(max(w.max(), np.rint(0.7 * w.max()))) // 2
    _, exact_s = derivative_estimates(z[:, p - 4:z.shape[1] - p + 4], 8)
    smooth_err = error(exact_s, smooth)
    assert smooth_err < raw_err / 4, (smooth_err, raw_err)
    states, derivs, info = derivative_targets(noisy)
    assert info["targets"] == "smoothed" and info["windows"] == [int(v) for v in w]


def test_prefit_on_clean_data_is_unchanged_by_auto_targets(lorenz):
    x, scaler = lorenz
    z = scaler.forward(x)
    a = PolynomialField(3, degree=2, width=0, dtype=torch.float64)
    b = PolynomialField(3, degree=2, width=0, dtype=torch.float64)
    prefit(a, z)
    info = prefit(b, z, targets="auto")
    assert info["targets"] == "differences"
    assert torch.equal(a.coef, b.coef)


def test_prefit_iterations_checked():
    with pytest.raises(ValueError, match="prefit iterations"):
        prefit(PolynomialField(1, width=0), np.zeros((1, 20, 1)), iterations=-1)


def test_fit_default_field_is_chosen_and_recorded(lorenz, tmp_path):
    import dynfit

    x, _ = lorenz
    sur, hist = dynfit.fit(x[:, :600], dt=0.01, epochs=0, progress=False, prefit_iterations=20)
    assert sur.field_config["kind"] == "library" and hist.attrs["library"] == "poly2"
    report = json.loads(hist.attrs["library_selection"])
    assert report["chosen"] == "poly2" and len(report["candidates"]) >= 5
    assert all(isinstance(hist.attrs[k], (str, int, float)) for k in
               ("library", "library_terms", "library_active_terms", "noise_estimate",
                "prefit_targets"))
    assert sur.provenance["library"] == "poly2"
    assert hist.attrs["prefit_field_error"] < 1e-5
    back = dynfit.Surrogate.load(sur.save(tmp_path / "m.pt"))
    states = x[0, :5]
    assert np.array_equal(back.vector_field(states), sur.vector_field(states))
    # an explicit config still builds the fixed polynomial field
    sur2, _ = dynfit.fit(x[:, :600], dt=0.01, epochs=0, progress=False,
                         field={"kind": "poly", "degree": 2},
                         prefit_iterations=0)
    assert type(sur2.field).__name__ == "PolynomialField"


def test_fit_on_noisy_data_uses_weak_targets_and_reports_the_noise(lorenz):
    import dynfit

    x, scaler = lorenz
    noisy = x + 0.02 * scaler.std * np.random.default_rng(4).standard_normal(x.shape)
    _, hist = dynfit.fit(noisy[:, :800], dt=0.01, epochs=0, progress=False, prefit_iterations=0)
    assert hist.attrs["prefit_targets"] == "weak" and hist.attrs["noisy_data"] == 1
    assert hist.attrs["prefit_weak_width"] >= 8
    assert 0.02 / 1.5 < hist.attrs["noise_estimate"] < 0.02 * 1.5
    assert hist.attrs["library"] == "poly2"


def test_smoothed_window_starts_are_closer_to_the_clean_states(lorenz, monkeypatch):
    import dynfit
    import dynfit.train as train
    from dynfit.smoothing import smoothed_states

    x, scaler = lorenz
    x = x[:, :800]
    noisy = x + 0.05 * scaler.std * np.random.default_rng(5).standard_normal(x.shape)
    w = savgol_window(scaler.forward(noisy), noise_level(scaler.forward(noisy)))
    smooth = smoothed_states(noisy, w)  # every sample, the ends included
    for part in (slice(None), slice(0, 5), slice(-5, None)):
        assert (np.abs(smooth - x)[:, part].mean() < 0.8 * np.abs(noisy - x)[:, part].mean())
    seen = []

    def spy(data, **kw):
        out = make_windows(data, **kw)
        seen.append((np.asarray(data), out))
        return out

    make_windows = train.make_windows
    monkeypatch.setattr(train, "make_windows", spy)
    kw = {"dt": 0.01, "epochs": 1, "progress": False, "prefit_iterations": 0,
          "lbfgs_iterations": 1, "horizon": 4}
    _, hist = dynfit.fit(noisy, epochs=0, **{k: v for k, v in kw.items() if k != "epochs"})
    assert hist.attrs["noisy_data"] == 1 and hist.attrs["window_starts"] == "observed"
    monkeypatch.setattr(train, "_SMOOTH_WINDOW_STARTS", True)  # off by default: docs/training.md
    _, hist = dynfit.fit(noisy, **kw)
    assert hist.attrs["window_starts"] == "smoothed"
    (raw, w_raw), (starts, w_s) = seen[:2]
    assert raw is noisy or np.array_equal(raw, noisy)
    clean = train.make_windows(x, horizon=w_s.horizon, stride=w_s.horizon, scaler=w_s.scaler,
                               dt=0.01)
    assert w_s.x0.shape == clean.x0.shape
    err_s, err_raw = np.abs(w_s.x0 - clean.x0).mean(), np.abs(w_raw.x0 - clean.x0).mean()
    assert err_s < 0.6 * err_raw, (err_s, err_raw)
    # clean data: the observed samples, untouched
    seen.clear()
    _, hist = dynfit.fit(x, **kw)
    assert hist.attrs["noisy_data"] == 0 and hist.attrs["window_starts"] == "observed"
    assert all(np.array_equal(data, x) for data, _ in seen)
