"""``dynfit evaluate | compare | plot`` through argparse, on tiny files; bad input."""
import argparse

import numpy as np
import pytest
import xarray as xr

import systems
from dynfit.cli import (
    _add_file_commands as add_commands,
    kind_of,
    parse_strategy_flag,
    validate_compare_config,
)
from dynfit.compare import load_compare
from dynfit.diagnostics import load_diagnostics
from dynfit.train import fit

EVAL_FLAGS = ["--starts", "2", "--horizon-lt", "2", "--long-steps", "1000",
              "--lyapunov-steps", "20"]


def run(argv):
    parser = argparse.ArgumentParser(prog="dynfit")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("commands")
    train = systems.simulate("lorenz63", n_traj=2, n_steps=100, dt=0.01, seed=1, transient=2.0)
    sur, hist = fit(
        train,
        field={"kind": "mlp", "width": 8, "depth": 2},
        strategy="fehlberg",
        epochs=2,
        lbfgs_iterations=2,
        seed=0,
        progress=False,
    )
    paths = {
        "model": sur.save(root / "model.pt"),
        "history": root / "history.nc",
        "test": systems.save(
            systems.simulate("lorenz63", n_traj=2, n_steps=300, dt=0.01, seed=2, transient=2.0),
            root / "test.nc",
        ),
        "rossler": systems.save(
            systems.simulate("rossler", n_traj=1, n_steps=300, dt=0.01, seed=0), root / "rossler.nc"
        ),
        "root": root,
    }
    hist.to_netcdf(paths["history"])
    return paths


