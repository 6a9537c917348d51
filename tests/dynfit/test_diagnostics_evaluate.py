"""dynfit.diagnostics.evaluate: contents, units, provenance, netCDF, bad input."""

import numpy as np
import pytest
import torch
import xarray as xr

import systems
from dynfit.diagnostics import ExactSurrogate, evaluate, load_diagnostics, summarize

DT = 0.01


@pytest.fixture(scope="module")
def data():
    return systems.simulate("lorenz63", n_traj=2, n_steps=1200, dt=DT, seed=3)


class Scaler:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std

    def inverse(self, z):
        return z * self.std + self.mean


class StandardisedLorenz(torch.nn.Module):
    """Lorenz'63 on standardised states in model time (one unit = DT), as dynfit.Surrogate's
    field."""

    def __init__(self, scaler):
        super().__init__()
        self.register_buffer("m", torch.as_tensor(scaler.mean))
        self.register_buffer("s", torch.as_tensor(scaler.std))

    def forward(self, t, z):
        x = z * self.s + self.m
        f = torch.stack(
            [
                10 * (x[..., 1] - x[..., 0]),
                x[..., 0] * (28 - x[..., 2]) - x[..., 1],
                x[..., 0] * x[..., 1] - 8 / 3 * x[..., 2],
            ],
            -1,
        )
        return f / self.s * DT


class TorchExact(ExactSurrogate):
    """The exact system, with a torch field and a scaler like dynfit.Surrogate, reporting stats."""

    def __init__(self, data):
        super().__init__("lorenz63", dt=DT, rtol=1e-10)
        flat = data["x"].values.reshape(-1, 3)
        self.scaler = Scaler(flat.mean(0), flat.std(0))
        self.field = StandardisedLorenz(self.scaler)

    def generate(self, x0, n_steps, *, return_stats=False):
        out = super().generate(x0, n_steps)
        if not return_stats:
            return out
        b = out.shape[0]
        return out, {
            "accepted": np.ones((b, n_steps - 1), bool),
            "substeps": np.full((b, n_steps - 1), 2),
            "n_f_evals": 123,
        }


@pytest.fixture(scope="module")
def result(data):
    torch.set_num_threads(1)
    return evaluate(
        TorchExact(data),
        data,
        n_starts=3,
        horizon_lt=6.0,
        long_steps=3000,
        lyapunov_steps=300,
        lyapunov_starts=2,
        seed=1,
    )


def test_contents_dims_and_units(result):
    ds = result
    assert ds["vpt"].dims == ("start", "threshold")
    assert ds["valid_groundtruth_time"].dims == ("start", "threshold")
    assert ds["error"].dims == ("start", "time")
    assert ds["lyapunov_exponents"].dims == ("source", "exponent")
    assert list(ds["source"].values) == ["truth", "surrogate"]
    np.testing.assert_allclose(ds["threshold"], [0.3, 0.4, 0.5])
    for name in ("density_divergence", "wasserstein", "spectrum_distance", "correlation_dimension"):
        assert name in ds
    for name, var in {**ds.data_vars, **ds.coords}.items():
        if name not in ("start", "component", "source", "exponent"):
            assert "units" in var.attrs, name
    assert ds["vpt"].attrs["units"] == "Lyapunov times"
    assert ds["time"].attrs["units"] == "Lyapunov times"
    for key in (
        "system",
        "thresholds",
        "n_starts",
        "seed",
        "dynfit_version",
        "format",
        "lyapunov_time",
    ):
        assert key in ds.attrs, key
    assert ds.attrs["system"] == "lorenz63" and ds.attrs["n_starts"] == 3
    assert ds.attrs["lyapunov_time_source"] == "system" and ds.attrs["mode"] == "known system"
    assert ds["vpt_capped"].dtype == bool and ds["vpt_capped"].dims == ("start", "threshold")
    # solver statistics passed through
    np.testing.assert_allclose(ds["accepted_fraction"], 1.0)
    np.testing.assert_allclose(ds["mean_substeps"], 2.0)
    assert float(ds["n_f_evals"]) == 123


