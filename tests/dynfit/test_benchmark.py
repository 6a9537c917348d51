"""dynfit.benchmark: protocols, scores, the resumable runner, the results Dataset and the CLI
(quick mode)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("pysindy")

from dynfit import benchmark as B  # noqa: E402
from dynfit.benchmark import protocols, runner, scores  # noqa: E402


def test_gilpin_protocol_shapes_noise_and_clean_truth():
    p = protocols.make_problem("lorenz63", "gilpin", noise=0.05, seed=3, quick=True)
    q = protocols.make_problem("lorenz63", "gilpin", noise=0.0, seed=3, quick=True)
    assert p.train.shape == (1, protocols.QUICK.train_len, 3)
    assert p.truth.shape[0] == p.starts.shape[0] == p.history.shape[0] == protocols.QUICK.n_starts
    np.testing.assert_array_equal(p.truth[:, 0], p.starts)
    np.testing.assert_array_equal(p.history[:, -1], p.starts)
    np.testing.assert_array_equal(p.truth, q.truth)  # noise on the training data only
    resid = (p.train - q.train) / q.std
    assert 0.03 < resid.std() < 0.07
    # gilpin: the forecasts continue the training trajectory
    np.testing.assert_array_equal(p.history[0], q.train[0, -p.history.shape[1] :])
    assert p.dt == pytest.approx(p.attrs["period"] / protocols.POINTS_PER_PERIOD)
    assert p.lyapunov_time == pytest.approx(1 / 0.9056, rel=0.01)


def test_problems_are_cached_clean_and_noised_after(tmp_path):
    fresh = protocols.make_problem("lorenz63", "gilpin", noise=0.05, seed=3, quick=True)
    first = protocols.make_problem(
        "lorenz63", "gilpin", noise=0.05, seed=3, quick=True, cache=tmp_path
    )
    (cached,) = (tmp_path / "gilpin").glob("lorenz63-seed3-quick-*.npz")
    again = protocols.make_problem(
        "lorenz63", "gilpin", noise=0.05, seed=3, quick=True, cache=tmp_path
    )
    for p in (first, again):  # bit-identical to the uncached problem
        for name in ("train", "truth", "history", "std", "climate_history"):
            np.testing.assert_array_equal(getattr(p, name), getattr(fresh, name))
        np.testing.assert_array_equal(p.climate[1], fresh.climate[1])
        assert (p.noise, p.lyapunov_time, p.attrs) == (0.05, fresh.lyapunov_time, fresh.attrs)
    cached.write_bytes(b"not an npz")  # a damaged cache is remade, not trusted
    remade = protocols.make_problem("lorenz63", "gilpin", seed=3, quick=True, cache=tmp_path)
    np.testing.assert_array_equal(remade.truth, fresh.truth)
    assert cached.read_bytes()[:2] == b"PK"


def test_a_reference_that_cannot_finish_falls_back_to_the_next_rung(monkeypatch):
    monkeypatch.setattr(protocols, "PROBE_STEPS", 5)  # the 1e-12 spin-up hits its step limit
    p = protocols.make_problem("lorenz63", "gilpin", seed=3, quick=True)
    assert p.attrs["reference_solver"] == "dop853 rtol 1e-10"
    assert p.attrs["reference_check_solver"] == "dop853 rtol 1e-08"


def test_an_implausible_stored_exponent_is_not_used():
    from types import SimpleNamespace

    flow = SimpleNamespace(
        metadata={"source": "dysts", "lyapunov_max_computed": 921.0}, lyapunov_max=0.065, jac=None
    )
    assert protocols._lyapunov(flow, dt=0.67) == (0.065, "dysts metadata estimate")


def test_the_code_digest_sees_code_not_layout(tmp_path):
    from dynfit.benchmark._digest import code_digest

    a, b, c = tmp_path / "a.py", tmp_path / "b" / "a.py", tmp_path / "c" / "a.py"
    b.parent.mkdir(), c.parent.mkdir()
    a.write_text('def f(x):\n    """Doc."""\n    return x + 1  # one\n')
    b.write_text('def f(x):\n    """Other words."""\n\n    return (x +\n            1)\n')
    c.write_text('def f(x):\n    """Doc."""\n    return x + 2\n')
    assert code_digest([a]) == code_digest([b]) != code_digest([c])
    assert code_digest([a], "torch=2") != code_digest([a])


def test_the_child_cpu_limit_stops_a_runaway():
    import signal
    import subprocess
    import sys

    if not hasattr(signal, "SIGXCPU"):
        pytest.skip("no RLIMIT_CPU on this platform")
    proc = subprocess.run([sys.executable, "-c", "while True: pass"], timeout=120,
                          preexec_fn=runner._limits(1, runner.MEMORY_LIMIT_GB * 2 ** 30))
    assert proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL)


def test_the_child_memory_limit_turns_a_runaway_into_a_memory_error():
    """A child that allocates past the address-space limit gets a MemoryError (recorded by the
    runner as a failure), not the machine's memory."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np\ntry:\n    np.ones(2 ** 31)\n"
            "except MemoryError:\n    print('refused')")
    # one BLAS thread: OpenBLAS reserves address space per thread at import on many-core CPUs
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], timeout=120, capture_output=True,
                          text=True, env=env, preexec_fn=runner._limits(60, 2 * 2 ** 30))
    assert proc.stdout.strip() == "refused"


