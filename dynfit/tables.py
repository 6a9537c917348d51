"""Tables of a ``dynfit.compare`` Dataset: a row per strategy (table.md), per strategy and seed
(table.csv).

Also the compare Dataset's format tag and its check, which the figures
(``dynfit.plot.plot_vpt``) and ``dynfit.compare.load_compare`` share.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import xarray as xr

from systems.files import ensure_folder

from .io import write_text

__all__ = ["compare_table", "write_tables"]

FORMAT = "dynfit-compare-1"


def check_compare(ds) -> None:
    """Raise unless ``ds`` is a Dataset made by ``dynfit.compare`` (TypeError, or ValueError
    naming what is off)."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"expected a compare Dataset (xarray.Dataset), got {type(ds).__name__}")
    missing = [v for v in ("vpt", "strategy_name", "training_n_f_evals") if v not in ds.variables]
    if ds.attrs.get("format") != FORMAT or missing:
        raise ValueError(
            f"not a dynfit compare Dataset (attrs['format'] = {ds.attrs.get('format')!r}, expected "
            f"{FORMAT!r}; missing {missing}); make one with dynfit.compare"
        )


def compare_table(ds: xr.Dataset) -> list[dict]:
    """One row per strategy (values aggregated over seeds): list of {column: value}.

    VPT columns: median over all starts and seeds, per threshold. Distances,
    exponents, losses, accepted fractions in training (first and last
    epoch) and costs: mean over seeds; free-run evaluations per sampling
    interval of the short evaluation rollouts.
    """
    check_compare(ds)
    rows = []
    for s in ds["strategy"].values:
        sub = ds.sel(strategy=s)
        row = {
            "strategy": str(s),
            "solver": _solver_text(str(sub["strategy_name"].values),
                                   str(sub["strategy_options"].values)),
        }
        for h in ds["threshold"].values:
            v = sub["vpt"].sel(threshold=h).values
            row[f"vpt_median_{h:g}"] = float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan
        row["lyapunov_max"] = float(np.nanmean(sub["lyapunov_exponents"].isel(exponent=0)))
        row["density_divergence"] = float(np.nanmean(sub["density_divergence"]))
        row["wasserstein_mean"] = float(np.nanmean(sub["wasserstein"]))
        row["spectrum_distance"] = float(np.nanmean(sub["spectrum_distance"]))
        row["training_n_f_evals"] = float(np.nanmean(sub["training_n_f_evals"]))
        row["training_wall_time"] = float(np.nanmean(sub["training_wall_time"]))
        row["final_loss"] = float(np.nanmean(sub["final_loss"]))
        # torchdiffeq reports no acceptance
        reports = str(sub["strategy_name"].values) != "torchdiffeq"
        row["accepted_first"] = (
            float(np.nanmean(sub["accepted_fraction"].isel(epoch=0))) if reports else np.nan
        )
        row["accepted_last"] = (
            float(np.nanmean(_last(sub["accepted_fraction"]))) if reports else np.nan
        )
        intervals = float(ds.attrs.get("rollout_intervals", np.nan))
        row["rollout_evals_per_interval"] = float(np.nanmean(sub["rollout_n_f_evals"])) / intervals
        rows.append(row)
    return rows


def _last(curve):
    """The last finite value along epoch, per seed."""
    v = curve.transpose(..., "epoch").values
    out = np.full(v.shape[:-1], np.nan)
    for idx in np.ndindex(*v.shape[:-1]):
        finite = v[idx][np.isfinite(v[idx])]
        if finite.size:
            out[idx] = finite[-1]
    return out


def _solver_text(name: str, options: str) -> str:
    opts = json.loads(options) if options else {}
    base = {"black-box": "Fehlberg 3(2), Heun error estimate",
            "batch": "Fehlberg 3(2) batch procedure",
            "fehlberg": "Fehlberg 3(2), error against target",
            "curriculum": "Fehlberg 3(2), target error, horizon curriculum",
            "torchdiffeq": f"torchdiffeq {opts.get('method', 'rk4')}"}.get(name, name)
    if name == "torchdiffeq":
        extra = {k: v for k, v in opts.items() if k != "method"}
    else:
        extra = opts
    if extra:
        base += " (" + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())) + ")"
    return base


