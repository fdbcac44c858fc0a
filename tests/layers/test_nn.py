"""gpuops.nn: initialization, module bookkeeping, layers against references and torch."""
from __future__ import annotations

import math

import numpy
import pytest

import gpuops
from gpuops import Tensor, nn, no_grad


def _needs(*ops):
    missing = [op for op in ops if op not in gpuops.OPERATORS]
    if missing:
        pytest.skip(f"operator(s) {', '.join(missing)} not registered in this build")


# ---- initialization ----------------------------------------------------------------------

@pytest.mark.parametrize("make,fan_in", [(lambda: nn.Linear(50, 400), 50),
                                         (lambda: nn.Conv2d(3, 200, (3, 5)), 45)])
def test_default_init_is_torch_kaiming_uniform(make, fan_in):
    """kaiming_uniform_(a=√5): bound = gain·√(3/fan_in), gain = √(2/(1+5)) → 1/√fan_in."""
    nn.manual_seed(0)
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    for p in (layer.weight, layer.bias):
        values = p.data.ravel()
        assert p.dtype == numpy.float32 and p.requires_grad and p.is_leaf
        assert numpy.abs(values).max() <= bound
        assert numpy.abs(values).max() > 0.9 * bound  # the whole range is used
        # U(-b, b) has standard deviation b/√3
        assert abs(values.std() - bound / math.sqrt(3)) < 0.1 * bound
    assert layer.weight.shape[1:] == ((50,) if fan_in == 50 else (3, 3, 5))


def test_manual_seed_makes_models_reproducible():
    nn.manual_seed(7)
    a = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    nn.manual_seed(7)
    b = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        numpy.testing.assert_array_equal(pa.data, pb.data)
    assert a[1].base_seed == b[1].base_seed
    nn.manual_seed(8)
    c = nn.Linear(4, 3)
    assert not numpy.array_equal(c.weight.data, a[0].weight.data)


# ---- module bookkeeping -------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(8, 3, bias=False)
        self.scale = nn.Parameter(numpy.ones(3, numpy.float32))

    def forward(self, x):
        return self.head(self.body(x)) * self.scale


