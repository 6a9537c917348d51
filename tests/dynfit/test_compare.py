"""dynfit.compare: two strategies on tiny data, the Dataset, the tables, the figures, bad input."""
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import systems
from dynfit.compare import FORMAT, compare, compare_table, load_compare, parse_strategy

TINY_FIELD = {"kind": "mlp", "width": 8, "depth": 2, "activation": "silu"}
TINY_EVAL = {
    "n_starts": 3,
    "horizon_lt": 2.0,
    "long_steps": 1000,
    "lyapunov_steps": 20,
    "lyapunov_starts": 1,
}
RK4 = ("black-box rk4", "torchdiffeq", {"method": "rk4", "step_size": 0.5})


@pytest.fixture(scope="module")
def data():
    train = systems.simulate("lorenz63", n_traj=2, n_steps=120, dt=0.01, seed=1, transient=2.0)
    test = systems.simulate("lorenz63", n_traj=2, n_steps=300, dt=0.01, seed=2, transient=2.0)
    return train, test


@pytest.fixture(scope="module")
def result(data, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("compare")
    train, test = data
    ds = compare(
        train,
        test_data=test,
        strategies=["fehlberg", RK4],
        seeds=(0, 1),
        epochs=2,
        field=TINY_FIELD,
        lbfgs_iterations=2,
        evaluate=TINY_EVAL,
        out=out,
        command="pytest compare",
    )
    return ds, out


def test_dims_variables_and_attrs(result):
    ds, _ = result
    assert list(ds["strategy"].values) == ["fehlberg", "black-box rk4"]
    assert list(ds["strategy_name"].values) == ["fehlberg", "torchdiffeq"]
    assert json.loads(str(ds["strategy_options"].values[1])) == {"method": "rk4", "step_size": 0.5}
    assert ds["vpt"].dims == ("strategy", "seed", "start", "threshold")
    assert ds.sizes == {
        "strategy": 2,
        "seed": 2,
        "start": 3,
        "threshold": 3,
        "exponent": 3,
        "component": 3,
        "epoch": 2,
    }
    assert np.allclose(ds["threshold"], [0.3, 0.4, 0.5])
    assert ds["vpt"].attrs["units"] == "Lyapunov times"
    assert np.isfinite(ds["vpt"]).all() and (ds["vpt"] >= 0).all()
    # VPT grows with the threshold, for every run
    med = ds["vpt_median"].values
    assert (np.diff(med, axis=-1) >= 0).all()
    for var in (
        "density_divergence",
        "spectrum_distance",
        "training_n_f_evals",
        "training_wall_time",
        "final_loss",
        "loss",
        "accepted_fraction",
        "mean_substeps",
        "lyapunov_exponents",
    ):
        assert var in ds and "units" in ds[var].attrs
    assert (ds["training_n_f_evals"] > 0).all() and (ds["epochs_run"] == 2).all()
    # training cost is the sum over the epochs of the curves
    assert np.allclose(ds["training_n_f_evals"], ds["n_f_evals"].sum("epoch"))
    # fixed-step RK4 with step 0.5: two substeps per interval at generation, never rejected
    assert float(ds["rollout_mean_substeps"].sel(strategy="black-box rk4").min()) == 2.0
    assert (
        ds.attrs["format"] == FORMAT
        and ds.attrs["system"] == "lorenz63"
        and ds.attrs["epochs"] == 2
    )
    assert (
        ds.attrs["best_strategy"] in ("fehlberg", "black-box rk4")
        and ds.attrs["command"] == "pytest compare"
    )
    assert json.loads(ds.attrs["evaluate_options"])["n_starts"] == 3


def test_same_seed_same_start_data(result, data):
    ds, _ = result
    # the ground-truth time is computed once: the same starts serve every strategy
    assert ds["valid_groundtruth_time"].dims == ("start", "threshold")
    assert np.isfinite(ds["valid_groundtruth_time"]).all()


def test_files_round_trip_and_tables(result):
    ds, out = result
    for name in ("compare.nc", "best_diagnostics.nc", "table.md", "table.csv", "training.png",
                 "error_vs_evaluations.png", "vpt.png", "attractor_best.png"):
        assert (out / name).stat().st_size > 200, name
    back = load_compare(out / "compare.nc")
    xr.testing.assert_allclose(
        back[["vpt", "final_loss", "loss"]], ds[["vpt", "final_loss", "loss"]]
    )
    assert len(list((out / "models").glob("*.pt"))) == 4
    md = (out / "table.md").read_text()
    assert "pytest compare" in md and "| fehlberg |" in md and "| black-box rk4 |" in md
    assert "Lyapunov times" in md
    with open(out / "table.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {r["strategy"] for r in rows} == {"fehlberg", "black-box rk4"}
    r = next(r for r in rows if r["strategy"] == "fehlberg" and r["seed"] == "1")
    assert float(r["vpt_median_0.4"]) == pytest.approx(
        float(ds["vpt_median"].sel(strategy="fehlberg", seed=1, threshold=0.4))
    )
    table = compare_table(ds)
    assert [row["strategy"] for row in table] == ["fehlberg", "black-box rk4"]
    assert table[1]["vpt_median_0.4"] == pytest.approx(
        float(np.median(ds["vpt"].sel(strategy="black-box rk4", threshold=0.4)))
    )


def test_strategy_entries():
    assert parse_strategy("batch") == ("batch", "batch", {})
    assert parse_strategy(("rk4", "torchdiffeq", {"method": "rk4"})) == (
        "rk4",
        "torchdiffeq",
        {"method": "rk4"},
    )
    assert parse_strategy({"label": "d5", "name": "torchdiffeq", "method": "dopri5"}) == \
        ("d5", "torchdiffeq", {"method": "dopri5"})


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"strategies": []}, ValueError, "strategies is empty"),
        ({"strategies": ["fehlbreg"]}, ValueError, "did you mean 'fehlberg'"),
        ({"strategies": ["black-box rk4"]}, ValueError, "unknown strategy 'black-box rk4'"),
        (
            {"strategies": [("x", "torchdiffeq", {"method": "rk5"})]},
            ValueError,
            "unknown torchdiffeq method",
        ),
        ({"strategies": ["fehlberg", "fehlberg"]}, ValueError, "distinct"),
        ({"strategies": [3]}, TypeError, "strategy entry"),
        ({"strategies": ["fehlberg"], "seeds": []}, ValueError, "seeds"),
        ({"strategies": ["fehlberg"], "epochs": 0}, ValueError, "epochs"),
        (
            {"strategies": ["fehlberg"], "evaluate": {"n_start": 3}},
            ValueError,
            "unknown evaluate option",
        ),
        ({"strategies": ["fehlberg"], "checkpoint_dir": "x"}, ValueError, "set by compare"),
        (
            {"strategies": ["fehlberg"], "lr": "fast"},
            ValueError,
            r"lr must be a positive finite number \(> 0\), got 'fast'",
        ),
        ({"strategies": ["fehlberg"], "lbfgs_iteration": 3}, TypeError, "did you mean"),
    ],
)
def test_bad_arguments(data, kwargs, error, match):
    train, test = data
    with pytest.raises(error, match=match):
        compare(train, test_data=test, **kwargs)


