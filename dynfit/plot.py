"""Figures of dynfit Datasets (matplotlib), each returning a ``Figure``.

Every function takes a Dataset (from ``dynfit.evaluate``, a training
history from ``dynfit.fit`` or a ``dynfit.compare`` Dataset), returns the Figure, writes a PNG when
given ``path`` and shows the figure on screen only when ``show`` is True, or when it
is None and matplotlib runs interactively with a GUI backend. Figures are made
without pyplot otherwise, so they are safe under Agg and in loops.

Truth is drawn black and solid, the surrogate orange and dashed (or with
crosses), in every figure; where both are clouds of points the truth is drawn
on top, both subsampled and translucent, so each stays visible. Every axis
is labelled with the data's component names and has its own scale (angles
and velocities never share a colour or axis scale).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from _dyncore import checks
from systems.files import ensure_folder

from ._history import REQUIRED as HISTORY_REQUIRED
from .tables import check_compare

__all__ = [
    "plot_attractor",
    "plot_density",
    "plot_space_time",
    "plot_error_growth",
    "plot_time_series",
    "plot_training",
    "plot_error_vs_evaluations",
    "plot_return_map",
    "plot_diagnostics",
    "plot_vpt",
    "plot_compare",
]

TRUTH = dict(color="black", linestyle="-", label="truth")
SURROGATE = dict(color="tab:orange", linestyle="--", label="surrogate")
_NON_GUI = ("agg", "pdf", "ps", "svg", "pgf", "cairo", "template")
MAX_PAIRS_COMPONENTS = 4  # pairwise projections of at most this many components (the leading ones)
MAX_POINTS = 4000  # points per source in a projection (a seeded subsample of the long run)


# ------------------------------------------------------------------ helpers
def _interactive() -> bool:
    import matplotlib

    backend = matplotlib.get_backend().lower()
    return backend not in _NON_GUI and (matplotlib.is_interactive() or hasattr(sys, "ps1"))


def _figure(figsize, show):
    show = _interactive() if show is None else bool(show)
    if show:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize), True
    from matplotlib.figure import Figure

    return Figure(figsize=figsize), False


def _finish(fig, path, show):
    if path is not None:
        from .io import save_figure  # atomic: never half a PNG

        save_figure(fig, Path(path), dpi=110, bbox_inches="tight")
    if show:
        import matplotlib.pyplot as plt

        plt.show(block=False)
    return fig


def _need(ds, names, what):
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{what} needs an xarray.Dataset, got {type(ds).__name__}")
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise ValueError(f"{what} needs variables {list(names)}; the Dataset lacks {missing} "
                         f"(has {sorted(ds.data_vars)})")


def _units(da, default="state units"):
    return da.attrs.get("units", default)


def _long_runs(ds):
    """Truth and surrogate long runs after the transient: two arrays (n, dim)."""
    cut = int(float(ds.attrs.get("long_transient", 0.1)) * ds.sizes["long_time"])
    lr = ds["long_run"].values[:, cut:]
    return lr[0], lr[1]


def _limits(x, pad=0.08):
    lo, hi = np.nanmin(x, 0), np.nanmax(x, 0)
    w = hi - lo
    return lo - pad * w, hi + pad * w


def _vpt_at(ds, threshold):
    thr = ds["threshold"].values
    i = int(np.argmin(np.abs(thr - threshold)))
    return (
        float(thr[i]),
        ds["vpt"].isel(threshold=i).values,
        ds["valid_groundtruth_time"].isel(threshold=i).values,
    )


# ------------------------------------------------------------------ diagnostics figures
def plot_attractor(ds: xr.Dataset, path=None, *, show=None):
    """Attractor of truth and surrogate from the long runs of ``evaluate``.

    Pairwise 2-D projections of the components (of the first
    MAX_PAIRS_COMPONENTS = 4 for more), each axis in its component's name
    and scale (the truth's range), truth drawn over the surrogate as
    subsampled points; with 3 components also the two 3-D views side by side.
    Surrogate samples outside the truth's frame are counted in the title.
    """
    _need(ds, ["long_run"], "plot_attractor")
    comps = [str(c) for c in ds["component"].values]
    dim = len(comps)
    units = _units(ds["long_run"])
    tr, su = _long_runs(ds)
    lo, hi = _limits(tr)
    inside = np.all(np.isfinite(su), 1) & np.all((su >= lo) & (su <= hi), 1)
    su_in = np.where(inside[:, None], su, np.nan)
    note = (
        "" if inside.all() else f" ({100 * (1 - inside.mean()):.0f}% of the run outside the frame)"
    )
    tr_s, su_s = _subsample(tr), _subsample(su_in)
    lead = list(range(min(dim, MAX_PAIRS_COMPONENTS)))
    pairs = [(a, b) for i, a in enumerate(lead) for b in lead[i + 1:]] or [(0, 0)]
    cols = min(len(pairs), 3)
    rows = -(-len(pairs) // cols)
    top = 1 if dim == 3 else 0
    fig, shown = _figure((4.6 * cols, 4.2 * (rows + 1.2 * top)), show)
    gs = fig.add_gridspec(
        rows + top, 2 * cols, height_ratios=[1.25] * top + [1] * rows, hspace=0.35, wspace=0.9
    )
    if top:
        for j, (x, style, title) in enumerate(
            ((tr, TRUTH, "truth"), (su_in, SURROGATE, "surrogate" + note))
        ):
            ax = fig.add_subplot(gs[0, j * cols:(j + 1) * cols], projection="3d")
            ax.plot(x[:, 0], x[:, 1], x[:, 2], color=style["color"], lw=0.4, alpha=0.8)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.set_zlim(lo[2], hi[2])
            for setter, c in zip((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel), comps):
                setter(f"{c} [{units}]")
            ax.set_title(title, color=style["color"])
    for j, (a, b) in enumerate(pairs):
        ax = fig.add_subplot(gs[top + j // cols, 2 * (j % cols):2 * (j % cols) + 2])
        _projection(ax, tr_s, su_s, a, b, comps, units, lo, hi)
        if j == 0:
            leg = ax.legend(loc="upper left", fontsize="small", markerscale=8)
            for h in leg.legend_handles:
                h.set_alpha(1.0)
    shown_comps = (
        ""
        if dim <= MAX_PAIRS_COMPONENTS
        else f"; pairs of the first {MAX_PAIRS_COMPONENTS} of {dim}"
    )
    fig.suptitle(
        f"{ds.attrs.get('system', '')}: long free run of the surrogate against the truth "
        f"({ds.sizes['long_time']} samples, dt = {ds.attrs.get('dt', '?')}{shown_comps}){note}"
    )
    return _finish(fig, path, shown)


def _subsample(x: np.ndarray, n: int = MAX_POINTS) -> np.ndarray:
    """At most n rows of x, a seeded draw (the same rows for the same length)."""
    if x.shape[0] <= n:
        return x
    return x[np.sort(np.random.default_rng(0).choice(x.shape[0], n, replace=False))]


def _projection(ax, tr, su, a, b, comps, units, lo, hi):
    """Surrogate points under truth points (both translucent), in the truth's frame."""
    ax.plot(su[:, a], su[:, b], ".", color=SURROGATE["color"], ms=1.5, alpha=0.35, zorder=1,
            label="surrogate", rasterized=True)
    ax.plot(
        tr[:, a],
        tr[:, b],
        ".",
        color=TRUTH["color"],
        ms=1.0,
        alpha=0.35,
        zorder=2,
        label="truth",
        rasterized=True,
    )
    ax.set_xlim(lo[a], hi[a])
    ax.set_ylim(lo[b], hi[b])
    ax.set_xlabel(f"{comps[a]} [{units}]")
    ax.set_ylabel(f"{comps[b]} [{units}]" if a != b else "")


def plot_density(ds: xr.Dataset, path=None, *, bins: int = 40, max_components: int = 10, show=None):
    """Per-component histograms of the long runs: truth (black) against surrogate (orange).

    One panel per component (the first ``max_components``), each on its own
    axis (the truth's range); the per-component Wasserstein distance and the
    density divergence of ``evaluate`` in the titles when present.
    """
    _need(ds, ["long_run"], "plot_density")
    bins = checks.integer("bins", bins, minimum=2)
    comps = [str(c) for c in ds["component"].values][:max_components]
    tr, su = _long_runs(ds)
    units = _units(ds["long_run"])
    cols = min(len(comps), 5)
    rows = -(-len(comps) // cols)
    fig, shown = _figure((3.4 * cols, 2.9 * rows + 0.6), show)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[len(comps):]:
        ax.set_visible(False)
    for i, (ax, c) in enumerate(zip(axes, comps)):
        lo, hi = _limits(tr[:, i:i + 1])
        edges = np.linspace(lo[0], hi[0], bins + 1)
        s = su[:, i][np.isfinite(su[:, i]) & (su[:, i] >= edges[0]) & (su[:, i] <= edges[-1])]
        share = (
            f" ({100 * s.size / max(su.shape[0], 1):.0f}% inside)" if s.size < su.shape[0] else ""
        )
        if s.size:  # a diverged run may leave nothing inside the truth's range
            ax.hist(
                s, bins=edges, density=True, color=SURROGATE["color"], alpha=0.45, label="surrogate"
            )
        else:
            ax.plot([], [], color=SURROGATE["color"], label="surrogate (none inside)")
        ax.hist(tr[:, i], bins=edges, density=True, histtype="step", color=TRUTH["color"], lw=1.4,
                label="truth")
        title = c + share.replace(" inside", " of the surrogate inside")
        if "wasserstein" in ds:
            title += f"  (W1 {float(ds['wasserstein'].values[i]):.2g} std)"
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(f"{c} [{units}]")
        ax.set_yticks([])
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize="small")
    extra = (
        f"; density divergence {float(ds['density_divergence']):.3g} nats"
        if "density_divergence" in ds
        else ""
    )
    fig.suptitle(f"{ds.attrs.get('system', '')}: distribution of each component, long runs{extra}")
    fig.tight_layout()
    return _finish(fig, path, shown)


def plot_space_time(ds: xr.Dataset, path=None, *, start: int = 0, show=None):
    """Space-time plot of one rollout: truth, surrogate and their difference, component against
    time.

    Each component is divided by its attractor standard deviation (``std``),
    so angles and velocities share one colour scale in units of their own
    spread; rows are labelled with the component names.
    """
    _need(ds, ["truth", "prediction"], "plot_space_time")
    checks.integer("start", start, minimum=0, maximum=ds.sizes["start"] - 1,
                   fix=f"pick one of the {ds.sizes['start']} rollouts of the Dataset")
    comps = [str(c) for c in ds["component"].values]
    t = ds["time"].values
    tr = ds["truth"].isel(start=start).values
    su = ds["prediction"].isel(start=start).values
    std = ds["std"].values if "std" in ds else np.nanstd(tr, 0)
    std = np.where(std > 0, std, 1.0)
    mean = np.nanmean(ds["long_run"].values[0], 0) if "long_run" in ds else np.nanmean(tr, 0)
    fig, shown = _figure((13, 2.4 + 0.25 * len(comps) * 3), show)
    axes = fig.subplots(3, 1, sharex=True)
    ext = (t[0], t[-1], -0.5, len(comps) - 0.5)
    for ax, x, title in (
        (axes[0], (tr - mean) / std, "truth"),
        (axes[1], (su - mean) / std, "surrogate"),
        (axes[2], (su - tr) / std, "surrogate - truth"),
    ):
        im = ax.imshow(
            x.T,
            aspect="auto",
            origin="lower",
            extent=ext,
            cmap="RdBu_r",
            vmin=-3,
            vmax=3,
            interpolation="nearest",
        )
        ax.set_yticks(range(len(comps)))
        ax.set_yticklabels(comps, fontsize="small" if len(comps) > 8 else "medium")
        ax.set_title(title)
        fig.colorbar(
            im,
            ax=ax,
            label="(state - mean) / std [1]"
            if title != "surrogate - truth"
            else "difference / std [1]",
        )
    if "vpt" in ds:
        _, vpt, _ = _vpt_at(ds, 0.4)
        for ax in axes:
            ax.axvline(vpt[start], color="black", linestyle="--", lw=1.5)
    axes[-1].set_xlabel("time [Lyapunov times] (dashed line: VPT at threshold 0.4)")
    fig.suptitle(
        f"{ds.attrs.get('system', '')}: space-time plot of rollout {start}, each component in "
        "units of its own standard deviation"
    )
    return _finish(fig, path, shown)


def plot_error_growth(ds: xr.Dataset, path=None, *, show=None):
    """Normalised error against time (Lyapunov times), log scale, VPT marked.

    Thin grey lines: each start; orange: median with the 10-90% band; dotted
    horizontal lines: the thresholds; vertical lines: the median VPT per
    threshold; grey shading: past the median valid ground-truth time.
    """
    _need(ds, ["error", "vpt", "valid_groundtruth_time"], "plot_error_growth")
    t = ds["time"].values[1:]
    e = ds["error"].values[:, 1:]
    e = np.where(np.isfinite(e), e, np.nan)
    floor = max(np.nanmin(e[e > 0]) if np.any(e > 0) else 1e-12, 1e-14)
    e = np.clip(e, floor, None)
    fig, shown = _figure((9, 5.5), show)
    ax = fig.add_subplot(1, 1, 1)
    for row in e:
        ax.plot(t, row, color="0.7", lw=0.5)
    med = np.nanmedian(e, 0)
    ax.fill_between(
        t,
        np.nanquantile(e, 0.1, 0),
        np.nanquantile(e, 0.9, 0),
        color=SURROGATE["color"],
        alpha=0.25,
        label="10-90% of starts",
    )
    ax.plot(t, med, color=SURROGATE["color"], lw=2, label=f"median over {e.shape[0]} starts")
    i0 = int(np.argmin(np.abs(t - 1.0)))
    ref = med[i0] * np.exp(t - t[i0])
    ax.plot(
        t, ref, color="tab:blue", lw=1, linestyle="-.", label=r"$e^{\lambda_1 t}$ (reference slope)"
    )
    colors = ["tab:green", "tab:purple", "tab:red", "tab:brown", "tab:pink"]
    for j, thr in enumerate(ds["threshold"].values):
        c = colors[j % len(colors)]
        v = float(np.median(ds["vpt"].isel(threshold=j)))
        ax.axhline(thr, color=c, linestyle=":", lw=1)
        ax.axvline(v, color=c, linestyle="--", lw=1.2, label=f"median VPT at {thr:g}: {v:.2f}")
    vgt = ds["valid_groundtruth_time"].values
    if np.any(np.isfinite(vgt)):
        g = float(np.nanmedian(vgt[:, -1]))
        if g < t[-1]:
            ax.axvspan(g, t[-1], color="0.6", alpha=0.35,
                       label=f"past the median valid ground-truth time ({g:.2f})")
    ax.set_yscale("log")
    ax.set_ylim(floor, max(10.0, np.nanmax(e) * 1.5) if np.isfinite(np.nanmax(e)) else 10.0)
    ax.set_xlim(0, t[-1])
    ax.set_xlabel("time [Lyapunov times]")
    ax.set_ylabel("normalised error [attractor std]")
    ax.set_title(f"{ds.attrs.get('system', '')}: error growth of free runs")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return _finish(fig, path, shown)


def plot_time_series(ds: xr.Dataset, path=None, *, start: int = 0, threshold: float = 0.4,
                     max_components: int = 6, show=None):
    """Component time series of one rollout: truth against surrogate, VPT marked."""
    _need(ds, ["truth", "prediction", "vpt"], "plot_time_series")
    checks.integer("start", start, minimum=0, maximum=ds.sizes["start"] - 1,
                   fix=f"pick one of the {ds.sizes['start']} rollouts of the Dataset")
    t = ds["time"].values
    comps = [str(c) for c in ds["component"].values][:max_components]
    thr, vpt, vgt = _vpt_at(ds, threshold)
    fig, shown = _figure((10, 1.9 * len(comps) + 1.0), show)
    axes = np.atleast_1d(fig.subplots(len(comps), 1, sharex=True))
    units = _units(ds["truth"])
    for i, (ax, c) in enumerate(zip(axes, comps)):
        ax.plot(t, ds["truth"].values[start, :, i], lw=1.2, **TRUTH)
        ax.plot(t, ds["prediction"].values[start, :, i], lw=1.2, **SURROGATE)
        ax.axvline(vpt[start], color="tab:red", linestyle=":", lw=1.5,
                   label=f"VPT ({thr:g}): {vpt[start]:.2f}")
        if np.isfinite(vgt[start]) and vgt[start] < t[-1]:
            ax.axvline(vgt[start], color="0.5", linestyle="-.", lw=1,
                       label=f"valid ground-truth time: {vgt[start]:.2f}")
        ax.set_ylabel(f"{c} [{units}]")
        ax.grid(alpha=0.3)
    axes[0].legend(
        loc="lower left", bbox_to_anchor=(0.0, 1.02), fontsize="small", ncol=4, frameon=False
    )
    axes[-1].set_xlabel("time [Lyapunov times]")
    axes[-1].set_xlim(t[0], t[-1])
    fig.suptitle(f"{ds.attrs.get('system', '')}: free run from start {start}", y=1.0)
    return _finish(fig, path, shown)


def plot_return_map(ds: xr.Dataset, path=None, *, component: str = "z", show=None):
    """Lorenz return map: successive maxima z_max(n+1) against z_max(n), truth and surrogate."""
    _need(ds, ["long_run"], "plot_return_map")
    comps = [str(c) for c in ds["component"].values]
    checks.choice("component", component, comps, fix="pick one of the Dataset's components")
    i = comps.index(component)
    tr, su = _long_runs(ds)
    units = _units(ds["long_run"])
    fig, shown = _figure((6.5, 6), show)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = np.inf, -np.inf
    for x, style, marker in ((tr, TRUTH, "o"), (su, SURROGATE, "x")):
        m = _maxima(x[:, i])
        if len(m) > 1:
            ax.plot(m[:-1], m[1:], marker, color=style["color"], ms=3 if marker == "o" else 4,
                    alpha=0.7, label=f"{style['label']} ({len(m)} maxima)")
            if style is TRUTH:
                lo, hi = m.min(), m.max()
        else:
            ax.plot([], [], marker, color=style["color"], label=f"{style['label']} (no maxima)")
    if np.isfinite(lo):
        pad = 0.1 * (hi - lo)
        ax.plot(
            [lo - pad, hi + pad],
            [lo - pad, hi + pad],
            color="0.6",
            lw=0.8,
            linestyle=":",
            label="diagonal",
        )
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"${component}_{{max}}(n)$ [{units}]")
    ax.set_ylabel(f"${component}_{{max}}(n+1)$ [{units}]")
    ax.set_title(f"{ds.attrs.get('system', '')}: return map of successive {component} maxima")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    return _finish(fig, path, shown)