def test_the_fit_runs_on_one_torch_thread_after_the_problem_raised_it(monkeypatch):
    # making the problem can launch numba's OpenMP pool, which resets the thread count torch shares
    import torch

    from dynfit.benchmark import methods

    real = protocols.make_problem

    def making(*args, **kwargs):
        problem = real(*args, **kwargs)
        torch.set_num_threads(2)
        return problem

    seen = []

    class Probe:
        settings: dict = {}

        def fit(self, train, dt):
            seen.append(torch.get_num_threads())
            raise RuntimeError("probe: no fit")

    monkeypatch.setattr(protocols, "make_problem", making)
    monkeypatch.setattr(methods, "make", lambda *a, **k: Probe())
    before = torch.get_num_threads()
    try:
        out = runner._execute(runner.Task("lorenz63", "gilpin", 0.0, 0, "pysindy", 5.0, True))
    finally:
        torch.set_num_threads(before)
    assert seen == [1] and out.attrs["status"] == "fit failed"


def test_resolve_system_names_and_errors():
    assert protocols.resolve_system("lorenz96:N=6").dim == 6
    with pytest.raises(ValueError, match="unknown system 'lorenz36'"):
        protocols.resolve_system("lorenz36")
    with pytest.raises(ValueError, match="key=value"):
        protocols.resolve_system("lorenz96:N")


def test_scores_of_the_truth_are_capped_and_of_nan_are_blowups():
    p = protocols.make_problem("lorenz63", "ensemble", seed=0, quick=True)
    s = scores.forecast_scores(p, p.truth)
    assert s["vpt_capped"].all() and not s["blowup"].any()
    bad = p.truth.copy()
    bad[:, 5:] = np.nan
    s = scores.forecast_scores(p, bad)
    np.testing.assert_allclose(s["vpt"], 5 * p.dt / p.lyapunov_time)
    assert s["blowup"].all() and not s["vpt_capped"].any()


