"""Safe files: model and checkpoint loading never runs code, partial files never stay, folders lock,
the CLI turns every expected failure into one line and exit code 2."""

import errno
import os
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import systems
from dynfit.cli import main
from dynfit.data import Standardizer, as_trajectories
from dynfit.io import ModelFileError, load_torch, save_torch, write_netcdf
from dynfit.surrogate import FORMAT, Surrogate, build_field
from dynfit.train import CHECKPOINT, CHECKPOINT_FORMAT, fit
from systems.files import TEMP_PREFIX, FolderLock, FolderLockedError

EVAL_FLAGS = [
    "--starts",
    "2",
    "--horizon-lt",
    "1",
    "--long-steps",
    "1000",
    "--lyapunov-steps",
    "0",
    "--no-figures",
]
ROOT = Path(__file__).resolve().parents[2]


def _surrogate(dim=3, dt=0.01) -> Surrogate:
    torch.manual_seed(0)
    field = build_field({"kind": "mlp", "width": 8, "depth": 2}, dim)
    return Surrogate(
        field,
        Standardizer(np.zeros(dim), np.ones(dim) * 5.0),
        dt,
        strategy="fehlberg",
        field_config={"kind": "mlp", "width": 8, "depth": 2},
        provenance={"system": "lorenz63", "params": {"sigma": np.float64(10.0)}},
    )


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX) or ".tmp" in p.name]


@pytest.fixture(scope="module")
def test_nc(tmp_path_factory):
    root = tmp_path_factory.mktemp("io")
    return systems.save(
        systems.simulate("lorenz63", n_traj=2, n_steps=200, dt=0.01, seed=2, transient=2.0),
        root / "test.nc",
    )


class _Evil:
    """Unpickling this object creates a marker file (stands for any code a pickle may run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


# ------------------------------------------------------------------ model files
def test_model_round_trip_is_weights_only(tmp_path):
    sur = _surrogate()
    path = sur.save(tmp_path / "model.pt")
    blob = torch.load(path, weights_only=True)  # plain values only: no pickled classes
    assert type(blob["provenance"]["versions"]["torch"]) is str
    assert blob["provenance"]["params"]["sigma"] == 10.0
    again = Surrogate.load(path)
    x0 = np.array([[1.0, 2.0, 20.0]])
    np.testing.assert_array_equal(again.generate(x0, 3), sur.generate(x0, 3))
    assert not _leftovers(tmp_path)


def _variants(tmp_path):
    good = _surrogate().to_dict()
    good["provenance"]["versions"] = {k: str(v) for k, v in good["provenance"]["versions"].items()}

    def with_(**kw):
        blob = {**good, **kw}
        return blob

    nan_state = {k: v.clone() for k, v in good["state_dict"].items()}
    next(iter(nan_state.values()))[0] = float("nan")
    wrong_shape = {
        k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in good["state_dict"].items()
    }
    return {
        "not a dict": [1, 2, 3],
        "format only": {"format": FORMAT},
        "wrong format": {"format": "something else"},
        "nan weights": with_(state_dict=nan_state),
        "wrong shapes": with_(state_dict=wrong_shape),
        "dt zero": with_(dt=0.0),
        "dt nan": with_(dt=float("nan")),
        "dt string": with_(dt="0.01"),
        "std zero": with_(scaler={"mean": [0.0] * 3, "std": [1.0, 0.0, 1.0]}),
        "std inf": with_(scaler={"mean": [0.0] * 3, "std": [1.0, float("inf"), 1.0]}),
        "scaler lengths": with_(scaler={"mean": [0.0] * 2, "std": [1.0] * 3}),
        "bad dtype": with_(dtype="int64"),
        "bad field config": with_(field_config={"kind": "transformer"}),
    }


def test_every_bad_model_file_is_one_clear_error(tmp_path):
    for name, blob in _variants(tmp_path).items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save(blob, path)
        with pytest.raises(ModelFileError, match=str(path.name)):
            Surrogate.load(path)
    good = _surrogate().save(tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "folder.pt").mkdir()
    for name in ("truncated", "empty", "text", "folder", "missing"):
        with pytest.raises(ModelFileError, match=name):
            Surrogate.load(tmp_path / f"{name}.pt")
    with pytest.raises(FileNotFoundError):  # a missing file is also a FileNotFoundError
        Surrogate.load(tmp_path / "missing.pt")


def test_malicious_pickle_never_runs(tmp_path, test_nc, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": _Evil(marker)}, evil)
    with pytest.raises(ModelFileError, match="refused"):
        Surrogate.load(evil)
    assert not marker.exists()
    # through the command line
    assert (
        main(["evaluate", str(evil), str(test_nc), "--out", str(tmp_path / "ev"), *EVAL_FLAGS]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err
    assert not marker.exists()
    # as a training checkpoint
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "payload": _Evil(marker)}, ckpt / CHECKPOINT)
    data = systems.simulate("lorenz63", n_traj=2, n_steps=40, dt=0.01, seed=0)
    with pytest.raises(ModelFileError, match="refused"):
        fit(data, field={"kind": "mlp", "width": 4}, epochs=1, checkpoint_dir=ckpt, progress=False)
    assert not marker.exists()


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    data = systems.simulate("lorenz63", n_traj=2, n_steps=40, dt=0.01, seed=0)
    (tmp_path / CHECKPOINT).write_bytes(b"\x00" * 10)
    with pytest.raises(ModelFileError, match="resume=False"):
        fit(
            data,
            field={"kind": "mlp", "width": 4},
            epochs=1,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    fit(
        data,
        field={"kind": "mlp", "width": 4},
        epochs=1,
        checkpoint_dir=tmp_path,
        resume=False,
        progress=False,
        lbfgs_iterations=2,
    )
    assert load_torch(tmp_path / CHECKPOINT, what="checkpoint")["epoch"] == 1


def test_checkpoint_with_another_parameter_layout_is_a_clear_error(tmp_path):
    """Optimiser state for other parameters (as in the checkpoint of a TA-BN field written when each
    layer owned its tables) is refused with the fix, not torch's bare message."""
    data = systems.simulate("lorenz63", n_traj=2, n_steps=40, dt=0.01, seed=0)
    kw = dict(
        field={"kind": "mlp", "width": 4},
        epochs=1,
        checkpoint_dir=tmp_path,
        progress=False,
        lbfgs_iterations=2,
    )
    fit(data, **kw)
    blob = load_torch(tmp_path / CHECKPOINT, what="checkpoint")
    groups = blob["optimizer"]["param_groups"]
    groups[0]["params"] = groups[0]["params"] + [max(groups[0]["params"]) + 1]  # one parameter more
    torch.save(blob, tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match="another parameter layout.*resume=False"):
        fit(data, **dict(kw, epochs=2))


