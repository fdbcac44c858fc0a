"""gpuops.Tensor: every method against finite differences on every backend, the worked
examples of the seed documents, deep graphs, accumulation, graph freeing, no_grad, DLPack."""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy
import pytest

import gpuops
from gpuops import Tensor, no_grad
from backends import BACKENDS


# ---- finite differences -----------------------------------------------------------

def _positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def _normal(rng, shape):
    return rng.standard_normal(shape)


def _away_from_zero(rng, shape):
    """Values with |x| >= 0.2 (kinks of relu/abs/mae are out of the FD stencil's reach)."""
    x = rng.uniform(0.2, 1.5, shape)
    return x * rng.choice([-1.0, 1.0], shape)


def _distinct(rng, shape):
    """A permutation of well-separated values (no ties for max/max-pool)."""
    n = int(numpy.prod(shape))
    return (rng.permutation(n) * 0.1 - 0.05 * n).reshape(shape)


@dataclass
class Case:
    name: str
    ops: tuple  # the registered operators this case goes through
    fn: Callable  # tensors -> tensor
    inputs: tuple  # (shape, generator) per differentiable input
    const: Callable | None = None  # rng -> extra non-differentiable arguments (labels, targets)
    tol: tuple = (1e-5, 1e-7)
    extra: dict = field(default_factory=dict)


def _labels(rng):
    return (rng.integers(0, 5, 4).astype(numpy.int64),)


