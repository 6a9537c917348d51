"""fit(): strategies, optimisers, checkpoints, resume, determinism, NaN handling; the paper's step
rule."""
import math
import warnings

import numpy as np
import pytest
import torch

from dynfit import strategies
from dynfit.train import CHECKPOINT, HistoryRow
from dynfit.train import fit as _fit


def fit(data, **kw):
    """The training machinery (checkpoints, NaN, determinism) is exercised with the paper's fehlberg
    strategy unless a test names another; the default strategy has its own tests
    (test_continuous.py)."""
    kw.setdefault("strategy", "fehlberg")
    return _fit(data, **kw)


@pytest.fixture(scope="module")
def lorenz():
    import systems

    return systems.simulate("lorenz63", n_traj=2, n_steps=120, dt=0.01, seed=3)


SMALL = {"kind": "mlp", "width": 12, "depth": 2, "activation": "tanh"}


def _weights(sur):
    return torch.cat([p.detach().flatten() for p in sur.field.parameters()])


@pytest.mark.parametrize(
    "strategy", ["black-box", "fehlberg", "curriculum", "torchdiffeq", "continuous"]
)
def test_each_strategy_trains(lorenz, strategy):
    opts = {"step_size": 0.5} if strategy == "torchdiffeq" else None
    sur, hist = fit(lorenz, field=SMALL, strategy=strategy, strategy_options=opts, epochs=2, seed=0,
                    progress=False, lbfgs_iterations=3)
    for var in (
        "loss",
        "accepted_fraction",
        "mean_substeps",
        "max_substeps",
        "n_f_evals",
        "wall_time",
    ):
        assert hist[var].sizes["epoch"] == 2
    assert np.isfinite(hist.loss).all() and (hist.n_f_evals > 0).all()
    assert float(hist.loss[-1]) < float(hist.loss[0]) * 1.5
    assert sur.system == "lorenz63" and sur.dim == 3 and sur.dt == 0.01


def test_fehlberg_training_rejects_where_black_box_accepts(lorenz):
    # The paper's pitfall: the Heun estimate of a small field accepts nearly everything.
    _, bb = fit(
        lorenz,
        field=SMALL,
        strategy="black-box",
        epochs=1,
        seed=1,
        progress=False,
        lbfgs_iterations=2,
    )
    _, fe = fit(
        lorenz,
        field=SMALL,
        strategy="fehlberg",
        strategy_options={"eps": 0.01},
        epochs=1,
        seed=1,
        progress=False,
        lbfgs_iterations=2,
    )
    assert float(bb.accepted_fraction[0]) > float(fe.accepted_fraction[0])


def test_adam_with_minibatches(lorenz):
    sur, hist = fit(
        lorenz,
        field=SMALL,
        strategy="fehlberg",
        optimizer="adam",
        lr=3e-3,
        batch_size=64,
        epochs=3,
        seed=0,
        progress=False,
    )
    assert hist.lr.values[0] > hist.lr.values[-1]  # cosine decay
    assert float(hist.loss[-1]) < float(hist.loss[0])


def test_same_seed_same_result(lorenz):
    a, ha = fit(lorenz, field=SMALL, epochs=2, seed=5, progress=False, lbfgs_iterations=3)
    b, hb = fit(lorenz, field=SMALL, epochs=2, seed=5, progress=False, lbfgs_iterations=3)
    c, _ = fit(lorenz, field=SMALL, epochs=2, seed=6, progress=False, lbfgs_iterations=3)
    assert torch.equal(_weights(a), _weights(b))
    np.testing.assert_array_equal(ha.loss.values, hb.loss.values)
    assert not torch.equal(_weights(a), _weights(c))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_killed_run_resumes_to_the_uninterrupted_result(lorenz, tmp_path, optimizer):
    kw = dict(field=SMALL, strategy="fehlberg", optimizer=optimizer, seed=2, progress=False,
              lbfgs_iterations=3, batch_size=100)
    full, hfull = fit(lorenz, epochs=3, **kw)

    class Killed(Exception):
        pass

    def kill(epoch, row):
        if epoch == 1:
            raise Killed  # dies after the checkpoint of epoch 2 is on disk

    with pytest.raises(Killed):
        fit(lorenz, epochs=3, checkpoint_dir=tmp_path, callback=kill, **kw)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["epoch"] == 2
    resumed, hres = fit(lorenz, epochs=3, checkpoint_dir=tmp_path, **kw)
    assert torch.equal(_weights(full), _weights(resumed))
    np.testing.assert_array_equal(hfull.loss.values, hres.loss.values)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file


