"""Vector fields: shapes, dtypes, norm switch, plain and direct layer calls, bad input."""
import warnings

import pytest
import torch
from torchdiffeq import odeint

from dynfit.nn import (
    ConvField,
    MLPField,
    MiniBatchNorm1d,
    NoNorm,
    PolynomialField,
    PopBatchNorm1d,
    ResidualMLPField,
    TABatchNorm1d,
    TABatchNorm2d,
)

NORMS = [None, "none", "bn", "minibatch", "tabn"]


pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("time_dependent", [False, True])
def test_mlp_shapes(norm, time_dependent):
    torch.manual_seed(0)
    f = MLPField(5, width=16, depth=3, norm=norm, time_dependent=time_dependent)
    y = f(torch.tensor(0.25), torch.randn(7, 5))
    assert y.shape == (7, 5) and y.dtype == torch.float32
    assert f.dim == 5
    assert len(f.linears) == 3


@pytest.mark.parametrize("norm", NORMS)
def test_residual_and_conv_shapes(norm):
    torch.manual_seed(0)
    r = ResidualMLPField(4, width=8, depth=5, norm=norm, time_dependent=True)
    assert r(torch.tensor(0.5), torch.randn(6, 4)).shape == (6, 4)
    c = ConvField(3, width=8, depth=2, norm=norm, time_dependent=True)
    assert c(torch.tensor(0.5), torch.randn(4, 3, 5, 5)).shape == (4, 3, 5, 5)
    assert c.dim == 3


