"""Property-based tests (hypothesis) of the public API: for any input, either a valid result or a
documented exception (ValueError / TypeError, and for files OSError), never another exception, never
a hang (small sizes and a deadline), never a file left behind by a failure."""
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import systems
from dynfit import odesolve
from dynfit.config import validate
from dynfit.data import as_trajectories
from dynfit.io import ModelFileError
from dynfit.surrogate import Surrogate, build_field
from dynfit.data import Standardizer
from systems.files import TEMP_PREFIX

DOCUMENTED = (ValueError, TypeError)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=True)
NUMBERS = st.one_of(st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.just(None), st.just("1"), st.booleans())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _no_leftovers(folder: Path):
    left = [
        p.name
        for p in Path(folder).rglob("*")
        if p.name.startswith(TEMP_PREFIX) or ".tmp" in p.name
    ]
    assert not left, left


# ------------------------------------------------------------------ systems.simulate
@FAST
@given(n_traj=NUMBERS, n_steps=NUMBERS, dt=NUMBERS, transient=NUMBERS, noise=NUMBERS,
       method=st.sampled_from(["rkf45", "rk4", "euler", "dopri5", 3]))
def test_simulate_valid_or_documented(n_traj, n_steps, dt, transient, noise, method):
    small = all(
        not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 50
        for v in (n_traj, n_steps)
    )
    if (
        not small
        or (isinstance(dt, float) and math.isfinite(dt) and 0 < dt < 1e-3)
        or (
            isinstance(transient, (int, float))
            and not isinstance(transient, bool)
            and math.isfinite(transient)
            and transient > 5
        )
    ):
        return  # keep each example short; size limits are checked in test_io
    try:
        ds = systems.simulate("lorenz63", n_traj=n_traj, n_steps=n_steps, dt=dt,
                              transient=transient, noise=noise, method=method, seed=0,
                              max_steps=20000)
    except DOCUMENTED:
        return
    except systems.IntegrationError if hasattr(systems, "IntegrationError") else ():
        return
    assert ds.x.shape == (n_traj, n_steps, 3)
    assert np.isfinite(ds.x.values).all()


# ------------------------------------------------------------------ dynfit.odesolve
@FAST
@given(b=st.integers(0, 4), d=st.integers(0, 3),
       t_end=st.one_of(st.floats(-2, 2), st.just(float("nan"))), n_t=st.integers(0, 4),
       method=st.sampled_from(["rkf45", "rkf23", "dopri5", "rk4", "bogus"]),
       step=st.one_of(st.none(), st.floats(-1, 1), st.just(float("nan"))),
       max_steps=st.integers(-1, 50))
def test_odesolve_valid_or_documented(b, d, t_end, n_t, method, step, max_steps):
    from dynfit.solvers.solution import SolverError

    y0 = torch.ones(b, d, dtype=torch.float64)
    t = torch.linspace(0.0, t_end if math.isfinite(t_end) else float("nan"), n_t,
                       dtype=torch.float64)
    try:
        sol = odesolve(lambda t, y: -y, y0, t, method=method, step_size=step, max_steps=max_steps)
    except (*DOCUMENTED, SolverError):
        return
    assert sol.ys.shape == (n_t, b, d)
    assert torch.isfinite(sol.ys).all()


# ------------------------------------------------------------------ data and fit
@FAST
@given(shape=st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 3)),
       scale=st.sampled_from([1.0, 1e200, 1e-300, float("nan"), float("inf")]),
       dt=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.just(True)))
def test_as_trajectories_valid_or_documented(shape, scale, dt):
    x = np.random.default_rng(0).standard_normal(shape) * scale
    try:
        arr, step, _ = as_trajectories(x, dt=dt)
    except DOCUMENTED:
        return
    assert arr.ndim == 3 and arr.shape[0] >= 1 and arr.shape[1] >= 2
    assert np.isfinite(arr).all() and step > 0 and math.isfinite(step)
    assert np.isfinite(Standardizer.fit(arr).std).all() or np.ptp(arr) == 0


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(n=st.integers(0, 3), t=st.integers(0, 6), scale=st.sampled_from([1.0, 1e160, 0.0]),
       epochs=st.sampled_from([0, 1, -1, 1.5]), dt=st.sampled_from([None, 0.01, 0.0, -1.0]))
def test_fit_valid_or_documented(n, t, scale, epochs, dt):
    from dynfit.train import fit

    x = np.random.default_rng(0).standard_normal((n, t, 2)) * scale
    with tempfile.TemporaryDirectory() as tmp:
        try:
            sur, hist = fit(x, dt=dt, field={"kind": "mlp", "width": 4, "depth": 1}, epochs=epochs,
                            lbfgs_iterations=2, progress=False, checkpoint_dir=tmp)
        except DOCUMENTED:
            _no_leftovers(tmp)
            return
        _no_leftovers(tmp)
    assert np.isfinite(sur.scaler.std).all() and (sur.scaler.std > 0).all()
    assert sur.dt > 0 and hist.sizes["epoch"] == epochs


