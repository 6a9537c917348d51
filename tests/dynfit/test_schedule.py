"""The training schedule: loss floors, the continuous strategy's tolerance and horizon rule,
rollbacks of jumping epochs, the loss at the weights kept, the time limit, forecast scores, the
inference tolerance."""
import math

import numpy as np
import pytest
import torch

import dynfit.train as train
from dynfit._watch import Forecasts, Score, field_error, loss_floor
from dynfit.data import Standardizer, make_windows
from dynfit.strategies import ContinuousStrategy, LossFloor, get
from dynfit.surrogate import _ModelTimeField
from dynfit.train import HISTORY_UNITS, HISTORY_VARS, HistoryRow


def lorenz(t, x):
    return torch.stack([10 * (x[:, 1] - x[:, 0]), x[:, 0] * (28 - x[:, 2]) - x[:, 1],
                        x[:, 0] * x[:, 1] - 8 / 3 * x[:, 2]], dim=-1)


@pytest.fixture(scope="module")
def data():
    import systems

    return systems.simulate("lorenz63", n_traj=2, n_steps=120, dt=0.01, seed=3)


# ------------------------------------------------------------ floors
def test_loss_floor_of_clean_and_noisy_data():
    rng = np.random.default_rng(0)
    t = np.arange(4000) * 0.01
    clean = np.stack([np.sin(t), np.cos(1.3 * t)], axis=-1)[None]  # (1, T, 2)
    floor = loss_floor(clean, torch.float64)
    assert floor.noise == 0.0  # a smooth signal: no white noise
    eps = np.finfo(np.float64).eps
    assert floor.roundoff == pytest.approx(1e3 * eps ** 2 * (clean ** 2).mean(1).sum())
    sigma = np.array([0.01, 0.03])
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    got = loss_floor(noisy, torch.float64).noise
    assert got == pytest.approx(2 * (sigma ** 2).sum(), rel=0.15)  # 2 x the summed noise variance
    assert loss_floor(clean[:, :5], torch.float64).noise == 0.0  # too short to tell: no noise floor


def test_loss_floor_reasons():
    f = LossFloor(roundoff=1e-28, noise=1e-4)
    assert f.reason(1e-29).startswith("at its floor") and "roundoff" in f.reason(1e-29)
    assert "noise" in f.reason(1.4e-4) and f.reason(1.6e-4) is None
    assert LossFloor(roundoff=1e-28).reason(1e-10) is None


def test_every_strategy_stops_at_the_data_floor():
    s = get("fehlberg")
    assert s.finished([HistoryRow(loss=1e-3)]) is None  # no floor known
    s.set_floor(LossFloor(roundoff=1e-28, noise=1e-3))
    assert s.finished([HistoryRow(loss=1e-3)]).startswith("at its floor")


# ------------------------------------------------------------ the continuous schedule
def _row(loss, h, start=math.nan, dim=3):
    return HistoryRow(loss=loss, loss_start=start, misfit=math.sqrt(loss / dim), horizon=h)


def test_tolerance_follows_the_misfit_both_ways():
    s = ContinuousStrategy(rtol_min=1e-9, rtol_max=1e-3)
    s.set_tolerance(8e-4, 8)
    assert s.rtol == pytest.approx(1e-5)  # misfit / (10 horizon)
    s.set_tolerance(8e-6, 8)
    assert s.rtol == pytest.approx(1e-7)  # tighter as the misfit falls
    s.set_tolerance(0.8, 8)
    assert s.rtol == 1e-3  # looser when the field is far off, up to rtol_max
    s.set_tolerance(1e-12, 8)
    assert s.rtol == 1e-9  # never below rtol_min
    s.rtol = 1e-5
    s.rolled_back()
    assert s.rtol == pytest.approx(1e-6)  # a rolled-back epoch retries tenfold tighter


def test_horizon_grows_only_when_the_fit_at_it_has_converged():
    s = ContinuousStrategy(start_horizon=4, max_horizon=16, patience=2, improvement=0.05)
    rows, hs = [], []
    loss = 1.0
    for epoch in range(10):  # each epoch halves the loss: never converged, however many epochs pass
        hs.append(s.horizon(epoch, rows, 1))
        rows.append(_row(loss / 2, hs[-1], start=loss))
        loss /= 2
        assert s.finished(rows) is None
    assert set(hs) == {4}
    gains = [0.01, 0.02]  # two epochs in a row below 5%: converged at 4, the next runs at 8
    for g in gains:
        hs.append(s.horizon(len(rows), rows, 1))
        rows.append(_row(loss * (1 - g), hs[-1], start=loss))
    assert hs[-1] == 4 and s.horizon(len(rows), rows, 1) == 8


