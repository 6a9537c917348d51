"""The benchmark's tasks: one (system, protocol, noise, seed, method) each, run here or on
dask.distributed.

A task makes its problem (:mod:`.protocols`), fits the method with its budget,
forecasts from the held-out starts, scores (:mod:`.scores`) and stores one small
netCDF file ``DIR/runs/<protocol>/<system>/<method>-noise<noise>-seed<seed>.nc``
atomically, with a key of everything that decides its numbers. A rerun finds the
files whose key matches and skips those tasks, so a run resumes where it stopped.

By default each task runs in a child process with a hard time limit (a method
that hangs or crashes the interpreter becomes a recorded failure, never a
stuck sweep); a fit that raises is recorded with its error, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

from systems.dataset import cf_decode

from ._digest import code_digest
from .scores import THRESHOLDS

__all__ = [
    "Task",
    "run_task",
    "run_all",
    "result_path",
    "load_result",
    "code_fingerprint",
    "FORMAT",
]

FORMAT = "dynfit-benchmark-task-1"
HARD_LIMIT_FACTOR = 6.0  # a task's child may use this many budgets plus HARD_LIMIT_MARGIN CPU s
HARD_LIMIT_MARGIN = 300.0
WALL_LIMIT_FACTOR = 10.0  # ... and this many times that in wall seconds (a hang; a loaded machine)
MEMORY_LIMIT_GB = 8.0  # a task's child's address space (a runaway fit fails with MemoryError)
LLE_STEPS = 2000


@dataclass(frozen=True)
class Task:
    """One benchmark cell; ``budget``: the fit's budget in CPU seconds (single-threaded)."""

    system: str
    protocol: str
    noise: float
    seed: int
    method: str
    budget: float
    quick: bool = False

    def key(self) -> str:
        """A digest of everything that decides the task's numbers: the cell, and the code that
        computes
        it (a stored result is reused only while both are unchanged)."""
        doc = dict(asdict(self), format=FORMAT, code=code_fingerprint(self.method))
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]

    @property
    def label(self) -> str:
        return f"{self.system} {self.method} noise {self.noise:g} seed {self.seed}"


_CODE: dict[str, str] = {}


def code_fingerprint(method: str) -> str:
    """A digest of the sources that decide a method's numbers: the benchmark's protocols, scores and
    adapters; for dynfit's own methods also every source of dynfit, systems and their common base;
    for peers their installed versions."""
    if method not in _CODE:
        import importlib.metadata as md

        here = Path(__file__).resolve().parent
        files = [here / "protocols.py", here / "scores.py", here / "methods.py"]
        extra = ""
        if method.startswith("dynfit"):
            root = here.parent.parent
            for package in ("dynfit", "systems", "_dyncore"):
                files += sorted(
                    p for p in (root / package).rglob("*.py") if "benchmark" not in p.parts
                )
        else:
            for package in ("pysindy", "reservoirpy", "torch", "torchdiffeq"):
                try:
                    extra += f"{package}={md.version(package)};"
                except md.PackageNotFoundError:
                    pass
        _CODE[method] = code_digest(files, extra)
    return _CODE[method]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def result_path(out: Path, task: Task) -> Path:
    return (
        Path(out)
        / "runs"
        / task.protocol
        / _slug(task.system)
        / f"{_slug(task.method)}-noise{task.noise:g}-seed{task.seed}.nc"
    )


def _read(path: Path, task: Task) -> xr.Dataset | None:
    """The task's result file at ``path`` if readable and of this task's key, whatever its
    status."""
    if not path.is_file():
        return None
    try:
        with xr.open_dataset(path) as ds:
            ds = cf_decode(ds.load())  # string coordinates stored as CF label variables
    except Exception:  # a damaged file: run the task again
        return None
    return ds if ds.attrs.get("task_key") == task.key() else None


