"""Each example script's main() runs in its --quick mode."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_reproduce_allauzen2022_quick(tmp_path):
    mod = _load("reproduce_allauzen2022")
    assert mod.main(["--out", str(tmp_path), "--quick", "--strategies", "black-box,fehlberg"]) == 0
    hist = xr.load_dataset(tmp_path / "history.nc")
    assert set(hist.dims) == {"strategy", "seed", "epoch"}
    assert {"black-box", "fehlberg"} <= set(hist.strategy.values)
    for var in ("loss", "accepted_fraction", "mean_substeps"):
        assert var in hist
    # the paper's pitfall is visible at once: the batch procedure accepts everything
    assert float(hist.accepted_fraction.sel(strategy="black-box").min()) > 0.99
    assert float(hist.accepted_fraction.sel(strategy="fehlberg", epoch=0).max()) < 0.5
    gen = xr.load_dataset(tmp_path / "generation.nc")
    assert set(gen.generation_error.dims) == {"strategy", "seed", "dataset"}
    assert gen.diverged.dtype == bool
    assert np.isfinite(gen.constant_mean_error).all()
    assert gen.density_kl.dims == ("strategy", "seed") and (gen.density_kl >= 0).all()
    assert gen.attrs["density_kl_truth_floor"] >= 0 and gen.attrs["wasserstein_truth_floor"] >= 0
    assert (tmp_path / "training.png").exists() and (tmp_path / "generation.png").exists()


@pytest.mark.slow
def test_lorenz_strategies_quick(tmp_path):
    mod = _load("lorenz_strategies")
    assert mod.main(["--out", str(tmp_path), "--quick", "--strategies", "fehlberg,torchdiffeq",
                     "--seeds", "0,1"]) == 0
    ds = xr.load_dataset(tmp_path / "strategies.nc")
    assert ds.vpt.dims == ("strategy", "seed", "start") and np.isfinite(ds.vpt).all()
    assert ds.seed.values.tolist() == [0, 1]
    assert ds.vpt_exact_field.dims == ("start",) and np.isfinite(ds.vpt_exact_field).all()
    assert (ds.training_n_f_evals > 0).all()


@pytest.mark.slow
def test_continuous_surrogates_quick(tmp_path):
    mod = _load("continuous_surrogates")
    assert mod.main(["--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    ds = xr.load_dataset(tmp_path / "continuous.nc")
    assert ds.vpt.dims == ("seed", "start") and np.isfinite(ds.vpt).all()
    assert np.isfinite(ds.vpt_exact_field).all() and np.isfinite(ds.lambda1).all()
    assert (tmp_path / "table.md").exists() and (tmp_path / "model_seed0.pt").exists()