CASES = [
    Case("add", ("add",), lambda a, b: a + b, (((3, 4), _normal), ((4,), _normal))),
    Case("add-broadcast-left", ("add",), lambda a, b: a + b, (((3, 1), _normal),
                                                                ((2, 3, 4), _normal))),
    Case("radd-scalar", ("add",), lambda a: 2.5 + a, (((3, 4), _normal),)),
    Case("sub", ("sub",), lambda a, b: a - b, (((3, 4), _normal), ((3, 1), _normal))),
    Case("rsub-scalar", ("sub",), lambda a: 1.5 - a, (((5,), _normal),)),
    Case("mul", ("mul",), lambda a, b: a * b, (((2, 3), _normal), ((2, 3), _normal))),
    Case("rmul-scalar", ("mul",), lambda a: 3.0 * a, (((2, 3), _normal),)),
    Case("div", ("div",), lambda a, b: a / b, (((2, 3), _normal), ((3,), _positive))),
    Case("rtruediv-scalar", ("div",), lambda a: 2.0 / a, (((4,), _positive),)),
    Case("neg", ("neg",), lambda a: -a, (((3, 2), _normal),)),
    Case("pow", ("pow",), lambda a: a ** 2.5, (((6,), _positive),)),
    Case("exp", ("exp",), lambda a: a.exp(), (((6,), _normal),)),
    Case("log", ("log",), lambda a: a.log(), (((6,), _positive),)),
    Case("sqrt", ("sqrt",), lambda a: a.sqrt(), (((6,), _positive),)),
    Case("square", ("square",), lambda a: a.square(), (((6,), _normal),)),
    Case("abs", ("abs",), lambda a: a.abs(), (((6,), _away_from_zero),)),
    Case("sin", ("sin",), lambda a: a.sin(), (((6,), _normal),)),
    Case("cos", ("cos",), lambda a: a.cos(), (((6,), _normal),)),
    Case("axis_add", ("axis_add",), lambda a, b: a.axis_add(b, axis=1),
         (((2, 3, 4), _normal), ((3,), _normal))),
    Case("axis_sub", ("axis_sub",), lambda a, b: a.axis_sub(b, axis=1),
         (((2, 3, 4), _normal), ((3,), _normal))),
    Case("axis_mul", ("axis_mul",), lambda a, b: a.axis_mul(b, axis=-1),
         (((2, 3, 4), _normal), ((4,), _normal))),
    Case("axis_div", ("axis_div",), lambda a, b: a.axis_div(b, axis=0),
         (((2, 3), _normal), ((2,), _positive))),
    Case("relu", ("relu",), lambda a: a.relu(), (((3, 5), _away_from_zero),)),
    Case("leaky_relu", ("leaky_relu",), lambda a: a.leaky_relu(slope=0.1),
         (((3, 5), _away_from_zero),)),
    Case("sigmoid", ("sigmoid",), lambda a: a.sigmoid(), (((3, 5), _normal),)),
    Case("tanh", ("tanh",), lambda a: a.tanh(), (((3, 5), _normal),)),
    Case("softmax", ("softmax",), lambda a: a.softmax(axis=0), (((3, 5), _normal),)),
    Case("log_softmax", ("log_softmax",), lambda a: a.log_softmax(), (((3, 5), _normal),)),
    Case("sum", ("sum",), lambda a: a.sum(axis=1), (((3, 4, 2), _normal),)),
    Case("sum-all", ("sum",), lambda a: a.sum(), (((3, 4), _normal),)),
    Case("mean", ("mean",), lambda a: a.mean(axis=(0, 2), keepdims=True),
         (((3, 4, 2), _normal),)),
    Case("max", ("max",), lambda a: a.max(axis=1), (((3, 4), _distinct),)),
    Case("T", ("transpose",), lambda a: a.T, (((3, 4), _normal),)),
    Case("transpose", ("transpose",), lambda a: a.transpose(axes=(1, 2, 0)),
         (((2, 3, 4), _normal),)),
    Case("reshape", ("mul",), lambda a: (a * 2.0).reshape(4, -1) * 1.0, (((2, 3, 2), _normal),)),
    Case("flatten", ("mul",), lambda a: a.flatten(1) * 1.0, (((2, 3, 2), _normal),)),
    # Tensor methods that are no registered operator (tests/layers/test_tensor_api.py: the rest)
    Case("rsub-int", ("sub",), lambda a: 2 - a, (((5,), _normal),)),
    Case("rtruediv-int", ("div",), lambda a: 3 / a, (((4,), _positive),)),
    Case("rpow", ("exp", "mul"), lambda a: 2.5 ** a, (((6,), _normal),)),
    Case("rpow-below-one", ("exp", "mul"), lambda a: 0.3 ** a, (((6,), _normal),)),
    Case("rpow-zero", (), lambda a: 0.0 ** a * 1.0, (((6,), _positive),)),
    Case("clone", (), lambda a: a.clone(), (((3, 4), _normal),)),
    Case("astype", (), lambda a: a.astype(numpy.float64) * a, (((3, 4), _normal),)),
    Case("permute", ("transpose",), lambda a: a.permute(2, 0, -2), (((2, 3, 4), _normal),)),
    Case("unsqueeze", (), lambda a: a.unsqueeze(-2) * 1.0, (((2, 3), _normal),)),
    Case("squeeze", (), lambda a: a.squeeze() * 1.0, (((3, 1, 4, 1), _normal),)),
    Case("view", (), lambda a: a.view(4, -1) * 1.0, (((2, 3, 2), _normal),)),
    Case("getitem-basic", (), lambda a: a[1:, None, ..., ::2], (((3, 4, 5), _normal),)),
    Case("getitem-int", (), lambda a: a[-1, 2] * a[0], (((3, 4), _normal),)),
    Case("getitem-repeated", (), lambda a: a[[0, 2, 0, 0], 1:], (((3, 4), _normal),)),
    Case("getitem-2d-repeated", (), lambda a: a[[[1, 1], [0, 1]], [2, 2]],
         (((3, 4), _normal),)),
    Case("getitem-mask", (), lambda a, m: a[m], (((3, 4), _normal),),
         const=lambda rng: (rng.uniform(size=(3, 4)) > 0.5,)),
    Case("getitem-tensor-index", (), lambda a, i: a[:, Tensor(i)], (((2, 5), _normal),),
         const=lambda rng: (rng.integers(0, 5, 7),)),
    Case("getitem-split-advanced", (), lambda a: a[[1, 1, 0], :, [2, 2, 0]],
         (((2, 3, 4), _normal),)),
    Case("matmul", ("matmul",), lambda a, b: a @ b, (((3, 4), _normal), ((4, 2), _normal))),
    Case("matmul-batched", ("matmul",), lambda a, b: a.matmul(b),
         (((2, 3, 4), _normal), ((4, 5), _normal))),
    Case("linear", ("linear",), lambda x, w, b: x.linear(w, b),
         (((3, 4), _normal), ((5, 4), _normal), ((5,), _normal))),
    Case("linear-relu", ("linear",), lambda x, w: x.linear(w, activation="relu"),
         (((3, 4), _normal), ((5, 4), _normal))),
    Case("conv2d", ("conv2d",), lambda x, w, b: x.conv2d(w, b, stride=1, padding=1),
         (((2, 2, 5, 5), _normal), ((3, 2, 3, 3), _normal), ((3,), _normal))),
    Case("max_pool2d", ("max_pool2d",), lambda x: x.max_pool2d(2),
         (((1, 2, 4, 4), _distinct),)),
    Case("avg_pool2d", ("avg_pool2d",), lambda x: x.avg_pool2d(2, stride=1),
         (((1, 2, 4, 4), _normal),)),
    Case("lrn", ("lrn",), lambda x: x.lrn(size=3, alpha=0.1, beta=0.75, k=1.0),
         (((2, 5, 2, 2), _normal),)),
    Case("dropout", ("dropout",), lambda x: x.dropout(p=0.3, seed=7),
         (((4, 8), _normal),)),
    Case("cross_entropy", ("softmax_cross_entropy",),
         lambda x, labels: x.cross_entropy(labels), (((4, 5), _normal),), const=_labels),
    Case("cross_entropy-probabilities", ("softmax_cross_entropy",),
         lambda x, q: x.cross_entropy(q, label_smoothing=0.1),
         (((4, 5), _normal), ((4, 5), lambda rng, s: rng.uniform(0.1, 1.0, s)))),
    Case("batch_norm", ("batch_norm",), lambda x, w, b: x.batch_norm(w, b),
         (((4, 3, 2), _normal), ((3,), _normal), ((3,), _normal))),
    Case("bce_with_logits", ("bce_with_logits",), lambda x, t: x.bce_with_logits(t),
         (((4, 3), _normal), ((4, 3), lambda rng, s: rng.uniform(0, 1, s)))),
    Case("mse", ("mse",), lambda x, t: x.mse(t, reduction="sum"),
         (((4, 3), _normal), ((4, 3), _normal))),
    Case("layer_norm", ("layer_norm",), lambda x, w, b: x.layer_norm(w, b),
         (((3, 5), _normal), ((5,), _normal), ((5,), _normal))),
    Case("rms_norm", ("rms_norm",), lambda x, w: x.rms_norm(w, eps=1e-3),
         (((2, 3, 4), _normal), ((4,), _normal))),
    Case("gelu", ("gelu",), lambda a: a.gelu(), (((3, 5), _normal),)),
    Case("gelu-tanh", ("gelu",), lambda a: a.gelu(approximate="tanh"), (((3, 5), _normal),)),
    Case("silu", ("silu",), lambda a: a.silu(), (((3, 5), _normal),)),
    Case("embedding", ("embedding",), lambda w, ids: Tensor(ids).embedding(w),
         (((5, 3), _normal),), const=lambda rng: (rng.integers(0, 5, (2, 4)),)),
    Case("attention-causal", ("attention",), lambda q, k, v: q.attention(k, v, causal=True),
         (((2, 4, 3), _normal), ((2, 5, 3), _normal), ((2, 5, 2), _normal))),
    Case("mae", ("mae",), lambda x, t: x.mae(t),
         (((4, 3), lambda rng, s: rng.uniform(1.0, 2.0, s)),
          ((4, 3), lambda rng, s: rng.uniform(-2.0, -1.0, s)))),
]