def load_result(out: Path, task: Task) -> xr.Dataset | None:
    """The stored result of ``task`` when its key matches, else None (missing, unreadable, stale, or
    status "failed": a failure outside the method's fit and forecast is tried again)."""
    ds = _read(result_path(out, task), task)
    if ds is None or ds.attrs.get("status") == "failed":
        # missing, stale, or a failure outside the method (the problem, the child): run again
        return None
    return ds


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _result_dataset(
    task: Task,
    problem,
    scores: dict | None,
    status: str,
    message: str,
    fit_wall: float,
    fit_cpu: float,
    settings: dict,
    n_starts: int,
) -> xr.Dataset:
    nan_st = np.full((n_starts, len(THRESHOLDS)), np.nan)
    nan_s = np.full(n_starts, np.nan)
    sc = scores or {}
    data = {
        "vpt": (
            ("start", "threshold"),
            sc.get("vpt", nan_st),
            {"units": "1", "long_name": "valid prediction time in Lyapunov times"},
        ),
        "vpt_capped": (
            ("start", "threshold"),
            np.asarray(sc.get("vpt_capped", nan_st == 0), dtype=np.int8),
            {
                "units": "1",
                "long_name": "1 where the forecast stayed valid to its end (lower bound)",
            },
        ),
        "smape_horizon": (
            "start",
            sc.get("smape_horizon", nan_s),
            {"units": "1", "long_name": "time until the running sMAPE exceeds 30, Lyapunov times"},
        ),
        "blowup": (
            "start",
            np.asarray(sc.get("blowup", np.ones(n_starts)), dtype=np.int8),
            {
                "units": "1",
                "long_name": "1 where the forecast went non-finite or left the attractor",
            },
        ),
    }
    attrs = {
        "format": FORMAT,
        "task_key": task.key(),
        "status": status,
        "message": message[-2000:],
        "fit_seconds": float(fit_wall),
        "fit_cpu_seconds": float(fit_cpu),
        "settings": json.dumps(settings, default=str, sort_keys=True),
        **asdict(task),
    }
    attrs["quick"] = int(task.quick)
    for k in ("density_distance", "density_floor", "lle_model", "lle_true"):
        attrs[k] = float(sc.get(k, math.nan))
    if problem is not None:
        attrs.update(
            {
                "dt": problem.dt,
                "lyapunov_time": problem.lyapunov_time,
                "lyapunov_source": problem.lyapunov_source,
                "reference_valid_time": problem.reference_valid_time,
                "n_forecast": problem.n_forecast,
                "n_train": problem.train.shape[0],
                "train_len": problem.train.shape[1],
                "dim": problem.train.shape[2],
                "period": float(problem.attrs["period"]),
                "period_source": problem.attrs["period_source"],
            }
        )
    return xr.Dataset(data, coords={"threshold": list(THRESHOLDS)}, attrs=attrs)


def _execute(task: Task, cache: Path | None = None) -> xr.Dataset:
    """Make the problem (kept in ``cache``), fit, forecast and score; a failing fit or forecast is
    recorded, not raised."""
    import torch

    from . import methods as _methods
    from .protocols import QUICK, SETTINGS, make_problem

    torch.set_num_threads(1)
    n_starts = (QUICK if task.quick else SETTINGS[task.protocol]).n_starts
    problem = make_problem(
        task.system, task.protocol, noise=task.noise, seed=task.seed, quick=task.quick, cache=cache
    )
    # again: a numba parallel launch while making the problem resets the OpenMP thread count
    # torch shares (docs/systems.md, "Threads"), and spinning threads would eat the CPU budget
    torch.set_num_threads(1)
    model = _methods.make(task.method, seed=task.seed, budget=task.budget, quick=task.quick)
    w0, c0 = time.perf_counter(), _cpu_seconds()
    try:
        model.fit(problem.train, problem.dt)
    except Exception as err:  # recorded: one failing fit never stops the benchmark
        return _result_dataset(
            task,
            problem,
            None,
            "fit failed",
            _describe(err),
            time.perf_counter() - w0,
            _cpu_seconds() - c0,
            getattr(model, "settings", {}),
            n_starts,
        )
    fit_wall, fit_cpu = time.perf_counter() - w0, _cpu_seconds() - c0
    from .scores import climate_scores, forecast_scores

    try:
        pred = model.forecast(problem.starts, problem.n_forecast, history=problem.history)
        scores = forecast_scores(problem, pred)
        long_run = model.forecast(
            problem.climate[0][:1],
            problem.climate[0].shape[0],
            history=problem.climate_history[None],
        )[0]
        scores.update(climate_scores(problem, long_run, model.vector_field(), lle_steps=LLE_STEPS))
    except Exception as err:
        return _result_dataset(
            task,
            problem,
            None,
            "forecast failed",
            _describe(err),
            fit_wall,
            fit_cpu,
            model.settings,
            n_starts,
        )
    return _result_dataset(
        task, problem, scores, "ok", "", fit_wall, fit_cpu, model.settings, n_starts
    )


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}\n{''.join(traceback.format_exception(err)[-3:])}"


def run_task(task: Task, out: Path, *, isolate: bool = True) -> dict:
    """Run one task unless a matching result is stored; store and return a summary dict
    {"task", "status", "reused", "path"}."""
    from ..io import write_netcdf

    out = Path(out)
    old = load_result(out, task)
    path = result_path(out, task)
    if old is not None:
        return {"task": task, "status": old.attrs["status"], "reused": True, "path": str(path)}
    if isolate:
        ds = _in_child(task, out)
    else:
        try:
            ds = _execute(task, problem_cache(out))
        except Exception as err:  # the problem itself could not be made (e.g. an unsupported flow)
            ds = _result_dataset(
                task, None, None, "failed", _describe(err), math.nan, math.nan, {}, _n_starts(task)
            )
    write_netcdf(ds, path)
    return {"task": task, "status": ds.attrs["status"], "reused": False, "path": str(path)}


def problem_cache(out: Path) -> Path:
    """The folder where a run keeps its clean problems (one per flow, protocol and seed)."""
    return Path(out) / "problems"


def _n_starts(task: Task) -> int:
    from .protocols import QUICK, SETTINGS

    return (QUICK if task.quick else SETTINGS[task.protocol]).n_starts