# ------------------------------------------------------------------ full disk, stale temps, locks
def _full_disk_after(monkeypatch, n_bytes: int):
    """os.write writes up to n_bytes in all, then raises ENOSPC (a disk that fills mid-write)."""
    real = os.write
    left = {"n": n_bytes}

    def write(fd, data):
        if left["n"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        k = min(len(data), left["n"])
        left["n"] -= k
        return real(fd, bytes(data[:k]))

    monkeypatch.setattr(os, "write", write)


def test_full_disk_leaves_no_partial_model_or_checkpoint(tmp_path, monkeypatch):
    sur = _surrogate()
    old = sur.save(tmp_path / "model.pt").read_bytes()
    _full_disk_after(monkeypatch, 1000)
    with pytest.raises(OSError, match="no space left on"):
        sur.save(tmp_path / "model.pt")
    with pytest.raises(OSError, match="no space left on"):
        sur.save(tmp_path / "new.pt")
    assert (tmp_path / "model.pt").read_bytes() == old  # the old file is untouched
    assert not (tmp_path / "new.pt").exists() and not _leftovers(tmp_path)
    data = systems.simulate("lorenz63", n_traj=2, n_steps=40, dt=0.01, seed=0)
    with pytest.raises(OSError, match="no space left on"):
        fit(
            data,
            field={"kind": "mlp", "width": 4},
            epochs=2,
            checkpoint_dir=tmp_path / "ck",
            progress=False,
            lbfgs_iterations=2,
        )
    assert not (tmp_path / "ck" / CHECKPOINT).exists() and not _leftovers(tmp_path / "ck")


def test_full_disk_netcdf_and_cli_one_line(tmp_path, monkeypatch, test_nc, capsys):
    ds = xr.Dataset({"a": ("x", np.arange(1000.0))})

    def partial(
        self, path, *args, **kwargs
    ):  # the netCDF library writes some bytes, then the disk is full
        Path(path).write_bytes(b"CDF" + b"\x00" * 500)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", partial)
    with pytest.raises(OSError, match="no space left on"):
        write_netcdf(ds, tmp_path / "a.nc")
    assert not (tmp_path / "a.nc").exists() and not _leftovers(tmp_path)
    model = _surrogate().save(tmp_path / "model.pt")
    out = tmp_path / "ev"
    assert main(["evaluate", str(model), str(test_nc), "--out", str(out), *EVAL_FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on" in err[0], err
    assert not (out / "diagnostics.nc").exists() and not _leftovers(out)


def test_stale_temps_are_removed_on_resume(tmp_path):
    data = systems.simulate("lorenz63", n_traj=2, n_steps=40, dt=0.01, seed=0)
    kw = dict(
        field={"kind": "mlp", "width": 4},
        checkpoint_dir=tmp_path,
        progress=False,
        lbfgs_iterations=2,
    )
    fit(data, epochs=1, **kw)
    (tmp_path / f"{TEMP_PREFIX}checkpoint-abc.pt").write_bytes(b"half")
    (tmp_path / ".checkpoint.pt.tmp1234").write_bytes(b"half")  # the previous writer's name
    fit(data, epochs=2, **kw)
    assert not _leftovers(tmp_path)
    assert load_torch(tmp_path / CHECKPOINT, what="checkpoint")["epoch"] == 2


def test_second_run_into_a_locked_folder_refuses(tmp_path, capsys):
    data = systems.simulate("lorenz63", n_traj=2, n_steps=40, dt=0.01, seed=0)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from systems.files import FolderLock
            with FolderLock({str(tmp_path)!r}):
                print("locked", flush=True)
                sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            fit(
                data,
                field={"kind": "mlp", "width": 4},
                epochs=1,
                checkpoint_dir=tmp_path,
                progress=False,
            )
        cfg = tmp_path.parent / f"{tmp_path.name}.toml"
        cfg.write_text("[data]\nn_traj = 3\nn_steps = 50\n[train]\nepochs = 1\n")
        assert main(["train", str(cfg), "--out", str(tmp_path), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another dynfit run" in err[0]
    finally:
        holder.communicate("")
    with FolderLock(tmp_path):  # released when its holder ends
        pass


# ------------------------------------------------------------------ the command line
def test_cli_expected_failures_are_one_line(tmp_path, test_nc, capsys):
    model = _surrogate().save(tmp_path / "model.pt")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    nan = _surrogate()
    with torch.no_grad():
        next(nan.field.parameters())[0, 0] = float("nan")
    torch.save({**nan.to_dict(), "provenance": {}}, tmp_path / "nan.pt")
    bad_nc = tmp_path / "bad.nc"
    bad_nc.write_bytes(b"CDF\x01" + b"\x00" * 40)
    other = tmp_path / "other.nc"
    xr.Dataset({"y": ("t", np.arange(3.0))}).to_netcdf(other)
    cases = [
        (
            ["evaluate", str(model), str(test_nc), "--out", str(blocker / "sub"), *EVAL_FLAGS],
            "not a folder",
        ),
        (
            [
                "evaluate",
                str(tmp_path / "nan.pt"),
                str(test_nc),
                "--out",
                str(tmp_path / "o"),
                *EVAL_FLAGS,
            ],
            "NaN",
        ),
        (
            ["evaluate", str(model), str(bad_nc), "--out", str(tmp_path / "o"), *EVAL_FLAGS],
            "bad.nc",
        ),
        (
            ["evaluate", str(model), str(other), "--out", str(tmp_path / "o"), *EVAL_FLAGS],
            "one variable x",
        ),
        (
            [
                "evaluate",
                str(model),
                str(test_nc),
                "--out",
                str(tmp_path / "o"),
                *EVAL_FLAGS[:-1],
                "--starts",
                "100000",
            ],
            "distinct starts",
        ),
        (["plot", str(tmp_path / "missing.nc")], "missing.nc"),
    ]
    for argv, match in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], (argv, err)
        assert "Traceback" not in err[0]


@pytest.mark.parametrize(
    "text, match",
    [
        ('[data]\nstandardize = "no"\n', "standardize must be True or False, got 'no'"),
        ('[train]\nlr = "fast"\n', "lr must be a positive finite number (> 0), got 'fast'"),
        ("[train]\nepochs = 2.5\n", "epochs must be an integer"),
        (
            "[data]\nsplit_fraction = 2.0\n",
            "split_fraction must be a finite number > 0 and < 1, got 2.0",
        ),
        ('[train]\ndevice = "tpu"\n', "device must be 'cpu', 'cuda', 'cuda:N'"),
        ("[data]\nn_traj = 0\n", "n_traj must be >= 1, got 0; write a whole number >= 1"),
        ("[field]\ntime_dependent = 1\n", "time_dependent must be True or False, got 1"),
        ('[data]\npath = "missing.npy"\n', "missing.npy"),
    ],
)
def test_config_types_are_checked(tmp_path, capsys, text, match):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["train", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "o" / "model.pt").exists()


def test_cli_bug_shows_traceback_and_hint(monkeypatch, capsys):
    import dynfit.cli as cli

    def broken(args):
        raise KeyError("oops")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["plot"].set_defaults(func=broken)
    assert main(["plot", "x.nc"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is a bug in dynfit" in err


def test_python_m_dynfit():
    run = subprocess.run(
        [sys.executable, "-m", "dynfit", "plot", "/nonexistent/x.nc"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "x.nc" in run.stderr


# ------------------------------------------------------------------ data, evaluate, TA-BN, simulate
def test_data_validation():
    with pytest.raises(ValueError, match="no trajectories"):
        as_trajectories(np.zeros((0, 10, 3)), dt=0.1)
    with pytest.raises(ValueError, match="pass dt="):
        as_trajectories(np.random.default_rng(0).standard_normal((20, 3)))
    with pytest.raises(ValueError, match="beyond 1e"):
        as_trajectories(np.random.default_rng(0).standard_normal((20, 3)) * 1e300, dt=0.1)
    with pytest.raises(ValueError, match="overflows"):
        Standardizer.fit(np.array([[1e200], [-1e200], [3.0]]))
    ds = systems.simulate("lorenz63", n_traj=2, n_steps=30, dt=0.01, seed=0)
    with pytest.raises(ValueError, match="dt = 0.5 was given but the data say dt = 0.01"):
        fit(ds, dt=0.5, epochs=1, progress=False)
    with pytest.raises(ValueError, match="no trajectories"):
        fit(ds.isel(trajectory=slice(0, 0)), epochs=1, progress=False)
    assert as_trajectories(ds, dt=0.01)[1] == 0.01


def test_evaluate_draws_distinct_starts_and_refuses_too_many():
    from dynfit.diagnostics.evaluate import draw_starts

    rng = np.random.default_rng(0)
    traj, time = draw_starts(50, 7, 50, rng)
    assert len(set(traj.tolist())) == 50  # one start per trajectory
    traj, time = draw_starts(3, 4, 12, rng)
    assert len(set(zip(traj.tolist(), time.tolist()))) == 12
    with pytest.raises(ValueError, match="n_starts = 13 but the data hold only 12 distinct starts"):
        draw_starts(3, 4, 13, rng)


def test_evaluate_refuses_nan_weights(test_nc):
    from dynfit.diagnostics import evaluate

    sur = _surrogate()
    with torch.no_grad():
        next(sur.field.parameters())[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate(
            sur, systems.load(test_nc), n_starts=1, horizon_lt=1.0, long_steps=1000,
            lyapunov_steps=0,
        )


def test_tabn_empty_batch_and_dtype():
    from dynfit.nn.norm import TABatchNorm1d

    layer = TABatchNorm1d(3, t_max=1.0, num_points=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="empty batch"):
        layer(0.5, torch.zeros(0, 3))
    with pytest.raises(TypeError, match="torch.float32.*torch.float64"):
        layer(0.5, torch.zeros(4, 3, dtype=torch.float64))


def test_simulate_refuses_sizes_beyond_memory():
    from systems.simulate import TooLargeError

    with pytest.raises(TooLargeError, match="n_traj=1000000000"):
        systems.simulate("lorenz63", n_traj=10**9, n_steps=100, dt=0.01, x0=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="n_steps=1000000000000"):
        systems.simulate("lorenz63", n_steps=10**12, dt=0.01)


# ------------------------------------------------------------------ kernel cache folder
def test_kernel_folder_is_private(tmp_path, monkeypatch):
    from systems.kernels import KernelCacheError, kernel_dir

    monkeypatch.delenv("SYSTEMS_KERNEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = kernel_dir()
    assert d == tmp_path / "cache" / "dynfit" / "kernels"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("SYSTEMS_KERNEL_DIR", str(shared))
    with pytest.raises(KernelCacheError, match="writable by others"):
        kernel_dir()
    if os.geteuid() == 0:  # as root we can make a folder that belongs to someone else
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o755)
        os.chown(foreign, 65534, 65534)
        monkeypatch.setenv("SYSTEMS_KERNEL_DIR", str(foreign))
        with pytest.raises(KernelCacheError, match="belongs to user id 65534"):
            kernel_dir()


# ---------------------------------------------------- CF conventions, checked by cfchecks
def _cf_tables(folder: Path) -> dict:
    """Empty local CF tables: cfchecks reads them from the web otherwise. Our files use no
    standard_name, area_type or region, so an empty table checks the same."""
    xml = {
        "standard_name_table": "<last_modified>-</last_modified>",
        "area_type_table": "<date>-</date>",
        "standardized_region_list": "<date>-</date>",
    }
    paths = {}
    for root, extra in xml.items():
        paths[root] = folder / f"{root}.xml"
        paths[root].write_text(
            f'<?xml version="1.0"?><{root}><version_number>0</version_number>' f"{extra}</{root}>"
        )
    return paths


def _cfchecks(path: Path, tables: dict) -> list[str]:
    """FATAL, ERROR and WARN messages of the official CF checker on a copy of ``path``.

    cfchecks 4.1 (the newest) knows CF up to 1.8, so the copy says CF-1.8: nothing we
    write uses what 1.9 and 1.10 added."""
    import shutil

    import netCDF4
    from cfchecker.cfchecks import CFChecker, CFVersion

    copy = path.with_name(f"cf18-{path.name}")
    shutil.copy(path, copy)
    with netCDF4.Dataset(copy, "a") as f:
        assert f.getncattr("Conventions") == "CF-1.10"
        f.setncattr("Conventions", "CF-1.8")
    checker = CFChecker(
        cfStandardNamesXML=str(tables["standard_name_table"]),
        cfAreaTypesXML=str(tables["area_type_table"]),
        cfRegionNamesXML=str(tables["standardized_region_list"]),
        version=CFVersion((1, 8)),
        silent=True,
    )
    res = checker.checker(str(copy))
    out = []
    for where, found in [("global", res["global"]), *res["variables"].items()]:
        out += [f"{where}: {cat} {m}" for cat in ("FATAL", "ERROR", "WARN") for m in found[cat]]
    return out


@pytest.mark.slow
def test_every_netcdf_we_write_passes_cfchecks(tmp_path, one_thread):
    pytest.importorskip("netCDF4")
    try:
        import cfchecker.cfchecks  # noqa: F401  (needs the udunits2 C library through cfunits)
    except Exception as err:
        pytest.skip(f"cfchecker not usable: {type(err).__name__}: {err}")
    import dynfit
    from dynfit.benchmark import load as load_benchmark

    tables = _cf_tables(tmp_path)
    sim = systems.simulate("lorenz63", n_traj=2, n_steps=300, dt=0.01, seed=0, transient=1.0)
    sur, hist = fit(
        sim.isel(trajectory=[0]),
        field={"kind": "mlp", "width": 4, "depth": 1},
        epochs=1,
        lbfgs_iterations=2,
        progress=False,
        prefit=False,
    )
    tiny = {
        "n_starts": 2,
        "horizon_lt": 1.0,
        "long_steps": 1000,
        "lyapunov_steps": 20,
        "lyapunov_starts": 1,
    }
    with warnings.catch_warnings():  # an untrained surrogate's runs may leave the attractor
        warnings.simplefilter("ignore")
        diag = dynfit.evaluate(sur, sim.isel(trajectory=[1]), **tiny)
        mine = dynfit.evaluate(
            sur, sim.x.values[1:], dt=0.01, lyapunov_time=1.1, **tiny
        )  # no system
    files = [
        systems.save(sim, tmp_path / "sim.nc"),
        write_netcdf(hist, tmp_path / "history.nc"),
        write_netcdf(diag, tmp_path / "diagnostics.nc"),
        write_netcdf(mine, tmp_path / "diagnostics_data.nc"),
        write_netcdf(
            sur.forecast(sim.x.values[:, 0], 5, on_failure="ignore"), tmp_path / "forecast.nc"
        ),
        write_netcdf(
            load_benchmark(ROOT / "docs/results/forecast_benchmark/panel.nc"),
            tmp_path / "benchmark.nc",
        ),
    ]
    for path in files:
        assert _cfchecks(path, tables) == [], path.name


def test_tabn_tables_of_another_grid_are_refused(tmp_path, one_thread):
    from dynfit.nn.norm import TABatchNorm1d

    with pytest.raises(ValueError, match="have 9 grid points, this layer has num_points=4"):
        TABatchNorm1d(3, num_points=4).load_state_dict(TABatchNorm1d(3, num_points=9).state_dict())
    cfg = {"kind": "mlp", "width": 8, "depth": 2, "norm": "tabn", "num_points": 9}
    sur = Surrogate(build_field(cfg, 3), Standardizer(np.zeros(3), np.ones(3)), 0.01,
                    field_config=cfg)
    path = sur.save(tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)
    blob["field_config"]["num_points"] = 5
    torch.save(blob, path)
    with pytest.raises(ModelFileError, match="9 grid points.*num_points=5"):
        Surrogate.load(path)