def test_parameters_names_and_modes():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["body.layers.0.weight", "body.layers.0.bias", "head.weight", "scale"]
    assert len(net.parameters()) == 4
    net.eval()
    assert all(not m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    assert "Linear(in_features=4, out_features=8, bias=True)" in repr(net)


def test_state_dict_round_trip_and_errors():
    nn.manual_seed(1)
    net = Net()
    net.body[2].calls = 5
    state = net.state_dict()
    assert set(state) == {"body.layers.0.weight", "body.layers.0.bias", "head.weight", "scale",
                          "body.layers.2.calls"}
    nn.manual_seed(2)
    other = Net()
    weight = other.head.weight.data
    other.load_state_dict(state)
    assert other.head.weight.data is weight  # loaded in place
    for key, value in other.state_dict().items():
        numpy.testing.assert_array_equal(value, state[key])
    assert other.body[2].calls == 5
    state["head.weight"][...] = 0  # a copy: the model is not aliased to its state dict
    assert numpy.abs(net.head.weight.data).sum() > 0
    with pytest.raises(ValueError, match="missing keys"):
        other.load_state_dict({k: v for k, v in state.items() if k != "scale"})
    with pytest.raises(ValueError, match="scale has shape"):
        other.load_state_dict({**state, "scale": numpy.ones(4)})


def test_zero_grad_and_flatten():
    x = Tensor(numpy.arange(24.0).reshape(2, 3, 2, 2), requires_grad=True)
    y = nn.Flatten()(x)
    assert y.shape == (2, 12)
    net = Net()
    for p in net.parameters():
        p.grad = numpy.ones(p.shape, numpy.float32)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


# ---- dropout seeds -----------------------------------------------------------------------------

def test_dropout_seed_sequence():
    nn.manual_seed(3)
    d = nn.Dropout(0.5)
    seeds = [d.next_seed() for _ in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= s < 2**63 for s in seeds)
    nn.manual_seed(3)
    again = nn.Dropout(0.5)
    assert [again.next_seed() for _ in range(50)] == seeds
    again.calls = 10  # a restored counter continues the sequence
    nn.manual_seed(3)
    resumed = nn.Dropout(0.5)
    resumed.calls = 10
    assert resumed.next_seed() == seeds[10]
    with pytest.raises(ValueError, match="outside"):
        nn.Dropout(1.5)


def test_dropout_is_identity_in_eval_mode_and_for_p0():
    x = Tensor(numpy.ones((3, 4)), requires_grad=True)
    d = nn.Dropout(0.5).eval()
    assert d(x) is x
    assert nn.Dropout(0.0)(x) is x


def test_dropout_masks_change_per_call():
    _needs("dropout")
    nn.manual_seed(4)
    d = nn.Dropout(0.5)
    x = Tensor(numpy.ones((16, 16)))
    a, b = d(x).numpy(), d(x).numpy()
    assert not numpy.array_equal(a, b)
    assert set(numpy.unique(a)) <= {0.0, 2.0}


# ---- layers against references ------------------------------------------------------------------

def test_linear_forward_and_backward():
    _needs("linear")
    nn.manual_seed(5)
    layer = nn.Linear(6, 4, dtype=numpy.float64)
    rng = numpy.random.default_rng(0)
    x = Tensor(rng.standard_normal((3, 6)), requires_grad=True)
    y = layer(x)
    w, b = layer.weight.data, layer.bias.data
    numpy.testing.assert_allclose(y.data, x.data @ w.T + b, rtol=1e-12)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    numpy.testing.assert_allclose(x.grad, gy @ w, rtol=1e-12)
    numpy.testing.assert_allclose(layer.weight.grad, gy.T @ x.data, rtol=1e-12)
    numpy.testing.assert_allclose(layer.bias.grad, gy.sum(0), rtol=1e-12)


def test_activation_modules():
    _needs("relu", "sigmoid", "tanh")
    x = numpy.linspace(-2, 2, 9)
    t = Tensor(x)
    numpy.testing.assert_allclose(nn.ReLU()(t).data, numpy.maximum(x, 0))
    numpy.testing.assert_allclose(nn.Sigmoid()(t).data, 1 / (1 + numpy.exp(-x)), rtol=1e-12)
    numpy.testing.assert_allclose(nn.Tanh()(t).data, numpy.tanh(x), rtol=1e-12)


def test_loss_modules():
    _needs("softmax_cross_entropy", "mse", "bce_with_logits")
    rng = numpy.random.default_rng(1)
    logits = rng.standard_normal((5, 4))
    labels = numpy.array([0, 3, 1, 1, 2])
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - numpy.log(numpy.exp(shifted).sum(1, keepdims=True))
    ce = nn.CrossEntropyLoss()(Tensor(logits), labels)
    assert ce.shape == ()
    numpy.testing.assert_allclose(ce.data, -logp[numpy.arange(5), labels].mean(), rtol=1e-12)
    target = rng.standard_normal((5, 4))
    numpy.testing.assert_allclose(nn.MSELoss()(Tensor(logits), Tensor(target)).data,
                                  ((logits - target) ** 2).mean(), rtol=1e-12)
    t01 = rng.uniform(0, 1, (5, 4))
    bce = numpy.maximum(logits, 0) - logits * t01 + numpy.log1p(numpy.exp(-numpy.abs(logits)))
    numpy.testing.assert_allclose(nn.BCEWithLogitsLoss(reduction="sum")(Tensor(logits),
                                                                        Tensor(t01)).data,
                                  bce.sum(), rtol=1e-12)


def _copy_into_torch(ours, theirs, torch):
    with torch.no_grad():
        for p, q in zip(ours.parameters(), theirs.parameters()):
            q.copy_(torch.from_numpy(numpy.array(p.data)))


def test_mlp_matches_torch():
    torch = pytest.importorskip("torch")
    _needs("linear", "softmax_cross_entropy")
    nn.manual_seed(6)
    ours = nn.Sequential(nn.Flatten(), nn.Linear(12, 16, activation="relu", dtype=numpy.float64),
                         nn.Linear(16, 5, dtype=numpy.float64))
    theirs = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 5)).double()
    _copy_into_torch(ours, theirs, torch)
    rng = numpy.random.default_rng(2)
    x = rng.standard_normal((7, 3, 4))
    labels = rng.integers(0, 5, 7)
    loss = nn.CrossEntropyLoss()(ours(Tensor(x)), labels)
    loss.backward()
    tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)),
                                              torch.from_numpy(labels))
    tloss.backward()
    numpy.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        numpy.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_cnn_layers_match_torch():
    torch = pytest.importorskip("torch")
    _needs("conv2d", "max_pool2d", "avg_pool2d", "lrn", "relu")
    nn.manual_seed(7)
    ours = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, dtype=numpy.float64), nn.ReLU(),
                         nn.LocalResponseNorm(3, alpha=0.1, beta=0.75, k=2.0),
                         nn.MaxPool2d(2), nn.Conv2d(4, 3, 2, dtype=numpy.float64),
                         nn.AvgPool2d(2, stride=1))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.LocalResponseNorm(3, alpha=0.1, beta=0.75, k=2.0),
                                 torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 3, 2),
                                 torch.nn.AvgPool2d(2, stride=1)).double()
    _copy_into_torch(ours, theirs, torch)
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((2, 2, 8, 8))
    gy = rng.standard_normal((2, 3, 2, 2))
    xt = Tensor(x, requires_grad=True)
    y = ours(xt)
    y.backward(gy)
    xq = torch.from_numpy(x).requires_grad_()
    yq = theirs(xq)
    yq.backward(torch.from_numpy(gy))
    numpy.testing.assert_allclose(y.data, yq.detach().numpy(), rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(xt.grad, xq.grad.numpy(), rtol=1e-9, atol=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        numpy.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_eval_under_no_grad_builds_no_graph():
    _needs("linear")
    layer = nn.Linear(3, 2)
    with no_grad():
        y = layer(Tensor(numpy.ones((1, 3), numpy.float32)))
    assert y.creator is None and not y.requires_grad


# ---- shared parameters, constructor checks ----------------------------------------------------

def test_shared_layer_parameters_are_listed_once_and_stepped_once():
    nn.manual_seed(8)
    lin = nn.Linear(3, 3, dtype=numpy.float64)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert [n for n, _ in model.named_parameters()] == ["layers.0.weight", "layers.0.bias"]
    assert len(model.parameters()) == 2
    assert [n for n, _ in model.named_parameters(remove_duplicate=False)] == [
        "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    assert [n for n, _ in model.named_modules()] == ["", "layers.0", "layers.1"]
    # torch's state_dict keeps a shared parameter under every name
    assert list(model.state_dict()) == ["layers.0.weight", "layers.0.bias",
                                        "layers.2.weight", "layers.2.bias"]
    model.load_state_dict(model.state_dict())
    before = lin.weight.data.copy()
    opt = gpuops.optim.SGD(model.parameters(), lr=0.5)
    lin.weight.grad = numpy.ones((3, 3))
    lin.bias.grad = numpy.zeros(3)
    opt.step()
    numpy.testing.assert_allclose(lin.weight.data, before - 0.5)  # moved once, not twice


@pytest.mark.parametrize("make,error,match", [
    (lambda: nn.Linear(-1, 2), ValueError, "Linear: in_features must be >= 0, got -1"),
    (lambda: nn.Linear(2, 2.5), TypeError, "Linear: out_features must be an int"),
    (lambda: nn.Linear(2, 2, bias="yes"), TypeError, "Linear: bias must be a bool"),
    (lambda: nn.Linear(2, 2, activation="gelu"), ValueError, "Linear: activation"),
    (lambda: nn.Conv2d(-3, 2, 3), ValueError, "Conv2d: in_channels must be >= 0"),
    (lambda: nn.Conv2d(3, "2", 3), TypeError, "Conv2d: out_channels must be an int"),
    (lambda: nn.Conv2d(3, 2, 0), ValueError, "Conv2d: kernel_size"),
    (lambda: nn.Conv2d(3, 2, 3, stride=0), ValueError, "Conv2d: stride"),
    (lambda: nn.Conv2d(3, 2, 3, padding=-1), ValueError, "Conv2d: padding"),
    (lambda: nn.MaxPool2d(0), ValueError, "MaxPool2d: kernel_size"),
    (lambda: nn.AvgPool2d(2, stride=0), ValueError, "AvgPool2d: stride"),
    (lambda: nn.LocalResponseNorm(0), ValueError, "LocalResponseNorm: size must be >= 1"),
    (lambda: nn.LocalResponseNorm(3, alpha=float("nan")), ValueError,
     "LocalResponseNorm: alpha must be finite"),
    (lambda: nn.Dropout(p="a"), TypeError, "Dropout: p must be a number in \\[0, 1\\], got 'a'"),
    (lambda: nn.Dropout(p=True), TypeError, "Dropout: p must be a number"),
    (lambda: nn.Dropout(p=float("nan")), ValueError, "Dropout: p=nan is outside"),
    (lambda: nn.Dropout(p=-0.1), ValueError, "Dropout: p=-0.1 is outside"),
    (lambda: nn.Sequential(nn.ReLU(), lambda x: x), TypeError,
     "Sequential: layer 1 must be an nn.Module"),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), ValueError, "CrossEntropyLoss: reduction"),
    (lambda: nn.CrossEntropyLoss(ignore_index=1.5), TypeError,
     "CrossEntropyLoss: ignore_index must be an int"),
    (lambda: nn.MSELoss(reduction=None), ValueError, "MSELoss: reduction"),
    (lambda: nn.BCEWithLogitsLoss(reduction="Mean"), ValueError, "BCEWithLogitsLoss: reduction"),
])
def test_constructor_errors_name_the_layer_and_the_value(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_constructors_accept_valid_edge_values():
    assert nn.Linear(0, 2).weight.shape == (2, 0)
    assert nn.Linear(numpy.int64(3), 2).in_features == 3
    assert nn.Dropout(1).p == 1.0 and nn.Dropout(numpy.float32(0.5)).p == 0.5
    assert nn.Conv2d(1, 1, (1, 2), stride=(1, 2), padding=(0, 1), dilation=2).weight.shape == (
        1, 1, 1, 2)
    nn.MaxPool2d((2, 3), stride=None)
    nn.CrossEntropyLoss(reduction="none", ignore_index=numpy.int64(-1))


# ---- the module API ------------------------------------------------------------------------------

def test_named_modules_children_and_apply():
    net = Net()
    assert [n for n, _ in net.named_modules()] == [
        "", "body", "body.layers.0", "body.layers.1", "body.layers.2", "head"]
    assert [n for n, _ in net.named_modules(prefix="net")][:2] == ["net", "net.body"]
    assert [type(m).__name__ for m in net.children()] == ["Sequential", "Linear"]
    assert [n for n, _ in net.named_children()] == ["body", "head"]
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in net.named_parameters(prefix="m.")][0] == "m.body.layers.0.weight"
    visited = []
    assert net.apply(lambda m: visited.append(type(m).__name__)) is net
    # children before their parent, as torch.nn.Module.apply
    assert visited == ["Linear", "ReLU", "Dropout", "Sequential", "Linear", "Net"]

    def init(m):
        if isinstance(m, nn.Linear):
            m.weight.data[...] = 0.25
    net.apply(init)
    assert (net.head.weight.data == 0.25).all() and (net.body[0].weight.data == 0.25).all()


def test_train_eval_flag_and_dropout():
    _needs("dropout")
    net = Net()
    assert net.training and net.body[2].training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    x = Tensor(numpy.ones((2, 4), numpy.float32))
    numpy.testing.assert_array_equal(net(x).data, net(x).data)  # eval: no dropout
    calls = net.body[2].calls
    assert calls == 0  # eval mode draws no masks
    net.train(True)
    assert all(m.training for m in net.modules())
    net.body.train(False)
    assert net.training and not net.body.training and not net.body[2].training
    with pytest.raises(ValueError, match="Net.train: mode must be a bool"):
        net.train("no")


def test_zero_grad_set_to_none_false_zeroes_in_place():
    net = Net()
    grads = []
    for p in net.parameters():
        p.grad = numpy.ones(p.shape, numpy.float32)
        grads.append(p.grad)
    net.head.weight.grad = None
    net.zero_grad(set_to_none=False)
    assert net.head.weight.grad is None
    for p, g in zip(net.parameters(), grads):
        if p is not net.head.weight:
            assert p.grad is g and not p.grad.any()


def test_load_state_dict_strict_and_non_strict():
    nn.manual_seed(9)
    net, other = Net(), Net()
    state = net.state_dict()
    result = other.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert tuple(result) == ([], [])
    partial = {k: v for k, v in state.items() if k != "scale"}
    partial["extra.weight"] = numpy.zeros(2)
    before = other.scale.data.copy()
    other.head.weight.data[...] = 0
    with pytest.raises(ValueError, match=r"Net.load_state_dict: missing keys \['scale'\], "
                                         r"unexpected keys \['extra.weight'\]"):
        other.load_state_dict(partial)
    assert not other.head.weight.data.any()  # nothing was loaded
    missing, unexpected = other.load_state_dict(partial, strict=False)
    assert missing == ["scale"] and unexpected == ["extra.weight"]
    numpy.testing.assert_array_equal(other.head.weight.data, state["head.weight"])
    numpy.testing.assert_array_equal(other.scale.data, before)
    # a wrong shape is an error even when not strict, and changes nothing
    bad = {**state, "head.weight": numpy.ones((2, 2)), "body.layers.0.bias": numpy.zeros(8)}
    with pytest.raises(ValueError, match=r"head.weight has shape \(2, 2\); expected \(3, 8\)"):
        other.load_state_dict(bad, strict=False)
    numpy.testing.assert_array_equal(other.body[0].bias.data, state["body.layers.0.bias"])
    with pytest.raises(ValueError, match="body.layers.2.calls must be an integer"):
        other.load_state_dict({**state, "body.layers.2.calls": numpy.ones(3)})
    with pytest.raises(ValueError, match="scale has dtype <U1"):
        other.load_state_dict({**state, "scale": numpy.array(["a", "b", "c"])})
    with pytest.raises(TypeError, match="state must be a dict"):
        other.load_state_dict([1, 2])


@pytest.mark.parametrize("layer,op,options", [
    (nn.MaxPool2d, "max_pool2d", {"dilation": 2, "ceil_mode": True}),
    (nn.AvgPool2d, "avg_pool2d", {"ceil_mode": True, "count_include_pad": False}),
    (nn.AvgPool2d, "avg_pool2d", {"divisor_override": 3}),
], ids=["max-dilation-ceil", "avg-ceil-no-pad-count", "avg-divisor"])
def test_pooling_layers_pass_their_options_to_the_operator(layer, op, options):
    x = numpy.random.default_rng(0).standard_normal((2, 3, 7, 7))
    padding = 1 if "divisor_override" not in options else 0
    y = layer(3, 2, padding, **options)(gpuops.Tensor(x))
    expected = getattr(gpuops, op)(x, kernel_size=3, stride=2, padding=padding, **options)
    numpy.testing.assert_array_equal(y.data, expected)


def test_pooling_layers_check_their_options():
    with pytest.raises(TypeError, match="MaxPool2d: ceil_mode"):
        nn.MaxPool2d(2, ceil_mode="yes")
    with pytest.raises(ValueError, match="MaxPool2d: dilation must be >= 1"):
        nn.MaxPool2d(2, dilation=0)
    with pytest.raises(TypeError, match="AvgPool2d: count_include_pad"):
        nn.AvgPool2d(2, count_include_pad=None)


def test_conv2d_layer_groups_and_padding_strings():
    layer = nn.Conv2d(4, 6, 3, padding="same", groups=2)
    assert layer.weight.shape == (6, 2, 3, 3)
    x = numpy.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(numpy.float32)
    y = layer(gpuops.Tensor(x))
    expected = gpuops.conv2d(x, layer.weight.data, layer.bias.data, padding="same", groups=2)
    numpy.testing.assert_array_equal(y.data, expected)
    assert y.shape == (2, 6, 5, 5)
    assert "groups=2" in repr(layer)
    with pytest.raises(ValueError, match="Conv2d: in_channels .* divisible by groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="Conv2d: padding='same' needs stride 1"):
        nn.Conv2d(4, 6, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="Conv2d: padding must be"):
        nn.Conv2d(4, 6, 3, padding="full")


def test_loss_layers_take_weights_and_label_smoothing():
    rng = numpy.random.default_rng(0)
    logits, labels = rng.standard_normal((4, 5)), numpy.array([0, 3, 1, 4])
    weight = rng.uniform(0.5, 2.0, 5)
    loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1)(Tensor(logits), labels)
    expected = gpuops.softmax_cross_entropy(logits, labels, weight=weight, label_smoothing=0.1)
    numpy.testing.assert_array_equal(loss.data, expected)
    target = rng.uniform(0, 1, (4, 5))
    pos_weight = rng.uniform(0.5, 2.0, 5)
    loss = nn.BCEWithLogitsLoss(weight=Tensor(weight), pos_weight=pos_weight)(Tensor(logits),
                                                                              target)
    expected = gpuops.bce_with_logits(logits, target, weight=weight, pos_weight=pos_weight)
    numpy.testing.assert_array_equal(loss.data, expected)
    with pytest.raises(ValueError, match="CrossEntropyLoss: label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