def test_exact_surrogate_numbers(result):
    ds = result
    # the exact system stays valid over the whole 6-Lyapunov-time horizon, as do the references
    horizon = float(ds["time"][-1])
    np.testing.assert_allclose(ds["vpt"], horizon)
    np.testing.assert_allclose(ds["valid_groundtruth_time"], horizon)
    np.testing.assert_array_equal(ds["prediction"][:, 0], ds["truth"][:, 0])
    # standardised coordinates and model time are converted back: the sum (log det of
    # the tangent map) is invariant exactly; single finite-time exponents differ by at
    # most log(cond(scaling)) / T, which vanishes as T grows
    lam = ds["lyapunov_exponents"].values
    assert abs(lam[1].sum() - lam[0].sum()) < 1e-8
    std = ds["std"].values
    T = 270 * DT  # averaging steps (300 - 10% transient) times dt
    np.testing.assert_allclose(lam[1], lam[0], atol=np.log(std.max() / std.min()) / T)
    assert lam[0, 0] > 0.3 and lam[0, 2] < -10
    assert float(ds["spectrum_distance"]) < 0.2
    assert np.all(np.isfinite(ds["correlation_dimension"]))


def test_summary(result):
    s = summarize(result)
    assert s["vpt_median_0.4"] == pytest.approx(float(result["vpt"].sel(threshold=0.4).median()))
    assert s["lyapunov_max_truth"] == pytest.approx(float(result["lyapunov_exponents"][0, 0]))
    assert s["accepted_fraction"] == 1.0 and s["n_f_evals"] == 123
    assert all(isinstance(v, float) for v in s.values())
    with pytest.raises(ValueError, match="missing"):
        summarize(result.drop_vars("vpt"))


def test_netcdf_round_trip(result, tmp_path):
    path = tmp_path / "diag.nc"
    result.to_netcdf(path)
    back = load_diagnostics(path)
    xr.testing.assert_identical(result, back)


def test_load_rejects_other_files(tmp_path, data):
    text = tmp_path / "notes.nc"
    text.write_text("not a netCDF file")
    with pytest.raises(ValueError, match="not a readable netCDF"):
        load_diagnostics(text)
    other = tmp_path / "sim.nc"
    data.to_netcdf(other)
    with pytest.raises(ValueError, match="not a dynfit diagnostics Dataset"):
        load_diagnostics(other)
    with pytest.raises(FileNotFoundError):
        load_diagnostics(tmp_path / "missing.nc")


class Diverging:
    """A surrogate that blows up after 100 steps."""

    system, dim, dt = "lorenz63", 3, DT

    def generate(self, x0, n_steps):
        out = np.repeat(np.asarray(x0, float)[:, None], n_steps, 1)
        out[:, 100:] = np.nan
        return out


def test_diverging_surrogate_is_scored_not_crashed(data):
    ds = evaluate(
        Diverging(),
        data,
        n_starts=2,
        horizon_lt=3.0,
        long_steps=1000,
        lyapunov_steps=0,
        groundtruth=False,
        seed=0,
    )
    assert np.all(ds["vpt"] <= 100 * DT / ds.attrs["lyapunov_time"] + 1e-12)
    assert float(ds["spectrum_distance"]) == 1.0
    assert np.isnan(ds["correlation_dimension"].sel(source="surrogate"))
    assert np.all(np.isnan(ds["lyapunov_exponents"]))
    assert "accepted_fraction" not in ds


class Fake:
    def __init__(self, system="lorenz63", dim=3, dt=DT):
        self.system, self.dim, self.dt = system, dim, dt

    def generate(self, x0, n_steps):  # pragma: no cover - never reached
        raise AssertionError("evaluate must fail before generating")


@pytest.mark.parametrize(
    "surrogate, kwargs, error, match",
    [
        (
            Fake(system="rossler"),
            {},
            ValueError,
            "system 'lorenz63' but the surrogate models 'rossler'",
        ),
        (Fake(system="unknown", dim=4), {}, ValueError, "dim 4"),
        (Fake(), dict(thresholds=(0.4, 1.2)), ValueError, r"outside \(0, 1\]"),
        (Fake(), dict(thresholds=0.0), ValueError, r"outside \(0, 1\]"),
        (Fake(), dict(horizon_lt=100.0), ValueError, "horizon"),
        (Fake(dt=0.003), {}, ValueError, "integer multiple"),
        (Fake(), dict(n_starts=0), ValueError, "n_starts"),
        (object(), {}, TypeError, "generate"),
    ],
)
def test_bad_input(data, surrogate, kwargs, error, match):
    with pytest.raises(error, match=match):
        evaluate(surrogate, data, **kwargs)


