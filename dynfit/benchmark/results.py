"""The benchmark's results: one Dataset (system x method x noise x seed [x start]), a leaderboard,
figures."""

from __future__ import annotations

import json
import math
import platform

import numpy as np
import xarray as xr

from .scores import THRESHOLDS

__all__ = ["collect", "leaderboard", "figures", "versions", "LEADER_THRESHOLD"]

LEADER_THRESHOLD = 0.4
_SCALARS = (
    "fit_seconds",
    "fit_cpu_seconds",
    "density_distance",
    "density_floor",
    "lle_model",
    "lle_true",
)
_PER_SYSTEM = ("lyapunov_time", "reference_valid_time", "dt", "period")


def versions(methods) -> dict:
    """Versions of every package the run used (attrs ``version_<package>``)."""
    import importlib.metadata as md

    names = ["dynfit", "torch", "numpy", "scipy", "xarray", "torchdiffeq", "numba", "dysts"]
    if any(m.startswith("pysindy") for m in methods):
        names.append("pysindy")
    if any(m in ("esn", "nvar") for m in methods):
        names.append("reservoirpy")
    out = {"version_python": platform.python_version()}
    for name in names:
        try:
            out[f"version_{name}"] = md.version(name)
        except md.PackageNotFoundError:
            out[f"version_{name}"] = "not installed"
    return out


