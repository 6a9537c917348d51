"""Sweeps: independent fits (strategy x seed), one after another or as dask.distributed tasks.

Each task trains one surrogate with :func:`dynfit.fit`, saves it, evaluates
it and stores its result under ``DIR/runs/<slug>/`` (history.nc,
diagnostics.nc, with a key of everything that made it). A rerun finds those
files and skips the fit; a task whose worker dies is rerun by the scheduler
on another worker (and resumes from the fit's checkpoint in DIR). Results do
not depend on where a task ran: each task sets torch's thread count (one by
default), so a cluster run gives the serial run's numbers.

    with connect("local:4") as client:      # or "tcp://scheduler:8786"
        results = run(specs, job, client=client)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import xarray as xr


CONNECT_TIMEOUT = 10.0  # seconds to wait for a scheduler to answer
_POLL = 0.5  # seconds between progress checks on a cluster


class SchedulerUnreachableError(ConnectionError, ValueError):
    """No dask scheduler answered at the address given (a ValueError too: bad input)."""


class SweepError(RuntimeError):
    """Some tasks failed; the others' results are kept in DIR for a rerun."""


@dataclass(frozen=True)
class Task:
    """One fit: indices (i, j) into (strategies, seeds), label, strategy name, options, seed."""

    i: int
    j: int
    label: str
    name: str
    options: dict
    seed: int
    groundtruth: bool = False  # evaluate the true system's valid time too (one task of the sweep)

    @property
    def slug(self) -> str:
        return "".join(
            c if c.isalnum() or c in "-_." else "_" for c in f"{self.label}-seed{self.seed}"
        )


