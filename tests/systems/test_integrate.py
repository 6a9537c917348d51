"""The generic Runge-Kutta integrators: orders, accuracy against scipy, failures, caching."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit
from scipy.integrate import solve_ivp

import systems
from systems.integrate import (
    BlowUpError,
    IntegrationError,
    StepLimitError,
    integrate,
)
from systems.tableaus import TABLEAUS


@njit(cache=True)
def _square(x, t, p, out):  # u' = u^2: u(t) = u0 / (1 - u0 t), blows up at t = 1/u0
    out[0] = x[0] * x[0]


@njit(cache=True)
def _square_jac(x, t, p, out):
    out[0, 0] = 2.0 * x[0]


BLOWUP = systems.System(
    name="test_blowup",
    rhs=_square,
    jac=_square_jac,
    param_names=(),
    params={},
    components=("u",),
    x0=np.array([1.0]),
    dt=0.1,
)


@pytest.fixture(scope="module")
def lorenz():
    return systems.get("lorenz63")


def _scipy(system, x0, t_eval, rtol, atol, method="DOP853"):
    sol = solve_ivp(
        lambda t, x: system.derivative(x, t), (t_eval[0], t_eval[-1]), x0,
        method=method, rtol=rtol, atol=atol, t_eval=t_eval,
    )
    return sol.y.T


@pytest.mark.parametrize("method, order", [("rk4", 4), ("rkf45", 5), ("dopri5", 5), ("rkf23", 3)])
def test_fixed_step_convergence_order(lorenz, method, order):
    """Log-log slope of the error at t=1 against the step size equals the order (within 0.2)."""
    ref = _scipy(lorenz, lorenz.x0, np.array([0.0, 1.0]), 1e-13, 1e-13)[-1]
    hs = np.array([1 / 100, 1 / 200, 1 / 400, 1 / 800])
    errs = []
    for h in hs:
        sol = integrate(
            lorenz, lorenz.x0, [0.0, 1.0], method=method, adaptive=False, substeps=int(round(1 / h))
        )
        errs.append(np.max(np.abs(sol.x[0, -1] - ref)))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.2, (method, errs, slope)


def test_dop853_order_8_on_exact_solution():
    """DOP853 at fixed steps on u' = u^2 (u = 1 / (1 - t)): slope 8 within 0.2."""
    hs = 0.5 / np.array([4, 6, 8, 12])
    errs = [
        abs(
            integrate(
                BLOWUP,
                [1.0],
                [0.0, 0.5],
                method="dop853",
                adaptive=False,
                substeps=int(round(0.5 / h)),
            ).x[0, -1, 0]
            - 2.0
        )
        for h in hs
    ]
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - 8) < 0.2, (errs, slope)


def test_dop853_is_much_more_accurate_at_equal_tolerance(lorenz):
    t = np.linspace(0.0, 5.0, 501)
    ref = _scipy(lorenz, lorenz.x0, t, 1e-13, 1e-13)
    e8 = np.max(
        np.abs(integrate(lorenz, lorenz.x0, t, method="dop853", rtol=1e-10, atol=1e-10).x[0] - ref)
    )
    e5 = np.max(
        np.abs(integrate(lorenz, lorenz.x0, t, method="rkf45", rtol=1e-10, atol=1e-10).x[0] - ref)
    )
    assert e8 < 1e-8 and e8 < e5 / 50


@pytest.mark.parametrize("method", ["rkf45", "dopri5", "dop853"])
@pytest.mark.parametrize("x0", ["default", [-8.0, 7.0, 27.0]])
def test_adaptive_matches_scipy_dop853(lorenz, method, x0):
    """Lorenz'63 at rtol=atol=1e-10 agrees with DOP853 at 1e-12 to 1e-6 over [0, 5]."""
    x0 = lorenz.x0 if x0 == "default" else np.array(x0)
    t = np.linspace(0.0, 5.0, 501)
    ref = _scipy(lorenz, x0, t, 1e-12, 1e-12)
    sol = integrate(lorenz, x0, t, method=method, rtol=1e-10, atol=1e-10)
    assert sol.adaptive
    np.testing.assert_array_equal(sol.t, t)
    np.testing.assert_array_equal(sol.x[0, 0], x0)
    assert np.max(np.abs(sol.x[0] - ref)) < 1e-6
    st = sol.stats
    assert (
        sol.n_accepted[0] > 0
        and st.n_f_evals_per_example[0] >= (TABLEAUS[method].stages - 1) * sol.n_accepted[0]
    )