def test_bad_data(data):
    train, test = data
    with pytest.raises(TypeError, match="xarray.Dataset"):
        compare(train["x"].values, strategies=["fehlberg"])
    with pytest.raises(ValueError, match="dims"):
        compare(train.rename({"trajectory": "run"}), strategies=["fehlberg"])
    rossler = systems.simulate("rossler", n_traj=1, n_steps=300, dt=0.01, seed=0)
    with pytest.raises(ValueError, match="rossler"):
        compare(train, test_data=rossler, strategies=["fehlberg"])
    with pytest.raises(ValueError, match="one trajectory"):
        compare(train.isel(trajectory=[0]), strategies=["fehlberg"])
    with pytest.raises(ValueError, match="horizon_lt"):
        compare(train, test_data=test, strategies=["fehlberg"], evaluate={"horizon_lt": 50.0})
    # the old name of horizon_lt still reads, with a DeprecationWarning; both at once: refused
    with pytest.warns(DeprecationWarning, match="horizon_lt"), pytest.raises(ValueError,
                                                                            match="50"):
        compare(train, test_data=test, strategies=["fehlberg"], evaluate={"horizon": 50.0})
    with pytest.raises(ValueError, match="alone"):
        compare(train, test_data=test, strategies=["fehlberg"],
                evaluate={"horizon": 5.0, "horizon_lt": 5.0})