@dataclass
class Job:
    """What a sweep's tasks share: data, field, epochs, fit and evaluate options, output folder."""

    train: xr.Dataset
    test: xr.Dataset
    field: object
    epochs: int
    fit_kwargs: dict
    eval_options: dict
    out: Path | None = None
    save_models: bool = True
    progress: bool = False
    threads: int = 1  # torch threads of each task
    fingerprint: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = _fingerprint(self.train, self.test)

    def key(self, task: Task) -> str:
        """A digest of all that decides the task's numbers (a stored result is reused if equal)."""
        simple = {
            k: v
            for k, v in self.fit_kwargs.items()
            if isinstance(v, (str, int, float, bool, type(None)))
        }
        doc = {
            "label": task.label,
            "name": task.name,
            "options": task.options,
            "seed": task.seed,
            "groundtruth": task.groundtruth,
            "epochs": self.epochs,
            "fit": simple,
            "field": self.field
            if isinstance(self.field, (dict, type(None)))
            else type(self.field).__name__,
            "evaluate": self.eval_options,
            "data": self.fingerprint,
            "threads": self.threads,
            "save_models": self.save_models,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[
            :24
        ]


def _fingerprint(*datasets: xr.Dataset) -> str:
    h = hashlib.sha256()
    for ds in datasets:
        h.update(np.ascontiguousarray(ds["x"].values, dtype=np.float64).tobytes())
        h.update(json.dumps({k: str(v) for k, v in ds.attrs.items()}, sort_keys=True).encode())
    return h.hexdigest()[:24]


# ------------------------------------------------------------------ one task
def run_task(task: Task, job: Job) -> dict:
    """Train, save, evaluate one task; store its result in ``job.out``; returns the result dict.

    The result: hist (training history), diag (evaluate Dataset), summary,
    wall (training seconds), eval_wall, reused (False).
    """
    import torch

    from .diagnostics import evaluate, summarize
    from .train import fit

    previous = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        ckpt = job.out / "checkpoints" / task.slug if job.out is not None else None
        t0 = time.perf_counter()
        sur, hist = fit(job.train, field=job.field, strategy=task.name,
                        strategy_options=task.options, epochs=int(job.epochs), seed=task.seed,
                        checkpoint_dir=ckpt, progress=job.progress, **job.fit_kwargs)
        wall = float(hist.wall_time.sum()) if hist.sizes["epoch"] else time.perf_counter() - t0
        if job.out is not None and job.save_models:
            sur.save(job.out / "models" / f"{task.slug}.pt")
        t1 = time.perf_counter()
        diag = evaluate(sur, job.test, groundtruth=task.groundtruth, **job.eval_options)
        result = {"hist": hist, "diag": diag, "summary": summarize(diag), "wall": wall,
                  "eval_wall": time.perf_counter() - t1, "reused": False}
    finally:
        torch.set_num_threads(previous)
    if job.out is not None:
        _store(job.out / "runs" / task.slug, result, job.key(task))
    return result


def _store(folder: Path, result: dict, key: str) -> None:
    from systems.files import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    attrs = {"sweep_key": key, "training_wall_time": result["wall"],
             "evaluation_wall_time": result["eval_wall"]}
    # history first, diagnostics last: diagnostics.nc present means the task finished
    for name, ds in (("history.nc", result["hist"]), ("diagnostics.nc", result["diag"])):
        ds = ds.copy()
        ds.attrs.update(attrs)
        with atomic_path(folder / name) as tmp:
            ds.to_netcdf(tmp)


def _finished(task: Task, job: Job) -> dict | None:
    """The stored result of ``task`` in ``job.out`` if one with the same key is there, else None."""
    if job.out is None:
        return None
    folder = job.out / "runs" / task.slug
    paths = [folder / "history.nc", folder / "diagnostics.nc"]
    if job.save_models:
        paths.append(job.out / "models" / f"{task.slug}.pt")
    if not all(p.is_file() for p in paths):
        return None
    try:
        with xr.open_dataset(paths[0]) as h, xr.open_dataset(paths[1]) as d:
            hist, diag = h.load(), d.load()
    except Exception:  # unreadable (a killed writer, a damaged disk): run the task again
        return None
    key = job.key(task)
    if hist.attrs.get("sweep_key") != key or diag.attrs.get("sweep_key") != key:
        return None
    from .diagnostics import summarize

    wall, eval_wall = (
        float(diag.attrs["training_wall_time"]),
        float(diag.attrs["evaluation_wall_time"]),
    )
    for ds in (hist, diag):
        for k in ("sweep_key", "training_wall_time", "evaluation_wall_time"):
            ds.attrs.pop(k, None)
    return {"hist": hist, "diag": diag, "summary": summarize(diag), "wall": wall,
            "eval_wall": eval_wall, "reused": True}


# ------------------------------------------------------------------ many tasks
def run(
    tasks: list[Task],
    job: Job,
    *,
    client=None,
    on_result: Callable[[Task, dict, int, int], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[tuple[int, int], dict]:
    """Run every task (serially, or on ``client``); returns {(i, j): result}.

    Finished tasks (found in ``job.out``) are skipped. on_result(task,
    result, n_done, n_total) runs in this process as results arrive. Raises
    SweepError naming the failed tasks after all others have finished.
    """
    results: dict[tuple[int, int], dict] = {}
    todo = []
    for task in tasks:
        old = _finished(task, job)
        if old is None:
            todo.append(task)
        else:
            results[task.i, task.j] = old
            if on_result is not None:
                on_result(task, old, len(results), len(tasks))
    if results:
        log(
            f"compare: {len(results)} of {len(tasks)} fits finished before (found in "
            f"{job.out / 'runs'}); "
            f"{len(todo)} to run"
        )
    failures: list[tuple[Task, BaseException]] = []
    if client is None:
        for task in todo:
            results[task.i, task.j] = run_task(task, job)
            if on_result is not None:
                on_result(task, results[task.i, task.j], len(results), len(tasks))
    else:
        failures = _run_on(client, todo, job, results, len(tasks), on_result, log)
    if failures:
        lines = "; ".join(
            f"{t.label} seed {t.seed}: {type(e).__name__}: {str(e)[:200]}" for t, e in failures
        )
        kept = (
            f"; the {len(results)} finished fits are kept in {job.out} and a rerun skips them"
            if job.out
            else ""
        )
        raise SweepError(f"{len(failures)} of {len(tasks)} fits failed: {lines}{kept}")
    return results


def _run_on(
    client, todo: list[Task], job: Job, results: dict, n_total: int, on_result, log
) -> list:
    from distributed import wait

    if not todo:
        return []
    token = hashlib.sha256(f"{time.time_ns()}".encode()).hexdigest()[:8]
    # the shared data as a task, not scattered data: the scheduler remakes it if its worker dies
    job_f = client.submit(_identity, job, key=f"sweep-job-{token}", pure=False)
    futures = {
        client.submit(run_task, task, job_f, key=f"fit-{task.slug}-{token}", pure=False): task
        for task in todo
    }
    pending, failures = set(futures), []
    last = None
    while pending:
        try:
            done, pending = wait(pending, timeout=_POLL, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        for f in done:
            task = futures[f]
            if f.status == "finished":
                results[task.i, task.j] = f.result()
                if on_result is not None:
                    on_result(task, results[task.i, task.j], len(results), n_total)
            else:
                failures.append((task, f.exception()))
        running = _running(client, {f.key for f in pending})
        state = (len(results), running, len(failures))
        if state != last:
            log(
                f"compare: {state[0]}/{n_total} fits done, {running} running, "
                f"{len(pending) - running} waiting, "
                f"{len(failures)} failed"
            )
            last = state
    return failures


def _identity(x):
    return x


def _executing(keys, dask_scheduler=None) -> int:
    """On the scheduler: how many of ``keys`` a worker is executing now (not only queued there)."""
    return sum(1 for ws in dask_scheduler.workers.values() for ts in ws.executing if ts.key in keys)


def _running(client, keys: set) -> int:
    try:
        return int(client.run_on_scheduler(_executing, keys))
    except Exception:  # a scheduler that cannot import dynfit: tasks assigned to workers instead
        return sum(1 for ks in client.processing().values() for k in ks if k in keys)


# ------------------------------------------------------------------ clusters
_LOCAL = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://[^\s/]+$")


def parse_cluster(text: str) -> tuple[str, int | str]:
    """'local:N' -> ('local', N); 'tcp://HOST:PORT' -> ('address', text); else ValueError."""
    if not isinstance(text, str):
        raise TypeError(
            "cluster must be a string such as 'local:2' or 'tcp://HOST:PORT', got "
            f"{type(text).__name__}"
        )
    m = _LOCAL.match(text.strip())
    if m:
        n = int(m.group(1))
        if n < 1:
            raise ValueError(
                f"cluster {text!r}: a local cluster needs at least 1 worker (local:N, N >= 1)"
            )
        return "local", n
    if _ADDRESS.match(text.strip()):
        return "address", text.strip()
    raise ValueError(
        f"cluster {text!r} is neither local:N (N worker processes on this machine) nor a scheduler "
        "address such as tcp://HOST:8786"
    )


@contextlib.contextmanager
def connect(cluster: str, *, timeout: float | None = None) -> Iterator[object]:
    """A ``distributed.Client``: a new LocalCluster of N worker processes ('local:N'), or the
    scheduler at an address ('tcp://HOST:PORT'; SchedulerUnreachableError if none answers within
    ``timeout`` seconds, default CONNECT_TIMEOUT)."""
    kind, value = parse_cluster(cluster)
    timeout = CONNECT_TIMEOUT if timeout is None else float(timeout)
    from distributed import Client, LocalCluster

    if kind == "local":
        import dask

        # the workers' statistical profiler samples every task thread's stack 100 times a second; it
        # slowed fits in workers on a busy CPU (measured), so local clusters run without it
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            with LocalCluster(n_workers=int(value), threads_per_worker=1, processes=True,
                              dashboard_address=":0") as lc:
                with Client(lc) as client:
                    yield client
        return
    try:
        client = Client(value, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise SchedulerUnreachableError(
            f"no dask scheduler answered at {value} within "
            f"{timeout:g} s ({type(err).__name__}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`, check the host and port, or "
            "use --cluster local:N"
        ) from None
    with client:
        yield client