def _missing(case: Case) -> list[str]:
    return [op for op in case.ops if op not in gpuops.OPERATORS]


def _params():
    for backend in BACKENDS:
        for case in CASES:
            yield pytest.param(case, backend, id=f"{case.name}-{backend.name}",
                               marks=backend.marks)


def check_gradients(backend, fn, inputs, consts=(), rng=None, eps=1e-6, tol=(1e-5, 1e-7)):
    """Backward of fn vs central differences of Σ fn·gy along a random direction, per input."""
    rng = rng or numpy.random.default_rng(1)
    with backend.active():
        tensors = [Tensor(backend.asarray(x), requires_grad=True) for x in inputs]
        consts_b = [backend.asarray(c) if isinstance(c, numpy.ndarray) else c for c in consts]
        y = fn(*tensors, *consts_b)
        assert y.requires_grad and y.creator is not None
        gy = rng.standard_normal(y.shape)
        y.backward(backend.asarray(gy))
        for k, (x, t) in enumerate(zip(inputs, tensors)):
            assert t.grad is not None, f"no gradient for input {k}"
            assert tuple(t.grad.shape) == x.shape and t.grad.dtype == numpy.float64
            direction = rng.standard_normal(x.shape)

            def f(step):
                shifted = [backend.asarray(v + step * direction if i == k else v)
                           for i, v in enumerate(inputs)]
                with no_grad():
                    out = fn(*[Tensor(s) for s in shifted], *consts_b)
                return float(numpy.sum(backend.to_numpy(out.data) * gy))

            numeric = (f(eps) - f(-eps)) / (2 * eps)
            analytic = float(numpy.sum(backend.to_numpy(t.grad) * direction))
            assert math.isclose(analytic, numeric, rel_tol=tol[0], abs_tol=tol[1]), (
                f"input {k}: backward {analytic} vs finite differences {numeric}")


