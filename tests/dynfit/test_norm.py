"""TA-BN and the comparison norms: interpolation, statistics, solvers, bad input."""
import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchdiffeq import odeint, odeint_adjoint

from dynfit.nn import (
    MLPField,
    MiniBatchNorm1d,
    PopBatchNorm1d,
    TABatchNorm1d,
    TABatchNorm2d,
    frozen_statistics,
    make_norm,
    norm_penalty,
    statistics_frozen,
)

D64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")



def _layer(num_points=5, t_max=2.0, features=3, seed=0, cls=TABatchNorm1d, **kw):
    """A TA-BN layer whose grid rows all differ (statistics and parameters)."""
    torch.manual_seed(seed)
    layer = cls(features, num_points=num_points, t_max=t_max, dtype=D64, **kw)
    with torch.no_grad():
        layer.running_mean.uniform_(-1.0, 1.0)
        layer.running_var.uniform_(0.5, 2.0)
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    return layer


def _t(value):
    return torch.tensor(value, dtype=D64)


# ---------------------------------------------------------------- interpolation


def test_grid_point_uses_exactly_that_points_rows():
    layer = _layer().eval()
    x = torch.randn(6, 3, dtype=D64)
    for m, tm in enumerate(np.linspace(0.0, 2.0, 5)):
        lower, w_lo, w_up = layer._interpolation_weights(_t(tm))
        assert w_up == 0.0 or (lower + 1 == m and w_up == 1.0)
        want = F.batch_norm(x, layer.running_mean[m], layer.running_var[m], layer.weight[m],
                            layer.bias[m], False, 0.0, layer.eps)
        assert torch.equal(layer(_t(tm), x), want)
    # training mode: the mini-batch statistics and that point's scale and shift
    layer.train()
    with frozen_statistics(layer):
        got = layer(_t(1.5), x)
    want = F.batch_norm(x, None, None, layer.weight[3], layer.bias[3], True, 0.0, layer.eps)
    assert torch.equal(got, want)


def test_weights_sum_to_one_and_move_linearly():
    layer = TABatchNorm1d(2, num_points=11, t_max=5.0)
    spacing = 0.5
    ts = np.linspace(0.0, 5.0, 397)
    for t in ts:
        lower, w_lo, w_up = layer._interpolation_weights(float(t))
        t_l = lower * spacing
        assert 0 <= lower <= 9
        assert t_l - 1e-12 <= t <= t_l + spacing + 1e-12
        assert w_lo + w_up == pytest.approx(1.0, abs=1e-15)
        # the paper's formula: the lower point is weighted by (t_{l+1} - t) / D
        assert w_lo == pytest.approx((t_l + spacing - t) / spacing, abs=1e-12)
        assert w_up == pytest.approx((t - t_l) / spacing, abs=1e-12)
    # linear: inside one interval the weights are an affine function of t
    inner = np.linspace(1.01, 1.49, 9)
    w = np.array([layer._interpolation_weights(float(t))[2] for t in inner])
    slope = np.polyfit(inner, w, 1)
    assert slope[0] == pytest.approx(1.0 / spacing, rel=1e-12)
    assert np.abs(np.polyval(slope, inner) - w).max() < 1e-12


def test_interpolation_is_not_mirrored():
    """Near t_l the output is close to row l's, not row l+1's (the public code's bug)."""
    layer = _layer().eval()
    x = torch.randn(4, 3, dtype=D64)
    t = 0.5 + 0.1 * 0.5  # 10% of the way from grid point 1 to grid point 2
    got = layer(_t(t), x)
    lerp = lambda a: 0.9 * a[1] + 0.1 * a[2]  # noqa: E731
    want = F.batch_norm(x, lerp(layer.running_mean), lerp(layer.running_var),
                        lerp(layer.weight), lerp(layer.bias), False, 0.0, layer.eps)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_interpolation_weights_are_the_forward_paths():
    """The weights the tests read are those forward multiplies the tables by (one object)."""
    layer = _layer().eval()
    x = torch.randn(4, 3, dtype=D64)
    for t in (0.0, 0.3, 0.55, 1.5, 1.999, 2.0, 2.7):
        lower, w_lo, w_up = layer._interpolation_weights(_t(t))
        ip = layer._interpolation(_t(t), x)
        assert (ip.lower, ip.w_lower, ip.w_upper) == (lower, w_lo, w_up)
        assert ip.row is not None or ip.coef[0, lower:lower + 2].tolist() == [w_lo, w_up]
        table = layer.running_mean
        want = table[lower] if w_up == 0.0 else w_lo * table[lower] + w_up * table[lower + 1]
        torch.testing.assert_close(ip(table), want, rtol=1e-15, atol=1e-15)


