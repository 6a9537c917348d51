"""dysts' flows as Systems (``systems.from_dysts``), and our catalogue checked against dysts.

Every supported flow: our compiled right-hand side against dysts' compiled
``_rhs`` at 10 random points near dysts' initial condition (relative 1e-12),
and the Jacobian we use against central differences of the right-hand side.
Compiling ~110 right-hand sides costs ~0.3 s each, so the Jacobian sweep
runs on the pure-Python twins of the same generated functions, and the
compiled Jacobians and kernels are checked on a sample.
"""
import sys

import numpy as np
import pytest

dysts = pytest.importorskip("dysts", reason="optional extra: pip install 'dynfit[dysts]'")

import systems  # noqa: E402
from systems import dysts as sd  # noqa: E402

SUPPORTED = systems.dysts_names(supported_only=True)
# analytic, FD, phase variable, array params, t-dependent
SAMPLE = ["Lorenz", "Aizawa", "Duffing", "BickleyJet", "Torus"]


def _dysts_object(name):
    import warnings

    import dysts.flows

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(dysts.flows, name)()


def _points(s, obj, rng, n=10):
    """n (state, t) pairs: dysts' initial condition plus 10% of its attractor's spread."""
    std = np.asarray(getattr(obj, "std", np.ones(s.dim)), dtype=float)
    std = std if std.shape == (s.dim,) else np.ones(s.dim)
    return [
        (s.x0 + 0.1 * std * rng.standard_normal(s.dim), float(rng.uniform(0, 10))) for _ in range(n)
    ]


def test_catalogue_size_and_reasons():
    names = systems.dysts_names()
    assert len(names) >= 130
    assert len(SUPPORTED) >= 100
    unsupported = systems.dysts_unsupported()
    assert set(SUPPORTED) == set(names) - set(unsupported)
    assert all(isinstance(r, str) and len(r) > 20 for r in unsupported.values())
    assert "delay" in unsupported["MackeyGlass"]
    assert "discrete map" in unsupported["maps.Henon"]
    assert "Python method" in unsupported["Lorenz96"]


def test_unknown_and_unsupported_names_are_clear():
    with pytest.raises(ValueError, match="close names.*Lorenz"):
        systems.from_dysts("Lornez")
    with pytest.raises(ValueError, match="not supported: delay"):
        systems.from_dysts("MackeyGlass")
    with pytest.raises(ValueError, match="not supported: discrete map"):
        systems.from_dysts("Henon")
    with pytest.raises(TypeError, match="name must be"):
        systems.from_dysts(3)
    with pytest.raises(ValueError, match="unknown parameter"):
        systems.from_dysts("Lorenz", gamma=1.0)