@pytest.mark.parametrize("case,backend", list(_params()))
def test_method_matches_finite_differences(case, backend):
    missing = _missing(case)
    if missing:
        pytest.skip(f"operator(s) {', '.join(missing)} not registered in this build")
    rng = numpy.random.default_rng(0)
    inputs = tuple(gen(rng, shape) for shape, gen in case.inputs)
    consts = case.const(rng) if case.const else ()
    check_gradients(backend, case.fn, inputs, consts, tol=case.tol)


def test_every_operator_has_a_method_case():
    covered = {op for case in CASES for op in case.ops}
    assert sorted(set(gpuops.OPERATORS) - covered) == []


def test_every_operator_is_a_tensor_method():
    t = Tensor(numpy.ones(3))
    for name in gpuops.OPERATORS:
        assert callable(getattr(t, name)), name


# ---- worked examples of the seeds ----------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_residual_block_seed_003(backend):
    """y = x + relu(Hx + v): dL/dx = gy + Hᵀ(1[Hx + v > 0] ⊙ gy), dL/dH = (mask ⊙ gy) xᵀ."""
    if _missing(Case("", ("matmul", "relu"), None, ())):
        pytest.skip("matmul or relu not registered in this build")
    rng = numpy.random.default_rng(3)
    n = 6
    H, x, v = rng.standard_normal((n, n)), rng.standard_normal((n, 1)), rng.standard_normal((n, 1))
    gy = rng.standard_normal((n, 1))
    with backend.active():
        Ht, xt, vt = (Tensor(backend.asarray(a), requires_grad=True) for a in (H, x, v))
        y = xt + (Ht @ xt + vt).relu()
        y.backward(backend.asarray(gy))
        mask = (H @ x + v > 0).astype(numpy.float64)
        numpy.testing.assert_allclose(backend.to_numpy(y.data), x + numpy.maximum(H @ x + v, 0),
                                      rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(backend.to_numpy(xt.grad), gy + H.T @ (mask * gy),
                                      rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(backend.to_numpy(Ht.grad), (mask * gy) @ x.T,
                                      rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(backend.to_numpy(vt.grad), mask * gy, rtol=1e-12,
                                      atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_sqrt_cos_example_seed_004(backend):
    """f(x) = √(x² + e^(x²)) + cos(x² + e^(x²)); with u = x² + e^(x²):
    f'(x) = (1/(2√u) − sin u) · (2x + 2x e^(x²))."""
    x = numpy.array([-1.3, -0.4, 0.0, 0.3, 0.9, 1.6])
    with backend.active():
        xt = Tensor(backend.asarray(x), requires_grad=True)
        s = xt * xt
        u = s + s.exp()
        f = u.sqrt() + u.cos()
        f.backward(backend.asarray(numpy.ones_like(x)))
        uu = x ** 2 + numpy.exp(x ** 2)
        expected = (1 / (2 * numpy.sqrt(uu)) - numpy.sin(uu)) * (2 * x + 2 * x * numpy.exp(x ** 2))
        numpy.testing.assert_allclose(backend.to_numpy(xt.grad), expected, rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(backend.to_numpy(f.data),
                                      numpy.sqrt(uu) + numpy.cos(uu), rtol=1e-12)


# ---- graph mechanics ----------------------------------------------------------------

def test_chain_of_10000_nodes():
    x = Tensor(numpy.array([1.0, 2.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward(numpy.ones(2))
    numpy.testing.assert_allclose(x.grad, numpy.full(2, 1.0001 ** 10_000), rtol=1e-9)
    # And a retained deep graph is torn down without recursion trouble.
    z = x
    for _ in range(10_000):
        z = z + 1.0
    del z
    gc.collect()


def test_gradient_accumulates_over_uses_and_calls():
    x = Tensor(numpy.array([0.5, -2.0, 3.0]), requires_grad=True)
    y = x * x + x * 3.0 + x  # dy/dx = 2x + 4
    y.backward(numpy.ones(3))
    numpy.testing.assert_allclose(x.grad, 2 * x.data + 4)
    (x * 2.0).backward(numpy.ones(3))  # a second backward adds to .grad, like torch
    numpy.testing.assert_allclose(x.grad, 2 * x.data + 6)


def test_diamond_graph_accumulates_interior_gradients():
    x = Tensor(numpy.array([1.0, 2.0]), requires_grad=True)
    h = x.exp()
    y = h * h + h.sin()  # dy/dx = (2h + cos h) h
    y.backward(numpy.ones(2))
    h_ = numpy.exp(x.data)
    numpy.testing.assert_allclose(x.grad, (2 * h_ + numpy.cos(h_)) * h_, rtol=1e-12)


def test_user_gy_and_views_are_not_overwritten():
    x = Tensor(numpy.ones((2, 3)), requires_grad=True)
    gy = numpy.arange(6.0)
    (x.reshape(6) + x.reshape(6)).backward(gy)
    numpy.testing.assert_array_equal(gy, numpy.arange(6.0))
    numpy.testing.assert_array_equal(x.grad, 2 * numpy.arange(6.0).reshape(2, 3))


def test_graph_is_freed_unless_retained():
    x = Tensor(numpy.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).exp()
    y.backward(numpy.ones(2), retain_graph=True)
    first = x.grad.copy()
    y.backward(numpy.ones(2))
    numpy.testing.assert_allclose(x.grad, 2 * first)
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward(numpy.ones(2))
    assert y.creator.arrays == () and y.creator.y is None  # saved arrays released


def test_backward_errors():
    x = Tensor(numpy.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="gy is required"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2.0).backward(numpy.ones(4))
    with pytest.raises(RuntimeError, match="does not require"):
        Tensor(numpy.ones(3)).backward(numpy.ones(3))
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(numpy.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="exponent"):
        x ** x
    with pytest.raises(AttributeError):
        x.no_such_method()


def test_scalar_output_defaults_gy_to_one():
    x = Tensor(numpy.array([2.0]), requires_grad=True)
    (x * x).backward()
    numpy.testing.assert_allclose(x.grad, [4.0])
    x.grad = None
    (x * x).backward(0.5)  # a Python scalar gy fills the output's shape
    numpy.testing.assert_allclose(x.grad, [2.0])


def test_no_grad_records_nothing():
    x = Tensor(numpy.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0 + 1.0
        z = x.reshape(3, 1)
    assert not y.requires_grad and y.creator is None and z.creator is None
    assert (x * 2.0).requires_grad  # restored after the block


def test_constants_and_numpy_operands():
    x = Tensor(numpy.array([1.0, 2.0]), requires_grad=True)
    c = numpy.array([3.0, 4.0])
    y = c * x + c  # ndarray on the left defers to Tensor
    assert isinstance(y, Tensor)
    y.backward(numpy.ones(2))
    numpy.testing.assert_allclose(x.grad, c)
    numpy.testing.assert_allclose(y.numpy(), c * x.data + c)


def test_comparisons_return_boolean_tensors_without_grad():
    x = Tensor(numpy.array([1.0, 2.0, 3.0]), requires_grad=True)
    for result, expected in ((x > 1.5, [False, True, True]), (x <= 2.0, [True, True, False]),
                             (x == numpy.array([1.0, 0.0, 3.0]), [True, False, True]),
                             (x != 2.0, [True, False, True]), (x < x, [False] * 3),
                             (x >= 3.0, [False, False, True])):
        assert isinstance(result, Tensor) and not result.requires_grad
        assert result.dtype == numpy.bool_
        numpy.testing.assert_array_equal(result.numpy(), expected)


def test_float32_gradients_stay_float32():
    x = Tensor(numpy.ones(3, numpy.float32), requires_grad=True)
    (x * x + 1.0).backward(numpy.ones(3, numpy.float32))
    assert x.grad.dtype == numpy.float32
    x.grad = None
    (x * x).backward(numpy.ones(3))  # a float64 gy is cast to the output's dtype
    assert x.grad.dtype == numpy.float32


# ---- DLPack and devices -----------------------------------------------------------------

def test_dlpack_out_shares_memory():
    t = Tensor(numpy.arange(4.0))
    a = numpy.from_dlpack(t)
    t.data[0] = 42.0
    assert a[0] == 42.0 and t.__dlpack_device__() == a.__dlpack_device__()


def test_dlpack_in_shares_memory():
    a = numpy.arange(4.0)
    t = gpuops.from_dlpack(a, requires_grad=True)
    a[1] = -1.0
    assert t.data[1] == -1.0 and t.requires_grad


def test_dlpack_with_torch():
    torch = pytest.importorskip("torch")
    source = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    t = gpuops.from_dlpack(source, requires_grad=True)
    source[0, 0] = 7.0
    assert t.data[0, 0] == 7.0
    (t * t).backward(numpy.ones((2, 3)))
    back = torch.from_dlpack(Tensor(t.grad))
    assert torch.equal(back, 2 * source)


def test_to_gpu_without_a_gpu_is_a_clear_error():
    if gpuops.gpu_available():
        t = Tensor(numpy.ones(3), requires_grad=True).to_gpu()
        assert t.device == "cuda" and t.requires_grad and t.to_cpu().device == "cpu"
    else:
        with pytest.raises(RuntimeError, match="no usable CUDA GPU"):
            Tensor(numpy.ones(3)).to_gpu()


def test_fused_forward_saving_and_backward_replace_the_per_input_calls(monkeypatch):
    """An operator registered with ``forward_saving`` / ``backward`` (registry.Operator):
    autograd calls forward_saving instead of forward, then backward once per node with the
    inputs' needs mask and the saved value, instead of each ``<name>_wrt_x<k>``."""
    import dataclasses
    from gpuops import registry
    plain = registry.OPERATORS["mul"]
    calls = []

    def forward_saving(x1, x2):
        calls.append("forward_saving")
        return plain.forward(x1, x2), ("saved", x1.shape)

    def backward(x1, x2, y, gy, *, needs, saved):
        calls.append(("backward", needs, saved))
        return (gy * x2 if needs[0] else None, gy * x1 if needs[1] else None)

    monkeypatch.setitem(registry.OPERATORS, "mul", dataclasses.replace(
        plain, forward_saving=forward_saving, backward=backward))
    a = Tensor(numpy.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = Tensor(numpy.array([4.0, 5.0, 6.0]))  # no gradient: needs is (True, False)
    y = a * b
    numpy.testing.assert_array_equal(y.data, [4.0, 10.0, 18.0])
    y.backward(numpy.ones(3))
    assert calls == ["forward_saving", ("backward", (True, False), ("saved", (3,)))]
    numpy.testing.assert_array_equal(a.grad.data if isinstance(a.grad, Tensor) else a.grad,
                                     [4.0, 5.0, 6.0])
    assert b.grad is None
    with no_grad():  # no gradient will be needed: the plain forward
        calls.clear()
        a * b
        assert calls == []