_HEADERS = {
    "strategy": "strategy",
    "solver": "solver in training",
    "lyapunov_max": "λ1 surrogate [1/time]",
    "density_divergence": "density KL [nats]",
    "wasserstein_mean": "W1 [std]",
    "spectrum_distance": "spectrum dist.",
    "training_n_f_evals": "training evals",
    "training_wall_time": "training time [s]",
    "final_loss": "final loss",
    "accepted_first": "accepted in training, epoch 0",
    "accepted_last": "accepted, last epoch",
    "rollout_evals_per_interval": "free-run evals / interval",
}


def _fmt(key, v) -> str:
    if isinstance(v, str):
        return v
    if not math.isfinite(v):
        return "n/a"
    if key == "training_wall_time":
        return f"{v:.0f}"
    if key.startswith("vpt") or key == "rollout_evals_per_interval":
        return f"{v:.2f}"
    if key.startswith("accepted"):
        return f"{100 * v:.1f}%"
    return f"{v:.3g}"


def write_tables(ds: xr.Dataset, out) -> tuple[Path, Path]:
    """Write table.md (one row per strategy) and table.csv (one row per strategy and seed)."""
    out = ensure_folder(out)
    rows = compare_table(ds)
    cols = list(rows[0])
    heads = [
        _HEADERS.get(
            c, f"VPT median @{c.rsplit('_', 1)[1]} [Lyapunov times]" if c.startswith("vpt") else c
        )
        for c in cols
    ]
    a = ds.attrs
    lines = [f"# Strategy comparison on {a['system']}", ""]
    if a.get("command"):
        lines += ["Made with:", "", "```bash", a["command"], "```", ""]
    lines += [
        f"{a['train_trajectories']} training trajectories of {a['train_samples']} samples "
        f"(dt = {a['dt']:g}), {a['epochs']} epochs of {a['optimizer']}, field {a['field']}, "
        f"seeds {list(map(int, ds['seed'].values))}; held-out evaluation "
        f"`{a['evaluate_options']}` on {a['test_trajectories']} trajectories. VPT: median over "
        "held-out starts and seeds; other columns: mean over seeds. Lyapunov exponent of the "
        f"truth: {float(ds['lyapunov_exponents_truth'][0]):.3f}. "
        f"Best (median VPT at {a['vpt_threshold_ranked']:g}): {a['best_strategy']} "
        f"seed {a['best_seed']}. Created {a['created']} ({a['created_by']}, "
        f"device {a.get('device', '')}).",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(c, row[c]) for c in cols) + " |")
    md = out / "table.md"
    write_text(md, "\n".join(lines) + "\n")

    path = out / "table.csv"
    with io.StringIO(newline="") as fh:  # the rows are gathered in memory, then written atomically
        w = csv.writer(fh)
        thr = [f"{h:g}" for h in ds["threshold"].values]
        keys = ["density_divergence", "spectrum_distance", "correlation_dimension",
                "training_n_f_evals", "training_wall_time", "final_loss", "epochs_run",
                "rollout_mean_substeps"]
        w.writerow(
            ["strategy", "strategy_name", "strategy_options", "seed"]
            + [f"vpt_median_{t}" for t in thr]
            + [f"vpt_mean_{t}" for t in thr]
            + ["lyapunov_max", "wasserstein_mean"]
            + keys
        )
        for s in ds["strategy"].values:
            for seed in ds["seed"].values:
                sub = ds.sel(strategy=s, seed=seed)
                w.writerow(
                    [str(s), str(sub["strategy_name"].values), str(sub["strategy_options"].values),
                     int(seed)]
                    + [repr(float(v)) for v in sub["vpt_median"].values]
                    + [repr(float(v)) for v in sub["vpt_mean"].values]
                    + [repr(float(sub["lyapunov_exponents"][0])),
                       repr(float(sub["wasserstein"].mean()))]
                    + [repr(float(sub[k])) for k in keys]
                )
        write_text(path, fh.getvalue())
    return md, path