# ------------------------------------------------------------------ Surrogate save / load
@FAST
@given(cut=st.floats(0, 1), flip=st.integers(0, 10**6), extra=st.binary(max_size=64))
def test_damaged_model_files_raise_model_file_error(cut, flip, extra):
    field = build_field({"kind": "mlp", "width": 4, "depth": 1}, 2)
    sur = Surrogate(field, Standardizer(np.zeros(2), np.ones(2)), 0.1,
                    field_config={"kind": "mlp", "width": 4, "depth": 1})
    with tempfile.TemporaryDirectory() as tmp:
        path = sur.save(Path(tmp) / "m.pt")
        data = bytearray(path.read_bytes())
        data = data[: int(cut * len(data))] + extra
        if data:
            data[flip % len(data)] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            again = Surrogate.load(path)
        except ModelFileError:
            return
        finally:
            _no_leftovers(tmp)
        # a flip that lands in an unused byte may leave a valid model: then it must be a finite one
        assert all(torch.isfinite(p).all() for p in again.field.parameters())
        assert again.dt > 0 and np.isfinite(again.scaler.std).all()


# ------------------------------------------------------------------ evaluate
@pytest.fixture(scope="module")
def eval_data():
    return systems.simulate("lorenz63", n_traj=3, n_steps=150, dt=0.01, seed=1, transient=2.0)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(n_starts=st.one_of(st.integers(-1, 2000), st.just(1.5)),
       horizon=st.one_of(st.floats(-1, 3), st.just(float("nan"))),
       thresholds=st.lists(st.one_of(st.floats(-1, 2), st.just(float("nan"))), max_size=3),
       seed=st.integers(-1, 3))
def test_evaluate_valid_or_documented(eval_data, n_starts, horizon, thresholds, seed):
    from dynfit.diagnostics import evaluate

    field = build_field({"kind": "mlp", "width": 4, "depth": 1}, 3)
    sur = Surrogate(field, Standardizer(np.zeros(3), np.ones(3) * 8.0), 0.01,
                    provenance={"system": "lorenz63"})
    try:
        ds = evaluate(sur, eval_data, n_starts=n_starts, horizon_lt=horizon,
                      thresholds=thresholds or 0.4, long_steps=1000, lyapunov_steps=0, seed=seed,
                      groundtruth=False)
    except DOCUMENTED:
        return
    assert ds.sizes["start"] == n_starts
    starts = {tuple(np.round(v, 12)) for v in ds["truth"].values[:, 0]}
    assert len(starts) == n_starts  # drawn without replacement


# ------------------------------------------------------------------ TA-BN
@FAST
@given(b=st.integers(0, 4), f=st.integers(1, 3),
       t=st.one_of(st.floats(-1, 2), st.just(float("nan"))),
       dtype=st.sampled_from([torch.float32, torch.float64]), training=st.booleans())
def test_tabn_valid_or_documented(b, f, t, dtype, training):
    from dynfit.nn.norm import TABatchNorm1d

    layer = TABatchNorm1d(2, t_max=1.0, num_points=3, dtype=torch.float32).train(training)
    try:
        out = layer(t, torch.randn(b, f, dtype=dtype))
    except DOCUMENTED:
        return
    assert out.shape == (b, f) and out.dtype == torch.float32


# ------------------------------------------------------------------ configs
VALUES = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.booleans(),
                   st.text(max_size=5), st.lists(st.integers(), max_size=2), st.just({}))
KEYS = {
    "data": ["n_traj", "n_steps", "dt", "standardize", "split_fraction", "horizon", "path", "nope"],
    "train": ["lr", "epochs", "device", "batch_size", "optimizer", "weight_decay"],
    "field": ["kind", "width", "time_dependent", "dtype"],
    "output": ["dir"],
}


@FAST
@given(section=st.sampled_from(sorted(KEYS)), data=st.data(), value=VALUES)
def test_config_valid_or_documented(section, data, value):
    key = data.draw(st.sampled_from(KEYS[section]))
    try:
        cfg = validate({section: {key: value}})
    except DOCUMENTED:
        return
    v = cfg[section][key]
    if key in ("standardize", "time_dependent"):
        assert isinstance(v, bool)
    if key == "split_fraction":
        assert 0 < v < 1
    if key in ("n_traj", "n_steps", "epochs", "horizon"):
        assert isinstance(v, int) and not isinstance(v, bool) and v >= 1
    if key in ("dt", "lr") and v is not None:
        assert isinstance(v, float) and math.isfinite(v) and v > 0