def test_without_dysts_the_error_names_the_extra(monkeypatch):
    sd._catalogue.cache_clear()
    for mod in [m for m in sys.modules if m == "dysts" or m.startswith("dysts.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "dysts", None)
    try:
        with pytest.raises(ImportError, match=r'pip install "dynfit\[dysts\]"'):
            systems.dysts_names()
        with pytest.raises(ImportError, match=r'pip install "dynfit\[dysts\]"'):
            systems.from_dysts("Lorenz")
    finally:
        sd._catalogue.cache_clear()


def test_metadata_comes_from_dysts():
    s = systems.from_dysts("Lorenz")
    obj = _dysts_object("Lorenz")
    assert s.name == "dysts_Lorenz" and s.components == ("x", "y", "z")
    assert s.param_names == ("beta", "rho", "sigma")  # sorted: the order dysts passes them in
    assert dict(s.params) == {k: float(v) for k, v in obj.params.items()}
    np.testing.assert_array_equal(s.x0, obj.ic)
    assert s.dt == obj.dt and s.lyapunov_max == obj.maximum_lyapunov_estimated
    version = sd.dysts_version()
    assert s.metadata["source"] == f"dysts {version}" and f"dysts {version}" in s.lyapunov_citation
    assert s.metadata["jacobian"].startswith("analytic")
    # dysts has no _jac
    assert systems.from_dysts("aizawa").metadata["jacobian"] == "central differences"
    assert systems.from_dysts("lorenz") is not s  # a new System, the same compiled functions
    assert systems.from_dysts("lorenz").rhs is s.rhs
    b = systems.from_dysts("BickleyJet", **{"eps[0]": 0.1})
    assert b.params["eps[0]"] == 0.1 and b.lyapunov_max is None
    assert not systems.from_dysts("Torus").autonomous and systems.from_dysts("Duffing").autonomous


@pytest.mark.parametrize("name", SUPPORTED)
def test_rhs_equals_dysts(name):
    """Our compiled rhs against dysts' compiled _rhs (same arguments as dysts passes)."""
    s = systems.from_dysts(name)
    obj = _dysts_object(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    for x, t in _points(s, obj, rng):
        ref = np.asarray(obj._rhs(*x, t, *obj.param_list), dtype=float).ravel()
        ours = s.derivative(x, t)
        assert np.max(np.abs(ours - ref)) <= 1e-12 * np.max(np.abs(ref)), (name, x, ours, ref)


@pytest.mark.parametrize("name", SUPPORTED)
def test_jacobian_agrees_with_central_differences(name):
    """The Jacobian each System uses (dysts' _jac through our wrapper, else central
    differences), evaluated through the pure-Python twins, against central differences."""
    s = systems.from_dysts(name)
    fns = next(f for k, f in sd._BUILT.items() if k[0] == name)
    p = s.param_array()
    rng = np.random.default_rng(1 + sum(map(ord, name)))
    analytic = s.metadata["jacobian"].startswith("analytic")
    for x, t in _points(s, _dysts_object(name), rng):
        fd = sd.central_differences(fns.rhs_py, x, t, p)
        if analytic:
            J = np.empty((s.dim, s.dim))
            fns.jac_py(x, t, p, J)
            assert np.max(np.abs(J - fd)) <= 1e-5 * max(1.0, np.max(np.abs(fd))), (name, J, fd)
        assert np.all(np.isfinite(fd))


@pytest.mark.parametrize("name", SAMPLE)
def test_compiled_jacobian_sample(name):
    s = systems.from_dysts(name)
    rng = np.random.default_rng(7)
    for x, t in _points(s, _dysts_object(name), rng, n=3):
        fd = sd.central_differences(s.rhs, x, t, s.param_array())
        np.testing.assert_allclose(
            s.jacobian(x, t), fd, rtol=0, atol=1e-5 * max(1.0, np.max(np.abs(fd)))
        )


def test_stored_estimates_set_reference_matched():
    """examples/dysts_lyapunov.py's results (systems/data/dysts_lyapunov.json) reach the Systems."""
    lorenz, rossler = systems.from_dysts("Lorenz"), systems.from_dysts("Rossler")
    assert lorenz.metadata["lyapunov_max_computed"] == pytest.approx(lorenz.lyapunov_max, rel=0.10)
    assert lorenz.reference_matched and not lorenz.note
    # dysts' two-trajectory estimate for Rossler (0.15) is twice the QR value (0.072, and dysts' own
    # QR 0.076)
    assert not rossler.reference_matched and "more than 10%" in rossler.note


# dysts passes jac to DOP853
@pytest.mark.filterwarnings("ignore:The following arguments have no effect")
def test_simulate_matches_dysts_and_records_provenance():
    """Aizawa from dysts' initial condition over one Lyapunov time: our ensemble kernel
    (DOP853, tight tolerance) against dysts' make_trajectory (scipy DOP853), same tolerance."""
    s = systems.from_dysts("Aizawa")
    T = 1.0 / s.lyapunov_max
    n = 101
    ds = systems.simulate(
        s, n_traj=2, n_steps=n, dt=T / (n - 1), x0=s.x0, method="dop853", rtol=1e-11, atol=1e-11
    )
    assert (
        ds.attrs["source"] == f"dysts {sd.dysts_version()}"
        and "dysts" in ds.attrs["lyapunov_citation"]
    )
    obj = _dysts_object("Aizawa")
    obj.dt = T / (n - 1)  # make_trajectory samples at the object's dt when resample=False
    ref = obj.make_trajectory(
        n, resample=False, postprocess=False, method="DOP853", rtol=1e-11, atol=1e-11
    )
    np.testing.assert_allclose(ds.x.values[0], ref, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(ds.x.values[0], ds.x.values[1])


def test_lyapunov_spectrum_of_a_dysts_flow():
    """Lorenz from dysts (its parameters, its Jacobian): the spectrum sums to the trace
    -(sigma + 1 + beta), and the largest exponent is near dysts' estimate."""
    s = systems.from_dysts("Lorenz")
    lam = systems.lyapunov_spectrum(s, n_steps=20_000, dt=0.005)
    p = s.params
    assert lam.sum() == pytest.approx(-(p["sigma"] + 1 + p["beta"]), rel=1e-3)
    assert lam[0] == pytest.approx(s.lyapunov_max, rel=0.15)


# --- our catalogue against dysts ------------------------------------------------------
# our name -> (dysts name, our params -> dysts params, our state -> dysts state at time t)
# A state map other than the identity says where the forms differ (documented in docs/catalogue.md).
def _same(x, t, p):
    return x


def _duffing_state(x, t, p):
    # dysts' Duffing is autonomous with a phase z; cos(z) = sin(omega t) for z = omega t - pi/2
    return np.array([x[0], x[1], p["omega"] * t - np.pi / 2])


CATALOGUE_MATCHES = {
    "lorenz63": ("Lorenz", lambda p: dict(sigma=p["sigma"], rho=p["rho"], beta=p["beta"]), _same),
    "rossler": ("Rossler", lambda p: dict(p), _same),
    "chen": ("Chen", lambda p: dict(p), _same),
    "lu": ("LuChen", lambda p: dict(p), _same),
    "chua": ("Chua", lambda p: dict(p), _same),
    "thomas": ("Thomas", lambda p: dict(a=p["b"], b=1.0), _same),  # dysts: -a x + b sin y
    "halvorsen": ("Halvorsen", lambda p: dict(a=p["a"], b=4.0), _same),  # ours fixes dysts' b = 4
    "aizawa": ("Aizawa", lambda p: dict(p), _same),
    "dadras": ("Dadras", lambda p: dict(p=p["a"], o=p["b"], r=p["c"], c=p["d"], e=p["h"]), _same),
    "rabinovich_fabrikant": (
        "RabinovichFabrikant",
        lambda p: dict(g=p["gamma"], a=p["alpha"]),
        _same,
    ),
    "sprott_b": ("SprottB", lambda p: {}, _same),
    "sprott_c": ("SprottC", lambda p: {}, _same),
    "sprott_d": ("SprottD", lambda p: {}, _same),  # dysts hard-codes a = 3
    "sprott_s": ("SprottS", lambda p: {}, _same),  # dysts hard-codes a = 4
    "rucklidge": ("Rucklidge", lambda p: dict(a=p["kappa"], b=p["lam"]), _same),
    "nose_hoover": ("NoseHoover", lambda p: dict(p), _same),
    "lorenz84": ("Lorenz84", lambda p: dict(a=p["a"], b=p["b"], f=p["F"], g=p["G"]), _same),
    "lorenz_stenflo": (
        "LorenzStenflo",
        lambda p: dict(a=p["a"], b=p["b"], c=p["r"], d=p["s"]),
        _same,
    ),
    "duffing": (
        "Duffing",
        lambda p: dict(alpha=1.0, beta=-1.0, delta=p["delta"], gamma=p["A"], omega=p["omega"]),
        _duffing_state,
    ),
    "ueda": (
        "Duffing",
        lambda p: dict(alpha=1.0, beta=0.0, delta=p["b"], gamma=p["A"], omega=p["omega"]),
        _duffing_state,
    ),  # Ueda's oscillator is Duffing's without the linear term
}


@pytest.mark.parametrize("ours", sorted(CATALOGUE_MATCHES))
def test_catalogue_equations_match_dysts(ours):
    """Our equations at our parameters against dysts' _rhs (uncompiled) given the same
    parameters."""
    name, to_dysts, state = CATALOGUE_MATCHES[ours]
    s = systems.get(ours)
    f = getattr(_dysts_object(name)._rhs, "py_func", _dysts_object(name)._rhs)
    dp = to_dysts(dict(s.params))
    args = [dp[k] for k in sorted(dp)]
    rng = np.random.default_rng(3)
    for _ in range(10):
        x = s.x0 * (1 + 0.1 * rng.standard_normal(s.dim))
        t = float(rng.uniform(0, 10))
        ref = np.asarray(f(*state(x, t, dict(s.params)), t, *args), dtype=float)[: s.dim]
        np.testing.assert_allclose(
            s.derivative(x, t), ref, rtol=1e-12, atol=1e-12 * np.max(np.abs(ref))
        )


def test_lorenz96_matches_dysts_python_rhs():
    """Our compiled Lorenz-96 field at dysts' N and F (called directly: resizing the System
    would relax a new x0, which compiles an integrator) against dysts' Python rhs."""
    from systems import catalogue

    obj = _dysts_object("Lorenz96")
    n = len(obj.ic)
    x = np.random.default_rng(0).standard_normal(n) * 3
    out = np.empty(n)
    catalogue.lorenz96(x, 0.0, np.array([float(n), float(obj.f)]), out)
    np.testing.assert_allclose(out, obj.rhs(x, 0.0), rtol=1e-12)


def test_double_pendulum_against_dysts_and_hamilton():
    """dysts writes the double pendulum in canonical momenta p, ours in angular velocities w,
    p = M(theta) w. dysts' dtheta/dt equals our w; for dp/dt ours (d/dt of M w along our flow)
    equals Hamilton's -dH/dtheta (central differences), while dysts 0.96's differs by up to a
    few percent (its sin(2 (theta1 - theta2)) term is not that of H; see docs/catalogue.md)."""
    s = systems.get("double_pendulum")
    m1, m2, l1, l2, g = (s.params[k] for k in ("m1", "m2", "l1", "l2", "g"))
    f = _dysts_object("DoublePendulum")._rhs.py_func

    def mass(th):
        b = m2 * l1 * l2 * np.cos(th[0] - th[1])
        return np.array([[(m1 + m2) * l1**2, b], [b, m2 * l2**2]])

    def hamiltonian(th, p):
        return (
            0.5 * p @ np.linalg.solve(mass(th), p)
            - (m1 + m2) * g * l1 * np.cos(th[0])
            - m2 * g * l2 * np.cos(th[1])
        )

    rng = np.random.default_rng(5)
    for _ in range(10):
        th, w = rng.uniform(-2, 2, 2), rng.uniform(-2, 2, 2)
        p = mass(th) @ w
        dw = s.derivative(np.r_[th, w])[2:]
        b = m2 * l1 * l2 * np.sin(th[0] - th[1]) * (w[0] - w[1])
        ours_pdot = mass(th) @ dw - b * np.array([w[1], w[0]])
        h = 1e-5
        hamilton = -np.array(
            [(hamiltonian(th + h * e, p) - hamiltonian(th - h * e, p)) / (2 * h) for e in np.eye(2)]
        )
        np.testing.assert_allclose(ours_pdot, hamilton, rtol=1e-7, atol=1e-7)
        ref = f(th[0], th[1], p[0], p[1], 0.0, g, l1, l2, m1, m2)
        np.testing.assert_allclose([ref[0], ref[1]], w, rtol=1e-12, atol=1e-12)
