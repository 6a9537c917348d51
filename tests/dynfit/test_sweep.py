"""Sweeps on dask.distributed: the same numbers as the serial run, a killed worker, reruns,
bad addresses."""

import os
import sys
import time

import numpy as np
import pytest
import xarray as xr

import systems
from dynfit import sweep
from dynfit.cli import main
from dynfit.compare import compare

distributed = pytest.importorskip("distributed")

TINY_FIELD = {"kind": "mlp", "width": 8, "depth": 2, "activation": "silu"}
TINY_EVAL = {"n_starts": 3, "horizon_lt": 2.0, "long_steps": 1000, "lyapunov_steps": 20,
             "lyapunov_starts": 1}
# fixed-step strategies: the untrained surrogates' evaluation runs stay cheap
STRATEGIES = [("rk4", "torchdiffeq", {"method": "rk4", "step_size": 0.5}),
              ("midpoint", "torchdiffeq", {"method": "midpoint", "step_size": 0.5})]
FLAGS = ["--epochs", "2", "--lbfgs-iterations", "2", "--width", "8", "--starts", "3",
         "--horizon-lt", "2", "--long-steps", "1000", "--lyapunov-steps", "20", "--seeds", "0,1",
         "--no-progress",
         "--strategy", "rk4=torchdiffeq:method=rk4,step_size=0.5", "--strategy",
         "midpoint=torchdiffeq:method=midpoint,step_size=0.5"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep_data")
    train = systems.simulate("lorenz63", n_traj=2, n_steps=120, dt=0.01, seed=1, transient=2.0)
    test = systems.simulate("lorenz63", n_traj=2, n_steps=300, dt=0.01, seed=2, transient=2.0)
    return (
        train,
        test,
        systems.save(train, folder / "train.nc"),
        systems.save(test, folder / "test.nc"),
    )


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None) as lc,
        distributed.Client(lc) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def cli_run(data, tmp_path_factory):
    """``dynfit compare --cluster local:2`` into a folder, as a user would run it."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    argv = ["compare", "--out", str(out), "--cluster", "local:2", "--train-data", str(data[2]),
            "--test-data", str(data[3]), *FLAGS]
    return argv, out, main(argv)


def test_cluster_run_equals_the_serial_run(data, cli_run):
    argv, out, code = cli_run
    assert code == 0 and len(list((out / "models").glob("*.pt"))) == 4
    train, test = data[0], data[1]
    serial = compare(train, test_data=test, strategies=STRATEGIES, seeds=(0, 1), epochs=2,
                     field=TINY_FIELD, lbfgs_iterations=2,
                     evaluate={**TINY_EVAL, "lyapunov_starts": 2})
    local = xr.open_dataset(out / "compare.nc").load()
    assert np.isfinite(local["vpt"].values).all()
    np.testing.assert_array_equal(local["vpt"].values, serial["vpt"].values)
    np.testing.assert_array_equal(local["loss"].values, serial["loss"].values)


def test_a_rerun_skips_finished_fits(cli_run, capsys):
    argv, out, _ = cli_run
    before = xr.open_dataset(out / "compare.nc").load()
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "4 of 4 fits finished before" in text and text.count("read from an earlier run") == 4
    np.testing.assert_array_equal(xr.open_dataset(out / "compare.nc").load()["vpt"].values,
                                  before["vpt"].values)


def _exit_once(epoch, row):
    """A fit callback that kills its worker process the first time any fit reaches it."""
    marker = os.environ.get("DYNFIT_TEST_KILL_MARKER")
    if marker and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(1)


def test_a_killed_worker_is_replaced_and_the_sweep_completes(tmp_path, data, cluster, capsys):
    import cloudpickle

    # the workers cannot import this test module
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "killed"
    cluster.run(lambda m=str(marker): os.environ.__setitem__("DYNFIT_TEST_KILL_MARKER", m))
    train, test = data[0], data[1]
    pids = set(cluster.run(os.getpid).values())
    ds = compare(train, test_data=test, strategies=STRATEGIES[:1], seeds=(0, 1), epochs=2,
                 field=TINY_FIELD, lbfgs_iterations=2, evaluate=TINY_EVAL, client=cluster,
                 callback=_exit_once)
    assert marker.exists() and int(marker.read_text()) in pids  # one worker died mid-fit ...
    # ... and every fit finished
    assert np.isfinite(ds["vpt"].values).all() and ds.sizes["seed"] == 2
    progress = capsys.readouterr().out
    assert (
        "0/2 fits done" in progress and "2/2 fits done, 0 running, 0 waiting, 0 failed" in progress
    )
    cluster.wait_for_workers(2, timeout=60)  # the nanny replaced it


def test_unreachable_scheduler_fails_fast(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(
        sweep.SchedulerUnreachableError,
        match=r"no dask scheduler answered at tcp://127.0.0.1:9 "
        r"within 2 s.*dask scheduler",
    ):
        with sweep.connect("tcp://127.0.0.1:9", timeout=2):
            pass
    assert time.perf_counter() - t0 < 30


def test_cli_reports_an_unreachable_scheduler(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT", 2.0)
    code = main(
        ["compare", "--out", str(tmp_path / "o"), "--cluster", "tcp://127.0.0.1:9", "--train-traj",
         "2", "--train-steps", "120", *FLAGS]
    )
    assert code == 2
    assert "no dask scheduler answered at tcp://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.parametrize("text",
                         ["local:0", "local:two", "local", "http://host:1", "tcp//host:1", ""])
def test_bad_cluster_strings(text):
    with pytest.raises(ValueError, match="local:N"):
        sweep.parse_cluster(text)


def test_client_and_cluster_together_are_refused():
    train = systems.simulate("lorenz63", n_traj=2, n_steps=50, dt=0.01, seed=1)
    with pytest.raises(ValueError, match="either client .* or cluster"):
        compare(train, strategies=["fehlberg"], client=object(), cluster="local:1")
    with pytest.raises(ValueError, match="cluster 'locl:2' is neither"):
        compare(train, strategies=["fehlberg"], cluster="locl:2")
