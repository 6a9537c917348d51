"""systems.kernels: template groups, generated modules per system and group, the registry's
errors."""
import numpy as np
import pytest

import systems
from systems import kernels
from systems.integrate import kernels as integrator_kernels


def test_each_group_gets_its_own_module_with_its_own_functions():
    s = systems.get("lorenz63")
    integ = integrator_kernels(s, 4)
    lyap = kernels.compile_kernels("lyapunov", s, 4)
    # loaded once per process
    assert integ is not lyap and integ is kernels.compile_kernels("integrate", s, 4)
    assert hasattr(integ, "_ensemble_fixed") and not hasattr(integ, "_benettin")
    assert hasattr(lyap, "_benettin") and not hasattr(lyap, "_ensemble_fixed")
    assert integ._D == lyap._D == 3 and integ._S == lyap._S == 4
    assert integ._rhs is s.rhs and lyap._jac is s.jac
    assert integ.SAFETY == systems.integrate.SAFETY and integ.NONFINITE == int(
        systems.Status.NONFINITE
    )


def test_generated_source_is_the_template_compiled_with_cache():
    src = kernels.template_source("lyapunov")
    assert src.count("@njit(cache=True, nogil=True") == 4 and "def _benettin(" in src
    assert "@template" not in src  # the registering decorator is dropped
    parallel = [
        block
        for block in kernels.template_source("integrate").split("\n\n\n")
        if "parallel=True" in block
    ]
    assert parallel and all("prange" in block for block in parallel)


def test_registry_errors_name_the_fix():
    with pytest.raises(
        ValueError, match=r"no kernel templates registered for group 'nope'; known groups: \["
    ):
        kernels.template_source("nope")
    with pytest.raises(TypeError, match="kernel constant X must be a number or a bool, got str"):
        kernels.define_constants("nope", X="1")


def test_a_new_group_compiles_for_any_system(tmp_path, monkeypatch):
    """A group registered from outside (as integrate and lyapunov do) is generated, compiled and
    called."""
    monkeypatch.setenv("SYSTEMS_KERNEL_DIR", str(tmp_path / "kernels"))
    group = f"test_{tmp_path.name}"  # a group of this test alone
    kernels.define_constants(group, SCALE=2.0)

    @kernels.template(group)
    def scaled_rhs(x, t, p, out):  # noqa: F811  (compiled in the generated module)
        _rhs(x, t, p, out)  # noqa: F821
        for m in range(_D):  # noqa: F821
            out[m] *= SCALE  # noqa: F821

    s = systems.get("rossler")
    mod = kernels.compile_kernels(group, s, 1)
    out = np.empty(3)
    mod.scaled_rhs(s.x0.copy(), 0.0, s.param_array(), out)
    np.testing.assert_allclose(out, 2.0 * s.derivative(s.x0))
    assert list((tmp_path / "kernels").glob(f"_systems_{group}_rossler_d3_s1_*.py"))