def test_checkpoint_from_another_model(lorenz, tmp_path):
    fit(lorenz, field=SMALL, epochs=1, checkpoint_dir=tmp_path, progress=False, lbfgs_iterations=2)
    other = dict(SMALL, width=20)
    with pytest.raises(ValueError, match="another model.*shapes"):
        fit(lorenz, field=other, epochs=2, checkpoint_dir=tmp_path, progress=False)
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        fit(lorenz, field=SMALL, epochs=2, checkpoint_dir=tmp_path, progress=False)


class _Poisoned(torch.nn.Module):
    """A linear field whose output is NaN on every call after ``after``, or on call ``only``
    alone."""

    def __init__(self, after=None, only=None):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3, dtype=torch.float64)
        self.calls, self.after, self.only = 0, after, only

    def forward(self, t, x):
        self.calls += 1
        y = self.lin(x)
        bad = self.calls == self.only if self.only is not None else self.calls > self.after
        return y * float("nan") if bad else y


def test_nan_loss_rolls_back_and_keeps_the_good_checkpoint(lorenz, tmp_path):
    field = _Poisoned(after=10_000)
    fit(lorenz, field=field, epochs=1, checkpoint_dir=tmp_path, progress=False, lbfgs_iterations=2)
    good = torch.load(tmp_path / CHECKPOINT, weights_only=False)["field"]
    good_w = good["lin.weight"].clone()
    field.after = field.calls + 5  # poisons the next epoch
    with pytest.warns(RuntimeWarning, match="rolled back") as record:
        sur, hist = fit(lorenz, field=field, epochs=3, checkpoint_dir=tmp_path, progress=False,
                        lbfgs_iterations=2)
    messages = [str(w.message) for w in record]
    assert (
        sum("retry" in m for m in messages) == 3 and "no checkpoint was overwritten" in messages[-1]
    )
    assert hist.sizes["epoch"] == 1  # the poisoned epoch is not recorded
    assert torch.equal(sur.field.lin.weight.detach(), good_w)
    after = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert after["epoch"] == 1 and torch.equal(after["field"]["lin.weight"], good_w)
    field.after = field.calls + 5
    with pytest.raises(
        FloatingPointError, match="(loss became nan|weights became non-finite).*rolled back"
    ):
        fit(lorenz, field=field, epochs=3, progress=False, lbfgs_iterations=2, on_nan="raise")


def test_nan_retry_starts_the_optimizer_afresh_and_goes_on(lorenz):
    # one NaN call, the first of epoch 1 (a NaN inside a line search alone is survived: L-BFGS keeps
    # the
    # weights of its lowest finite closure value)
    field = _Poisoned(only=0)

    def poison(epoch, row):
        if epoch == 0:
            field.only = field.calls + 1

    with pytest.warns(RuntimeWarning, match="retrying with a fresh optimizer state"):
        sur, hist = fit(
            lorenz, field=field, epochs=3, progress=False, lbfgs_iterations=2, callback=poison
        )
    assert hist.sizes["epoch"] == 3 and np.isfinite(hist.loss).all()
    assert int(hist.retries.sum()) == 1
    assert all(torch.isfinite(p).all() for p in sur.field.parameters())
    with pytest.raises(
        ValueError, match=r"unknown on_nan 'ignore'; expected one of \['retry', 'stop', 'raise'\]"
    ):
        fit(lorenz, epochs=1, on_nan="ignore")