def test_largest_exponent_of_lorenz():
    import systems

    sys_ = systems.get("lorenz63")
    rhs = systems.get("lorenz63").rhs
    pp = sys_.param_array()

    def f(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            rhs(x[i], 0.0, pp, out[i])
        return out

    lam = scores.largest_exponent(
        f, np.array([1.0, 1.0, 20.0]), dt=0.01, n_steps=20000, transient=500
    )
    assert lam == pytest.approx(0.9056, abs=0.08)


def _quick_run(out):
    return B.run(["lorenz63", "rossler"], ["pysindy", "dynfit"], protocol="ensemble",
                 noise=[0.0], seeds=[0], out=out, quick=True, isolate=False, progress=False,
                 log=lambda *_: None)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    ds = _quick_run(out)
    return out, ds


def test_quick_run_writes_the_dataset_the_leaderboard_and_figures(quick_run):
    out, ds = quick_run
    assert set(ds.vpt.dims) == {"system", "method", "noise", "seed", "threshold"}
    assert list(ds.threshold.values) == [0.3, 0.4, 0.5]
    for var in (
        "vpt",
        "vpt_median",
        "vpt_capped",
        "blowup_fraction",
        "smape_horizon",
        "fit_seconds",
    ):
        assert var in ds
    assert (ds.status == "ok").all()
    assert ds.attrs["protocol"] == "ensemble" and ds.attrs["version_pysindy"] != "not installed"
    stored = xr.open_dataset(out / "benchmark.nc")
    np.testing.assert_array_equal(stored.vpt.values, ds.vpt.values)
    stored.close()
    text = (out / "leaderboard.md").read_text()
    assert "| pysindy |" in text and "| dynfit |" in text
    assert (out / "vpt_by_system.png").is_file() and (out / "rank.png").is_file()
    # pysindy identifies Lorenz'63 exactly: its forecast is valid much longer than a quick dynfit
    # fit's
    assert (
        float(ds.vpt.sel({"system": "lorenz63", "method": "pysindy", "threshold": 0.4}).squeeze())
        > 1.0
    )


def test_a_rerun_reuses_stored_results(quick_run):
    out, ds = quick_run
    again = _quick_run(out)
    assert again.attrs["tasks_reused"] == 4
    np.testing.assert_array_equal(again.vpt.values, ds.vpt.values)


def test_a_failing_fit_is_recorded_not_fatal(tmp_path, monkeypatch):
    from dynfit.benchmark import methods

    def boom(self, x, dt, clock):
        raise RuntimeError("exploded on purpose")

    monkeypatch.setattr(methods.PySINDyMethod, "_fit", boom)
    ds = B.run(
        ["lorenz63"],
        ["pysindy"],
        protocol="gilpin",
        out=tmp_path,
        quick=True,
        isolate=False,
        progress=False,
        log=lambda *_: None,
    )
    status = str(ds.status.values.ravel()[0])
    assert status == "fit failed"
    assert "exploded on purpose" in str(ds.message.values.ravel()[0])
    assert np.isnan(ds.vpt.values).all()
    assert "fit failed" in (tmp_path / "leaderboard.md").read_text()


def test_a_task_in_a_child_process(tmp_path):
    task = runner.Task("lorenz63", "gilpin", 0.0, 0, "pysindy", 5.0, True)
    summary = runner.run_task(task, tmp_path, isolate=True)
    assert summary["status"] == "ok" and not summary["reused"]
    assert runner.load_result(tmp_path, task).attrs["status"] == "ok"
    assert runner.run_task(task, tmp_path, isolate=True)["reused"]
    assert list((tmp_path / "problems" / "gilpin").glob("lorenz63-seed0-quick-*.npz"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"methods": ["sindy"]}, "method"),
        ({"systems": ["nosuchflow"]}, "unknown system"),
        ({"protocol": "gilpen"}, "protocol"),
        ({"noise": [-0.1]}, "noise"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, kwargs, match):
    args = {"systems": ["lorenz63"], "methods": ["pysindy"], "protocol": "ensemble", "noise": [0.0]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        B.run(
            args.pop("systems"),
            args.pop("methods"),
            out=tmp_path / "o",
            quick=True,
            progress=False,
            **args,
        )
    assert not (tmp_path / "o" / "runs").exists()


def test_the_command_line(tmp_path, capsys):
    from dynfit.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "benchmark",
            "--protocol",
            "gilpin",
            "--systems",
            "lorenz63",
            "--methods",
            "pysindy",
            "--noise",
            "0,0.01",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--quick",
            "--no-progress",
        ]
    )
    assert code == 0
    assert (out / "benchmark.nc").is_file() and (out / "leaderboard.md").is_file()
    assert (out / "vpt_vs_noise.png").is_file()
    assert "## Noise 0.01" in capsys.readouterr().out
    assert main(["benchmark", "--systems", "lorenz63", "--methods", "nope", "--out", str(out)]) == 2
