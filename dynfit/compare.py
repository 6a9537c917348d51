"""``compare``: several training strategies on the same data and seeds, as one Dataset.

Each strategy is trained with :func:`dynfit.fit` on the same training data,
with the same field, optimizer, epochs and seeds, then judged by
:func:`dynfit.diagnostics.evaluate` on the same held-out starts. The result
has a ``strategy`` and a ``seed`` dimension::

    ds = compare(train, strategies=["fehlberg", ("black-box rk4", "torchdiffeq",
                 {"method": "rk4", "step_size": 0.5})], seeds=(0, 1), epochs=30,
                 test_data=test, out="out/compare")

A strategy entry is a name from ``dynfit.strategies.names()``, a tuple
``(label, name)`` or ``(label, name, options)``, or a dict
``{"label": ..., "name": ..., **options}``; the label tells apart two entries
of one strategy (torchdiffeq with rk4 and with dopri5).

With ``out``, writes compare.nc (the Dataset), table.md, table.csv
(:mod:`dynfit.tables`), best_diagnostics.nc (the ``evaluate`` Dataset of the
best surrogate), the trained models under models/ and the figures
training.png, error_vs_evaluations.png, vpt.png and attractor_best.png
(:func:`dynfit.plot.plot_compare`). This module trains and assembles; the
tables and figures live with the others of their kind.
"""
from __future__ import annotations

import json
import time
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr

from . import strategies as _strategies
from ._history import history_attrs
from _dyncore import checks
from systems.files import ensure_folder

from .config import (CONFIG_EPOCHS, EVALUATE_DEFAULTS, FIT_GROUPS, RENAMED_EVALUATE,
                     fit_settings, renamed_options)
from .io import version as _version, write_netcdf
from .plot import plot_compare, plot_vpt
from .tables import FORMAT, check_compare, compare_table, write_tables

# importable from here as before, owned elsewhere (not API of this module): parse_strategy
# (dynfit.strategies.parse_spec), FORMAT, compare_table and write_tables (dynfit.tables),
# plot_vpt and plot_compare (dynfit.plot)
__all__ = ["compare", "load_compare", "write_outputs"]

# the history variables compare keeps per epoch (their units: dynfit.train.HistoryRow)
HISTORY = ("loss", "accepted_fraction", "mean_substeps", "n_f_evals", "horizon", "wall_time")
# per task, by compare
SET_BY_COMPARE = ("checkpoint_dir", "strategy", "strategy_options", "seed", "progress")


# ------------------------------------------------------------------ validation
parse_strategy = _strategies.parse_spec  # the one strategy-spec parser (dynfit.strategies)


def _check_strategies(strategies) -> list[tuple[str, str, dict]]:
    if isinstance(strategies, (str, dict)) or not hasattr(strategies, "__iter__"):
        strategies = [strategies]
    specs = [parse_strategy(s) for s in strategies]
    if not specs:
        raise ValueError(f"strategies is empty; give at least one of {_strategies.names()}")
    labels = [s[0] for s in specs]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ValueError(
            f"strategy labels must be distinct, {dup} appear twice; label each entry, e.g. "
            "('black-box rk4', 'torchdiffeq', {'method': 'rk4'})"
        )
    return specs


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        seeds = [seeds]
    seeds = list(seeds)
    if not seeds:
        raise ValueError(
            f"seeds must be a non-empty list of integers >= 0, got {seeds!r}; pass e.g. seeds=[0, "
            "1]"
        )
    for i, s in enumerate(seeds):
        checks.integer(
            f"seeds[{i}]", s, minimum=0, fix="pass a list of integers >= 0, e.g. seeds=[0, 1]"
        )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    return [int(s) for s in seeds]


def _check_dataset(data, what: str) -> xr.Dataset:
    if not isinstance(data, xr.Dataset):
        raise TypeError(
            f"{what} must be an xarray.Dataset from systems.simulate, got {type(data).__name__}"
        )
    if "x" not in data or data["x"].dims != ("trajectory", "time", "component"):
        got = {k: v.dims for k, v in data.data_vars.items()}
        raise ValueError(f"{what} must hold 'x' with dims ('trajectory', 'time', 'component') as "
                         f"systems.simulate writes; got {got}")
    if not data.attrs.get("system"):
        raise ValueError(f"{what} has no 'system' attribute; make it with systems.simulate")
    return data