def _maxima(z):
    z = z[np.isfinite(z)]
    k = np.flatnonzero((z[1:-1] > z[:-2]) & (z[1:-1] >= z[2:])) + 1
    return z[k]


# ------------------------------------------------------------------ training figures
def _groups(ds):
    """[(label, DataArray-selector dict)] over the strategy dim (or one group)."""
    if "strategy" in ds.dims:
        return [(str(s), {"strategy": s}) for s in ds["strategy"].values]
    return [(str(ds.attrs.get("strategy", "training")), {})]


def _color(k):
    return [
        "tab:blue",
        "tab:orange",
        "tab:green",
        "tab:red",
        "tab:purple",
        "tab:brown",
        "tab:pink",
    ][k % 7]


def _style(k):
    """Colour and line style of strategy k: overlapping curves stay distinguishable."""
    return dict(color=_color(k), linestyle=["-", "--", "-.", ":"][k % 4])


def plot_training(history: xr.Dataset, path=None, *, show=None):
    """Loss, accepted % and mean substeps over epochs (Allauzen et al. 2022, their figures), and,
    when the history has them, the training solver's rtol, the rollout horizon, steps per sample
    and evaluations per epoch (the continuous strategy's schedule).

    history: variables loss, accepted_fraction, mean_substeps over dim
    ``epoch``, optionally also over ``strategy`` (one colour each) and
    ``seed`` (median line, min-max band).
    """
    _need(history, list(HISTORY_REQUIRED), "plot_training")
    if "epoch" not in history.dims:
        raise ValueError(
            f"plot_training needs an 'epoch' dimension, got dims {dict(history.sizes)}"
        )
    ep = history["epoch"].values
    if len(ep) == 0:  # no epoch ran (the pre-fit's field at its floor): say so, not empty axes
        return _no_epochs(history, path, show)
    panels = [("loss", "training loss [squared (standardised) state units]", 1.0, True),
              ("accepted_fraction", "accepted examples / steps [%]", 100.0, False),
              ("mean_substeps", "substeps (rejected; adaptive: per sample)", 1.0, False)]
    extra = (("rtol", "training solver rtol [relative]", 1.0, True),
             ("horizon", "rollout horizon [samples]", 1.0, False),
             ("mean_steps", "solver steps per sample [1]", 1.0, False),
             ("n_f_evals", "field evaluations per epoch [rows]", 1.0, True))
    panels += [
        p for p in extra if p[0] in history and np.isfinite(np.asarray(history[p[0]], float)).any()
    ]
    rows = 1 if len(panels) <= 3 else 2
    cols = 3 if rows == 1 else (len(panels) + 1) // 2
    fig, shown = _figure((4.7 * cols, 4.2 * rows), show)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    # short histories: every epoch a point
    marker = {"marker": "o", "markersize": 4} if len(ep) <= 30 else {}
    for ax in axes[:len(panels)]:
        _epoch_axis(ax, ep)
    for k, (label, sel) in enumerate(_groups(history)):
        sub = history.sel(sel)
        for ax, (var, ylabel, scale, log) in zip(axes, panels):
            y = sub[var] * scale
            if "seed" in y.dims:
                y = y.transpose("seed", "epoch").values
                ax.fill_between(ep, np.nanmin(y, 0), np.nanmax(y, 0), color=_color(k), alpha=0.2)
                ax.plot(
                    ep,
                    np.nanmedian(y, 0),
                    lw=1.6,
                    label=f"{label} (median of {y.shape[0]} seeds)",
                    **marker,
                    **_style(k),
                )
            else:
                ax.plot(ep, y.values, lw=1.6, label=label, **marker, **_style(k))
            ax.set_ylabel(ylabel)
            ax.set_xlabel("epoch")
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
    axes[1].set_ylim(-3, 103)
    axes[0].legend(fontsize="small")
    fig.suptitle("training: loss and what the solver did, per epoch")
    fig.tight_layout()
    return _finish(fig, path, shown)