def test_eval_output_is_continuous_and_piecewise_linear_in_parameters():
    layer = _layer(num_points=3, t_max=1.0).eval()
    x = torch.randn(3, 3, dtype=D64)
    eps = 1e-9
    for tm in (0.5,):
        left, right = layer(_t(tm - eps), x), layer(_t(tm + eps), x)
        torch.testing.assert_close(left, right, atol=1e-7, rtol=0)


def test_outside_policy():
    layer = _layer(t_max=2.0).eval()
    x = torch.randn(3, 3, dtype=D64)
    torch.testing.assert_close(layer(_t(2.7), x), layer(_t(2.0), x), rtol=0, atol=0)
    torch.testing.assert_close(layer(_t(-0.3), x), layer(_t(0.0), x), rtol=0, atol=0)
    strict = _layer(t_max=2.0, outside="error").eval()
    with pytest.raises(ValueError, match=r"outside the TA-BN grid \[0, 2.0\]"):
        strict(_t(2.5), x)
    with pytest.raises(ValueError, match="outside the TA-BN grid"):
        strict(_t(-0.1), x)
    strict(_t(2.0 + 1e-12), x)  # round-off at the end point is tolerated


def test_no_gradient_with_respect_to_time():
    layer = _layer().train()
    t = torch.tensor(0.7, dtype=D64, requires_grad=True)
    x = torch.randn(5, 3, dtype=D64, requires_grad=True)
    layer(t, x).pow(2).sum().backward()
    assert t.grad is None
    assert x.grad is not None and layer.weight.grad is not None
    # gradient flows only to the two neighbouring rows (l = 1, 2 for t = 0.7, D = 0.5)
    rows = layer.weight.grad.abs().sum(1)
    assert rows[1] > 0 and rows[2] > 0 and rows[[0, 3, 4]].sum() == 0


def test_gradcheck_training_and_eval():
    layer = _layer(num_points=4, t_max=1.0)
    x = torch.randn(5, 3, dtype=D64, requires_grad=True)
    for mode in (True, False):
        layer.train(mode)
        with frozen_statistics(layer):
            assert torch.autograd.gradcheck(lambda z: layer(_t(0.41), z), (x,))


# ---------------------------------------------------------------- batch and eval


def test_eval_batch_of_one_is_independent_of_the_batch():
    layer = _layer().eval()
    x = torch.randn(8, 3, dtype=D64)
    full = layer(_t(0.9), x)
    for i in range(8):
        torch.testing.assert_close(layer(_t(0.9), x[i:i + 1]), full[i:i + 1], rtol=1e-14,
                                   atol=1e-14)


def test_training_needs_more_than_one_value():
    layer = _layer().train()
    with pytest.raises(ValueError, match="more than one value per feature"):
        layer(_t(0.3), torch.randn(1, 3, dtype=D64))
    with pytest.raises(ValueError, match="more than one value"):
        MiniBatchNorm1d(3)(torch.tensor(0.0), torch.randn(1, 3))


# ---------------------------------------------------------------- statistics


