"""FourierField (kind "fourier"): the features it promises, the registry, a save/load round trip."""
import math

import numpy as np
import pytest
import torch

import systems
from dynfit.nn import FIELD_KINDS, FieldSettings, FourierField, build_field

pytestmark = pytest.mark.usefixtures("one_thread")


def test_features_are_the_random_cosines():
    torch.manual_seed(0)
    f = FourierField(3, features=16, bandwidth=0.5, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    want = torch.cos(x @ f.omega.T + f.phase)
    assert torch.allclose(f.features(x), want, rtol=0, atol=1e-12)
    assert f.omega.shape == (16, 3) and bool(((f.phase >= 0) & (f.phase < 2 * math.pi)).all())
    assert f(torch.tensor(0.0), x).shape == (5, 3)
    assert torch.count_nonzero(f(torch.tensor(0.0), x)) == 0  # readout and correction start at zero


def test_registered_and_built_from_a_config():
    assert FIELD_KINDS["fourier"] is FourierField
    cfg = FieldSettings(kind="fourier", width=0).config()
    f = build_field(cfg | {"features": 8}, 2)
    assert isinstance(f, FourierField) and f.coef.shape == (8, 2) and f.mlp is None
    with pytest.raises(ValueError, match="time-invariant"):
        build_field({"kind": "fourier", "time_dependent": True}, 2)
    with pytest.raises(ValueError, match="bandwidth"):
        build_field({"kind": "fourier", "bandwidth": 0.0}, 2)


def test_gradient_matches_finite_differences():
    torch.manual_seed(1)
    f = FourierField(2, features=8, width=4, depth=1, dtype=torch.float64)
    with torch.no_grad():
        f.coef.normal_()
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: f(torch.tensor(0.0), z), (x,))


def test_fit_and_reload_give_the_same_field(tmp_path):
    import dynfit

    ds = systems.simulate("lorenz63", n_traj=1, n_steps=200, dt=0.01, seed=1)
    sur, _ = dynfit.fit(ds, field={"kind": "fourier", "features": 32, "width": 0}, epochs=1,
                        progress=False, select_by_forecast=False)
    sur.save(tmp_path / "m.pt")
    back = dynfit.Surrogate.load(tmp_path / "m.pt")
    x0 = np.array([1.0, 2.0, 20.0])
    assert np.array_equal(sur.generate(x0, 20), back.generate(x0, 20))
