"""Each figure function runs under Agg, returns a Figure and writes a PNG."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dynfit import plot  # noqa: E402
from dynfit.diagnostics.evaluate import FORMAT  # noqa: E402


def _diagnostics(dim=3, n_starts=4, n_time=200, n_long=3000, seed=0):
    """A small diagnostics Dataset shaped like evaluate's output (Lorenz-like long runs)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_long) * 0.01
    base = np.stack([np.sin(t * (1 + 0.1 * i)) * 10 + 25 * (i == dim - 1) for i in range(dim)], -1)
    base[:, -1] += 5 * np.sin(3.7 * t) ** 2  # many maxima for the return map
    long_run = np.stack([base, base + 0.3 * rng.standard_normal(base.shape)])
    truth = np.stack([base[i * 10:i * 10 + n_time] for i in range(n_starts)])
    err = np.exp(np.linspace(-9, 1, n_time))[None] * (1 + 0.1 * rng.random((n_starts, n_time)))
    err[:, 0] = 0
    pred = truth + err[..., None]
    thr = np.array([0.3, 0.4, 0.5])
    tl = np.arange(n_time) * 0.05
    vpt = np.array([[tl[np.argmax(e > h)] for h in thr] for e in err])
    comps = ["x", "y", "z"] if dim == 3 else [f"x{i}" for i in range(dim)]
    return xr.Dataset(
        {
            "error": (("start", "time"), err),
            "truth": (("start", "time", "component"), truth),
            "prediction": (("start", "time", "component"), pred),
            "vpt": (("start", "threshold"), vpt),
            "valid_groundtruth_time": (("start", "threshold"), vpt + 5.0),
            "long_run": (("source", "long_time", "component"), long_run, {"units": "state units"}),
        },
        coords={
            "time": ("time", tl, {"units": "Lyapunov times"}),
            "threshold": thr,
            "component": comps,
            "source": ["truth", "surrogate"],
            "long_time": t,
            "start": np.arange(n_starts),
        },
        attrs={"format": FORMAT, "system": "test", "dt": 0.01, "long_transient": 0.1},
    )


def _history(strategies=("black-box", "fehlberg"), seeds=(0, 1), epochs=30):
    ep = np.arange(epochs)
    shape = (len(strategies), len(seeds), epochs)
    decay = np.exp(-ep / 10.0)
    return xr.Dataset(
        {
            "loss": (("strategy", "seed", "epoch"), np.broadcast_to(100 * decay + 1, shape).copy()),
            "accepted_fraction": (
                ("strategy", "seed", "epoch"),
                np.broadcast_to(1 - 0.9 * decay, shape).copy(),
            ),
            "mean_substeps": (
                ("strategy", "seed", "epoch"),
                np.broadcast_to(1 + 6 * decay, shape).copy(),
            ),
            "n_f_evals": (("strategy", "seed", "epoch"), np.full(shape, 3000)),
        },
        coords={"strategy": list(strategies), "seed": list(seeds), "epoch": ep},
    )


@pytest.mark.parametrize("fn", [plot.plot_attractor, plot.plot_error_growth, plot.plot_time_series,
                                plot.plot_return_map])