def test_load_compare_rejects_other_files(tmp_path, data):
    p = tmp_path / "x.nc"
    data[0].to_netcdf(p)
    with pytest.raises(ValueError, match="not a dynfit compare Dataset"):
        load_compare(p)
    (tmp_path / "bad.nc").write_text("hello")
    with pytest.raises(ValueError, match="not a readable netCDF"):
        load_compare(tmp_path / "bad.nc")


@pytest.mark.slow
def test_example_quick(tmp_path):
    path = Path(__file__).resolve().parents[2] / "examples" / "compare_strategies.py"
    spec = importlib.util.spec_from_file_location("compare_strategies", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (
        mod.main(
            ["--quick", "--out", str(tmp_path), "--strategies", "batch rkf23,curriculum (ours)"]
        )
        == 0
    )
    ds = load_compare(tmp_path / "compare.nc")
    assert list(ds["strategy"].values) == ["batch rkf23", "curriculum (ours)"]
    assert "examples/compare_strategies.py --quick" in (tmp_path / "table.md").read_text()


def test_default_hold_out_is_the_last_quarter_of_trajectories():
    from dynfit.compare import _check_data

    data = systems.simulate("lorenz63", n_traj=2, n_steps=300, dt=0.01, seed=4)
    train, test = _check_data(data, None, {"horizon_lt": 2.0})
    assert train.sizes["trajectory"] == 1 and test.sizes["trajectory"] == 1
    assert np.array_equal(test.x.values[0], data.x.values[1])


def test_tables_and_figures_live_in_their_modules(result, tmp_path):
    """compare trains and assembles; tables are dynfit.tables', figures dynfit.plot's (names kept in
    compare)."""
    import importlib

    from dynfit import plot, tables

    # the module (dynfit.compare is also the function)
    cmp = importlib.import_module("dynfit.compare")

    assert cmp.compare_table is tables.compare_table and cmp.write_tables is tables.write_tables
    assert (
        cmp.plot_vpt is plot.plot_vpt
        and cmp.plot_compare is plot.plot_compare
        and cmp.FORMAT == tables.FORMAT
    )
    ds, _ = result
    md, csv_path = tables.write_tables(ds, tmp_path)
    assert "| fehlberg |" in md.read_text() and csv_path.stat().st_size > 100
    assert plot.plot_vpt(ds, tmp_path / "vpt.png", show=False) is not None
    assert (tmp_path / "vpt.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="not a dynfit compare Dataset"):
        plot.plot_vpt(ds.assign_attrs(format="other"))


def test_settings_objects_reach_every_task_and_the_record(data, monkeypatch):
    """An OptimizerSettings given to compare is spread into fit's keywords: each task, the cache
    key, the attrs."""
    from dynfit import sweep
    from dynfit.config import FieldSettings, OptimizerSettings

    seen = []
    monkeypatch.setattr(
        sweep,
        "run",
        lambda tasks, job, **kw: seen.append(job) or (_ for _ in ()).throw(RuntimeError("stop")),
    )
    train, test = data
    with pytest.raises(RuntimeError, match="stop"):
        compare(
            train,
            test_data=test,
            strategies=["fehlberg"],
            evaluate=TINY_EVAL,
            field=FieldSettings(kind="mlp", width=8),
            optimizer=OptimizerSettings(lbfgs_iterations=2),
            lr=0.5,
        )
    job = seen[0]
    assert job.fit_kwargs == {"lbfgs_iterations": 2, "lr": 0.5}
    assert job.field == {
        "kind": "mlp",
        "width": 8,
        "depth": 2,
        "activation": "silu",
        "time_dependent": False,
    }