def test_noise_floor_grows_the_horizon_then_stops_at_the_longest():
    s = ContinuousStrategy(start_horizon=4, max_horizon=8, patience=3)
    s.set_floor(LossFloor(roundoff=1e-28, noise=1e-4))
    rows = []
    h = s.horizon(0, rows, 1)
    rows.append(_row(1.2e-4, h, start=1e-3))  # improved 88%, but at the noise floor: converged at 4
    assert s.finished(rows) is None
    h = s.horizon(1, rows, 1)
    assert h == 8
    rows.append(_row(1.3e-4, h, start=1e-3))
    assert "noise" in s.finished(rows) and s.finished(rows).startswith("at its floor")


def test_resolution_floor_stops_at_once():
    s = ContinuousStrategy(start_horizon=8, rtol_min=1e-9)
    s.horizon(0, [], 1)
    rows = [_row(3 * (5e-8) ** 2, 8, start=3 * (5.1e-8) ** 2)]  # misfit 5e-8 < 10 x 1e-9 x 8
    reason = s.finished(rows)
    assert reason.startswith("at its floor") and "resolves" in reason
    rows = [_row(3 * (2e-7) ** 2, 8, start=3 * (2.1e-7) ** 2)]
    assert s.finished(rows) is None  # above the solver's resolution, still improving


@pytest.mark.parametrize("err, rtol", [(1e-7, 1e-10), (2.4e-7, 1e-10), (3e-6, 1e-9), (1e-4, 1e-7),
                                       (0.2, 1e-6), (math.nan, 1e-10), (0.0, 1e-10)])
def test_inference_tolerance_follows_the_field_error(err, rtol):
    assert ContinuousStrategy.inference_tolerance(err) == pytest.approx(rtol)
    assert ContinuousStrategy().inference(err).rtol == pytest.approx(rtol)
    assert ContinuousStrategy(inference_rtol=1e-8).inference(err).rtol == 1e-8  # a fixed one wins


# ------------------------------------------------------------ forecasts and field error
def test_forecast_score_of_the_exact_field_and_of_one_that_blows_up(data):
    scaler = Standardizer.fit(data.x.values)
    z = scaler.forward(data.x.values)
    fc = Forecasts(z, device="cpu", dtype=torch.float64)
    strat = ContinuousStrategy()
    strat.rtol = 1e-10
    exact = fc.score(_ModelTimeField(lorenz, scaler, 0.01), strat)
    assert exact.valid == fc.length and exact.blown == 0 and exact.error < 1e-5
    wild = fc.score(lambda t, x: 3.0 * x, strat)  # leaves the attractor exponentially
    assert wild.blown == len(fc.truth[0]) and wild.valid < fc.length
    assert exact.better_than(wild) and not wild.better_than(exact) and exact.better_than(None)
    assert Score(10.0, 0.2, 0).better_than(Score(10.3, 0.3, 0))  # within half a sample: lower error
    assert Score.from_dict(exact.to_dict()) == exact


def test_field_error_of_the_exact_field_is_the_derivative_estimates_error(data):
    scaler = Standardizer.fit(data.x.values)
    z = scaler.forward(data.x.values)
    err = field_error(_ModelTimeField(lorenz, scaler, 0.01), z, order=8, device="cpu",
                      dtype=torch.float64)
    assert err < 1e-5  # 8th-order differences at dt = 0.01
    scaled = field_error(_ModelTimeField(lambda t, x: 1.1 * lorenz(t, x), scaler, 0.01), z, order=8,
                         device="cpu", dtype=torch.float64)
    assert scaled == pytest.approx(0.1, rel=1e-3)