def test_running_statistics_match_hand_computation():
    """Grid 0, 0.5, 1; eta = 0.2; updates at t = 0.0, 0.3, 0.5, 0.8 and 1.0."""
    eta = 0.2
    layer = TABatchNorm1d(2, num_points=3, t_max=1.0, momentum=eta, dtype=D64).train()
    mean = np.zeros((3, 2))
    var = np.ones((3, 2))
    rng = np.random.default_rng(0)
    for t in (0.0, 0.3, 0.5, 0.8, 1.0, 0.3):
        x = rng.normal(1.0, 2.0, size=(7, 2))
        layer(_t(t), torch.tensor(x))
        mu, s2 = x.mean(0), x.var(0, ddof=1)
        lower = min(int(t // 0.5), 1)
        w_up = (t - 0.5 * lower) / 0.5
        for index, w in ((lower, 1.0 - w_up), (lower + 1, w_up)):
            mean[index] = (1 - eta * w) * mean[index] + eta * w * mu
            var[index] = (1 - eta * w) * var[index] + eta * w * s2
    np.testing.assert_allclose(layer.running_mean.numpy(), mean, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(layer.running_var.numpy(), var, rtol=1e-13, atol=1e-14)


def test_grid_point_gradients_equal_the_interpolation_product():
    """At a grid point the layer reads the row itself; values and table gradients are those of
    the (1, P) @ (P, F) product with a one-hot row of weights."""
    torch.manual_seed(5)
    layer = TABatchNorm1d(4, num_points=5, t_max=1.0, dtype=D64).train()
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x = torch.randn(7, 4, dtype=D64)
    for tm in (0.0, 0.5, 1.0):
        layer.zero_grad()
        with frozen_statistics(layer):
            layer(_t(tm), x).pow(3).sum().backward()
        got = (layer.weight.grad.clone(), layer.bias.grad.clone())
        coef = torch.zeros(1, 5, dtype=D64)
        coef[0, round(tm * 4)] = 1.0
        w = layer.weight.detach().clone().requires_grad_()
        b = layer.bias.detach().clone().requires_grad_()
        F.batch_norm(x, None, None, (coef @ w).view(-1), (coef @ b).view(-1), True, 0.0,
                     layer.eps).pow(3).sum().backward()
        assert torch.equal(got[0], w.grad) and torch.equal(got[1], b.grad)


def test_grid_point_training_matches_torch_batchnorm():
    torch.manual_seed(3)
    layer = TABatchNorm1d(4, num_points=6, t_max=1.0, momentum=0.3)
    bn = torch.nn.BatchNorm1d(4, momentum=0.3)
    for _ in range(4):
        x = torch.randn(9, 4) * 3 + 1
        torch.testing.assert_close(layer(torch.tensor(0.6), x), bn(x))
    torch.testing.assert_close(layer.running_mean[3], bn.running_mean)
    torch.testing.assert_close(layer.running_var[3], bn.running_var)
    untouched = [0, 1, 2, 4, 5]
    assert torch.equal(layer.running_mean[untouched], torch.zeros(5, 4))
    assert torch.equal(layer.running_var[untouched], torch.ones(5, 4))


def test_statistics_frozen_in_eval_and_in_context():
    layer = _layer()
    before = layer.running_mean.clone()
    layer.eval()(_t(0.3), torch.randn(4, 3, dtype=D64))
    assert torch.equal(layer.running_mean, before)
    layer.train()
    with frozen_statistics(layer):
        assert statistics_frozen(layer)
        layer(_t(0.3), torch.randn(4, 3, dtype=D64))
    with frozen_statistics():
        layer(_t(0.3), torch.randn(4, 3, dtype=D64))
    assert torch.equal(layer.running_mean, before)
    assert not statistics_frozen(layer)
    layer(_t(0.3), torch.randn(4, 3, dtype=D64))
    assert not torch.equal(layer.running_mean, before)
    with pytest.raises(TypeError, match="nn.Module"):
        with frozen_statistics("field"):
            pass


def test_state_dict_round_trip():
    torch.manual_seed(4)
    layer = TABatchNorm1d(3, num_points=7, t_max=3.0).train()
    for t in (0.1, 1.7, 2.9, 3.0):
        layer(torch.tensor(t), torch.randn(5, 3) * 2 + 1)
    state = layer.state_dict()
    assert {"running_mean", "running_var", "weight", "bias"} <= set(state)
    assert state["running_mean"].shape == (7, 3)
    fresh = TABatchNorm1d(3, num_points=7, t_max=3.0)
    fresh.load_state_dict(state)
    for name in ("running_mean", "running_var", "weight", "bias"):
        assert torch.equal(getattr(fresh, name), getattr(layer, name))
    x = torch.randn(4, 3)
    assert torch.equal(fresh.eval()(torch.tensor(1.3), x), layer.eval()(torch.tensor(1.3), x))


def test_penalty():
    layer = _layer()
    want = ((layer.weight - 1) ** 2).sum() + (layer.bias ** 2).sum()
    torch.testing.assert_close(layer.penalty(), want)
    field = MLPField(2, width=4, depth=3, norm="tabn", num_points=5)
    assert field.penalty().item() == 0.0
    with torch.no_grad():
        field.norms[1].bias.fill_(0.5)
    assert field.penalty().item() == pytest.approx(0.25 * 5 * 4)
    assert norm_penalty(MLPField(2, norm=None)).item() == 0.0


def test_tabn2d_grid_point_and_statistics():
    layer = _layer(cls=TABatchNorm2d, features=2).eval()
    x = torch.randn(3, 2, 4, 5, dtype=D64)
    want = F.batch_norm(x, layer.running_mean[2], layer.running_var[2], layer.weight[2],
                        layer.bias[2], False, 0.0, layer.eps)
    assert torch.equal(layer(_t(1.0), x), want)
    fresh = TABatchNorm2d(2, num_points=3, t_max=1.0, momentum=1.0, dtype=D64).train()
    fresh(_t(0.5), x)
    torch.testing.assert_close(fresh.running_mean[1], x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(fresh.running_var[1], x.var(dim=(0, 2, 3), unbiased=True))


def test_comparison_norms():
    torch.manual_seed(5)
    pop = make_norm("bn", 3)
    ref = torch.nn.BatchNorm1d(3)
    for t in (0.1, 0.9):
        x = torch.randn(6, 3) + 2
        torch.testing.assert_close(pop(torch.tensor(t), x), ref(x))
    torch.testing.assert_close(pop.running_mean, ref.running_mean)
    pop.eval(), ref.eval()
    x = torch.randn(1, 3)
    torch.testing.assert_close(pop(torch.tensor(0.5), x), ref(x))
    mb = make_norm("minibatch", 3).eval()
    x = torch.randn(6, 3)
    assert not torch.allclose(mb(0.0, x)[:3], mb(0.0, x[:3]))  # depends on the batch
    assert isinstance(make_norm("BN", 3), PopBatchNorm1d)
    assert isinstance(make_norm("tabn", 3, dims=2), TABatchNorm2d)
    assert torch.equal(make_norm(None, 3)(0.0, x), x)
    with pytest.raises(ValueError, match="unknown norm 'layernorm'"):
        make_norm("layernorm", 3)
    with pytest.raises(ValueError,
                       match=r"dims must be in \[1, 2\], got 3; pass 1 for \(batch, features\)"):
        make_norm("tabn", 3, dims=3)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("num_points", [1, 0, -4])
def test_bad_grid_size(num_points):
    with pytest.raises(ValueError, match=f"num_points.*>= 2, got {num_points}"):
        TABatchNorm1d(3, num_points=num_points)


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="num_points"):
        TABatchNorm1d(3, num_points=10.0)
    for t_max in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"t_max must be a positive finite number \(> 0\), "
                                             r"got .*\[0, t_max\]"):
            TABatchNorm1d(3, t_max=t_max)
    with pytest.raises(ValueError, match="momentum"):
        TABatchNorm1d(3, momentum=0.0)
    with pytest.raises(ValueError,
                       match=r"unknown outside 'wrap'; expected one of \['clamp', 'error'\]"):
        TABatchNorm1d(3, outside="wrap")
    with pytest.raises(ValueError, match="num_features must be >= 1"):
        TABatchNorm2d(0)
    for bad in ("0.1", True, None):
        # ArgumentTypeError is a ValueError
        with pytest.raises(ValueError, match="momentum must be .* got"):
            TABatchNorm1d(3, momentum=bad)
    with pytest.raises(ValueError, match=r"momentum must be a finite number > 0 and <= 1, got 1.5"):
        PopBatchNorm1d(3, momentum=1.5)
    for cls in (TABatchNorm1d, PopBatchNorm1d, MiniBatchNorm1d):
        with pytest.raises(ValueError, match="eps must be a positive finite number"):
            cls(3, eps=0.0)
        with pytest.raises(TypeError, match="affine must be True or False, got 'no'"):
            cls(3, affine="no")


def test_bad_time_and_state():
    layer = TABatchNorm1d(3)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"time t must be a scalar .* got shape \(2,\)"):
        layer(torch.tensor([0.1, 0.2]), x)
    with pytest.raises(ValueError, match="time t is NaN"):
        layer(torch.tensor(float("nan")), x)
    with pytest.raises(TypeError, match="time t must be a scalar tensor or a real number"):
        layer("0.5", x)
    layer(torch.tensor([0.5]), x)  # one-element tensors are fine
    with pytest.raises(ValueError,
                       match=r"expects x of shape \(batch, num_features\) .* got shape \(4, 5\)"):
        layer(torch.tensor(0.5), torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        TABatchNorm2d(3)(torch.tensor(0.5), x)


# ---------------------------------------------------------------- solvers


def _field(num_points=21):
    torch.manual_seed(6)
    return MLPField(3, width=8, depth=3, activation="tanh", norm="tabn", num_points=num_points,
                    t_max=1.0, dtype=D64)


@pytest.mark.parametrize("method,options", [("rk4", {"step_size": 0.1}), ("dopri5", None)])
def test_with_torchdiffeq_forward(method, options):
    f = _field().train()
    y0 = torch.randn(16, 3, dtype=D64)
    ts = torch.tensor([0.0, 1.0], dtype=D64)
    y = odeint(f, y0, ts, method=method, options=options, rtol=1e-6, atol=1e-8)
    assert torch.isfinite(y).all()
    stats = f.norms[0].running_mean
    visited = stats.abs().sum(1) > 0
    assert visited[0] and visited[-1]  # both ends of [0, 1] were visited
    f.eval()
    y_eval = odeint(f, y0[:1], ts, method=method, options=options, rtol=1e-6, atol=1e-8)
    assert torch.isfinite(y_eval).all()


def _snapshot(f):
    """The running statistics of every TA-BN layer of f, as saved."""
    return [v.clone() for k, v in f.state_dict().items() if ".running_" in k]


def _grads(f):
    return torch.cat([p.grad.flatten() for p in f.parameters()])


@pytest.mark.parametrize("method,options,tol",
                         [("rk4", {"step_size": 0.1}, 1e-3), ("dopri5", None, 2e-2)])
def test_adjoint_backward_leaves_statistics_alone(method, options, tol):
    f = _field().train()
    y0 = torch.randn(8, 3, dtype=D64)
    ts = torch.tensor([0.0, 1.0], dtype=D64)
    y = odeint_adjoint(f, y0, ts, method=method, options=options, rtol=1e-5, atol=1e-7,
                       adjoint_options=options)
    after_forward = _snapshot(f)
    assert not torch.equal(after_forward[0], torch.zeros_like(after_forward[0]))  # forward updated
    y[-1].pow(2).sum().backward()
    for before, now in zip(after_forward, _snapshot(f), strict=True):
        assert torch.equal(before, now)  # the backward solve left the statistics alone
    grad_adjoint = _grads(f)
    # the same gradient by back-propagation through a fixed-step rk4 solve
    f.zero_grad()
    with frozen_statistics(f):
        y_direct = odeint(f, y0, ts, method="rk4", options={"step_size": 0.05})
    y_direct[-1].pow(2).sum().backward()
    grad_direct = _grads(f)
    err = (grad_adjoint - grad_direct).abs().max() / grad_direct.abs().max()
    assert err < tol


# ---------------------------------------------------------------- per-example times (eval)


@pytest.mark.parametrize("cls,shape", [(TABatchNorm1d, (5, 3)), (TABatchNorm2d, (5, 3, 2, 2))])
def test_per_example_times_in_eval_match_scalar_calls(cls, shape):
    layer = _layer(cls=cls).eval()
    x = torch.randn(*shape, dtype=D64)
    ts = torch.tensor([0.0, 0.3, 0.77, 1.5, 2.0], dtype=D64)
    want = torch.cat([layer(ts[i], x[i:i + 1]) for i in range(5)])
    for t in (ts, ts.unsqueeze(1)):
        torch.testing.assert_close(layer(t, x), want, rtol=1e-13, atol=1e-13)
    # equal per-example times are one shared time, also in training
    layer.train()
    with frozen_statistics(layer):
        torch.testing.assert_close(layer(torch.full((5, 1), 0.3, dtype=D64), x), layer(_t(0.3), x))
    with pytest.raises(ValueError, match="training mode needs one time shared by the batch"):
        layer(ts, x)
    layer.eval()
    with pytest.raises(ValueError, match=r"per-example times of shape \(5,\) or \(5, 1\)"):
        layer(ts[:3], x)
    with pytest.raises(ValueError, match="contains NaN"):
        layer(torch.tensor([0.1, math.nan, 0.2, 0.3, 0.4], dtype=D64), x)


def test_tabn_field_with_dynfit_odesolve():
    """dynfit's own solver: shared-time adaptive in training, per-example adaptive in eval."""
    from dynfit import odesolve
    from dynfit.solvers import MixedNorm

    f = _field(num_points=11)
    y0 = torch.randn(6, 3, dtype=D64)
    ts = torch.tensor([0.0, 1.0], dtype=D64)
    f.train()
    sol = odesolve(f, y0, ts, method="rkf45", control=MixedNorm(1e-6, 1e-8, per_example=False))
    sol.ys[-1].pow(2).sum().backward()
    assert torch.isfinite(sol.ys).all() and f.norms[0].running_mean.abs().sum() > 0
    f.eval()
    with torch.no_grad():
        per_example = odesolve(f, y0, ts, method="rkf45", control=MixedNorm(1e-8, 1e-10)).ys[-1]
        reference = odeint(f, y0, ts, method="dopri5", rtol=1e-10, atol=1e-12)[-1]
    torch.testing.assert_close(per_example, reference, rtol=1e-5, atol=1e-6)


def test_interpolation_shared_by_layers_is_per_grid():
    """Layers on different grids at the same time each get their own rows and weights (the
    per-time interpolation is cached per grid), in training and eval mode."""
    a, b = _layer(num_points=5, t_max=2.0), _layer(num_points=11, t_max=1.0, seed=1)
    x = torch.randn(6, 3, dtype=D64)
    for layer in (a, b, a, b):  # twice: the second call reads the cache
        for t in (0.3, 0.75):
            s = t / layer.spacing
            lo = int(math.floor(s))
            w = s - lo
            gamma = (1 - w) * layer.weight[lo] + w * layer.weight[lo + 1]
            beta = (1 - w) * layer.bias[lo] + w * layer.bias[lo + 1]
            mean = (1 - w) * layer.running_mean[lo] + w * layer.running_mean[lo + 1]
            var = (1 - w) * layer.running_var[lo] + w * layer.running_var[lo + 1]
            layer.eval()
            expected = (x - mean) / torch.sqrt(var + layer.eps) * gamma + beta
            torch.testing.assert_close(layer(torch.tensor(t, dtype=D64), x), expected,
                                       rtol=1e-12, atol=1e-12)
            layer.train()
            with frozen_statistics():
                out = layer(torch.tensor(t, dtype=D64), x)
            xm = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + layer.eps)
            torch.testing.assert_close(out, xm * gamma + beta, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- tables shared by a field's layers


def _own_tables(monkeypatch, make):
    """``make()`` built with its TA-BN layers called one by one (not read side by side)."""
    import dynfit.nn.fields as fields

    with monkeypatch.context() as m:
        m.setattr(fields, "share_tables", lambda layers: None)
        return make()


def _tabn_fields():
    from dynfit.nn import ConvField, ResidualMLPField

    return [
        (lambda: MLPField(3, width=5, depth=3, activation="tanh", norm="tabn", num_points=6,
                          t_max=1.0,
                          dtype=D64), (7, 3)),
        (lambda: ResidualMLPField(3, width=4, depth=2, activation="tanh", norm="tabn", num_points=4,
                                  t_max=2.0, dtype=D64), (6, 3)),
        (lambda: ConvField(2, width=3, depth=2, activation="tanh", norm="tabn", num_points=5,
                           dtype=D64),
         (4, 2, 3, 3)),
    ]


@pytest.mark.parametrize("case", range(3))
def test_shared_tables_match_layers_that_own_theirs(monkeypatch, case):
    """A field reads its TA-BN layers' tables side by side (one interpolation per call):
    outputs, gradients, running statistics and the state_dict equal those of layers called one
    by one, in training (statistics moving or frozen) and eval mode, on and off the grid."""
    make, shape = _tabn_fields()[case]
    torch.manual_seed(case)
    shared = make()
    assert shared.tabn_tables is not None
    own = _own_tables(monkeypatch, make)
    assert own.tabn_tables is None
    with torch.no_grad():  # rows that all differ
        for layer in shared._norm_order:
            for name in ("weight", "bias", "running_mean"):
                getattr(layer, name).uniform_(-1.0, 1.0)
            layer.running_var.uniform_(0.5, 2.0)
    own.load_state_dict(shared.state_dict())
    assert list(own.state_dict()) == list(shared.state_dict())
    x = torch.randn(*shape, dtype=D64)
    for mode in ("train", "frozen", "eval"):
        for t in (0.0, 0.2, 0.37, 1.0):
            outs, grads = [], []
            for f in (shared, own):
                f.train(mode != "eval")
                f.zero_grad()
                with frozen_statistics(f) if mode == "frozen" else contextlib.nullcontext():
                    y = f(torch.tensor(t, dtype=D64), x)
                y.pow(2).sum().backward()
                outs.append(y)
                grads.append({k: v.grad for k, v in f.named_parameters()})
            torch.testing.assert_close(outs[0], outs[1], rtol=1e-13, atol=1e-13)
            assert list(grads[0]) == list(grads[1])
            for k, g in grads[1].items():
                torch.testing.assert_close(grads[0][k], g, rtol=1e-12, atol=1e-13)
            for k, v in own.state_dict().items():
                torch.testing.assert_close(shared.state_dict()[k], v, rtol=1e-13, atol=1e-14)
    # a grouped layer called on its own (training) moves its own tables like its twin
    for f in (shared, own):
        layer = f._norm_order[-1].train()
        gen = torch.Generator().manual_seed(1)
        h_in = torch.randn(18, layer.num_features, *shape[2:], dtype=D64, generator=gen)
        layer(torch.tensor(0.45, dtype=D64), h_in)
    for k, v in own.state_dict().items():
        torch.testing.assert_close(shared.state_dict()[k], v, rtol=1e-13, atol=1e-14)


def test_layers_own_plain_parameters_and_buffers():
    """Grouping takes nothing from the layers: their tables stay registered Parameters and
    buffers (no attribute views), the group holds no tensors and is no submodule."""
    f = _tabn_fields()[0][0]()
    assert type(f.norms[0]).__getattr__ is torch.nn.Module.__getattr__
    for i, layer in enumerate(f.norms):
        assert set(layer._parameters) == {"weight", "bias"}
        assert {"running_mean", "running_var"} <= set(layer._buffers)
        assert dict(f.named_parameters())[f"norms.{i}.weight"] is layer.weight
    assert not any(name.startswith("tabn_tables") for name in f.state_dict())
    assert f.tabn_tables.layers == tuple(f.norms)


def test_shared_tables_state_dict_and_copies(monkeypatch):
    """Files of layers called one by one load into a grouped field, and back; missing and
    mis-shaped entries are refused as usual; copies and dtype moves keep the group right."""
    import copy

    make = _tabn_fields()[0][0]
    shared = make()
    state = shared.state_dict()
    own = _own_tables(monkeypatch, make)
    assert list(own.state_dict()) == list(state)
    with torch.no_grad():
        own.norms[1].bias.fill_(0.25)
    shared.load_state_dict(own.state_dict())
    assert torch.equal(shared.norms[1].bias, torch.full((6, 5), 0.25, dtype=D64))
    broken = dict(state)
    del broken["norms.2.running_var"]
    with pytest.raises(RuntimeError, match="Missing key.*norms.2.running_var"):
        shared.load_state_dict(broken)
    broken = dict(state, **{"norms.0.weight": torch.ones(6, 4, dtype=D64)})
    with pytest.raises(RuntimeError, match="size mismatch for norms.0.weight"):
        shared.load_state_dict(broken)
    twin = copy.deepcopy(shared)
    assert twin.tabn_tables.layers == tuple(twin.norms)
    with torch.no_grad():
        twin.norms[0].weight.fill_(3.0)
    assert not torch.equal(shared.norms[0].weight, twin.norms[0].weight)
    x = torch.randn(4, 3, dtype=D64)
    twin.eval()
    assert not torch.equal(twin(_t(0.3), x), shared.eval()(_t(0.3), x))
    single = shared.float()
    assert single.norms[2].running_mean.dtype == torch.float32
    assert single(torch.tensor(0.3, dtype=torch.float32), torch.randn(4, 3)).dtype == torch.float32


def test_state_dicts_saved_before_the_split_load():
    """tests/data/tabn_state_v1.pt was written by the one-file norm.py (commit d544d72), whose
    grouped layers served views of shared tables: its state dicts load with the same keys and
    give the same eval outputs to the bit."""
    from pathlib import Path

    from dynfit.nn import ConvField, ResidualMLPField

    blob = torch.load(Path(__file__).resolve().parents[1] / "data" / "tabn_state_v1.pt",
                      weights_only=True)
    makers = {
        "mlp": lambda: MLPField(3, width=4, depth=2, norm="tabn", num_points=5, dtype=D64),
        "residual": lambda: ResidualMLPField(3, width=4, depth=1, norm="tabn", num_points=5,
                                             dtype=D64),
        "conv": lambda: ConvField(2, width=2, depth=1, norm="tabn", num_points=3, dtype=D64),
        "mlp_bn": lambda: MLPField(3, width=4, depth=1, norm="bn", dtype=D64),
    }
    for name, make in makers.items():
        field, saved = make().eval(), blob[name]
        field.load_state_dict(saved["state"])
        assert list(field.state_dict()) == list(saved["state"])
        with torch.no_grad():
            out = torch.stack([field(t, saved["x"]) for t in blob["times"]])
        assert torch.equal(out, saved["out"]), name
    layer = TABatchNorm1d(4, num_points=4, affine=False, dtype=D64)
    layer.load_state_dict(blob["layer"]["state"])
    assert torch.equal(layer.running_mean, blob["layer"]["state"]["running_mean"])


def test_share_tables_only_for_one_grid():
    from dynfit.nn.tabn_tables import share_tables

    assert share_tables([TABatchNorm1d(3), TABatchNorm1d(3, num_points=11)]) is None
    assert share_tables([TABatchNorm1d(3), PopBatchNorm1d(3)]) is None
    assert share_tables([PopBatchNorm1d(3)]) is None
    assert share_tables([]) is None
    layers = [TABatchNorm1d(3), TABatchNorm2d(4)]
    tables = share_tables(layers)
    assert tables is not None and tables.sizes == [3, 4]
    assert MLPField(3, norm="bn").tabn_tables is None


def test_old_import_path_still_works():
    """``dynfit.nn.norm`` still names the layers it held before the split."""
    from dynfit.nn import norm, tabn, tabn_tables

    assert norm.TABatchNorm1d is tabn.TABatchNorm1d
    assert norm.share_tables is tabn_tables.share_tables
    assert norm.EachLayer is tabn_tables.EachLayer and norm.frozen_statistics is frozen_statistics


def test_gpu_script_tabn_check_runs_on_the_cpu():
    """benchmarks/bench_gpu.py's TA-BN check (CPU against the device named) runs end to end with the
    CPU standing in for the GPU, so the day a GPU is lent it does not stop on our own API."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    try:
        assert bench.check_tabn(16, 1, "cpu")
    finally:
        sys.path[:] = [p for p in sys.path if p != str(path.parent)]
        sys.modules.pop("bench_tabn", None)
