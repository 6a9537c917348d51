"""Weak-form (integral) targets: the identity on clean data, its quadrature order, noise."""
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from dynfit.nn.fields import LibraryField
from dynfit.nn.library import Library
from dynfit.prefit import choose_targets, derivative_targets, prefit
from dynfit.selection import select_library, stlsq
from dynfit.smoothing import noise_level, savgol_derivatives, savgol_window
from dynfit.weakform import WeakForm, bump_function, weak_system, weak_width

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0


def _lorenz(t, x):
    return [SIGMA * (x[1] - x[0]), x[0] * (RHO - x[2]) - x[1], x[0] * x[1] - BETA * x[2]]


def _trajectories(x0s, n, dt, transient=2.0):
    out = []
    for x0 in x0s:
        t = transient + dt * np.arange(n)
        sol = solve_ivp(_lorenz, (0.0, t[-1]), x0, t_eval=t, method="DOP853", rtol=1e-13,
                        atol=1e-13)
        out.append(sol.y.T)
    return np.array(out)


def _true_coef(dt):
    """Lorenz'63 in the degree-2 library of physical states, per sample of spacing dt: (10, 3)."""
    lib = Library(3, {"poly": 2})
    names = lib.term_names(["x", "y", "z"])
    xi = np.zeros((lib.n_terms, 3))
    for name, j, c in (("x", 0, -SIGMA), ("y", 0, SIGMA), ("x", 1, RHO), ("y", 1, -1.0),
                       ("x*z", 1, -1.0), ("x*y", 2, 1.0), ("z", 2, -BETA)):
        xi[names.index(name), j] = c
    return lib, dt * xi


STARTS = [[1.0, 1.0, 20.0], [-3.0, 2.0, 25.0], [5.0, -4.0, 15.0]]


@pytest.fixture(scope="module")
def lorenz():
    """3 Lorenz'63 trajectories of 1200 samples at dt = 0.01, physical units."""
    return _trajectories(STARTS, 1200, 0.01)


def test_test_function_sums_to_one_and_its_derivative_is_exact():
    phi, dphi = bump_function(40, 4)
    assert phi.sum() == pytest.approx(1.0) and phi[0] == phi[-1] == 0.0
    assert dphi[0] == dphi[-1] == 0.0
    # d/dt of C (t (m - t))^p against a central difference of the same polynomial
    c = 1.0 / np.sum((np.arange(41.0) * (40 - np.arange(41.0))) ** 4)
    t, h = np.arange(41.0), 1e-4
    fd = c * (((t + h) * (40 - t - h)) ** 4 - ((t - h) * (40 - t + h)) ** 4) / (2 * h)
    np.testing.assert_allclose(dphi, fd, rtol=1e-6, atol=1e-12 * np.abs(dphi).max())


def test_weak_form_numpy_and_torch_agree_and_differentiate():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2, 100, 3))
    form = WeakForm(100, 20, stride=3)
    a = form.integrate(v)
    vt = torch.tensor(v, requires_grad=True)
    b = form.integrate(vt)
    assert a.shape == (2 * form.n_windows, 3) == tuple(b.shape)
    np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-12)
    # against a direct sum over window k = 5 of trajectory 1
    k = 5
    s = form.stride * k
    np.testing.assert_allclose(a[form.n_windows + k], form.phi @ v[1, s:s + 21], rtol=1e-12)
    b.sum().backward()
    assert vt.grad is not None and torch.isfinite(vt.grad).all()


def test_weak_form_checks_its_inputs():
    with pytest.raises(ValueError, match="width 50"):
        WeakForm(40, 50)
    with pytest.raises(ValueError, match="shape"):
        WeakForm(40, 10).integrate(np.zeros((40, 3)))
    with pytest.raises(ValueError, match="prefit targets"):
        choose_targets(np.zeros((1, 50, 1)), "bogus")
    with pytest.raises(ValueError, match="weak_system"):
        derivative_targets(np.zeros((1, 50, 1)), targets="weak")


def test_clean_lorenz_coefficients_recovered(lorenz):
    lib, xi = _true_coef(0.01)
    g, y, form = weak_system(lorenz, lib, width=60, degree=4)
    fit = stlsq(g, y, 0.0)
    err = np.abs(fit - xi).max() / np.abs(xi).max()
    assert err < 1e-5, err  # quadrature error O(h^4) at degree 4
    # with sparsity, the same terms as the truth
    sparse = stlsq(g, y, 1e-2)
    assert np.array_equal(sparse != 0, xi != 0)


@pytest.mark.parametrize("degree, order", [(2, 2), (4, 4)])
def test_quadrature_error_falls_at_the_expected_order(degree, order):
    """A window of fixed length in time (0.5 time units), sampled ever finer: the weak identity's
    residual with the true coefficients falls like h^degree (even degree; Euler-Maclaurin with
    phi's derivatives vanishing at the window's ends)."""
    errs, hs = [], (0.02, 0.01, 0.005)
    for h in hs:
        z = _trajectories(STARTS[:2], int(round(1.5 / h)) + 1, h)
        lib, xi = _true_coef(h)
        g, y, _ = weak_system(z, lib, width=int(round(0.5 / h)), degree=degree,
                              stride=int(round(0.1 / h)))
        errs.append(np.linalg.norm(g @ xi - y) / np.linalg.norm(y))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.35, (slope, errs)