# ------------------------------------------------------------ fit: rollbacks, loss kept, time limit
class _Linear(torch.nn.Module):
    """A linear field whose output is multiplied by ``scale`` (not a weight)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3, dtype=torch.float64)
        self.scale, self.calls = 1.0, 0

    def forward(self, t, x):
        self.calls += 1
        return self.scale * self.lin(x)


def _loss_at(field, data, strategy, h=1):
    """The training loss of ``field`` on fit's windows (fit's own loss function, no gradient)."""
    scaler = Standardizer.fit(data.x.values)
    x0, tg = make_windows(data.x.values, horizon=h, stride=1, scaler=scaler, dt=0.01).tensors(
        dtype=torch.float64, device="cpu")
    with torch.no_grad():
        ys, _ = strategy.rollout(field, x0, h, tg)
        return float(train._loss(ys, tg))


def test_an_epoch_whose_loss_jumps_is_rolled_back(data):
    torch.manual_seed(0)  # the field's initial weights do not depend on the tests run before
    field = _Linear()
    kept = {}

    def spoil(epoch, row):
        if epoch == 0:
            kept["w"] = field.lin.weight.detach().clone()
            field.scale = 1e3  # the next epoch's loss is orders of magnitude above this one's

    jumped = r"loss jumped to .* more than 10x the lowest at horizon 1"
    with pytest.warns(RuntimeWarning, match=jumped):
        sur, hist = train.fit(data, field=field, strategy="fehlberg", epochs=3, progress=False,
                              lbfgs_iterations=2, on_nan="stop", callback=spoil,
                              select_by_forecast=False)
    assert hist.sizes["epoch"] == 1 and "loss jumped" in hist.attrs["stop_reason"]
    assert torch.equal(sur.field.lin.weight.detach(), kept["w"])  # the weights of the epoch kept


def test_the_loss_recorded_is_the_loss_at_the_weights_kept(data):
    field = _Linear()
    strat = get("fehlberg")
    sur, hist = train.fit(data, field=field, strategy=strat, epochs=2, progress=False,
                          lbfgs_iterations=3,
                          select_by_forecast=False)
    assert float(hist.loss[-1]) == pytest.approx(_loss_at(sur.field, data, strat), rel=1e-12)
    assert float(hist.loss[-1]) <= float(hist.loss_start[-1])  # L-BFGS keeps its lowest value


def test_time_limit_stops_inside_an_epoch_and_keeps_the_best_weights(data, monkeypatch):
    clock = [0.0]

    class Clock:
        @staticmethod
        def perf_counter():
            return clock[0]

    monkeypatch.setattr(train, "time", Clock)
    field = _Linear()
    strat = get("fehlberg")

    def forward(t, x, inner=field.forward):
        if field.calls > 40:
            clock[0] = 100.0  # the limit passes during the epoch, between two closures
        return inner(t, x)

    field.forward = forward
    sur, hist = train.fit(data, field=field, strategy=strat, epochs=5, progress=False,
                          lbfgs_iterations=50,
                          time_limit=10.0, select_by_forecast=False)
    reason = hist.attrs["stop_reason"]
    assert reason.startswith("time limit") and "cut short" in reason and hist.sizes["epoch"] == 1
    assert float(hist.loss[0]) == pytest.approx(_loss_at(sur.field, data, strat), rel=1e-12)
    assert float(hist.loss[0]) < float(hist.loss_start[0])
    with pytest.raises(ValueError, match="time_limit"):
        train.fit(data, time_limit=0)


def test_fit_records_the_selection_and_the_inference_tolerance(data):
    sur, hist = train.fit(data, epochs=1, progress=False, lbfgs_iterations=2)
    a = hist.attrs
    assert a["selected_epoch"] in (-1, 0) and 0 <= a["selected_forecast"] <= 119
    assert np.isfinite(hist.forecast).all()
    rule = ContinuousStrategy.inference_tolerance(a["field_error"])
    assert sur.solver.rtol == a["inference_rtol"] == rule
    assert sur.provenance["inference_rtol"] == sur.solver.rtol


# ------------------------------------------------------------ the history record and the hooks
def test_history_row_reads_old_checkpoint_rows_and_writes_its_units():
    from dynfit._history import history_dataset, is_history

    old = {"loss": 0.5, "accepted_fraction": 1.0, "mean_substeps": 1.0, "horizon": 4,
           "rtol": None, "gone": 3}  # a row of an older checkpoint: no loss_start, an unknown key
    row = HistoryRow.from_dict(old)
    assert row.loss == 0.5 and row.horizon == 4 and math.isnan(row.loss_start)
    assert math.isnan(row.rtol) and row.retries == 0
    assert row["loss"] == 0.5 and row.get("gone", 7) == 7  # dict-style reads still work
    assert HistoryRow.from_dict(row.to_dict()) == row
    ds = history_dataset([row, old], {"system": "x", "params": {"a": 1}})
    assert tuple(ds.data_vars) == HISTORY_VARS and ds.sizes["epoch"] == 2 and is_history(ds)
    assert ds["horizon"].dtype == np.int64 and ds["loss"].dtype == np.float64
    assert {v: ds[v].attrs["units"] for v in HISTORY_VARS} == HISTORY_UNITS
    assert HISTORY_UNITS["wall_time"] == "s" and "params" not in ds.attrs


def test_every_strategy_answers_the_hooks_fit_asks():
    from dynfit.strategies import names

    for name in names():
        s = get(name)
        assert isinstance(s.prefit_by_default, bool) and isinstance(s.inference_follows_field, bool)
        g, c = s.lbfgs_tolerances(1e-4)
        assert (g, c) == ((0.0, 0.0) if name == "continuous" else (1e-4, 1e-2 * 1e-4))
        assert s.validation_solver(50).max_steps <= 50
    assert get("continuous").prefit_by_default and not get("fehlberg").prefit_by_default
    assert get("fehlberg").calibrate(None, None, None, 1) is None  # nothing to calibrate


def test_train_asks_strategies_not_their_types():
    import inspect

    src = inspect.getsource(train)
    assert "isinstance(run.strat" not in src and "ContinuousStrategy" not in src
    assert "hasattr(run.strat" not in src
