"""A forecasting benchmark of dynfit against the tools users would pick instead, over many flows,
on dask.

    ds = dynfit.benchmark.run(["lorenz63", "ArnoldBeltramiChildress"],
                              ["dynfit", "pysindy-tuned", "esn"], protocol="ensemble",
                              noise=[0, 0.01], seeds=[0], out="out/bench")

For every (system, noise, seed, method) a task makes the data by a named
protocol (:mod:`.protocols`), fits the method through its adapter
(:mod:`.methods`), free-runs it from held-out starts and scores it
(:mod:`.scores`); tasks run on a dask cluster or here, each stored as it
finishes, so a run resumes (:mod:`.runner`). The results are one Dataset
(``DIR/benchmark.nc``), a markdown leaderboard (``DIR/leaderboard.md``) and
figures (:mod:`.results`). From the shell: ``dynfit benchmark``.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import xarray as xr

from systems import checks

from .protocols import PROTOCOLS, make_problem, resolve_system
from .results import collect, figures, leaderboard
from .runner import Task, load_result, run_all

__all__ = [
    "run",
    "PANEL",
    "catalogue",
    "PROTOCOLS",
    "DEFAULT_BUDGET",
    "make_problem",
    "resolve_system",
    "Task",
    "collect",
    "leaderboard",
    "figures",
    "load",
]

DEFAULT_BUDGET = 60.0  # CPU seconds of fitting per task (quick mode: QUICK_BUDGET)
QUICK_BUDGET = 10.0
# issue 24's panel: most flows outside any degree-2 polynomial library
PANEL = (
    "lorenz63",
    "rossler",
    "ArnoldBeltramiChildress",
    "SwingingAtwood",
    "JerkCircuit",
    "Chua",
    "StickSlipOscillator",
    "HindmarshRose",
    "MooreSpiegel",
    "lorenz96:N=10",
    "ForcedVanDerPol",
    "Duffing",
)


def catalogue() -> list[str]:
    """The dysts flows our bridge builds (``systems.dysts_names()`` less
    ``systems.dysts_unsupported()``)."""
    import systems

    bad = systems.dysts_unsupported()
    return [n for n in systems.dysts_names() if n not in bad]


def _expand_systems(names) -> list[str]:
    out = []
    for name in names:
        if name == "catalogue":
            out += catalogue()
        elif name == "panel":
            out += list(PANEL)
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def run(
    systems,
    methods,
    *,
    protocol: str = "ensemble",
    noise=(0.0,),
    seeds=(0,),
    out,
    cluster: str | None = None,
    quick: bool = False,
    budget: float | None = None,
    isolate: bool = True,
    progress: bool = True,
    log=print,
) -> xr.Dataset:
    """Run the benchmark; writes ``out/benchmark.nc``, ``out/leaderboard.md`` and figures; returns
    the Dataset.

    systems: names (catalogue or dysts; ``"catalogue"`` = the 112 dysts flows, ``"panel"`` = PANEL);
    methods: adapter names (``dynfit.benchmark.methods.method_names()``); noise: fractions of each
    component's std; budget: CPU seconds per fit (default 60, quick 10); cluster: "local:N" or a
    scheduler
    address (None: here, one task after another); isolate: each task in a child process with a hard
    limit.
    Methods whose packages are missing raise ValueError naming the install command, before any work.
    """
    from .methods import method_names, missing

    checks.choice("protocol", protocol, PROTOCOLS)
    systems_ = _expand_systems(_as_list(systems, "systems"))
    methods_ = _as_list(methods, "methods")
    for m in methods_:
        checks.choice("method", m, method_names())
    gone = missing(methods_)
    if gone:
        raise ValueError(
            "methods not available here: " + "; ".join(f"{m}: {why}" for m, why in gone.items())
        )
    noise_ = [
        checks.real("noise", z, minimum=0.0, fix="noise is a fraction, e.g. 0.01 for 1%")
        for z in _as_list(noise, "noise")
    ]
    seeds_ = [checks.integer("seed", s, minimum=0) for s in _as_list(seeds, "seeds")]
    budget = (
        (QUICK_BUDGET if quick else DEFAULT_BUDGET)
        if budget is None
        else checks.positive("budget", budget)
    )
    for name in systems_:
        resolve_system(name)  # unknown names fail here, before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [
        Task(s, protocol, float(z), int(e), m, float(budget), bool(quick))
        for s, z, e, m in itertools.product(systems_, noise_, seeds_, methods_)
    ]
    t0 = time.perf_counter()
    bar = _bar(len(tasks)) if progress else None

    def on_result(summary, done, running, failed):
        if bar is not None:
            bar.n = done
            bar.set_postfix(
                running=running, failed=failed, last=f"{summary['task'].label}: {summary['status']}"
            )
            bar.refresh()

    if cluster is None:
        summaries = run_all(tasks, out, isolate=isolate, on_result=on_result)
    else:
        from ..sweep import connect

        with connect(cluster) as client:
            summaries = run_all(tasks, out, client=client, isolate=isolate, on_result=on_result)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    results = {}
    for task in tasks:
        r = load_result(out, task)
        if r is not None:
            results[task.system, task.method, task.noise, task.seed] = r
    ds = collect(
        results,
        systems=systems_,
        methods=methods_,
        noise=noise_,
        seeds=seeds_,
        protocol=protocol,
        attrs={
            "budget_seconds": float(budget),
            "quick": int(quick),
            "cluster": cluster or "none",
            "run_wall_seconds": float(wall),
            "tasks_reused": int(sum(s["reused"] for s in summaries)),
        },
    )
    from ..io import write_netcdf, write_text

    write_netcdf(ds, out / "benchmark.nc")
    write_text(out / "leaderboard.md", leaderboard(ds))
    figures(ds, out)
    n_bad = int((ds.status != "ok").sum())
    log(
        f"benchmark: {len(tasks)} tasks in {wall:.0f} s ({n_bad} not ok); {out / 'benchmark.nc'}, "
        f"{out / 'leaderboard.md'}"
    )
    return ds


def load(path) -> xr.Dataset:
    """A stored ``benchmark.nc``."""
    from systems.dataset import cf_decode  # string coordinates stored as CF label variables

    with xr.open_dataset(path) as ds:
        return cf_decode(ds.load())


def _as_list(value, name: str) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    try:
        out = list(value)
    except TypeError:
        out = [value]
    if not out:
        raise ValueError(f"{name} must name at least one entry")
    return out


def _bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="benchmark", unit="task")
