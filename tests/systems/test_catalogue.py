"""The catalogue: metadata, Jacobians against central differences, overrides, user systems."""
import json
from importlib import resources

import numpy as np
import pytest
from numba import njit

import systems
from systems.system import System, finite_difference_jacobian

NAMES = systems.names()
CATALOGUED = list(json.loads(resources.files("systems").joinpath("data/systems.json").read_text()))
REQUIRED = {
    "description", "rhs", "jac", "param_names", "params", "x0", "dt", "lyapunov_max",
    "lyapunov_citation", "reference_matched", "autonomous",
}


def central_jacobian(system, x, t, rel_step=1e-5):
    """Central differences of system.derivative, step scaled to each |x_j|."""
    n = system.dim
    out = np.empty((n, n))
    for j in range(n):
        h = rel_step * max(1.0, abs(x[j]))
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        out[:, j] = (system.derivative(xp, t) - system.derivative(xm, t)) / (2 * h)
    return out


def points_near_attractor(system, n_points, seed):
    """x0 plus seeded perturbations of 10% of its scale, and seeded times."""
    rng = np.random.default_rng(seed)
    scale = 0.1 * max(1.0, np.abs(system.x0).max())
    for _ in range(n_points):
        x = system.x0 + scale * rng.standard_normal(system.dim)
        if system.name == "chua":  # f is not differentiable at x = +-1: keep 1e-3 away
            while abs(abs(x[0]) - 1.0) < 1e-3:
                x[0] += 0.01
        yield x, float(rng.uniform(0.0, 10.0))


def test_catalogue_size_and_order():
    assert len(CATALOGUED) >= 20
    assert NAMES[0] == "lorenz63"
    for name in [
        "rossler",
        "lorenz96",
        "chen",
        "lu",
        "chua",
        "thomas",
        "halvorsen",
        "aizawa",
        "dadras",
        "rabinovich_fabrikant",
        "sprott_b",
        "sprott_c",
        "rucklidge",
        "nose_hoover",
        "lorenz84",
        "lorenz_stenflo",
        "hindmarsh_rose",
        "double_pendulum",
        "duffing",
    ]:
        assert name in CATALOGUED


@pytest.mark.parametrize("name", CATALOGUED)
def test_metadata_complete(name):
    meta = json.loads(resources.files("systems").joinpath("data/systems.json").read_text())[name]
    assert REQUIRED <= set(meta), REQUIRED - set(meta)
    assert list(meta["params"]) == meta["param_names"] or set(meta["params"]) == set(
        meta["param_names"]
    )
    s = systems.get(name)
    assert s.param_names == tuple(meta["param_names"])  # explicit order, not sorted keys
    assert s.x0.shape == (s.dim,) and np.all(np.isfinite(s.x0))
    assert s.dt > 0 and s.lyapunov_max > 0 and s.lyapunov_citation
    ours = meta["lyapunov_max_computed"]  # our own QR estimate, recorded for every system
    assert ours > 0
    if s.reference_matched:
        assert abs(ours / s.lyapunov_max - 1) <= 0.10 and not s.lyapunov_citation.startswith(
            "computed"
        )
    if not s.reference_matched:
        assert s.note, f"{name} is flagged reference_matched=false without a note saying why"
    assert s.autonomous == (name not in {"duffing", "ueda"})
    assert np.all(np.isfinite(s.derivative(s.x0)))


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_matches_central_differences(name):
    s = systems.get(name)
    worst = 0.0
    for x, t in points_near_attractor(s, 5, seed=1234):
        analytic = s.jacobian(x, t)
        numeric = central_jacobian(s, x, t)
        worst = max(worst, np.max(np.abs(analytic - numeric)) / max(1.0, np.max(np.abs(numeric))))
    assert worst < 1e-6, f"{name}: max relative Jacobian error {worst:.2e}"


def test_nonautonomous_rhs_uses_time():
    s = systems.get("duffing")
    assert not np.allclose(s.derivative(s.x0, 0.0), s.derivative(s.x0, 1.0))
    s = systems.get("lorenz63")
    assert np.array_equal(s.derivative(s.x0, 0.0), s.derivative(s.x0, 5.0))


def test_lorenz63_derivative_by_hand():
    s = systems.get("lorenz63")
    x = np.array([1.0, 2.0, 3.0])
    assert np.allclose(s.derivative(x), [10 * (2 - 1), 1 * (28 - 3) - 2, 1 * 2 - 8 / 3 * 3])


# -- parameters ----------------------------------------------------------------
def test_param_override_changes_rhs_and_drops_reference():
    base = systems.get("lorenz63")
    s = systems.get("lorenz63", rho=35.0)
    assert s.params["rho"] == 35.0 and base.params["rho"] == 28.0
    assert s.param_array().tolist() == [10.0, 35.0, 8.0 / 3.0]
    x = np.array([1.0, 2.0, 3.0])
    assert s.derivative(x)[1] == pytest.approx(1 * (35 - 3) - 2)
    assert s.lyapunov_max is None and s.lyapunov_time is None
    assert systems.get("lorenz63", rho=28.0) is base  # same values: same system
    assert systems.get(base, sigma=11.0).params["sigma"] == 11.0  # a System passes through get