def test_torch_line_search_index_error_keeps_the_lowest_weights(lorenz, monkeypatch):
    # torch's strong-Wolfe search raises IndexError after a NaN trial loss (seen on a dysts flow);
    # the epoch keeps the weights of its lowest closure value and training goes on
    real = torch.optim.LBFGS.step
    calls = []

    def step(self, closure):
        calls.append(1)
        if len(calls) == 2:
            closure()
            raise IndexError("list index out of range")
        return real(self, closure)

    monkeypatch.setattr(torch.optim.LBFGS, "step", step)
    sur, hist = fit(lorenz, field=dict(SMALL), epochs=3, progress=False, lbfgs_iterations=2)
    assert len(calls) >= 2 and hist.sizes["epoch"] >= 2 and np.isfinite(hist.loss).all()
    assert all(torch.isfinite(p).all() for p in sur.field.parameters())


def test_lbfgs_tolerance_is_applied_and_wins_on_resume(lorenz, tmp_path):
    kw = dict(field=SMALL, epochs=2, progress=False, lbfgs_iterations=3, checkpoint_dir=tmp_path)
    fit(lorenz, **kw)
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)["optimizer"]["param_groups"][0]
    assert saved["tolerance_grad"] == 1e-7 and saved["tolerance_change"] == pytest.approx(1e-9)
    sur, hist = fit(lorenz, **{**kw, "epochs": 3}, lbfgs_tolerance=1e-12)
    after = torch.load(tmp_path / CHECKPOINT, weights_only=False)["optimizer"]["param_groups"][0]
    assert after["tolerance_grad"] == 1e-12 and after["tolerance_change"] == pytest.approx(1e-14)
    assert hist.sizes["epoch"] == 3
    with pytest.raises(
        ValueError, match="lbfgs_tolerance must be a finite number > 0 and < 1, got 0"
    ):
        fit(lorenz, epochs=1, lbfgs_tolerance=0)