def test_bad_data(data):
    with pytest.raises(ValueError, match="pass dt="):
        evaluate(Fake(), data["x"].values)
    with pytest.raises(TypeError, match="numpy array"):
        evaluate(Fake(), {"x": 1})
    with pytest.raises(ValueError, match="contradicts|the data say"):
        evaluate(Fake(), data, dt=0.02)
    with pytest.raises(ValueError, match="lyapunov_time"):
        evaluate(Fake(), data, lyapunov_time=-1.0)
    with pytest.raises(ValueError, match="'data'"):
        evaluate(Fake(), data["x"].values, dt=DT, lyapunov_time="rosenstein")
    renamed = data.rename({"x": "state"})
    with pytest.raises(ValueError, match="variable 'x'"):
        evaluate(Fake(), renamed)
    rossler = systems.simulate("rossler", n_traj=1, n_steps=50, dt=DT, seed=0)
    with pytest.raises(ValueError, match="system 'rossler'"):
        evaluate(Fake(), rossler)


@pytest.mark.slow
def test_exact_system_vpt_matches_valid_groundtruth_time():
    """The exact system against itself: valid until the references part ways.

    The data (numba dopri5 at 1e-12), DOP853 and LSODA (scipy, 1e-12) from each
    start give the valid ground-truth time, the minimum over their pairs; the
    exact surrogate (LSODA at 1e-12) is one of those solutions, so its VPT can
    never be shorter, and with references of comparable accuracy it is not
    much longer.
    """
    data = systems.simulate(
        "lorenz63", n_traj=1, n_steps=4000, dt=DT, seed=5, method="dopri5", rtol=1e-12, atol=1e-12
    )
    exact = ExactSurrogate("lorenz63", dt=DT, method="LSODA", rtol=1e-12)
    ds = evaluate(exact, data, n_starts=2, horizon_lt=35.0, long_steps=1000, lyapunov_steps=0,
                  seed=0)
    vpt, vgt = ds["vpt"].values, ds["valid_groundtruth_time"].values
    assert np.all(vgt <= vpt + 1e-12)
    assert np.all(vpt - vgt < 1.5), (vpt, vgt)
    assert np.all(vgt > 12) and np.all(
        vgt < 35
    ), vgt  # the references do part ways within the horizon


# ------------------------------------------------------------------ data without a known system
class Anonymous(ExactSurrogate):
    """The exact Lorenz'63 flow, posing as a surrogate of unnamed data (no system attribute)."""

    def __init__(self):
        super().__init__("lorenz63", dt=DT, rtol=1e-10)
        self.system = "unknown"


@pytest.fixture(scope="module")
def long_data():
    return systems.simulate("lorenz63", n_traj=1, n_steps=20000, dt=DT, seed=4, transient=5.0)[
        "x"
    ].values


def test_numpy_data_scored_against_themselves(data):
    x = data["x"].values  # (2, 1200, 3), no system, no dt: given here
    lt = 1 / 0.9056
    ds = evaluate(
        Anonymous(),
        x,
        dt=DT,
        lyapunov_time=lt,
        n_starts=2,
        horizon_lt=4.0,
        long_steps=1000,
        lyapunov_steps=0,
        seed=0,
    )
    assert ds.attrs["mode"] == "data only" and ds.attrs["lyapunov_time_source"] == "given"
    assert ds.attrs["lyapunov_time"] == lt and list(ds["component"].values) == ["x0", "x1", "x2"]
    # the exact flow never leaves the data: every VPT reaches the horizon, and says so
    np.testing.assert_allclose(ds["vpt"], float(ds["time"][-1]))
    assert bool(ds["vpt_capped"].all())
    assert np.all(np.isnan(ds["valid_groundtruth_time"]))
    assert ds.attrs["long_truth"] == "the data" and ds.sizes["long_time"] == 1000
    s = summarize(ds)
    assert s["vpt_capped_0.4"] == 1.0
    from dynfit.diagnostics import describe_vpt

    assert describe_vpt(ds, 0.4).endswith("(capped)") and describe_vpt(ds, 0.4).startswith(">= ")


