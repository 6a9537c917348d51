"""The TA-BN depth study (examples/tabn_depth.py) and its models (examples/tabn_models.py)."""
import importlib.util
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models():
    return _load("tabn_models")


@pytest.fixture(scope="module")
def study():
    return _load("tabn_depth")


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("norm", ["none", "tabn"])
def test_unmixed_classifier_image_and_flat(models, norm):
    torch.manual_seed(3)
    m = models.UnmixedClassifier(1, 10, state_channels=4, width=8, depth=2, norm=norm, num_points=5,
                                 method="rk4", options={"step_size": 0.5}, pool=2)
    logits = m(torch.randn(6, 1, 8, 8))
    assert logits.shape == (6, 10) and m.nfe == 8
    logits.sum().backward()
    assert m.linear.weight.grad is not None
    flat = models.UnmixedClassifier(64, 10, image=False, width=8, depth=3, norm=norm, adjoint=True,
                                    method="dopri5")
    out = flat(torch.randn(5, 64))
    out.pow(2).sum().backward()
    assert out.shape == (5, 10) and all(p.grad is not None for p in flat.parameters())
    assert flat.penalty().item() == 0.0


def test_unmixed_classifier_zero_augmentation_and_bad_input(models):
    m = models.UnmixedClassifier(3, 10, state_channels=5, width=4, depth=1, norm=None)
    x = torch.randn(2, 3, 4, 4)
    h0 = m._augment(x)
    assert h0.shape == (2, 5, 4, 4) and torch.equal(h0[:, :3], x) and not h0[:, 3:].any()
    with pytest.raises(ValueError, match=r"got \(2, 2, 4, 4\)"):
        m(torch.randn(2, 2, 4, 4))
    with pytest.raises(ValueError, match="state_channels must be an int >= in_channels"):
        models.UnmixedClassifier(3, 10, state_channels=2)
    with pytest.raises(ValueError, match="num_classes"):
        models.UnmixedClassifier(3, 0)


@pytest.mark.parametrize("norm", ["none", "bn", "minibatch", "tabn"])
def test_local_field_commutes_with_ring_rotation(models, norm):
    """One MLP at every site: rotating the ring rotates the tendency (in eval mode, any norm)."""
    torch.manual_seed(0)
    f = models.LocalMLPField(width=8, depth=3, norm=norm, num_points=3, dtype=torch.float64)
    f.train()
    f(torch.tensor(0.5), torch.randn(6, 12, dtype=torch.float64))  # fills running statistics
    f.eval()
    x = torch.randn(4, 12, dtype=torch.float64)
    y = f(torch.tensor(0.25), x)
    assert y.shape == (4, 12)
    torch.testing.assert_close(f(torch.tensor(0.25), x.roll(5, 1)), y.roll(5, 1))
    with pytest.raises(ValueError, match=r"\(batch, sites\)"):
        f(torch.tensor(0.0), torch.randn(3, 4, 2))


def test_local_field_can_be_the_lorenz96_tendency(models):
    """The stencil (x_{i-2}, x_{i-1}, x_i, x_{i+1}) holds what the Lorenz96 tendency needs."""
    f = models.LocalMLPField(width=4, depth=1, norm=None, dtype=torch.float64)
    x = torch.randn(3, 10, dtype=torch.float64)
    stencil = torch.stack([x.roll(2, 1), x.roll(1, 1), x, x.roll(-1, 1)], -1)
    want = (x.roll(-1, 1) - x.roll(2, 1)) * x.roll(1, 1) - x + 8.0
    torch.testing.assert_close(
        (stencil[..., 3] - stencil[..., 0]) * stencil[..., 1] - stencil[..., 2] + 8.0, want)
    assert f(torch.tensor(0.0), x).shape == x.shape


def test_exact_field_in_study_coordinates(study):
    """Lorenz96Exact is the true tendency, rescaled to standardised units and one lag of time."""
    exact = study.Lorenz96Exact(mu=2.0, sd=3.0)
    x = torch.randn(2, 40, dtype=torch.float64) * 3 + 2
    f = (x.roll(-1, 1) - x.roll(2, 1)) * x.roll(1, 1) - x + 8.0
    torch.testing.assert_close(exact(0.0, (x - 2) / 3), f * 0.1 / 3)


# ---------------------------------------------------------------- the study


def _fake_cifar(folder, n=8):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(d, fh)


def test_cifar_loader_names_missing_files(study, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        study.cifar_data(str(tmp_path))
    _fake_cifar(tmp_path)
    (xtr, ytr), (xte, yte) = study.cifar_data(str(tmp_path))
    assert xtr.shape == (40, 3, 32, 32) and xte.shape == (8, 3, 32, 32) and ytr.shape == (40,)
    out = tmp_path / "out"
    res = study.main(["--quick", "--out", str(out), "--tasks", "cifar", "--cifar", str(tmp_path),
                      "--depths", "1", "--norms", "none", "tabn", "--solvers", "fixed",
                      "--batch", "8"])
    err = res["dataset"].error.sel(task="cifar")
    assert err.shape == (2, 1, 1, 1, 2) and ((err >= 0) & (err <= 1)).all()
    assert "cifar" in (out / "tabn_depth.md").read_text()


def test_bad_flags_are_refused_before_work(study, tmp_path):
    with pytest.raises(SystemExit):
        study.main(["--out", str(tmp_path), "--tasks", "cifar"])
    with pytest.raises(SystemExit):
        study.main(["--out", str(tmp_path), "--max-epochs", "0"])
    with pytest.raises(SystemExit):
        study.main(["--out", str(tmp_path), "--depths", "0"])
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_quick_study_writes_dataset_tables_and_resumes(study, tmp_path):
    argv = ["--quick", "--out", str(tmp_path), "--tasks", "dynamics", "digits", "--depths", "2",
            "--norms", "bn", "tabn"]
    res = study.main(argv)
    ds = res["dataset"]
    assert set(ds.dims) == {"task", "norm", "depth", "seed", "solver", "eval_solver"}
    for name in ("error", "vpt", "loss", "val_loss", "epochs", "steps", "converged", "wall_time",
                 "time_per_step", "stop_reason"):
        assert name in ds
    assert np.isfinite(ds.error.values).all() and (ds.error.values >= 0).all()
    dyn = ds.vpt.sel(task="dynamics")
    assert np.isfinite(dyn.values).all() and (dyn.values >= 0).all()
    assert np.isnan(ds.vpt.sel(task="digits").values).all()
    exact = json.loads(ds.attrs["exact_field_vpt"])
    assert set(exact) == {"fixed", "adaptive"}
    for name in ("tabn_depth.nc", "tabn_depth.md", "tabn_depth.png"):
        assert (tmp_path / name).stat().st_size > 0
    text = (tmp_path / "tabn_depth.md").read_text()
    assert "Exact Lorenz96 field" in text and "TA-BN / BN wall time per step" in text
    n_runs = len(list((tmp_path / "runs").glob("*.json")))
    # grid (task x norm x solver) + lr tuning + grid tuning
    assert n_runs == 2 * 2 * 2 + 2 * 2 + 2 * 2
    # a rerun finds every result and trains nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    again = study.main(argv)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")} == mtimes
    np.testing.assert_array_equal(again["dataset"].error.values, ds.error.values)
