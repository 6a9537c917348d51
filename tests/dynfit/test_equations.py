"""surrogate.equations(): the polynomial library part in physical variables."""

import numpy as np
import pytest
import torch

import dynfit
import systems
from dynfit.data import Standardizer
from dynfit.equations import correction_size, physical_polynomial
from dynfit.prefit import derivative_estimates
from dynfit.surrogate import Surrogate

LORENZ = {
    ((1, 0, 0), 0): -10.0,
    ((0, 1, 0), 0): 10.0,
    ((1, 0, 0), 1): 28.0,
    ((0, 1, 0), 1): -1.0,
    ((1, 0, 1), 1): -1.0,
    ((1, 1, 0), 2): 1.0,
    ((0, 0, 1), 2): -8.0 / 3.0,
}


def _random_poly_surrogate(degree=3, width=0):
    torch.manual_seed(0)
    field = dynfit.PolynomialField(3, degree=degree, width=width, dtype=torch.float64)
    with torch.no_grad():
        field.coef.normal_()
    scaler = Standardizer(np.array([1.0, -2.0, 20.0]), np.array([7.0, 9.0, 8.0]))
    return Surrogate(field, scaler, 0.01, provenance={"components": ["x", "y", "z"]})


def test_physical_polynomial_is_the_physical_field(one_thread):
    """The expanded polynomial evaluated at physical states equals
    dx/dt = std / dt f((x - mean) / std)."""
    sur = _random_poly_surrogate()
    expo, coef = physical_polynomial(sur)
    x = np.random.default_rng(1).normal(size=(50, 3)) * 10
    mono = np.prod(x[:, None, :] ** expo[None, :, :], axis=2)  # (B, K)
    np.testing.assert_allclose(mono @ coef, sur.vector_field(x), rtol=1e-10, atol=1e-8)
    assert expo.shape == (20, 3) and (expo.sum(axis=1) <= 3).all()


def test_equations_text_lists_terms_in_the_data_names(one_thread):
    sur = _random_poly_surrogate(degree=2, width=4)
    text = sur.equations(threshold=0.0)
    lines = text.splitlines()
    assert [ln.split(" =")[0] for ln in lines[1:4]] == ["(x)'", "(y)'", "(z)'"]
    assert "x z" in lines[1] and "MLP correction" in lines[-1]
    assert sur.equations(threshold=1e12).splitlines()[1] == "(x)' = 0"
    ratio, where = correction_size(sur)
    assert ratio == 0.0 and "standard-normal" in where  # the MLP's output layer starts at zero
    with pytest.raises(ValueError, match="threshold"):
        sur.equations(threshold=-1.0)


def test_a_field_without_library_says_so(one_thread):
    sur = Surrogate(
        dynfit.MLPField(2, width=4, depth=1, dtype=torch.float64), Standardizer.identity(2), 0.1
    )
    with pytest.raises(ValueError, match="no term library"):
        sur.equations()


@pytest.mark.slow
@pytest.mark.parametrize("order, bound", [("auto", 3e-8), (10, 1e-7), (8, 3e-6)])
def test_lorenz_default_surrogate_recovers_the_coefficients(one_thread, order, bound):
    """Default field: sigma, rho, beta, the unit coefficients and the absent terms to 3e-8 with the
    default order ("auto": 24; measured 7.8e-9), 1e-7 with order 10 (5.2e-8), 3e-6 with order 8
    (1.4e-6): the error is the differences' truncation error (docs/your_data.md)."""
    data = systems.simulate("lorenz63", n_traj=2, n_steps=400, dt=0.01, seed=0, transient=5.0)
    sur, _ = dynfit.fit(data, epochs=1, progress=False, seed=0, prefit_order=order)
    expo, coef = physical_polynomial(sur)
    truth = np.zeros_like(coef)
    for (e, j), v in LORENZ.items():
        truth[[tuple(r) for r in expo].index(e), j] = v
    assert np.abs(coef - truth).max() < bound
    assert sur.equations(threshold=1e-3).splitlines()[1:4] == [
        "(x)' = -10 x + 10 y",
        "(y)' = 28 x - y - x z",
        "(z)' = -2.667 z + x y",
    ]


def test_least_squares_on_exact_derivatives_recovers_lorenz_to_roundoff():
    """Standardisation and the least squares are not the error: exact model-time derivatives of
    standardised Lorenz states give the physical coefficients to 1e-12; central differences of
    order 8, 10, 12 leave their truncation error, falling with the order."""
    x = systems.simulate("lorenz63", n_traj=2, n_steps=400, dt=0.01, seed=0, transient=5.0).x.values
    mean, std = x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0)
    z = (x - mean) / std
    field = dynfit.PolynomialField(3, degree=2, width=0, dtype=torch.float64)
    expo = dynfit.nn.fields.monomial_exponents(3, 2).numpy()

    def error(states, derivs):
        feats = np.prod(states[:, None, :] ** expo[None], axis=2)
        with torch.no_grad():
            field.coef.copy_(torch.as_tensor(np.linalg.lstsq(feats, derivs, rcond=None)[0]))
        sur = Surrogate(field, Standardizer(mean, std), 0.01)
        e, c = physical_polynomial(sur)
        truth = np.zeros_like(c)
        for (k, j), v in LORENZ.items():
            truth[[tuple(r) for r in e].index(k), j] = v
        return np.abs(c - truth).max()

    s, b, r = 10.0, 8.0 / 3.0, 28.0
    xs = x.reshape(-1, 3)
    f = np.stack(
        [
            s * (xs[:, 1] - xs[:, 0]),
            xs[:, 0] * (r - xs[:, 2]) - xs[:, 1],
            xs[:, 0] * xs[:, 1] - b * xs[:, 2],
        ],
        -1,
    )
    assert error(z.reshape(-1, 3), f * 0.01 / std) < 1e-12
    errs = [error(*derivative_estimates(z, order)) for order in (8, 10, 12)]
    assert errs[0] > 1e-6 > errs[1] > errs[2]
