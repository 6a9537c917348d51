"""Lyapunov spectra (Benettin/QR) against the literature, and the Kaplan-Yorke dimension."""
import numpy as np
import pytest

import systems


@pytest.fixture(scope="module")
def lorenz_spectrum():
    return systems.lyapunov_spectrum("lorenz63", n_steps=200_000, dt=0.01)


def test_lorenz63_spectrum(lorenz_spectrum):
    lam = lorenz_spectrum
    assert lam.shape == (3,) and np.all(np.diff(lam) < 0)
    assert lam[0] == pytest.approx(0.9056, rel=0.02)
    assert abs(lam[1]) < 0.01
    s = systems.get("lorenz63").params
    assert lam.sum() == pytest.approx(-(s["sigma"] + 1 + s["beta"]), rel=0.01)
    assert lam[2] == pytest.approx(-14.5723, rel=0.01)


def test_lorenz63_kaplan_yorke(lorenz_spectrum):
    assert systems.kaplan_yorke_dimension(lorenz_spectrum) == pytest.approx(2.062, abs=0.01)


def test_variants_agree(lorenz_spectrum):
    """Order-5 tangent integration, less frequent QR and k < dim give the same leading exponents."""
    a = systems.lyapunov_spectrum("lorenz63", n_steps=100_000, method="rkf45", renorm_every=5)
    assert a.sum() == pytest.approx(lorenz_spectrum.sum(), rel=1e-3)
    b = systems.lyapunov_spectrum("lorenz63", n_steps=100_000, k=1)
    assert b.shape == (1,) and b[0] == pytest.approx(0.9056, rel=0.03)


def test_sum_follows_parameters():
    """The sum of the spectrum is the (constant) divergence -(sigma + 1 + beta)."""
    lam = systems.lyapunov_spectrum(
        "lorenz63", n_steps=20_000, params={"sigma": 16.0, "beta": 4.0, "rho": 45.92}
    )
    assert lam.sum() == pytest.approx(-21.0, rel=1e-3)


def test_kaplan_yorke_formula():
    assert systems.kaplan_yorke_dimension([0.9, 0.0, -14.5]) == pytest.approx(2 + 0.9 / 14.5)
    # any order
    assert systems.kaplan_yorke_dimension([-14.5, 0.9, 0.0]) == pytest.approx(2 + 0.9 / 14.5)
    assert systems.kaplan_yorke_dimension([-0.1, -1.0]) == 0.0
    assert systems.kaplan_yorke_dimension([0.5, 0.1]) == 2.0
    assert systems.kaplan_yorke_dimension([1.0, -0.5, -2.0]) == pytest.approx(2 + 0.5 / 2.0)
    assert systems.kaplan_yorke_dimension([1.0, -2.0]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="finite"):
        systems.kaplan_yorke_dimension([np.nan, 1.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=4), r"k must be in \[1, 3\], got 4; .lorenz63. has 3 exponents"),
        (dict(n_steps=0), "n_steps"),
        (dict(dt=0.0), "dt"),
        (dict(x0=[1.0, 2.0]), "x0"),
        (dict(method="dopri6"), "unknown method"),
        (dict(params={"rh": 1.0}), "unknown parameter"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        systems.lyapunov_spectrum("lorenz63", **kwargs)