def _no_epochs(history: xr.Dataset, path, show):
    """The training figure of a history without epochs: why none ran, and the pre-fit's figures."""
    import textwrap

    fig, shown = _figure((9, 3.2), show)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    a = history.attrs
    lines = ["No epoch ran: " + str(a.get("stop_reason", "no reason recorded"))]
    facts = [(k, a[k]) for k in ("library", "prefit_order", "prefit_targets", "prefit_field_error",
                                 "initial_misfit", "field_error", "inference_rtol") if k in a]
    if facts:
        lines.append("; ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in facts))
    text = "\n".join(textwrap.fill(line, 100) for line in lines)
    ax.text(0.0, 0.5, text, va="center", ha="left", fontsize=10, family="monospace",
            transform=ax.transAxes)
    fig.suptitle("training: the model is the pre-fit's field")
    return _finish(fig, path, shown)


def _epoch_axis(ax, ep) -> None:
    """Integer epoch ticks; one epoch gets a frame around its point instead of an empty axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    if len(ep) == 1:
        ax.set_xlim(float(ep[0]) - 1, float(ep[0]) + 1)
        ax.set_xticks([float(ep[0])])


def plot_error_vs_evaluations(history: xr.Dataset, path=None, *, error: str = "loss",
                              evaluations: str = "n_f_evals", cumulative: bool = True, show=None):
    """Error against vector-field evaluations, one colour per strategy (log-log).

    With an ``epoch`` dim: the training curve of each strategy (and each seed,
    thin lines), evaluations summed over epochs when ``cumulative``. Without:
    one point per strategy (and seed).
    """
    _need(history, [error, evaluations], "plot_error_vs_evaluations")
    fig, shown = _figure((8, 5.5), show)
    ax = fig.add_subplot(1, 1, 1)
    for k, (label, sel) in enumerate(_groups(history)):
        sub = history.sel(sel)
        e, n = sub[error], sub[evaluations].astype(float)
        if "epoch" in e.dims:
            if cumulative:
                n = n.cumsum("epoch")
            if "seed" in e.dims:
                e, n = e.transpose("seed", "epoch").values, n.transpose("seed", "epoch").values
            else:
                e, n = e.values[None], n.values[None]
            for s in range(e.shape[0]):
                ax.plot(
                    n[s],
                    e[s],
                    lw=1.2 if e.shape[0] == 1 else 0.9,
                    label=label if s == 0 else None,
                    **_style(k),
                )
        else:
            ax.plot(np.ravel(n.values), np.ravel(e.values), "o", color=_color(k), label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    what = "cumulative " if cumulative else ""
    ax.set_xlabel(f"{what}vector-field evaluations [count]")
    ax.set_ylabel(f"{error} [{history[error].attrs.get('units', 'squared state units')}]")
    ax.set_title("error against cost, per strategy")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, which="both")
    return _finish(fig, path, shown)


def plot_diagnostics(ds: xr.Dataset, outdir, *, show=False) -> dict:
    """Write every figure of an ``evaluate`` Dataset to ``outdir``; returns {name: path}.

    attractor (pairwise projections), density (per-component histograms),
    error_growth, time_series; space_time for more than 3 components; the
    return map for systems with a component named "z".
    """
    outdir = Path(outdir)
    paths = {}
    jobs = {"attractor": plot_attractor, "density": plot_density, "error_growth": plot_error_growth,
            "time_series": plot_time_series}
    if ds.sizes.get("component", 0) > 3 and "truth" in ds:
        jobs["space_time"] = plot_space_time
    if "z" in [str(c) for c in ds["component"].values]:
        jobs["return_map"] = plot_return_map
    for name, fn in jobs.items():
        p = outdir / f"{name}.png"
        fn(ds, p, show=show)
        paths[name] = p
    return paths


# ------------------------------------------------------------------ comparison figures
def plot_vpt(ds: xr.Dataset, path=None, *, show=None):
    """Box plot of the VPT over held-out starts (and seeds) per strategy, one panel per
    threshold."""
    check_compare(ds)
    thr = ds["threshold"].values
    fig, shown = _figure((4.2 * len(thr) + 1, 4.8), show)
    axes = np.atleast_1d(fig.subplots(1, len(thr), sharey=True))
    labels = [str(s) for s in ds["strategy"].values]
    options = json.loads(ds.attrs.get("evaluate_options", "{}"))
    horizon = float(options.get("horizon_lt", options.get("horizon", np.inf)))  # older: "horizon"
    for ax, h in zip(axes, thr):
        data = [ds["vpt"].sel(strategy=s, threshold=h).values.ravel() for s in labels]
        data = [d[np.isfinite(d)] for d in data]
        bp = ax.boxplot(data, orientation="horizontal", patch_artist=True, showmeans=False,
                        medianprops={"color": "black", "lw": 1.5})
        for k, box in enumerate(bp["boxes"]):
            box.set_facecolor(_color(k))
            box.set_alpha(0.5)
        g = ds["valid_groundtruth_time"].sel(threshold=h).values
        if np.isfinite(g).any():
            gm = float(np.nanmedian(g))
            capped = gm >= 0.99 * horizon  # never exceeded within the rollouts
            ax.axvline(
                gm,
                color="0.4",
                linestyle="--",
                lw=1,
                label="median valid ground-truth time"
                + (" (>= rollout horizon)" if capped else ""),
            )
            ax.legend(loc="lower right", fontsize="small")
        ax.set_yticks(range(1, len(labels) + 1))
        ax.set_yticklabels(labels)
        ax.set_xlabel("valid prediction time [Lyapunov times]")
        ax.set_title(f"threshold {h:g} [attractor std]")
        ax.grid(alpha=0.3, axis="x")
    n = ds.sizes["start"] * ds.sizes["seed"]
    fig.suptitle(
        f"{ds.attrs.get('system', '')}: valid prediction time per strategy ({n} free runs each)"
    )
    fig.tight_layout()
    return _finish(fig, path, shown)


def plot_compare(
    ds: xr.Dataset, outdir, *, best_diagnostics: xr.Dataset | None = None, show=False
) -> dict:
    """Every comparison figure into ``outdir``; returns {name: path}."""
    outdir = ensure_folder(outdir)
    paths = {
        "training": outdir / "training.png",
        "error_vs_evaluations": outdir / "error_vs_evaluations.png",
        "vpt": outdir / "vpt.png",
    }
    fig = plot_training(ds, None, show=show)
    fig.axes[0].set_ylabel(
        f"training loss [{ds['loss'].attrs.get('units', 'squared state units')}]"
    )
    _finish(fig, paths["training"], False)
    plot_error_vs_evaluations(ds, paths["error_vs_evaluations"], show=show)
    plot_vpt(ds, paths["vpt"], show=show)
    if best_diagnostics is not None:
        paths["attractor_best"] = outdir / "attractor_best.png"
        fig = plot_attractor(best_diagnostics, None, show=show)
        fig.suptitle(f"best surrogate ({ds.attrs['best_strategy']}, seed {ds.attrs['best_seed']}): "
                     f"long free run against the truth")
        _finish(fig, paths["attractor_best"], False)
    return paths
