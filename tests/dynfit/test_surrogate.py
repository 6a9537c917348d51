"""Surrogate: generate contract, physical vector field, save/load round trip, bad files."""
import numpy as np
import pytest
import torch

from dynfit.data import Standardizer
from dynfit.surrogate import Surrogate, build_field


def _surrogate(strategy="fehlberg"):
    torch.manual_seed(0)
    field = build_field({"kind": "mlp", "width": 8, "depth": 2, "activation": "tanh"}, 3)
    scaler = Standardizer(np.array([1.0, -2.0, 20.0]), np.array([8.0, 9.0, 7.0]))
    return Surrogate(field, scaler, 0.01, strategy=strategy,
                     field_config={"kind": "mlp", "width": 8, "depth": 2, "activation": "tanh"},
                     provenance={"system": "lorenz63", "seed": 0})


def test_generate_contract():
    sur = _surrogate()
    x0 = np.array([[1.0, 2.0, 20.0], [-5.0, -5.0, 25.0]])
    out = sur.generate(x0, 50)
    assert out.shape == (2, 50, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out[:, 0], x0)
    assert sur.generate(x0[0], 1).shape == (1, 1, 3)
    out2, stats = sur.generate(x0, 50, return_stats=True)
    np.testing.assert_array_equal(out, out2)
    assert stats.interval_substeps.shape == (49, 2) and stats.interval_accepted.dtype == torch.bool
    assert int(stats.n_f_evals_per_example.sum()) >= 3 * 2 * 49 and stats.success
    assert sur.system == "lorenz63" and sur.dim == 3 and sur.dt == 0.01


def test_generation_follows_the_standardised_field():
    # one step of the free run equals the paper's RK3 on the standardised field, mapped back
    from dynfit.solvers import odesolve

    sur = _surrogate()
    x0 = np.array([[1.0, 2.0, 20.0]])
    out, stats = sur.generate(x0, 2, return_stats=True)
    z0 = torch.as_tensor(sur.scaler.forward(x0))
    n = int(stats.interval_substeps[0, 0])
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    z1 = odesolve(sur.field, z0, t, method="rkf23", step_size=1.0 / n).ys[-1].detach().numpy()
    np.testing.assert_allclose(out[0, 1], sur.scaler.inverse(z1)[0], rtol=1e-12)


def test_vector_field_in_physical_units():
    sur = _surrogate()
    x = np.array([[1.0, 2.0, 20.0]])
    z = torch.as_tensor(sur.scaler.forward(x))
    dz = sur.field(torch.zeros(()), z).detach().numpy()
    np.testing.assert_allclose(sur.vector_field(x), dz * sur.scaler.std / sur.dt)
    # finite-difference check: a short free run moves along the vector field
    assert sur.vector_field(x[0]).shape == (3,)


def test_save_load_round_trip(tmp_path):
    sur = _surrogate("black-box")
    path = sur.save(tmp_path / "model.pt")
    back = Surrogate.load(path)
    x0 = np.array([[1.0, 2.0, 20.0]])
    np.testing.assert_array_equal(sur.generate(x0, 30), back.generate(x0, 30))
    assert back.strategy["name"] == "black-box" and back.provenance["seed"] == 0
    assert back.solver == sur.solver and back.solver.eps == 0.1
    assert "torch" in back.provenance["versions"]
    np.testing.assert_array_equal(back.scaler.std, sur.scaler.std)


def test_bad_inputs(tmp_path):
    sur = _surrogate()
    with pytest.raises(ValueError, match="x0 must have shape"):
        sur.generate(np.zeros((2, 4)), 5)
    with pytest.raises(ValueError, match="n_steps"):
        sur.generate(np.zeros(3), 0)
    torch.save({"format": "something else"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a dynfit surrogate"):
        Surrogate.load(tmp_path / "x.pt")
    blob = sur.to_dict()
    blob["field_config"] = {"kind": "mlp", "width": 16, "depth": 2, "activation": "tanh"}
    torch.save(blob, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not fit the field"):
        Surrogate.load(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unknown field kind"):
        build_field({"kind": "transformer"}, 3)