def collect(
    results: dict, *, systems, methods, noise, seeds, protocol: str, attrs: dict | None = None
) -> xr.Dataset:
    """One Dataset from {(system, method, noise, seed): task Dataset}; missing cells are NaN.

    Variables: ``vpt``, ``vpt_median``, ``vpt_capped`` (fraction of starts), per (system, method,
    noise,
    seed, threshold); ``vpt_start`` and ``vpt_start_capped`` per start too; ``smape_horizon``,
    ``blowup_fraction``, ``fit_seconds``, ``fit_cpu_seconds``, climate scores and ``status`` per
    (system,
    method, noise, seed); per system ``lyapunov_time`` and ``reference_valid_time``.
    """
    systems, methods, noise, seeds = (
        list(systems),
        list(methods),
        [float(x) for x in noise],
        list(seeds),
    )
    n_start = max([ds.sizes["start"] for ds in results.values()] or [1])
    shape = (len(systems), len(methods), len(noise), len(seeds))
    vpt_start = np.full(shape + (n_start, len(THRESHOLDS)), np.nan)
    capped_start = np.zeros(shape + (n_start, len(THRESHOLDS)), dtype=np.int8)
    smape = np.full(shape, np.nan)
    blow = np.full(shape, np.nan)
    scal = {k: np.full(shape, np.nan) for k in _SCALARS}
    per_sys = {k: np.full(len(systems), np.nan) for k in _PER_SYSTEM}
    status = np.full(shape, "missing", dtype=object)
    message = np.full(shape, "", dtype=object)
    for (s, m, z, e), ds in results.items():
        idx = (systems.index(s), methods.index(m), noise.index(float(z)), seeds.index(e))
        status[idx] = ds.attrs.get("status", "unknown")
        message[idx] = ds.attrs.get("message", "")[:300]
        for k in _SCALARS:
            scal[k][idx] = float(ds.attrs.get(k, math.nan))
        for k in _PER_SYSTEM:
            if k in ds.attrs and math.isfinite(float(ds.attrs[k])):
                per_sys[k][idx[0]] = float(ds.attrs[k])
        if status[idx] != "ok":
            continue
        b = ds.sizes["start"]
        vpt_start[idx][:b] = ds.vpt.values
        capped_start[idx][:b] = ds.vpt_capped.values
        smape[idx] = float(np.mean(ds.smape_horizon.values))
        blow[idx] = float(np.mean(ds.blowup.values))
    dims = ("system", "method", "noise", "seed")
    dims_t = dims + ("threshold",)
    with np.errstate(all="ignore"), _quiet():
        vpt = np.nanmean(vpt_start, axis=4)
        vpt_med = np.nanmedian(vpt_start, axis=4)
        valid = np.isfinite(vpt_start).any(axis=4)
        capped = np.where(valid, capped_start.mean(axis=4), np.nan)
    lt = "valid prediction time in Lyapunov times"
    data = {
        "vpt": (dims_t, vpt, {"units": "1", "long_name": f"{lt}, mean over held-out starts"}),
        "vpt_median": (
            dims_t,
            vpt_med,
            {"units": "1", "long_name": f"{lt}, median over held-out starts"},
        ),
        "vpt_capped": (
            dims_t,
            capped,
            {
                "units": "1",
                "long_name": "fraction of starts whose VPT reached the "
                "end of the forecast (a lower bound)",
            },
        ),
        "vpt_start": (
            dims + ("start", "threshold"),
            vpt_start,
            {"units": "1", "long_name": f"{lt}, per start"},
        ),
        "vpt_start_capped": (
            dims + ("start", "threshold"),
            capped_start,
            {"units": "1", "long_name": "1 where the start's VPT reached the end of the forecast"},
        ),
        "smape_horizon": (
            dims,
            smape,
            {
                "units": "1",
                "long_name": "mean time until the running sMAPE exceeds 30, " "Lyapunov times",
            },
        ),
        "blowup_fraction": (
            dims,
            blow,
            {
                "units": "1",
                "long_name": "fraction of free runs that went non-finite " "or left the attractor",
            },
        ),
        "fit_seconds": (
            dims,
            scal["fit_seconds"],
            {"units": "s", "long_name": "wall time of the fit"},
        ),
        "fit_cpu_seconds": (
            dims,
            scal["fit_cpu_seconds"],
            {"units": "s", "long_name": "CPU time of the fit"},
        ),
        "density_distance": (
            dims,
            scal["density_distance"],
            {
                "units": "1",
                "long_name": "KL divergence (nats) of a long free run's state density "
                "from the truth's",
            },
        ),
        "density_floor": (
            dims,
            scal["density_floor"],
            {"units": "1", "long_name": "the same between two true long runs (the floor)"},
        ),
        "lle_model": (
            dims,
            scal["lle_model"],
            {
                "units": "1",
                "long_name": "largest Lyapunov exponent of the "
                "model's vector field, per time unit",
            },
        ),
        "lle_true": (
            dims,
            scal["lle_true"],
            {"units": "1", "long_name": "largest Lyapunov exponent of the flow"},
        ),
        "status": (
            dims,
            status.astype(str),
            {"long_name": "ok, fit failed, forecast failed, failed, timed out, " "missing"},
        ),
        "message": (dims, message.astype(str), {"long_name": "why a task failed (tail)"}),
        "lyapunov_time": (
            "system",
            per_sys["lyapunov_time"],
            {"units": "1", "long_name": "Lyapunov time, in the " "flow's time units"},
        ),
        "reference_valid_time": (
            "system",
            per_sys["reference_valid_time"],
            {
                "units": "1",
                "long_name": "median LT over which the reference solution agrees "
                "with a second solver",
            },
        ),
        "sampling_dt": (
            "system",
            per_sys["dt"],
            {"units": "1", "long_name": "sampling step (period / 100)"},
        ),
    }
    coords = {
        "system": systems,
        "method": methods,
        "noise": noise,
        "seed": seeds,
        "threshold": list(THRESHOLDS),
        "start": np.arange(n_start),
    }
    ds = xr.Dataset(data, coords=coords)
    ds["noise"].attrs.update(
        units="1", long_name="observation noise, fraction of each component's std"
    )
    ds["threshold"].attrs.update(units="1", long_name="normalised-error threshold of the VPT")
    settings = {}
    for (s, m, z, e), r in results.items():
        settings.setdefault(m, r.attrs.get("settings", "{}"))
    ds.attrs.update(
        {
            "Conventions": "CF-1.10",
            "title": "dynfit forecasting benchmark",
            "protocol": protocol,
            "method_settings": json.dumps(
                {m: json.loads(v) for m, v in settings.items()}, sort_keys=True
            ),
            **versions(methods),
            **(attrs or {}),
        }
    )
    return ds


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _fmt(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.2f}"


