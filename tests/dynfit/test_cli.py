"""The command line: demo --quick, train CONFIG.toml, config errors."""
import numpy as np
import pytest
import xarray as xr

from dynfit.cli import main
from dynfit.config import load_config, validate
from dynfit.surrogate import Surrogate


def test_demo_quick_writes_model_diagnostics_and_figures(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--quick", "--no-progress"]) == 0
    diag = xr.load_dataset(tmp_path / "diagnostics.nc")
    assert diag.vpt.dims == ("start", "threshold") and diag.sizes["start"] >= 1
    assert np.isfinite(diag.vpt).all() and (diag.vpt >= 0).all()
    assert 0.4 in diag.threshold.values and diag.attrs["strategy"] == "continuous"
    for name in ("training.png", "attractor.png", "error_growth.png", "time_series.png"):
        assert (tmp_path / name).stat().st_size > 1000
    # the demo's files are those of `dynfit evaluate`: `dynfit plot` redraws them
    assert main(["plot", str(tmp_path / "diagnostics.nc"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "attractor.png").stat().st_size > 1000
    sur = Surrogate.load(tmp_path / "model.pt")
    assert sur.system == "lorenz63" and sur.generate(np.array([1.0, 1.0, 20.0]), 5).shape == (
        1,
        5,
        3,
    )


def test_train_from_config(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        '[data]\nsystem = "lorenz63"\nn_traj = 3\nn_steps = 120\n'
        '[field]\nwidth = 8\nactivation = "tanh"\n'
        '[strategy]\nname = "black-box"\neps = 0.05\n'
        f'[train]\nepochs = 2\nlbfgs_iterations = 2\n[output]\ndir = "{tmp_path / "out"}"\n'
    )
    assert main(["train", str(cfg), "--no-progress"]) == 0
    hist = xr.load_dataset(tmp_path / "out" / "history.nc")
    assert hist.sizes["epoch"] == 2
    sur = Surrogate.load(tmp_path / "out" / "model.pt")
    assert (
        sur.strategy["name"] == "black-box"
        and sur.strategy["eps"] == 0.05
        and sur.solver.eps == 0.05
    )


def test_unknown_key_names_it_and_close_matches(tmp_path, capsys):
    with pytest.raises(
        ValueError, match="unknown key in \\[train\\] 'epoch'; did you mean 'epochs'"
    ):
        validate({"train": {"epoch": 3}})
    with pytest.raises(ValueError, match="unknown config section 'feild'; did you mean 'field'"):
        validate({"feild": {}})
    with pytest.raises(ValueError, match="bad option for strategy 'fehlberg'"):
        validate({"strategy": {"name": "fehlberg", "epsilon": 0.1}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nn_trajs = 3\n")
    assert main(["train", str(bad)]) == 2
    assert "did you mean 'n_traj'" in capsys.readouterr().err
    bad.write_text("[data\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)


def test_main_parser_has_evaluate_compare_plot(tmp_path, capsys):
    from dynfit.cli import build_parser, main

    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "train", "evaluate", "compare", "plot"} <= set(choices)
    bad = tmp_path / "not_netcdf.txt"
    bad.write_text("hello")
    assert main(["plot", str(bad), "--out", str(tmp_path / "figs")]) == 2
    assert "not a readable netCDF file" in capsys.readouterr().err


def test_demo_data_writes_netcdf_and_png(tmp_path, capsys):
    """The systems side of the demo (dynfit._demo): trajectories, their 3-D figure, the spectrum."""
    import xarray as xr

    import systems
    from dynfit._demo import demo_data

    res = demo_data(tmp_path / "demo", n_traj=2, n_steps=300)
    assert res["netcdf"].is_file() and res["figure"].is_file()
    assert res["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    xr.testing.assert_identical(systems.load(res["netcdf"]), res["dataset"])
    assert "lorenz63_attractor.png" in capsys.readouterr().out