def _in_child(task: Task, out: Path) -> xr.Dataset:
    """Run the task in a child Python with a hard time limit; its result, or a recorded failure."""
    path = result_path(out, task)
    limit = HARD_LIMIT_FACTOR * task.budget + HARD_LIMIT_MARGIN  # CPU seconds
    wall = WALL_LIMIT_FACTOR * limit
    path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        NUMBA_NUM_THREADS="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "dynfit.benchmark._child",
        json.dumps(asdict(task)),
        str(path),
        str(problem_cache(out)),
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=wall,
            preexec_fn=_limits(limit, MEMORY_LIMIT_GB * 2 ** 30),
        )
    except subprocess.TimeoutExpired:
        return _result_dataset(
            task,
            None,
            None,
            "timed out",
            f"killed after {wall:.0f} wall s ({WALL_LIMIT_FACTOR:g} x the CPU " "limit: a hang)",
            time.perf_counter() - t0,
            math.nan,
            {},
            _n_starts(task),
        )
    cpu_signals = {-getattr(signal, n) for n in ("SIGXCPU", "SIGKILL") if hasattr(signal, n)}
    if proc.returncode in cpu_signals and not path.is_file():
        return _result_dataset(
            task,
            None,
            None,
            "timed out",
            f"stopped after {limit:.0f} CPU s (the hard limit: "
            f"{HARD_LIMIT_FACTOR:g} x budget + {HARD_LIMIT_MARGIN:g} s)",
            time.perf_counter() - t0,
            math.nan,
            {},
            _n_starts(task),
        )
    ds = _read(path, task) if proc.returncode == 0 else None
    if ds is None:
        tail = (proc.stderr or proc.stdout or "")[-1500:]
        return _result_dataset(
            task,
            None,
            None,
            "failed",
            f"child exited with {proc.returncode}: {tail}",
            time.perf_counter() - t0,
            math.nan,
            {},
            _n_starts(task),
        )
    return ds


def _limits(seconds: float, memory_bytes: float):
    """A preexec function giving the child a CPU-time limit and an address-space limit (POSIX), or
    None where there is none: a fit whose memory runs away fails with a MemoryError, recorded,
    instead of taking the machine's memory from every other task."""
    try:
        import resource
    except ImportError:  # Windows: the wall limit alone
        return None
    soft = int(math.ceil(seconds))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 10))
        resource.setrlimit(resource.RLIMIT_AS, (int(memory_bytes), int(memory_bytes)))

    return limit


def run_all(
    tasks: list[Task],
    out: Path,
    *,
    client=None,
    isolate: bool = True,
    on_result: Callable[[dict, int, int, int], None] | None = None,
) -> list[dict]:
    """Run every task (serially, or on a dask ``client``); finished ones are skipped.
    on_result(summary,
    n_done, n_running, n_failed) runs here as results arrive. Returns the summaries in task order.
    """
    summaries: dict[int, dict] = {}
    failed = 0

    def note(i: int, summary: dict, running: int) -> None:
        nonlocal failed
        summaries[i] = summary
        failed += summary["status"] != "ok"
        if on_result is not None:
            on_result(summary, len(summaries), running, failed)

    todo = []
    for i, task in enumerate(tasks):
        old = load_result(out, task)
        if old is not None:
            note(
                i,
                {
                    "task": task,
                    "status": old.attrs["status"],
                    "reused": True,
                    "path": str(result_path(out, task)),
                },
                0,
            )
        else:
            todo.append(i)
    if client is None:
        for i in todo:
            note(i, run_task(tasks[i], out, isolate=isolate), 1)
    else:
        from distributed import as_completed

        futures = {
            client.submit(
                run_task,
                tasks[i],
                out,
                isolate=isolate,
                pure=False,
                key=f"benchmark-{tasks[i].key()}-{time.time_ns()}",
            ): i
            for i in todo
        }
        pending = len(futures)
        for fut in as_completed(list(futures)):
            pending -= 1
            i = futures[fut]
            try:
                summary = fut.result()
            except (
                Exception
            ) as err:  # the worker died or the task raised outside the recorded paths
                summary = {
                    "task": tasks[i],
                    "status": f"failed: {type(err).__name__}: {err}",
                    "reused": False,
                    "path": "",
                }
            note(i, summary, min(pending, _n_workers(client)))
    return [summaries[i] for i in range(len(tasks))]


def _n_workers(client) -> int:
    try:
        return len(client.scheduler_info().get("workers", {})) or 1
    except Exception:
        return 1


def child_main(argv: list[str]) -> int:
    """``python -m dynfit.benchmark._child TASK_JSON PATH``: run one task and store its result at
    PATH."""
    from ..io import write_netcdf

    task = Task(**json.loads(argv[0]))
    try:
        ds = _execute(task, Path(argv[2]) if len(argv) > 2 else None)
    except Exception as err:
        ds = _result_dataset(
            task, None, None, "failed", _describe(err), math.nan, math.nan, {}, _n_starts(task)
        )
    write_netcdf(ds, Path(argv[1]))
    return 0