def test_lyapunov_time_estimated_from_data(long_data):
    ds = evaluate(
        Anonymous(),
        long_data,
        dt=DT,
        n_starts=2,
        horizon_lt=2.0,
        long_steps=1000,
        lyapunov_steps=0,
        seed=0,
    )
    assert ds.attrs["lyapunov_time_source"] == "estimated from data"
    # Rosenstein on 20000 samples: within 10% of 1 / 0.9056 (deterministic for the seed)
    assert abs(ds.attrs["lyapunov_time"] * 0.9056 - 1) < 0.1
    assert ds["lyapunov_exponents"].sel(source="truth")[0] == pytest.approx(
        1 / ds.attrs["lyapunov_time"]
    )


def test_lyapunov_time_estimated_from_the_surrogate(data):
    torch.set_num_threads(1)
    sur = TorchExact(data)
    sur.system = "unknown"
    ds = evaluate(
        sur,
        data["x"].values,
        dt=DT,
        lyapunov_time="surrogate",
        n_starts=2,
        horizon_lt=2.0,
        long_steps=1000,
        lyapunov_steps=0,
        lyapunov_starts=1,
        seed=0,
    )
    assert ds.attrs["lyapunov_time_source"] == "estimated from the surrogate"
    # the exact field's lambda_1 over 900 RK4 steps of 0.01: within 25% of 0.9056
    assert abs(ds.attrs["lyapunov_time"] * 0.9056 - 1) < 0.25


def test_short_data_cap_the_horizon(data):
    x = data["x"].values[:, :300]
    with pytest.warns(RuntimeWarning, match="stop at the data's end"):
        ds = evaluate(
            Diverging(),
            x,
            dt=DT,
            lyapunov_time=1.0,
            n_starts=2,
            horizon_lt=10.0,
            long_steps=1000,
            lyapunov_steps=0,
            seed=0,
        )
    assert ds.sizes["time"] == 300 and ds.attrs["horizon_used"] == pytest.approx(2.99)
    assert not ds["vpt_capped"].any()  # the diverging run fails at step 100, well before the end


@pytest.mark.parametrize("suffix", [".npy", ".nc", ".zarr", ".csv"])
def test_paths(data, tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    x = data["x"].values
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".csv":
        rows = ["time,a,b,c"] + [f"{i * DT},{p[0]},{p[1]},{p[2]}" for i, p in enumerate(x[0])]
        path.write_text("\n".join(rows))
    else:
        unnamed = data.copy()
        unnamed.attrs = {"dt": DT}
        systems.save(unnamed, path)
    ds = evaluate(
        Anonymous(),
        path,
        dt=DT if suffix == ".npy" else None,
        lyapunov_time=1.1,
        n_starts=1,
        horizon_lt=1.0,
        long_steps=1000,
        lyapunov_steps=0,
        seed=0,
    )
    assert ds.attrs["mode"] == "data only" and ds.attrs["dt"] == DT
    if suffix == ".csv":
        assert list(ds["component"].values) == ["a", "b", "c"]


def test_lyapunov_from_data(long_data):
    from dynfit.diagnostics import lyapunov_from_data

    lam = lyapunov_from_data(long_data, dt=DT)
    assert abs(lam / 0.9056 - 1) < 0.1
    # the exponent is per time unit: the same samples with time counted in half-units give twice
    # the rate
    assert lyapunov_from_data(long_data, dt=DT / 2) == pytest.approx(2 * lam, rel=1e-9)
    with pytest.raises(ValueError, match="too short"):
        lyapunov_from_data(long_data[:, :100], dt=DT)
    with pytest.raises(ValueError, match="fit_range"):
        lyapunov_from_data(long_data, dt=DT, fit_range=(0.6, 0.2))


def test_known_system_without_a_recorded_lyapunov_time():
    """Lorenz-96 with N = 5 has no tabulated exponent: it is computed from the system's
    equations."""
    sysm = systems.get("lorenz96", N=5)
    assert not sysm.lyapunov_time
    data = systems.simulate(sysm, n_traj=1, n_steps=400, dt=DT, seed=0, transient=5.0)
    ds = evaluate(
        ExactSurrogate(sysm, dt=DT, rtol=1e-10),
        data,
        n_starts=1,
        horizon_lt=1.0,
        long_steps=1000,
        lyapunov_steps=0,
        groundtruth=False,
        seed=0,
    )
    lam = systems.lyapunov_spectrum(
        sysm, n_steps=5000, dt=DT, transient=5.0, x0=data["x"].values[0, 0], k=1
    )[0]
    assert ds.attrs["lyapunov_time_source"] == "system"
    assert ds.attrs["lyapunov_time"] == pytest.approx(1 / lam, rel=1e-6)