def test_weak_form_beats_smoothed_derivatives_on_noisy_data(lorenz):
    """At 5% noise (standardised units) the weak-form least-squares field is more accurate than
    the one fitted to Savitzky-Golay derivatives (against the true field on the clean states)."""
    mu, sd = lorenz.reshape(-1, 3).mean(0), lorenz.reshape(-1, 3).std(0)
    z = (lorenz - mu) / sd
    lib = Library(3, {"poly": 2})
    clean = z.reshape(-1, 3)[::5]
    truth = 0.01 * np.array([_lorenz(0, x) for x in lorenz.reshape(-1, 3)[::5]]) / sd
    feats = lib(torch.as_tensor(clean)).numpy()
    ratios = []
    for seed in (1, 2, 3):
        noisy = z + 0.05 * np.random.default_rng(seed).standard_normal(z.shape)
        w = savgol_window(noisy, noise_level(noisy))
        states, derivs = savgol_derivatives(noisy, w)
        sg = stlsq(lib(torch.as_tensor(states)).numpy(), derivs, 0.0)
        g, y, _ = weak_system(noisy, lib, width=weak_width(noisy))
        weak = stlsq(g, y, 0.0)
        e_sg, e_weak = (np.linalg.norm(feats @ c - truth) / np.linalg.norm(truth)
                        for c in (sg, weak))
        ratios.append(e_weak / e_sg)
    assert np.median(ratios) < 0.8, ratios


def test_prefit_weak_targets_fit_a_library_field_with_an_mlp(lorenz):
    mu, sd = lorenz.reshape(-1, 3).mean(0), lorenz.reshape(-1, 3).std(0)
    z = (lorenz - mu) / sd
    noisy = z + 0.02 * np.random.default_rng(4).standard_normal(z.shape)
    assert choose_targets(noisy)["targets"] == "weak"
    assert choose_targets(z)["targets"] == "differences"
    field = LibraryField(3, library={"poly": 2}, width=8, depth=1, dtype=torch.float64)
    info = prefit(field, noisy, targets="auto", iterations=40)
    assert info["targets"] == "weak" and info["weak_width"] >= 8
    assert info["iterations"] > 0 and info["field_error"] < 0.1
    # the neural part is kept only where it lowers the held-out error (it does not fit the noise)
    assert info["prefit_validation"] <= info["prefit_validation_start"]
    if info["prefit_validation"] == info["prefit_validation_start"]:
        assert info["field_error"] == info["field_error_lstsq"]
    # a plain MLP field on "auto" keeps the pointwise smoothed targets
    from dynfit.nn.fields import MLPField

    info = prefit(MLPField(3, width=8, depth=1, dtype=torch.float64), noisy, targets="auto",
                  iterations=20)
    assert info["targets"] == "smoothed"


def test_selection_on_weak_targets_picks_degree_2(lorenz):
    mu, sd = lorenz.reshape(-1, 3).mean(0), lorenz.reshape(-1, 3).std(0)
    z = (lorenz - mu) / sd
    noisy = z + 0.02 * np.random.default_rng(5).standard_normal(z.shape)
    spec, mask, report = select_library(noisy, max_degree=3, targets="auto")
    assert report["targets"] == "weak" and report["chosen"] == "poly2"
    assert report["weak_width"] >= 8 and 0 < report["target_error"] < 1
    assert mask.shape == (10, 3)


def test_prefit_keeps_a_neural_part_that_carries_what_the_library_misses(lorenz):
    """On noisy data, a degree-1 library cannot hold Lorenz'63: the MLP lowers the held-out
    weak-form error by far more than the 10% it must, and is kept."""
    mu, sd = lorenz.reshape(-1, 3).mean(0), lorenz.reshape(-1, 3).std(0)
    z = (lorenz - mu) / sd
    noisy = z + 0.02 * np.random.default_rng(6).standard_normal(z.shape)
    torch.manual_seed(0)
    field = LibraryField(3, library={"poly": 1}, width=16, depth=1, dtype=torch.float64)
    info = prefit(field, noisy, targets="weak", iterations=60)
    assert info["prefit_validation"] < 0.9 * info["prefit_validation_start"], info
    assert info["field_error"] < 0.9 * info["field_error_lstsq"]


def test_clean_data_too_coarse_for_differences_get_weak_targets():
    # HindmarshRose (fast spikes) at 100 samples a period: 8th-order differences err by ~1%,
    # the weak form's integrals do not; Lorenz'63 at dt 0.01 keeps differences
    import systems
    from dynfit.benchmark.protocols import make_problem
    from dynfit.prefit import choose_targets

    lorenz = systems.simulate("lorenz63", n_traj=2, n_steps=600, dt=0.01, seed=1).x.values
    assert choose_targets((lorenz - lorenz.mean((0, 1))) / lorenz.std((0, 1)))["targets"] == \
        "differences"
    hr = make_problem("HindmarshRose", "gilpin", seed=0).train
    info = choose_targets((hr - hr.mean((0, 1))) / hr.std((0, 1)))
    assert info["targets"] == "weak" and info["coarse_sampling"] > 1e-3