def test_diagnostics_figures_write_png(fn, tmp_path):
    path = tmp_path / "sub" / "fig.png"
    fig = fn(_diagnostics(), path)
    assert isinstance(fig, Figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_space_time_plot_for_high_dimension(tmp_path):
    fig = plot.plot_attractor(_diagnostics(dim=8), tmp_path / "st.png")
    assert isinstance(fig, Figure) and (tmp_path / "st.png").stat().st_size > 1000


def test_two_dimensional_attractor(tmp_path):
    assert isinstance(plot.plot_attractor(_diagnostics(dim=2), tmp_path / "a2.png"), Figure)


@pytest.mark.parametrize("history", [_history(), _history().isel(strategy=0, seed=0, drop=True),
                                     _history().isel(seed=0, drop=True)])
def test_training_figures_write_png(history, tmp_path):
    for fn in (plot.plot_training, plot.plot_error_vs_evaluations):
        path = tmp_path / f"{fn.__name__}.png"
        assert isinstance(fn(history, path), Figure)
        assert path.stat().st_size > 1000


def test_error_vs_evaluations_without_epochs(tmp_path):
    ds = xr.Dataset({"vpt": (("strategy",), [2.0, 4.0]), "n_f_evals": (("strategy",), [1e5, 3e5])},
                    coords={"strategy": ["a", "b"]})
    fig = plot.plot_error_vs_evaluations(ds, tmp_path / "e.png", error="vpt", cumulative=False)
    assert isinstance(fig, Figure)


def test_plot_diagnostics_writes_all(tmp_path):
    paths = plot.plot_diagnostics(_diagnostics(), tmp_path)
    assert set(paths) == {"attractor", "density", "error_growth", "time_series", "return_map"}
    assert all(p.exists() for p in paths.values())


def test_no_file_without_path_and_nothing_shown_under_agg(tmp_path):
    fig = plot.plot_error_growth(_diagnostics())
    assert isinstance(fig, Figure) and not list(tmp_path.iterdir())


def test_bad_input():
    with pytest.raises(ValueError, match="lacks"):
        plot.plot_training(xr.Dataset({"loss": ("epoch", [1.0])}))
    with pytest.raises(TypeError, match="xarray.Dataset"):
        plot.plot_attractor(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="component 'w'"):
        plot.plot_return_map(_diagnostics(), component="w")
    with pytest.raises(ValueError, match="start"):
        plot.plot_time_series(_diagnostics(), start=99)


# ------------------------------------------------------------------ any dimension

def _named(dim):
    ds = _diagnostics(dim=dim)
    names = [f"angle{i}" if i % 2 == 0 else f"speed{i}" for i in range(dim)]
    ds = ds.assign_coords(component=names)
    # angles and velocities, very different scales
    scale = np.where(np.arange(dim) % 2 == 0, 0.1, 50.0)
    for v in ("truth", "prediction", "long_run"):
        ds[v] = ds[v] * scale
    ds["std"] = ("component", ds["long_run"].isel(source=0).std("long_time").values)
    ds["wasserstein"] = ("component", np.full(dim, 0.1))
    return ds, names


@pytest.mark.parametrize("dim, n_pairs", [(2, 1), (3, 3), (4, 6), (10, 6)])
def test_attractor_pairs_with_names(dim, n_pairs, tmp_path):
    ds, names = _named(dim)
    fig = plot.plot_attractor(ds, tmp_path / "a.png")
    flat = [ax for ax in fig.axes if ax.name != "3d"]
    assert len(flat) == n_pairs
    for ax in flat:  # every axis has its component's own frame: the truth's range, not a shared one
        a = names.index(ax.get_xlabel().split(" [")[0])
        lo, hi = ax.get_xlim()
        span = float(ds["long_run"].isel(source=0, component=a).max() - ds["long_run"].isel(
            source=0, component=a).min())
        assert span <= hi - lo <= 1.3 * span
    lines = flat[0].get_lines()  # the truth is drawn over the surrogate
    truth = next(ln for ln in lines if ln.get_label() == "truth")
    sur = next(ln for ln in lines if ln.get_label() == "surrogate")
    assert truth.get_zorder() > sur.get_zorder() and truth.get_alpha() < 1
    assert len(truth.get_xdata()) <= plot.MAX_POINTS


@pytest.mark.parametrize("dim", [3, 4, 10])
def test_density_panel_per_component(dim, tmp_path):
    ds, names = _named(dim)
    fig = plot.plot_density(ds, tmp_path / "d.png")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_xlabel().split(" [")[0] for ax in visible] == names
    assert (tmp_path / "d.png").stat().st_size > 1000


def test_space_time_scales_each_component_by_its_spread(tmp_path):
    ds, names = _named(4)
    fig = plot.plot_space_time(ds, tmp_path / "st.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    img = ax.get_images()[0].get_array()
    # angles (std ~0.7) and speeds (std ~350) both span a few units after scaling
    spread = np.nanstd(np.asarray(img), axis=1)
    assert np.all((spread > 0.2) & (spread < 5))
    assert set(plot.plot_diagnostics(ds, tmp_path)) >= {"attractor", "density", "space_time"}


def test_one_epoch_training_shows_a_point_and_integer_ticks(tmp_path):
    hist = _history(epochs=1).isel(strategy=0, seed=0, drop=True)
    fig = plot.plot_training(hist, tmp_path / "t.png")
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    assert len(line.get_xdata()) == 1 and line.get_marker() == "o"
    lo, hi = ax.get_xlim()
    assert lo < 0 < hi
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_a_history_without_epochs_says_why(tmp_path):
    """fit ran no epoch (the pre-fit's field at its floor): the figure states the stop reason and
    the pre-fit's figures instead of drawing empty axes."""
    hist = _history(epochs=1).isel(strategy=0, seed=0, drop=True).isel(epoch=slice(0, 0))
    hist.attrs.update(stop_reason="at its floor: before the first epoch", prefit_order=24,
                      prefit_field_error=6.2e-11)
    fig = plot.plot_training(hist, tmp_path / "t.png")
    text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "No epoch ran: at its floor" in text and "prefit_order 24" in text
    assert "6.2e-11" in text and (tmp_path / "t.png").stat().st_size > 0


def test_long_history_integer_ticks_without_markers():
    hist = _history(epochs=60).isel(strategy=0, seed=0, drop=True)
    ax = plot.plot_training(hist).axes[0]
    assert ax.get_lines()[0].get_marker() in ("None", None, "")
    assert all(float(t).is_integer() for t in ax.get_xticks())