def test_unknown_parameter_lists_close_names():
    with pytest.raises(ValueError, match="sigma"):
        systems.get("lorenz63", sigmaa=3.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_parameter_rejected(bad):
    with pytest.raises(ValueError, match="rho"):
        systems.get("lorenz63", rho=bad)


def test_unknown_system_lists_close_names():
    with pytest.raises(ValueError, match="rossler"):
        systems.get("rosler")
    with pytest.raises(TypeError):
        systems.get(3)


# -- Lorenz-96 ----------------------------------------------------------------------
def test_lorenz96_default_dimension():
    s = systems.get("lorenz96")
    assert s.dim == 40 and s.params["N"] == 40 and s.params["F"] == 8
    assert s.components[0] == "x1" and s.components[-1] == "x40"


@pytest.mark.parametrize("n", [4, 5, 10, 64])
def test_lorenz96_dimension_follows_n(n):
    s = systems.get("lorenz96", N=n)
    assert s.dim == n and s.x0.shape == (n,)
    assert s.components == tuple(f"x{i}" for i in range(1, n + 1))
    assert np.all(np.isfinite(s.x0)) and np.std(s.x0) > 0.5  # relaxed onto the chaotic attractor
    x = np.arange(n, dtype=float)
    d = s.derivative(x)
    i = 2
    assert d[i] == pytest.approx((x[(i + 1) % n] - x[i - 2]) * x[i - 1] - x[i] + 8.0)
    assert np.max(np.abs(s.jacobian(x) - central_jacobian(s, x, 0.0))) < 1e-6 * max(
        1.0, np.abs(x).max()
    )
    assert s.param_array().tolist() == [float(n), 8.0]


@pytest.mark.parametrize("bad", [3, 4.5, -1])
def test_lorenz96_bad_dimension(bad):
    with pytest.raises(ValueError, match="N must be an integer >= 4"):
        systems.get("lorenz96", N=bad)


# -- state validation -----------------------------------------------------------------
@pytest.mark.parametrize(
    "x", [[1.0, 2.0], [[1.0, 2.0, 3.0]], [1.0, np.nan, 2.0], [np.inf, 0.0, 0.0]]
)
def test_bad_state_rejected(x):
    s = systems.get("lorenz63")
    with pytest.raises(ValueError, match="lorenz63: state x"):
        s.derivative(x)
    with pytest.raises(ValueError, match="lorenz63: state x"):
        s.jacobian(x)


# -- user-defined systems ----------------------------------------------------------------
def _lorenz(x, t, p, out):
    out[0] = p[0] * (x[1] - x[0])
    out[1] = x[0] * (p[1] - x[2]) - x[1]
    out[2] = x[0] * x[1] - p[2] * x[2]


def _lorenz_jac(x, t, p, out):
    out[0, 0], out[0, 1], out[0, 2] = -p[0], p[0], 0.0
    out[1, 0], out[1, 1], out[1, 2] = p[1] - x[2], -1.0, -x[0]
    out[2, 0], out[2, 1], out[2, 2] = x[1], x[0], -p[2]


PARAMS = {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}


def test_define_matches_catalogue_and_fd_jacobian():
    ref = systems.get("lorenz63")
    user = System.define(
        "my_lorenz", _lorenz, params=PARAMS, components=["x", "y", "z"], x0=ref.x0, dt=0.01
    )
    assert user.dim == 3 and user.param_names == ("sigma", "rho", "beta")
    assert user.lyapunov_max is None and user.metadata["jacobian"] == "central differences"
    rng = np.random.default_rng(7)
    for _ in range(5):
        x = ref.x0 + rng.standard_normal(3)
        assert np.allclose(user.derivative(x), ref.derivative(x), rtol=0, atol=1e-12)
        # the compiled finite-difference Jacobian (used by tangent dynamics in numba)
        err = np.max(np.abs(user.jacobian(x) - ref.jacobian(x))) / np.max(np.abs(ref.jacobian(x)))
        assert err < 1e-8


def test_define_with_jac_and_dim_and_params_override():
    user = System.define(
        "my_lorenz_j",
        njit(_lorenz),
        params=PARAMS,
        dim=3,
        x0=[1.0, 1.0, 20.0],
        dt=0.01,
        jac=_lorenz_jac,
        lyapunov_max=0.9056,
    )
    assert user.components == ("x1", "x2", "x3") and user.metadata["jacobian"] == "analytic"
    assert user.lyapunov_time == pytest.approx(1 / 0.9056)
    x = np.array([1.0, 2.0, 3.0])
    assert np.allclose(user.jacobian(x), systems.get("lorenz63").jacobian(x))
    assert systems.get(user, rho=30.0).derivative(x)[1] == pytest.approx(1 * (30 - 3) - 2)


def test_finite_difference_jacobian_is_callable_from_numba():
    jac = finite_difference_jacobian(njit(_lorenz))

    @njit
    def use(x, p):
        out = np.empty((3, 3))
        jac(x, 0.0, p, out)
        return out

    x = np.array([1.0, 2.0, 3.0])
    assert np.allclose(
        use(x, np.array([10.0, 28.0, 8.0 / 3.0])), systems.get("lorenz63").jacobian(x), atol=1e-6
    )


@pytest.fixture
def clean_registry(monkeypatch):
    """Registrations made by a test are undone afterwards (other tests iterate names())."""
    import systems.system as module

    monkeypatch.setattr(module, "_REGISTRY", dict(module._REGISTRY))


def test_register_makes_name_work_everywhere(clean_registry):
    user = System.define("Registered_Flow", _lorenz, params=PARAMS, components=["x", "y", "z"],
                         x0=[1.0, 1.0, 20.0], dt=0.01, register=True)
    assert "registered_flow" in systems.names()
    assert systems.get("registered_flow") is user
    assert systems.get("REGISTERED_FLOW", rho=20.0).params["rho"] == 20.0
    with pytest.raises(ValueError, match="catalogued system"):
        systems.register(
            System.define("lorenz63", _lorenz, params=PARAMS, dim=3, x0=[1.0, 1.0, 20.0], dt=0.01)
        )
    with pytest.raises(TypeError, match="System.define"):
        systems.register("lorenz63")


def _plain_python(v):
    return v


def _not_numba(x, t, p, out):
    out[0] = _plain_python(x[0])  # calls an un-jitted Python function: outside nopython mode
    out[1] = 0.0


def _misses_a_component(x, t, p, out):
    out[0] = x[1]


def test_define_rejects_non_numba_rhs():
    with pytest.raises(TypeError, match="numba"):
        System.define("bad", _not_numba, params={}, dim=2, x0=[0.0, 0.0], dt=0.1)


def test_define_rejects_rhs_that_leaves_out_unwritten():
    with pytest.raises(ValueError, match="every component"):
        System.define("bad", _misses_a_component, params={}, dim=2, x0=[0.0, 0.0], dt=0.1)


def test_define_rejects_wrong_jacobian():
    right = njit(_lorenz_jac)

    def wrong(x, t, p, out):
        right(x, t, p, out)
        out[1, 2] += 1.0

    with pytest.raises(ValueError, match="disagrees with central differences"):
        System.define(
            "bad", _lorenz, params=PARAMS, dim=3, x0=[1.0, 1.0, 20.0], dt=0.01, jac=njit(wrong)
        )


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(dim=3, x0=[1.0, 1.0], dt=0.01), ValueError, "x0 must be a finite array of shape"),
        (dict(dim=3, x0=[1.0, np.nan, 1.0], dt=0.01), ValueError, "x0 must be a finite"),
        (
            dict(dim=3, x0=[1.0, 1.0, 1.0], dt=0.0),
            ValueError,
            "dt must be a positive finite number.*sampling step",
        ),
        (dict(x0=[1.0, 1.0, 1.0], dt=0.01), TypeError, "components"),
        (dict(components=["x", "y"], dim=3, x0=[1.0, 1.0, 1.0], dt=0.01), ValueError, "disagrees"),
        (dict(dim=0, x0=[], dt=0.01), ValueError, "dim must be >= 1, got 0"),
    ],
)
def test_define_validates_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        System.define("bad", _lorenz, params=PARAMS, **kwargs)


def test_define_rejects_bad_params():
    with pytest.raises(ValueError, match="'rho'"):
        System.define(
            "bad", _lorenz, params={**PARAMS, "rho": np.nan}, dim=3, x0=[1.0, 1.0, 1.0], dt=0.01
        )
    with pytest.raises(TypeError, match="dict"):
        System.define("bad", _lorenz, params=[10.0, 28.0, 2.0], dim=3, x0=[1.0, 1.0, 1.0], dt=0.01)


def test_system_built_directly_without_jac_gets_compiled_fd_jacobian():
    ref = systems.get("lorenz63")
    raw = System(
        name="raw_lorenz",
        rhs=ref.rhs,
        jac=None,
        param_names=ref.param_names,
        params=ref.params,
        components=ref.components,
        x0=ref.x0,
        dt=0.01,
    )
    assert raw.jac is not None
    x = np.array([1.0, 2.0, 3.0])
    assert np.allclose(raw.jacobian(x), ref.jacobian(x), rtol=0, atol=1e-8)


def test_systems_compare_by_identity():
    s = systems.get("lorenz63")
    assert s == systems.get("lorenz63") and {s: 1}[s] == 1
    assert s != systems.get("lorenz63", rho=30.0)