def test_evaluate_writes_diagnostics_and_figures(files, capsys):
    out = files["root"] / "eval"
    assert run(["evaluate", files["model"], files["test"], "--out", out, *EVAL_FLAGS]) == 0
    ds = load_diagnostics(out / "diagnostics.nc")
    assert ds.sizes["start"] == 2 and ds["vpt"].dims == ("start", "threshold")
    assert ds.attrs["surrogate_strategy"] == "fehlberg"
    for name in ("attractor", "error_growth", "time_series", "return_map"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert "median VPT" in capsys.readouterr().out


@pytest.mark.parametrize("extra, error, match", [
    (["--thresholds", "0.4,1.5"], ValueError, "threshold"),
    (["--thresholds", "0.4,abc"], ValueError, "comma-separated numbers"),
])
def test_evaluate_bad_flags(files, extra, error, match):
    with pytest.raises(error, match=match):
        run(
            [
                "evaluate",
                files["model"],
                files["test"],
                "--out",
                files["root"] / "bad",
                *EVAL_FLAGS,
                *extra,
            ]
        )


def test_evaluate_bad_files(files):
    with pytest.raises(ValueError, match="rossler"):
        run(
            [
                "evaluate",
                files["model"],
                files["rossler"],
                "--out",
                files["root"] / "bad",
                *EVAL_FLAGS,
            ]
        )
    with pytest.raises(FileNotFoundError):
        run(
            [
                "evaluate",
                files["root"] / "missing.pt",
                files["test"],
                "--out",
                files["root"] / "bad",
            ]
        )
    with pytest.raises(ValueError, match="not a dynfit model"):
        run(["evaluate", files["history"], files["test"], "--out", files["root"] / "bad"])
    with pytest.raises(ValueError, match="needs one variable x"):
        run(["evaluate", files["model"], files["history"], "--out", files["root"] / "bad"])
    with pytest.raises(ValueError, match="pass dt="):
        np.save(files["root"] / "nodt.npy", np.zeros((2, 50, 3)))
        run(
            ["evaluate", files["model"], files["root"] / "nodt.npy", "--out", files["root"] / "bad"]
        )


def test_compare_from_config_with_flag_override(files, tmp_path):
    cfg = tmp_path / "compare.toml"
    cfg.write_text(
        "[data]\nn_traj = 2\nn_steps = 100\n[test]\nn_traj = 2\nn_steps = 300\n"
        "[field]\nwidth = 8\n[train]\nepochs = 1\nlbfgs_iterations = 2\n"
        "[evaluate]\nn_starts = 2\nhorizon_lt = 2.0\nlong_steps = 1000\n"
        "lyapunov_steps = 20\nlyapunov_starts = 1\n"
        '[[strategy]]\nname = "fehlberg"\n'
        '[[strategy]]\nlabel = "black-box rk4"\nname = "torchdiffeq"\n'
        'method = "rk4"\nstep_size = 0.5\n'
        f'[output]\ndir = "{tmp_path / "unused"}"\n'
    )
    out = tmp_path / "cmp"
    assert run(["compare", cfg, "--out", out, "--seeds", "3", "--no-progress"]) == 0
    ds = load_compare(out / "compare.nc")
    assert list(ds["strategy"].values) == ["fehlberg", "black-box rk4"]
    assert list(ds["seed"].values) == [3] and ds.sizes["start"] == 2 and ds.attrs["epochs"] == 1
    assert (out / "table.md").exists() and (out / "table.csv").exists()
    assert not (tmp_path / "unused").exists()
    # dynfit plot recognises the compare file and redraws its figures (with the best surrogate's
    # attractor)
    figs = tmp_path / "figs"
    assert run(["plot", out / "compare.nc", "--out", figs]) == 0
    for name in ("training", "error_vs_evaluations", "vpt", "attractor_best"):
        assert (figs / f"{name}.png").stat().st_size > 1000


def test_strategy_flags_and_config_errors():
    assert parse_strategy_flag("fehlberg") == {"label": "fehlberg", "name": "fehlberg"}
    assert parse_strategy_flag("black-box rk4=torchdiffeq:method=rk4,step_size=0.5") == \
        {"label": "black-box rk4", "name": "torchdiffeq", "method": "rk4", "step_size": 0.5}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_strategy_flag("torchdiffeq:rk4")
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        validate_compare_config({"train": {"epoch": 3}})
    with pytest.raises(ValueError, match="unknown config section"):
        validate_compare_config({"trian": {}})
    with pytest.raises(ValueError, match="did you mean 'curriculum'"):
        validate_compare_config({"strategy": [{"name": "curiculum"}]})
    with pytest.raises(ValueError, match="unknown strategy"):
        run(["compare", "--strategy", "fehlbreg", "--out", "/nonexistent/never"])


def test_plot_history_and_diagnostics(files, tmp_path):
    assert run(["plot", files["history"], "--out", tmp_path / "h"]) == 0
    assert (tmp_path / "h" / "training.png").stat().st_size > 1000
    assert (tmp_path / "h" / "error_vs_evaluations.png").stat().st_size > 1000
    diag = files["root"] / "eval" / "diagnostics.nc"
    if not diag.exists():
        run(
            [
                "evaluate",
                files["model"],
                files["test"],
                "--out",
                files["root"] / "eval",
                *EVAL_FLAGS,
            ]
        )
    assert run(["plot", diag, "--out", tmp_path / "d"]) == 0
    assert (tmp_path / "d" / "error_growth.png").exists() and (
        tmp_path / "d" / "attractor.png"
    ).exists()


def test_plot_rejects_other_files(files, tmp_path):
    with pytest.raises(ValueError, match="simulated trajectories"):
        run(["plot", files["test"], "--out", tmp_path])
    other = tmp_path / "other.nc"
    xr.Dataset({"a": ("t", np.arange(3.0))}).to_netcdf(other)
    with pytest.raises(ValueError, match="not a dynfit Dataset"):
        run(["plot", other, "--out", tmp_path])
    text = tmp_path / "notes.nc"
    text.write_text("not netCDF")
    with pytest.raises(ValueError, match="not a readable netCDF"):
        run(["plot", text, "--out", tmp_path])
    with pytest.raises(FileNotFoundError):
        run(["plot", tmp_path / "missing.nc", "--out", tmp_path])
    assert kind_of(xr.load_dataset(files["history"])) == "history"


def test_evaluation_defaults_exist_once():
    """dynfit.evaluate, `dynfit evaluate`, `dynfit compare` and dynfit.compare share
    config.EVALUATE_DEFAULTS."""
    import inspect

    from dynfit.config import COMPARE_DEFAULTS, EVALUATE_DEFAULTS
    from dynfit.diagnostics import evaluate

    params = inspect.signature(evaluate).parameters
    assert {k: params[k].default for k in EVALUATE_DEFAULTS} == EVALUATE_DEFAULTS
    parser = argparse.ArgumentParser(prog="dynfit")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", "m.pt", "d.nc"])
    assert (args.starts, args.horizon_lt, args.long_steps, args.lyapunov_steps, args.seed) == tuple(
        EVALUATE_DEFAULTS[k]
        for k in ("n_starts", "horizon_lt", "long_steps", "lyapunov_steps", "seed")
    )
    assert tuple(float(h) for h in args.thresholds.split(",")) == EVALUATE_DEFAULTS["thresholds"]
    cfg = validate_compare_config({})
    assert {
        k: tuple(v) if isinstance(v, list) else v for k, v in cfg["evaluate"].items()
    } == EVALUATE_DEFAULTS
    assert COMPARE_DEFAULTS["evaluate"]["horizon_lt"] == EVALUATE_DEFAULTS["horizon_lt"]
    # the default held-out data outlast the default horizon on Lorenz'63 (lyapunov time 1 / 0.9056)
    assert cfg["test"]["n_steps"] * cfg["data"]["dt"] >= EVALUATE_DEFAULTS["horizon_lt"] / 0.9056


@pytest.mark.parametrize("suffix", [".npy", ".nc", ".zarr"])
def test_evaluate_user_data_from_anywhere(files, tmp_path, capsys, suffix):
    """Trajectories without a system name: scored against themselves, Lyapunov time estimated or
    given."""
    x = systems.simulate("lorenz63", n_traj=2, n_steps=300, dt=0.01, seed=2, transient=2.0)[
        "x"
    ].values
    path = tmp_path / "elsewhere" / f"mine{suffix}"
    path.parent.mkdir()
    if suffix == ".npy":
        np.save(path, x)
    else:
        ds = xr.Dataset({"x": (("trajectory", "time", "component"), x)},
                        coords={"time": np.arange(300) * 0.01, "component": ["u", "v", "w"]})
        ds.to_netcdf(path) if suffix == ".nc" else ds.to_zarr(path)
    out = tmp_path / "ev"
    flags = ["--dt", "0.01"] if suffix == ".npy" else []
    assert run(["evaluate", files["model"], path, "--out", out, "--lyapunov-time", "1.1", *flags,
                *EVAL_FLAGS]) == 0
    ds = load_diagnostics(out / "diagnostics.nc")
    assert ds.attrs["mode"] == "data only" and ds.attrs["lyapunov_time_source"] == "given"
    assert "vpt_capped" in ds and (out / "attractor.png").stat().st_size > 1000
    assert "given" in capsys.readouterr().out


def test_capped_vpt_printed_as_lower_bound(files, tmp_path, capsys):
    """A free run that never leaves the threshold within the horizon is printed as '>= ...
    (capped)'."""
    from dynfit import Surrogate

    x0 = systems.simulate("lorenz63", n_traj=2, n_steps=2, dt=0.01, seed=2, transient=2.0)[
        "x"
    ].values[:, 0]
    # the model's own runs
    np.save(tmp_path / "x.npy", Surrogate.load(files["model"]).generate(x0, 300))
    # a Lyapunov time of 100 time units: a 2-LT horizon is longer than the data, every run reaches
    # the end
    with pytest.warns(RuntimeWarning, match="data's end"):
        run(
            [
                "evaluate",
                files["model"],
                tmp_path / "x.npy",
                "--dt",
                "0.01",
                "--out",
                tmp_path / "o",
                "--lyapunov-time",
                "100",
                *EVAL_FLAGS,
            ]
        )
    assert "(capped)" in capsys.readouterr().out


def test_train_from_npy_keeps_and_evaluates_the_held_out_part(tmp_path, capsys):
    from dynfit.cli import main

    x = systems.simulate("lorenz63", n_traj=3, n_steps=400, dt=0.01, seed=1, transient=2.0)[
        "x"
    ].values
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "c.toml").write_text(
        f'[data]\npath = "{tmp_path / "x.npy"}"\ndt = 0.01\nsplit_fraction = 0.67\n'
        '[field]\nkind = "mlp"\nwidth = 8\n[train]\nepochs = 5\nlbfgs_iterations = 2\n'
        '[strategy]\nname = "fehlberg"\n')
    out = tmp_path / "out"
    assert (
        main(
            ["train", str(tmp_path / "c.toml"), "--out", str(out), "--epochs", "1", "--no-progress"]
        )
        == 0
    )
    assert xr.load_dataset(out / "history.nc").sizes["epoch"] == 1
    held = xr.load_dataset(out / "held_out.nc")
    assert held["x"].shape[2] == 3 and 0 < held["x"].size < x.size  # the part not trained on, kept
    diag = load_diagnostics(out / "diagnostics.nc")
    assert diag.attrs["mode"] == "data only" and "vpt_capped" in diag
    for name in ("training", "attractor", "error_growth", "time_series"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert "held-out part" in capsys.readouterr().out


def test_version_flag(capsys):
    from dynfit import __version__
    from dynfit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out


def test_old_horizon_spellings_still_work_with_a_deprecation_warning():
    """evaluate's horizon is horizon_lt (Lyapunov times; fit's horizon counts samples): the old
    keyword, [evaluate] key and --horizon flag still work and warn."""
    from dynfit.diagnostics import ExactSurrogate, evaluate

    parser = argparse.ArgumentParser(prog="dynfit")
    add_commands(parser.add_subparsers(dest="command", required=True))
    with pytest.warns(DeprecationWarning, match="--horizon-lt"):
        args = parser.parse_args(["evaluate", "m.pt", "d.nc", "--horizon", "3"])
    assert args.horizon_lt == 3.0
    with pytest.warns(DeprecationWarning, match="horizon_lt"):
        cfg = validate_compare_config({"evaluate": {"horizon": 4.0}})
    assert cfg["evaluate"]["horizon_lt"] == 4.0 and "horizon" not in cfg["evaluate"]
    data = systems.simulate("lorenz63", n_traj=1, n_steps=400, dt=0.01, seed=0)
    sur = ExactSurrogate("lorenz63", dt=0.01, rtol=1e-8)
    options = dict(n_starts=1, long_steps=1000, lyapunov_steps=0, groundtruth=False, seed=0)
    with pytest.warns(DeprecationWarning, match="horizon_lt"):
        old = evaluate(sur, data, horizon=1.0, **options)
    new = evaluate(sur, data, horizon_lt=1.0, **options)
    assert old.attrs["horizon"] == new.attrs["horizon"] == 1.0
    xr.testing.assert_identical(old["vpt"], new["vpt"])