def test_solution_stats_are_the_shared_type(lorenz):
    """systems and dynfit report one Stats type with one meaning per name (issue 13)."""
    from systems.stats import Stats

    x0 = np.stack([lorenz.x0, lorenz.x0 + 1.0])
    t = np.linspace(0.0, 1.0, 11)
    sol = integrate(lorenz, x0, t, method="rkf45", rtol=1e-8, atol=1e-8)
    st = sol.stats
    assert type(st) is Stats and st.success and st.failed() == {}
    np.testing.assert_array_equal(st.n_steps, st.n_accepted + st.n_rejected)
    np.testing.assert_array_equal(sol.n_accepted, st.n_accepted)
    np.testing.assert_array_equal(sol.n_rejected, st.n_rejected)
    # one trajectory per right-hand-side call: calls = the sum of the per-trajectory evaluations
    assert st.n_f_evals == int(
        st.n_f_evals_per_example.sum()
    ) and st.n_f_evals_per_example.shape == (2,)
    assert st.method == "rkf45" and st.control == "PI"
    with pytest.warns(DeprecationWarning, match="n_f_evals_per_example"):
        np.testing.assert_array_equal(sol.n_f_evals, st.n_f_evals_per_example)
    ds = st.to_xarray()
    assert ds.sizes["example"] == 2 and int(ds.attrs["n_f_evals"]) == st.n_f_evals
    assert set(ds.data_vars) >= {
        "n_steps",
        "n_accepted",
        "n_rejected",
        "status",
        "n_f_evals_per_example",
    }
    fixed = integrate(lorenz, lorenz.x0, t, method="rk4", substeps=2).stats
    assert (
        fixed.n_accepted[0] == 20
        and fixed.n_rejected[0] == 0
        and fixed.n_f_evals_per_example[0] == 80
    )
    assert fixed.control == "fixed" and fixed.n_f_evals == 80
    try:
        import dynfit
    except ImportError:  # systems alone
        return
    assert dynfit.Stats is Stats


def test_error_shrinks_with_tolerance(lorenz):
    t = np.linspace(0.0, 2.0, 201)
    ref = _scipy(lorenz, lorenz.x0, t, 1e-13, 1e-13)
    errs = [
        np.max(np.abs(integrate(lorenz, lorenz.x0, t, rtol=tol, atol=tol).x[0] - ref))
        for tol in (1e-5, 1e-7, 1e-9)
    ]
    assert errs[0] > errs[1] > errs[2]


def test_ensemble_members_are_independent(lorenz):
    """Each trajectory of an ensemble equals its own single solve (per-trajectory step control)."""
    rng = np.random.default_rng(0)
    x0 = lorenz.x0 + rng.normal(size=(5, 3))
    t = np.linspace(0.0, 1.0, 11)
    ens = integrate(lorenz, x0, t, rtol=1e-8, atol=1e-8)
    for i in range(5):
        one = integrate(lorenz, x0[i], t, rtol=1e-8, atol=1e-8)
        np.testing.assert_array_equal(ens.x[i], one.x[0])
        assert ens.n_accepted[i] == one.n_accepted[0]


def test_non_uniform_sample_times(lorenz):
    t = np.array([0.0, 0.013, 0.5, 0.51, 2.0])
    sol = integrate(lorenz, lorenz.x0, t, rtol=1e-11, atol=1e-11)
    ref = _scipy(lorenz, lorenz.x0, t, 1e-13, 1e-13)
    assert np.max(np.abs(sol.x[0] - ref)) < 1e-7