def test_bad_arguments(lorenz):
    with pytest.raises(
        ValueError,
        match="unknown optimizer 'lbgfs' \\(did you mean 'lbfgs'\\?\\); expected one of "
              "\\['lbfgs', 'adam'\\]",
    ):
        fit(lorenz, optimizer="lbgfs", epochs=1)
    with pytest.raises(ValueError, match="unknown strategy 'fehlburg'.*fehlberg"):
        fit(lorenz, strategy="fehlburg", epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        fit(lorenz, epochs=-1)
    with pytest.raises(ValueError, match="unknown torchdiffeq method"):
        strategies.get("torchdiffeq", method="rk5")


# ------------------------------------------------------------ settings objects (dynfit.config)
def test_settings_objects_equal_the_keyword_arguments(lorenz):
    from dynfit.config import LoopSettings, ModelSettings, OptimizerSettings, WindowSettings

    flat = dict(
        field=SMALL, epochs=2, seed=1, horizon=2, lbfgs_iterations=3, lr=0.5, progress=False
    )
    _, h1 = fit(lorenz, **flat)
    _, h2 = fit(
        lorenz,
        windows=WindowSettings(horizon=2),
        model=ModelSettings(field=SMALL, seed=1),
        optimizer=OptimizerSettings(lbfgs_iterations=3, lr=0.5),
        loop=LoopSettings(epochs=2, progress=False),
    )
    assert (
        np.allclose(h1.loss, h2.loss, rtol=1e-12, atol=0)
        and h1.attrs["seed"] == h2.attrs["seed"] == 1
    )
    # keyword arguments win over an object's fields
    _, h3 = fit(
        lorenz,
        loop=LoopSettings(epochs=5, progress=False),
        epochs=1,
        field=SMALL,
        lbfgs_iterations=2,
    )
    assert h3.sizes["epoch"] == 1


def test_settings_check_their_fields_and_fit_names_unknown_ones(lorenz):
    from dynfit.config import (
        FieldSettings,
        LoopSettings,
        ModelSettings,
        OptimizerSettings,
        fit_settings,
    )

    with pytest.raises(ValueError, match=r"lr must be a positive finite number \(> 0\), got -1.0"):
        OptimizerSettings(lr=-1.0)
    with pytest.raises(
        ValueError, match=r"unknown on_nan 'ignore'; expected one of \['retry', 'stop', 'raise'\]"
    ):
        LoopSettings(on_nan="ignore")
    with pytest.raises(
        ValueError, match=r"unknown dtype 'float16'.*; expected one of \['float32', 'float64'\]"
    ):
        ModelSettings(dtype="float16")
    with pytest.raises(
        TypeError,
        match="unknown keyword argument.*'lbfgs_iteration'.*did you mean.*lbfgs_iterations",
    ):
        fit(lorenz, lbfgs_iteration=3)
    with pytest.raises(TypeError, match="loop must be a dynfit.config.LoopSettings"):
        fit(lorenz, loop=OptimizerSettings())
    assert ModelSettings(dtype=torch.float32).dtype == "float32"
    # the name, as fit(optimizer="adam")
    assert fit_settings(optimizer="adam").optimizer.optimizer == "adam"
    assert FieldSettings(kind="mlp", width=8).config() == {
        "kind": "mlp",
        "width": 8,
        "depth": 2,
        "activation": "silu",
        "time_dependent": False,
    }


def test_toml_maps_onto_the_settings_field_for_field():
    from dataclasses import fields

    from dynfit import config

    # every schema key is a settings field of that name, with that field's default
    for section, keys in config.SCHEMA.items():
        for key in keys:
            owners = [cls for cls in config.TOML_SETTINGS for f in fields(cls)
                      if f.name == key and f.metadata.get("toml") == section]
            assert len(owners) == 1, (section, key, owners)
            f = next(f for f in fields(owners[0]) if f.name == key)
            assert config.DEFAULTS[section][key] == f.metadata["toml_default"]
    cfg = config.validate(
        {
            "data": {"horizon": 3, "path": "x.npy", "dt": 0.1},
            "field": {"kind": "mlp", "width": 8},
            "train": {"lr": 0.01, "optimizer": "adam", "epochs": 4, "seed": 2, "resume": False},
            "strategy": {"name": "black-box", "eps": 0.05},
            "output": {"dir": "o"},
        }
    )
    s = config.settings_from_config(cfg, progress=False)
    assert s["windows"].horizon == 3 and s["windows"].dt == 0.1 and s["data"].path == "x.npy"
    assert (
        s["optimizer"].optimizer == "adam" and s["optimizer"].lr == 0.01 and s["loop"].epochs == 4
    )
    assert (
        s["model"].seed == 2
        and s["model"].field.config()["width"] == 8
        and s["model"].dtype == "float64"
    )
    assert (
        s["checkpoint"].resume is False and str(s["checkpoint"].checkpoint_dir) == "o/checkpoints"
    )
    assert (
        s["strategy"] == "black-box"
        and s["options"] == {"eps": 0.05}
        and s["loop"].progress is False
    )
    # a config trains at least one epoch (fit alone may train none)
    with pytest.raises(
        ValueError, match=r"\[train\] epochs must be >= 1, got 0; write a whole number >= 1"
    ):
        config.validate({"train": {"epochs": 0}})


# ------------------------------------------------------------ the paper's step rule
class _Linear(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = torch.as_tensor(a, dtype=torch.float64)

    def forward(self, t, x):
        return x @ self.a.T


A = np.array([[-0.3, 1.0], [-1.0, -0.3]])


def _exact(x0):
    from scipy.linalg import expm

    return x0 @ expm(A).T


def test_rk3_substeps_converge_at_order_three():
    from dynfit.solvers import odesolve

    field = _Linear(A)
    x0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    ns = np.array([2, 4, 8, 16])
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    errs = [np.abs(odesolve(field, x0, t, method="rkf23", step_size=1.0 / n).ys[-1].numpy()
                   - _exact(x0.numpy())).max() for n in ns]
    slope = np.polyfit(np.log(1.0 / ns), np.log(errs), 1)[0]
    assert 2.8 < slope < 3.2


def _fehlberg32(field, x):
    """A2 (order 3, kept) and A1 (order 2) of one unit step, written out as in docs/references.md
    section 1."""
    t = torch.zeros(())
    f1 = field(t, x)
    f2 = field(t, x + f1)
    f3 = field(t, x + (f1 + f2) / 4)
    return x + (f1 + f2 + 4 * f3) / 6, x + (f1 + f2) / 2


def _interval(field, x0, reference, shared):
    """One unit interval under the paper's rule through odesolve: (out, accepted, substeps, evals
    per example)."""
    from dynfit.solvers import PaperRule, odesolve

    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ref = None if reference is None else torch.stack([x0, reference])
    sol = odesolve(
        field,
        x0,
        t,
        method="rkf23",
        control=PaperRule(eps=0.1, safety=0.9, max_substeps=10, shared=shared),
        reference=ref,
    )
    st = sol.stats
    return sol.ys[-1], st.interval_accepted[0], st.interval_substeps[0], st.n_f_evals_per_example


def test_paper_rule_matches_its_definition():
    from dynfit.solvers import odesolve

    field = _Linear(A * 3)
    x0 = torch.tensor([[1.0, 0.0], [0.01, 0.0], [0.5, 0.5]], dtype=torch.float64)
    out, acc, sub, evals = _interval(field, x0, None, True)
    a2, a1 = _fehlberg32(field, x0)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(odesolve(field, x0, t, method="rkf23", step_size=1.0).ys[-1], a2,
                               rtol=1e-15, atol=1e-15)
    r = (a1 - a2).abs().sum(-1)
    np.testing.assert_array_equal(acc.numpy(), (r <= 0.1).numpy())
    assert acc.tolist() == [False, True, False]
    n = math.ceil(1 / (0.9 * math.sqrt(0.1 / float(r[~acc].max()))))
    assert sub.tolist() == [n, 1, n]
    torch.testing.assert_close(
        out[~acc], odesolve(field, x0[~acc], t, method="rkf23", step_size=1.0 / n).ys[-1]
    )
    torch.testing.assert_close(out[1], a2[1], rtol=1e-15, atol=1e-15)
    # the attempt costs 3 evaluations; n substeps reuse its first stage: 3 n - 1 more
    assert evals.tolist() == [3 + 3 * n - 1, 3, 3 + 3 * n - 1]
    # Fehlberg training: the reference replaces A1
    target = a2.clone()
    target[0] += 1.0
    _, acc, sub, _ = _interval(field, x0, target, True)
    assert acc.tolist() == [False, True, True]
    # per-example counts
    _, _, sub, _ = _interval(field, x0, None, False)
    for i in (0, 2):
        assert sub[i] == math.ceil(1 / (0.9 * math.sqrt(0.1 / float(r[i]))))


def test_curriculum_grows_the_horizon_on_acceptance():
    cur = strategies.get("curriculum", max_horizon=4, accept_threshold=0.9, patience=2)
    rows = []
    hs = []
    for epoch, acc in enumerate([0.2, 0.95, 0.95, 0.95, 0.95, 0.99, 0.99]):
        h = cur.horizon(epoch, rows, 1)
        hs.append(h)
        rows.append(HistoryRow(accepted_fraction=acc, horizon=h))
    assert hs == [1, 1, 1, 2, 2, 4, 4]
    assert cur.stride(4, 1) == 4


@pytest.mark.parametrize("reference", [False, True])
def test_strategy_agrees_with_odesolve_paper_rule(reference):
    # two independent implementations of the paper's batch procedure
    from dynfit.solvers import PaperRule, odesolve

    torch.manual_seed(0)
    field = torch.nn.Sequential(
        torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
    ).double()

    def f(t, x):
        return 3 * field(x)

    x0 = torch.randn(64, 2, dtype=torch.float64)
    targets = torch.randn(3, 64, 2, dtype=torch.float64) * 0.3 + x0
    strat = strategies.get("fehlberg" if reference else "black-box")
    # fehlberg: the training rule (shared count, target reference); black-box: the inference
    # rule (per-example counts) and, given targets, its training rule (shared count, Heun estimate)
    ys = (
        strat.rollout(f, x0, 3, targets)[0]
        if reference
        else strat.inference().solve(f, x0, 3)[0][1:]
    )
    if not reference:
        ys_t, _ = strat.rollout(f, x0, 3, targets)
    t = torch.arange(4, dtype=torch.float64)
    ref = torch.cat([x0[None], targets]) if reference else None
    shared = reference
    sol = odesolve(
        f,
        x0,
        t,
        method="rkf23",
        control=PaperRule(eps=0.1, safety=0.9, max_substeps=10, shared=shared),
        reference=ref,
    )
    torch.testing.assert_close(sol.ys[1:], ys, rtol=1e-12, atol=1e-12)
    if not reference:
        sol = odesolve(f, x0, t, method="rkf23", control=PaperRule(shared=True))
        torch.testing.assert_close(sol.ys[1:], ys_t, rtol=1e-12, atol=1e-12)


def test_curriculum_unrolls_in_fit(lorenz):
    cur = strategies.CurriculumStrategy(max_horizon=4, accept_threshold=1e-9, patience=1)
    sur, hist = fit(
        lorenz, field=SMALL, strategy=cur, epochs=3, seed=0, progress=False, lbfgs_iterations=2
    )
    hs = hist.horizon.values.tolist()
    # the horizon starts at 1 and doubles after every epoch that accepted anything (threshold 1e-9)
    acc = hist.accepted_fraction.values
    assert hs[0] == 1 and all(b == (2 * a if f > 0 else a) for a, b, f in zip(hs, hs[1:], acc))
    assert hs[-1] >= 2
    assert np.isfinite(hist.loss).all()
    # inside a rollout the reference of interval k is the observed increment applied to the
    # prediction
    from dynfit.solvers import odesolve

    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    field = lambda t, x: 2 * f(x)  # noqa: E731
    x0 = torch.randn(5, 3, dtype=torch.float64)
    targets = x0 + torch.randn(2, 5, 3, dtype=torch.float64) * 0.2
    ys, parts = cur.rollout(field, x0, 2, targets)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    y1 = odesolve(
        field, x0, t, method="rkf23", control=cur.rule, reference=torch.stack([x0, targets[0]])
    ).ys[1]
    ref2 = y1 + targets[1] - targets[0]
    y2 = odesolve(
        field, y1, t, method="rkf23", control=cur.rule, reference=torch.stack([y1, ref2])
    ).ys[1]
    torch.testing.assert_close(ys, torch.stack([y1, y2]), rtol=1e-13, atol=1e-13)
    assert len(parts) == 2


def test_continuous_training_on_the_gpu_schedule(lorenz, monkeypatch):
    """fit's default strategy with the solver branches only a GPU takes (stage sums as one
    contraction, a host read every 8 steps) forced on the CPU: the same losses and weights as the
    CPU schedule, to
    rounding (the contraction adds in another order); more rows counted (frozen rows until a
    read)."""
    import dynfit.solvers.integrate as integrate

    runs = []
    for gpu in (False, True):
        cpu = {"fused": gpu, "sync_every": 8 if gpu else 1}  # odesolve's defaults on this device
        monkeypatch.setattr(integrate, "DEVICE_DEFAULTS", {**integrate.DEVICE_DEFAULTS, "cpu": cpu})
        runs.append(
            _fit(
                lorenz,
                field=SMALL,
                strategy="continuous",
                epochs=2,
                seed=0,
                progress=False,
                lbfgs_iterations=3,
            )
        )
    (a, ha), (b, hb) = runs
    np.testing.assert_allclose(hb.loss.values, ha.loss.values, rtol=1e-6)
    # rows that finished stay in the batch, frozen, until the next read, and count as evaluated
    assert (hb.n_f_evals.values >= ha.n_f_evals.values).all()
    torch.testing.assert_close(_weights(b), _weights(a), rtol=1e-6, atol=1e-9)


def test_trajectories_too_short_for_a_noise_estimate_train_from_the_observed_samples():
    import systems

    data = systems.simulate("lorenz63", n_traj=2, n_steps=6, dt=0.01, seed=0)  # <= 8 samples
    _, hist = fit(data, field={"kind": "mlp", "width": 4}, strategy="fehlberg", epochs=1,
                  lbfgs_iterations=1, progress=False)
    assert hist.attrs["noisy_data"] == 0 and hist.attrs["window_starts"] == "observed"