def _check_data(data, test_data, eval_options):
    data = _check_dataset(data, "data")
    if test_data is None:
        if data.sizes["trajectory"] < 2:
            raise ValueError(
                "data hold one trajectory, so none is left to evaluate on; pass test_data "
                "(held-out systems.simulate data) or simulate n_traj >= 2"
            )
        n = data.sizes["trajectory"]
        n_test = max(1, n // 4)
        train, test = (
            data.isel(trajectory=slice(0, n - n_test)),
            data.isel(trajectory=slice(n - n_test, None)),
        )
    else:
        train, test = data, _check_dataset(test_data, "test_data")
    a, b = str(train.attrs["system"]).lower(), str(test.attrs["system"]).lower()
    if a != b:
        raise ValueError(
            f"test_data come from system {b!r} but data from {a!r}; evaluate on the same system"
        )
    if train.sizes["component"] != test.sizes["component"]:
        raise ValueError(f"test_data have {test.sizes['component']} components, data "
                         f"{train.sizes['component']}; evaluate on data of the same dimension")
    lt = test.attrs.get("lyapunov_time")
    if not lt:
        import systems

        lt = systems.get(a).lyapunov_time
    dt = float(test["time"].values[1] - test["time"].values[0])
    need = int(round(float(eval_options["horizon_lt"]) * float(lt) / dt)) + 1
    if test.sizes["time"] < need:
        raise ValueError(
            f"evaluation over horizon {eval_options['horizon_lt']} Lyapunov times needs {need} "
            f"samples per held-out trajectory, test data have {test.sizes['time']}; simulate "
            "longer test data or pass evaluate={'horizon_lt': ...}"
        )
    return train, test


# ------------------------------------------------------------------ compare
def compare(
    data: xr.Dataset,
    *,
    strategies,
    seeds=(0,),
    epochs: int = CONFIG_EPOCHS,
    field=None,
    test_data=None,
    out=None,
    evaluate: dict | None = None,
    command: str | None = None,
    progress: bool = False,
    save_models: bool = True,
    client=None,
    cluster: str | None = None,
    threads: int = 1,
    **fit_kwargs,
) -> xr.Dataset:
    """Train every strategy with every seed on ``data``; evaluate on ``test_data``.

    data: a ``systems.simulate`` Dataset (trajectory, time, component). Without
        ``test_data`` its last quarter of trajectories is held out.
    strategies: entries as in the module docstring. seeds: training seeds.
    epochs, field and ``fit_kwargs`` (optimizer, lr, ..., or settings objects such as
        ``optimizer=OptimizerSettings(...)``; see dynfit.config) go to ``dynfit.fit``,
        checked before any work; SET_BY_COMPARE are set per task.
    evaluate: options for ``dynfit.diagnostics.evaluate`` (defaults:
        EVALUATE_DEFAULTS); the same starts for every strategy and seed.
    out: folder for compare.nc, table.md, table.csv, figures, models.
    command: the command that made this run, written into the table header.
    client: a ``distributed.Client``: each (strategy, seed) fit runs as a
        task on its cluster (dynfit.sweep); cluster: 'local:N' (a LocalCluster
        of N worker processes, closed at the end) or 'tcp://HOST:PORT' (an
        existing scheduler) instead of a client. threads: torch threads per
        fit, serial or on a cluster (PyTorch's sums depend on the thread
        count, so the same count gives the same numbers anywhere; one thread
        lets N fits share N cores, and small fields gain little from more).
        With ``out``, each finished fit is stored under out/runs/ and a rerun
        with the same settings skips it.

    Returns a Dataset over strategy, seed, threshold, start, epoch, exponent,
    component: vpt (strategy, seed, start, threshold) and its medians,
    distances, Lyapunov exponents, training cost (training_n_f_evals,
    training_wall_time), final_loss, the training curves (loss,
    accepted_fraction, mean_substeps, n_f_evals over epoch, NaN after an
    early stop); provenance in attrs.
    """
    from . import sweep

    if client is not None and cluster is not None:
        raise ValueError(
            "pass either client (a distributed.Client) or cluster ('local:N' or "
            "'tcp://HOST:PORT'), not both"
        )
    if cluster is not None:
        sweep.parse_cluster(cluster)  # a bad string fails before any work
    checks.integer(
        "threads",
        threads,
        minimum=1,
        fix="pass the number of torch threads per fit, e.g. threads=1",
    )
    specs = _check_strategies(strategies)
    seeds = _check_seeds(seeds)
    checks.integer(
        "epochs", epochs, minimum=1, fix=f"pass the epochs of each fit, e.g. epochs={CONFIG_EPOCHS}"
    )
    eval_options = dict(EVALUATE_DEFAULTS)
    evaluate = renamed_options(evaluate, RENAMED_EVALUATE, "compare(evaluate=...)")
    unknown = sorted(set(evaluate or {}) - set(EVALUATE_DEFAULTS) - {"reference_solvers"})
    if unknown:
        raise ValueError(
            f"unknown evaluate option(s) {unknown}; known: {sorted(EVALUATE_DEFAULTS)}"
        )
    eval_options.update(evaluate or {})
    for key in SET_BY_COMPARE:
        if key in fit_kwargs:
            raise ValueError(
                f"{key!r} is set by compare itself; remove it from the keyword arguments"
            )
    # every fit option (names, values, settings objects) checked before any work
    settings = fit_settings(**({} if field is None else {"field": field}),
                            **{k: v for k, v in fit_kwargs.items() if k != "provenance"})
    field, fit_kwargs = _flat_options(settings, fit_kwargs)
    train, test = _check_data(data, test_data, eval_options)
    out = Path(out) if out is not None else None
    if out is not None:
        ensure_folder(out)  # a clear error before any work if it cannot be written

    tasks = [sweep.Task(i, j, label, name, options, seed, groundtruth=(i, j) == (0, 0))
             for i, (label, name, options) in enumerate(specs) for j, seed in enumerate(seeds)]
    job = sweep.Job(
        train,
        test,
        field,
        int(epochs),
        dict(fit_kwargs),
        eval_options,
        out,
        save_models,
        bool(progress) and client is None and cluster is None,
        int(threads),
    )

    def report(task, r, n_done, n_total):
        s, diag, hist = r["summary"], r["diag"], r["hist"]
        thr = _middle(diag)
        how = "read from an earlier run" if r.get("reused") else f"{r['wall']:.0f} s training"
        print(
            f"compare: [{n_done}/{n_total}] {task.label} seed {task.seed}: VPT median "
            f"{s[f'vpt_median_{thr:g}']:.2f} Lyapunov times (threshold {thr:g}), "
            f"{int(hist.n_f_evals.sum()) if hist.sizes['epoch'] else 0:.3g} training evaluations, "
            f"{how}",
            flush=True,
        )

    t_start = time.perf_counter()
    if cluster is not None:
        with sweep.connect(cluster) as cl:
            runs = sweep.run(tasks, job, client=cl, on_result=report)
    else:
        runs = sweep.run(tasks, job, client=client, on_result=report)
    groundtruth = runs[0, 0]["diag"]["valid_groundtruth_time"]

    ds = _assemble(specs, seeds, runs, groundtruth, int(epochs), fit_kwargs, settings, field, train,
                   test, eval_options, command, time.perf_counter() - t_start)
    if out is not None:
        best = runs[int(ds.attrs["best_index"][0]), int(ds.attrs["best_index"][1])]["diag"]
        write_outputs(ds, out, best_diagnostics=best)
    return ds


def _flat_options(settings, fit_kwargs: dict) -> tuple:
    """(field, keyword arguments) with settings objects spread into the fields they change: what
    each task passes to fit, what the sweep's cache key and the Dataset's attrs record."""
    flat = {}
    for key, value in fit_kwargs.items():
        if key in FIT_GROUPS and value is not None and not isinstance(value, str):
            default = FIT_GROUPS[key]()
            flat.update({f.name: getattr(value, f.name) for f in fields(value)
                         if getattr(value, f.name) != getattr(default, f.name)})
    flat.update({k: v for k, v in fit_kwargs.items() if k not in FIT_GROUPS or isinstance(v, str)})
    flat.pop("field", None)
    field = settings.model.field
    return (field.config() if hasattr(field, "config") else field), flat


def _middle(diag) -> float:
    thr = diag["threshold"].values
    return float(thr[int(np.argmin(np.abs(thr - 0.4)))])


def _assemble(specs, seeds, runs, groundtruth, epochs, fit_kwargs, settings, field, train, test,
              eval_options, command, total_wall) -> xr.Dataset:
    n_s, n_seed = len(specs), len(seeds)
    d0 = runs[0, 0]["diag"]
    thr = d0["threshold"].values
    n_start, dim = d0.sizes["start"], d0.sizes["component"]
    n_ep = max(runs[k]["hist"].sizes["epoch"] for k in runs)
    vpt = np.full((n_s, n_seed, n_start, len(thr)), np.nan)
    lam = np.full((n_s, n_seed, dim), np.nan)
    wass = np.full((n_s, n_seed, dim), np.nan)
    scalars = {
        k: np.full((n_s, n_seed), np.nan)
        for k in (
            "density_divergence",
            "spectrum_distance",
            "correlation_dimension",
            "training_n_f_evals",
            "training_wall_time",
            "evaluation_wall_time",
            "final_loss",
            "epochs_run",
            "rollout_accepted_fraction",
            "rollout_mean_substeps",
            "rollout_n_f_evals",
        )
    }
    curves = {k: np.full((n_s, n_seed, n_ep), np.nan) for k in HISTORY}
    for (i, j), r in runs.items():
        d, h, s = r["diag"], r["hist"], r["summary"]
        vpt[i, j] = d["vpt"].values
        lam[i, j] = d["lyapunov_exponents"].sel(source="surrogate").values
        wass[i, j] = d["wasserstein"].values
        scalars["density_divergence"][i, j] = float(d["density_divergence"])
        scalars["spectrum_distance"][i, j] = float(d["spectrum_distance"])
        scalars["correlation_dimension"][i, j] = float(
            d["correlation_dimension"].sel(source="surrogate")
        )
        n = h.sizes["epoch"]
        scalars["training_n_f_evals"][i, j] = float(h["n_f_evals"].sum()) if n else 0.0
        scalars["training_wall_time"][i, j] = r["wall"]
        scalars["evaluation_wall_time"][i, j] = r["eval_wall"]
        scalars["final_loss"][i, j] = float(h["loss"][-1]) if n else np.nan
        scalars["epochs_run"][i, j] = n
        scalars["rollout_accepted_fraction"][i, j] = s.get("accepted_fraction", np.nan)
        scalars["rollout_mean_substeps"][i, j] = s.get("mean_substeps", np.nan)
        scalars["rollout_n_f_evals"][i, j] = s.get("n_f_evals", np.nan)
        for k in HISTORY:
            curves[k][i, j, :n] = h[k].values.astype(float)
    with np.errstate(all="ignore"):
        med = np.median(vpt, axis=2)
    units = {
        "density_divergence": "nats",
        "spectrum_distance": "1",
        "correlation_dimension": "1",
        "training_n_f_evals": "count",
        "training_wall_time": "s",
        "evaluation_wall_time": "s",
        "final_loss": "squared standardised state units",
        "epochs_run": "1",
        "rollout_accepted_fraction": "1",
        "rollout_mean_substeps": "1",
        "rollout_n_f_evals": "count",
    }
    long_names = {
        "training_n_f_evals": "vector-field evaluations over all training epochs",
        "training_wall_time": "training wall time",
        "final_loss": "training loss of the last epoch",
        "rollout_n_f_evals": "vector-field evaluations of the short evaluation rollouts",
        "density_divergence": "KL(truth || surrogate) of state-space densities",
        "spectrum_distance": "Hellinger distance of power spectra",
        "correlation_dimension": "correlation dimension of the surrogate's long run",
    }
    sd = ("strategy", "seed")
    data_vars = {
        "vpt": (
            sd + ("start", "threshold"),
            vpt,
            {"units": "Lyapunov times", "long_name": "valid prediction time"},
        ),
        "vpt_median": (
            sd + ("threshold",),
            med,
            {"units": "Lyapunov times", "long_name": "median VPT over held-out starts"},
        ),
        "vpt_mean": (
            sd + ("threshold",),
            vpt.mean(axis=2),
            {"units": "Lyapunov times", "long_name": "mean VPT over held-out starts"},
        ),
        "valid_groundtruth_time": (
            ("start", "threshold"),
            groundtruth.values,
            dict(groundtruth.attrs),
        ),
        "lyapunov_exponents": (
            sd + ("exponent",),
            lam,
            {"units": "1 / time unit", "long_name": "surrogate Lyapunov exponents"},
        ),
        "lyapunov_exponents_truth": (
            ("exponent",),
            d0["lyapunov_exponents"].sel(source="truth").values,
            {"units": "1 / time unit", "long_name": "true Lyapunov exponents"},
        ),
        "correlation_dimension_truth": (
            (),
            float(d0["correlation_dimension"].sel(source="truth")),
            {"units": "1"},
        ),
        "wasserstein": (
            sd + ("component",),
            wass,
            {"units": "attractor std", "long_name": "1-D Wasserstein distance / truth std"},
        ),
    }
    for k, v in scalars.items():
        data_vars[k] = (
            sd,
            v,
            {"units": units[k], **({"long_name": long_names[k]} if k in long_names else {})},
        )
    for k, v in curves.items():
        a = history_attrs(k)
        data_vars[k] = (sd + ("epoch",), v, {"units": a["units"],
                                             "long_name": f"training, per epoch: {a['long_name']}"})
    labels = [s[0] for s in specs]
    ds = xr.Dataset(
        data_vars,
        coords={"strategy": labels, "seed": np.asarray(seeds, np.int64),
                "strategy_name": ("strategy", [s[1] for s in specs]),
                "strategy_options": ("strategy", [json.dumps(s[2], sort_keys=True) for s in specs]),
                "start": np.arange(n_start, dtype=np.int64),
                "threshold": ("threshold", thr, {"units": "attractor std"}),
                "component": d0["component"].values, "exponent": d0["exponent"].values,
                "epoch": np.arange(n_ep, dtype=np.int64)},
    )
    t_mid = _middle(d0)
    score = np.nan_to_num(ds["vpt_median"].sel(threshold=t_mid).values, nan=-1.0)
    bi, bj = np.unravel_index(int(np.argmax(score)), score.shape)
    first_hist = runs[0, 0]["hist"]
    ds.attrs.update(
        {
            "format": FORMAT,
            "system": str(test.attrs["system"]),
            "dt": float(d0.attrs["dt"]),
            "lyapunov_time": float(d0.attrs["lyapunov_time"]),
            "epochs": int(epochs),
            "optimizer": settings.optimizer.optimizer,
            "field": json.dumps(
                field if isinstance(field, dict) or field is None else type(field).__name__
            ),
            "fit_options": json.dumps(
                {
                    k: v
                    for k, v in fit_kwargs.items()
                    if isinstance(v, (str, int, float, bool, type(None)))
                },
                sort_keys=True,
            ),
            "evaluate_options": json.dumps(
                {k: list(v) if isinstance(v, tuple) else v for k, v in eval_options.items()},
                sort_keys=True,
                default=str,
            ),
            "train_trajectories": int(train.sizes["trajectory"]),
            "train_samples": int(train.sizes["time"]),
            "test_trajectories": int(test.sizes["trajectory"]),
            "test_samples": int(test.sizes["time"]),
            "data_method": str(train.attrs.get("method", "")),
            "vpt_threshold_ranked": t_mid,
            "rollout_intervals": int(n_start * (d0.sizes["time"] - 1)),
            "best_strategy": labels[bi],
            "best_seed": int(seeds[bj]),
            "best_index": [int(bi), int(bj)],
            "command": command or "",
            "device": str(first_hist.attrs.get("device", "")),
            "total_wall_time_s": float(total_wall),
            "dynfit_version": _version(),
            "created_by": f"dynfit.compare (dynfit {_version()})",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    return ds


# ------------------------------------------------------------------ files
def write_outputs(ds: xr.Dataset, out, *, best_diagnostics: xr.Dataset | None = None) -> dict:
    """compare.nc, best_diagnostics.nc, table.md, table.csv and the figures into ``out``."""
    out = ensure_folder(out)
    write_netcdf(ds, out / "compare.nc")
    files = {"compare": out / "compare.nc"}
    if best_diagnostics is not None:
        write_netcdf(best_diagnostics, out / "best_diagnostics.nc")
        files["best_diagnostics"] = out / "best_diagnostics.nc"
    files["table_md"], files["table_csv"] = write_tables(ds, out)
    files.update(plot_compare(ds, out, best_diagnostics=best_diagnostics))
    return files


def load_compare(path) -> xr.Dataset:
    """Read compare.nc written by :func:`compare`; checks it is one."""
    from .io import read_netcdf

    ds = read_netcdf(path, "compare", "pass a compare.nc written by dynfit.compare")
    check_compare(ds)
    return ds