def test_blow_up_names_trajectory_and_time():
    x0 = np.array([[0.1], [1.0]])  # trajectory 1 blows up at t = 1
    with pytest.raises(BlowUpError, match=r"trajectory 1 .*t=1\.") as info:
        integrate(BLOWUP, x0, np.linspace(0.0, 3.0, 31), method="rk4")
    assert info.value.trajectory == 1
    assert 0.9 <= info.value.time <= 1.5


def test_adaptive_blow_up_names_trajectory_and_time(method="rkf45"):
    x0 = np.array([[0.1], [1.0]])
    with pytest.raises(IntegrationError, match=r"trajectory 1 ") as info:
        integrate(BLOWUP, x0, np.linspace(0.0, 3.0, 31), method=method)
    assert info.value.trajectory == 1
    assert 0.9 <= info.value.time <= 1.0 + 1e-9


def test_step_limit(lorenz):
    with pytest.raises(StepLimitError, match=r"trajectory 0 .*max_steps=50") as info:
        integrate(lorenz, lorenz.x0, np.linspace(0.0, 10.0, 11), max_steps=50)
    assert info.value.trajectory == 0 and 0 < info.value.time < 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="euler"), "unknown method 'euler'"),
        (dict(method="rk4", adaptive=True), "cannot adapt"),
        (dict(rtol=0.0), "rtol"),
        (dict(atol=-1.0), "atol"),
        (dict(substeps=0), "substeps"),
        (dict(max_steps=0), "max_steps"),
    ],
)
def test_bad_arguments(lorenz, kwargs, match):
    with pytest.raises(ValueError, match=match):
        integrate(lorenz, lorenz.x0, [0.0, 1.0], **kwargs)


def test_bad_states_and_times(lorenz):
    with pytest.raises(ValueError, match="shape"):
        integrate(lorenz, np.zeros(4), [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN or inf"):
        integrate(lorenz, [np.nan, 0.0, 0.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        integrate(lorenz, lorenz.x0, [0.0, 1.0, 0.5])


def test_plain_python_rhs_is_refused():
    def rhs(x, t, p, out):
        out[0] = -x[0]

    plain = systems.System(
        name="plain",
        rhs=rhs,
        jac=None,
        param_names=(),
        params={},
        components=("u",),
        x0=np.ones(1),
        dt=0.1,
    )
    with pytest.raises(TypeError, match=r"rhs must be a numba-compiled function.*njit"):
        integrate(plain, [1.0], [0.0, 1.0])


@pytest.mark.slow
def test_second_process_loads_kernels_from_cache(lorenz):
    """A fresh process finds the compiled kernels in numba's cache: no recompilation."""
    integrate(lorenz, lorenz.x0, [0.0, 0.1])  # make sure the cache is written
    integrate(lorenz, lorenz.x0, [0.0, 0.1], method="rk4")
    code = textwrap.dedent(
        """
        import systems
        from systems.integrate import integrate, kernels
        s = systems.get("lorenz63")
        integrate(s, s.x0, [0.0, 0.1])
        integrate(s, s.x0, [0.0, 0.1], method="rk4")
        st = [kernels(s, 6)._ensemble_adaptive.stats, kernels(s, 4)._ensemble_fixed.stats]
        print(sum(sum(x.cache_hits.values()) for x in st),
              sum(sum(x.cache_misses.values()) for x in st))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    hits, misses = map(int, out.stdout.split())
    assert hits == 2 and misses == 0, out.stdout + out.stderr


def test_benchmark_script_small_mode(capsys):
    """benchmarks/bench_systems.py runs end to end in a small mode (numbers are not asserted)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_systems.py"
    spec = importlib.util.spec_from_file_location("bench_systems", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert (
        bench.main(
            ["--quick", "--n-traj", "16", "--n-samples", "200", "--n-scipy", "1", "--no-startup"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "speed ratio" in out and "member-steps/s" in out