def test_paper_mlp_float64():
    """The paper's 3-50-50-3 ReLU MLP."""
    f = MLPField(3, width=50, depth=2, activation="relu", dtype=torch.float64)
    n_params = sum(p.numel() for p in f.parameters())
    assert n_params == 3 * 50 + 50 + 50 * 50 + 50 + 50 * 3 + 3
    assert all(p.dtype == torch.float64 for p in f.parameters())
    y = f(torch.tensor(0.0, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    assert y.dtype == torch.float64


def test_norm_switch_builds_the_right_layers():
    kinds = {"none": NoNorm, "bn": PopBatchNorm1d, "minibatch": MiniBatchNorm1d,
             "tabn": TABatchNorm1d}
    for name, cls in kinds.items():
        f = MLPField(2, width=4, depth=2, norm=name, num_points=11, t_max=2.0)
        assert all(isinstance(n, cls) for n in f.norms)
    f = MLPField(2, width=4, depth=2, norm="tabn", num_points=11, t_max=2.0)
    assert f.norms[0].running_mean.shape == (11, 4) and f.norms[0].t_max == 2.0
    c = ConvField(2, width=4, depth=2, norm="tabn", num_points=7)
    assert isinstance(c.norms[0], TABatchNorm2d) and c.norms[0].running_var.shape == (7, 4)


@pytest.mark.parametrize("name", ["relu", "tanh", "silu", "gelu", "softplus", "elu"])
def test_activations(name):
    f = MLPField(2, width=4, depth=1, activation=name)
    assert torch.isfinite(f(torch.tensor(0.0), torch.randn(3, 2))).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLPField(3, activation="swish")
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        MLPField(3, norm="layer")
    with pytest.raises(ValueError, match="unknown norm"):
        ConvField(3, norm="group")
    with pytest.raises(ValueError, match="depth must be >= 1"):
        MLPField(3, depth=0)
    with pytest.raises(TypeError, match="width must be an int"):
        ResidualMLPField(3, width=2.5)
    with pytest.raises(TypeError, match="dtype"):
        MLPField(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvField(3, kernel_size=2)
    with pytest.raises(ValueError, match="t_max"):
        MLPField(3, norm="tabn", t_max=0.0)


def test_bad_state_shape():
    f = MLPField(3, width=4)
    with pytest.raises(ValueError, match=r"got shape \(2, 4\)"):
        f(torch.tensor(0.0), torch.randn(2, 4))
    c = ConvField(3, width=4, norm=None)
    with pytest.raises(ValueError, match="channels"):
        c(torch.tensor(0.0), torch.randn(2, 3, 4))


def test_field_gradients_finite_difference():
    """Gradient of a TA-BN field w.r.t. its input matches central differences (float64)."""
    torch.manual_seed(1)
    f = MLPField(3, width=6, depth=2, activation="tanh", norm="tabn", num_points=5,
                 dtype=torch.float64).eval()
    for n in f.norms:  # non-trivial eval statistics
        n.running_mean.uniform_(-0.5, 0.5)
        n.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: f(torch.tensor(0.37, dtype=torch.float64), z), (x,))


@pytest.mark.parametrize("norm", ["none", "tabn"])
def test_field_integrates_with_torchdiffeq(norm):
    torch.manual_seed(2)
    f = MLPField(3, width=8, depth=4, norm=norm, num_points=11)
    y = odeint(f, torch.randn(4, 3), torch.tensor([0.0, 1.0]), method="dopri5", rtol=1e-4,
               atol=1e-6)
    assert y.shape == (2, 4, 3) and torch.isfinite(y).all()


def test_time_dependent_fields_accept_per_example_times():
    torch.manual_seed(4)
    f = MLPField(2, width=4, depth=2, time_dependent=True, norm="tabn", num_points=3).eval()
    x = torch.randn(3, 2)
    ts = torch.tensor([0.1, 0.5, 0.9])
    want = torch.cat([f(ts[i], x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(f(ts.unsqueeze(1), x), want)
    c = ConvField(2, width=4, depth=1, time_dependent=True, norm="tabn", num_points=3).eval()
    xc = torch.randn(3, 2, 4, 4)
    want = torch.cat([c(ts[i], xc[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(c(ts, xc), want)
    with pytest.raises(ValueError, match=r"per-example times of shape \(3,\)"):
        f(torch.zeros(2), x)


def _fields_with_layers():
    torch.manual_seed(0)
    poly = PolynomialField(3, width=8, dtype=torch.float64)
    torch.nn.init.normal_(poly.mlp.out.weight)
    return [
        (MLPField(3, width=8, depth=2, activation="tanh", dtype=torch.float64),
         lambda f: f.linears[1]),
        (ResidualMLPField(3, width=8, depth=2, norm="bn", dtype=torch.float64),
         lambda f: f.second[0]),
        (ConvField(2, width=4, depth=1, norm="tabn", dtype=torch.float64), lambda f: f.convs[0]),
        (poly, lambda f: f.mlp.out),
    ]


@pytest.mark.parametrize("case", range(4))
def test_fields_honour_hooks_on_their_layers(case):
    """Inside direct_calls() fields call their layers' forward directly only when nothing could
    observe the call: hooks on a layer, on the activation, on the inner MLP and global hooks
    still run."""
    from dynfit.nn.calls import direct, direct_calls

    with direct_calls():
        _check_hooks_honoured(case, direct)


def _check_hooks_honoured(case, direct):
    field, pick = _fields_with_layers()[case]
    x = torch.randn(5, *((3,) if case != 2 else (2, 4, 4)), dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    plain = field(t, x)
    layer = pick(field)
    assert direct(layer) == layer.forward  # nothing observes it: the direct call
    seen = []
    handle = layer.register_forward_hook(lambda m, args, out: out * 2.0)
    try:
        assert direct(layer) is layer
        assert not torch.allclose(field(t, x), plain)  # the hook changed the layer's output
    finally:
        handle.remove()
    if isinstance(field, PolynomialField):  # a hook on the inner MLP itself
        handle = field.mlp.register_forward_hook(lambda m, args, out: out * 0.0)
        try:
            torch.testing.assert_close(field(t, x), field.features(x) @ field.coef)
        finally:
            handle.remove()
    act = field.mlp.act if isinstance(field, PolynomialField) else field.act
    handle = act.register_forward_pre_hook(lambda m, args: seen.append("act"))
    try:
        field(t, x)
        assert seen, "the activation's pre-hook did not run"
    finally:
        handle.remove()
    seen.clear()
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, args, out: seen.append(type(m)))
    try:
        again = field(t, x)
        assert type(layer) in seen  # a global hook sees every inner layer
    finally:
        handle.remove()
    torch.testing.assert_close(again, plain, rtol=0, atol=0)
    torch.testing.assert_close(field(t, x), plain, rtol=0, atol=0)
    # as Module.compile() leaves it: calls must go through the module
    layer._compiled_call_impl = lambda *a: a
    try:
        assert direct(layer) is layer
    finally:
        layer._compiled_call_impl = None


def test_direct_calls_switch():
    """Plain module calls by default; direct calls only inside direct_calls(), which nests,
    restores the setting on exit (also after an error) and checks its argument."""
    from dynfit.nn import direct_calls
    from dynfit.nn.calls import direct, direct_calls_enabled

    layer = torch.nn.Linear(2, 2)
    assert not direct_calls_enabled() and direct(layer) is layer
    with direct_calls():
        assert direct_calls_enabled() and direct(layer) == layer.forward
        with direct_calls(False):
            assert direct(layer) is layer
        assert direct(layer) == layer.forward
        seen = []  # while torch.jit.trace runs: the module call, so that tracing sees the layer

        def traced(x):
            seen.append(direct(layer) is layer)
            return x * 2.0

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace is deprecated
            torch.jit.trace(traced, torch.zeros(1, 2), check_trace=False)
        assert seen == [True]
    with pytest.raises(RuntimeError), direct_calls():
        raise RuntimeError("inside")
    assert not direct_calls_enabled()
    with pytest.raises(TypeError, match="enabled"):
        with direct_calls("yes"):
            pass


def _both_paths(field, t, x):
    """(outputs, gradients, state dict) of a training call, then of an eval call."""
    field.train()
    field.zero_grad()
    y = field(t, x)
    y.pow(2).sum().backward()
    grads = [p.grad.clone() for p in field.parameters() if p.grad is not None]
    state = [v.clone() for v in field.state_dict().values()]
    field.eval()
    with torch.no_grad():
        return [y.detach(), field(t, x)] + grads + state


@pytest.mark.parametrize("case", range(5))
def test_plain_and_direct_calls_give_the_same_bits(case):
    """The plain Module.__call__ path (default) and the direct path give the same outputs,
    gradients and running statistics to the bit, in training and eval mode."""
    import copy

    from dynfit.nn import direct_calls

    fields = _fields_with_layers()
    fields = [f for f, _ in fields] + [MLPField(3, width=6, depth=2, norm="tabn", num_points=5,
                                                dtype=torch.float64)]
    field = fields[case]
    twin = copy.deepcopy(field)
    torch.manual_seed(1)
    x = torch.randn(5, *((3,) if case != 2 else (2, 4, 4)), dtype=torch.float64)
    for t in (0.0, 0.3, 0.55):
        t = torch.tensor(t, dtype=torch.float64)
        plain = _both_paths(field, t, x)
        with direct_calls():
            fast = _both_paths(twin, t, x)
        assert len(plain) == len(fast)
        assert all(torch.equal(a, b) for a, b in zip(plain, fast))