def leaderboard(ds: xr.Dataset, *, threshold: float = LEADER_THRESHOLD) -> str:
    """Markdown: per noise level, each method's median and quartiles of the VPT (mean over starts,
    over
    systems x seeds), wins per system, blow-ups, failures and fit time; then a per-system table."""
    v = ds.vpt.sel(threshold=threshold)
    lines = [
        f"# Forecasting benchmark: protocol `{ds.attrs.get('protocol')}`",
        "",
        f"VPT in Lyapunov times at normalised-error threshold {threshold:g} "
        "(mean over held-out starts; "
        "the statistics run over systems x seeds). A failed or timed-out fit counts as VPT 0. "
        f"Systems: {ds.sizes['system']}; seeds: {ds.sizes['seed']}.",
        "",
    ]
    for z in ds.noise.values:
        vz = v.sel(noise=z).fillna(0.0)
        per_sys = vz.mean("seed")  # (system, method)
        best = per_sys.max("method")
        wins = (per_sys >= best - 1e-12) & (best > 0)
        lines += [
            f"## Noise {z:g}",
            "",
            "| method | median | 25% | 75% | mean | wins | blow-up | failed | capped "
            "| fit CPU s (median) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        order = sorted(
            ds.method.values, key=lambda m: -float(np.median(vz.sel({"method": m}).values))
        )
        for m in order:
            x = vz.sel({"method": m}).values.ravel()
            st = ds.status.sel({"noise": z, "method": m}).values.ravel()
            with _quiet():
                blow = float(np.nanmean(ds.blowup_fraction.sel({"noise": z, "method": m}).values))
                cap = float(
                    np.nanmean(
                        ds.vpt_capped.sel({"noise": z, "method": m, "threshold": threshold}).values
                    )
                )
                fit_s = float(
                    np.nanmedian(ds.fit_cpu_seconds.sel({"noise": z, "method": m}).values)
                )
            n_wins = int(wins.sel({"method": m}).sum())
            lines.append(
                f"| {m} | {_fmt(float(np.median(x)))} | {_fmt(float(np.percentile(x, 25)))} | "
                f"{_fmt(float(np.percentile(x, 75)))} | {_fmt(float(np.mean(x)))} | "
                f"{n_wins} | {_fmt(blow)} | {int((st != 'ok').sum())} | "
                f"{_fmt(cap)} | {_fmt(fit_s)} |"
            )
        lines.append("")
    lines += ["## Per system (noise 0 where present, mean over seeds)", ""]
    z0 = float(ds.noise.values[0])
    methods = list(ds.method.values)
    lines += ["| system | LT | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for s in ds.system.values:
        row = v.sel(system=s, noise=z0).mean("seed")
        st = ds.status.sel(system=s, noise=z0)
        cells = []
        for m in methods:
            bad = [x for x in st.sel({"method": m}).values.ravel() if x != "ok"]
            cells.append(_fmt(float(row.sel({"method": m}))) + (f" ({bad[0]})" if bad else ""))
        lines.append(
            f"| {s} | {_fmt(float(ds.lyapunov_time.sel(system=s)))} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def figures(ds: xr.Dataset, out, *, threshold: float = LEADER_THRESHOLD) -> list:
    """vpt_by_system.png, rank.png and (several noise levels) vpt_vs_noise.png in ``out``; returns
    paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import save_figure

    paths = []
    v = ds.vpt.sel(threshold=threshold).fillna(0.0)
    methods = list(ds.method.values)
    z0 = float(ds.noise.values[0])
    per = v.sel(noise=z0).mean("seed")
    order = list(per.mean("method").sortby(per.mean("method")).system.values)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(order) + 1.5)))
    for k, m in enumerate(methods):
        offset = (k - len(methods) / 2) * 0.08
        ax.plot(
            per.sel({"method": m, "system": order}).values,
            np.arange(len(order)) + offset,
            "o",
            ms=4,
            label=m,
        )
    ax.set_yticks(np.arange(len(order)))
    ax.set_yticklabels(order, fontsize=6 if len(order) > 40 else 8)
    ax.set_xlabel(f"VPT (Lyapunov times, threshold {threshold:g})")
    ax.set_title(f"VPT per system, noise {z0:g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "vpt_by_system.png", dpi=120))
    plt.close(fig)
    from scipy.stats import rankdata

    vals = per.transpose("system", "method").values  # (system, method)
    ranks = (
        np.vstack([rankdata(-row) for row in vals]) if vals.size else np.zeros((0, len(methods)))
    )
    fig, ax = plt.subplots(figsize=(6, 3.5))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, ranks.shape[0])
    for k, m in enumerate(methods):
        ax.scatter(np.full(ranks.shape[0], k) + jitter, ranks[:, k], s=8, alpha=0.5)
        if ranks.shape[0]:
            ax.plot(k, ranks[:, k].mean(), "k_", ms=20)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=30)
    ax.set_ylabel("rank per system (1 = best)")
    ax.invert_yaxis()
    ax.set_title("Ranks over systems (bar: mean rank)")
    fig.tight_layout()
    paths.append(save_figure(fig, out / "rank.png", dpi=120))
    plt.close(fig)
    if ds.sizes["noise"] > 1:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for m in methods:
            med = v.sel({"method": m}).median(("system", "seed"))
            ax.plot(ds.noise.values * 100, med.values, "o-", label=m)
        ax.set_xlabel("observation noise (% of each component's std)")
        ax.set_ylabel(f"median VPT (LT, threshold {threshold:g})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(save_figure(fig, out / "vpt_vs_noise.png", dpi=120))
        plt.close(fig)
    return paths
