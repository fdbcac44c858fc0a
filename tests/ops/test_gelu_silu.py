"""gelu and silu beyond the generic record tests: the NumPy erfc against the math module,
PyTorch cross-checks, the negative tails (where 1 + erf and 1 + tanh cancel), ±inf, and
float16 at the range ends."""
from __future__ import annotations

import math

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from gpuops.ops.activation import _erfc

F16, F32, F64 = (numpy.dtype(d) for d in (numpy.float16, numpy.float32, numpy.float64))
_math_erfc = numpy.vectorize(math.erfc, otypes=[float])
_math_erf = numpy.vectorize(math.erf, otypes=[float])


def _grid():
    """Every interval of the erfc approximation densely, its edges, tiny and huge values."""
    x = numpy.concatenate([numpy.linspace(-30, 30, 60001), numpy.geomspace(1e-300, 30, 3001),
                           [0.84375, 1.25, 1 / 0.35, 6.0, 26.5, 27.9, 28.0, 1e300]])
    x = numpy.concatenate([x, -x, numpy.nextafter(x, numpy.inf), numpy.nextafter(x, -numpy.inf)])
    return x[numpy.isfinite(x)]


def test_numpy_erfc_matches_the_math_module():
    x = _grid()
    expected = _math_erfc(x)
    got = _erfc(x)
    nonzero = expected != 0
    relative = numpy.abs(got[nonzero] - expected[nonzero]) / expected[nonzero]
    assert relative.max() <= 1.5e-15, (relative.max(), x[nonzero][relative.argmax()])
    numpy.testing.assert_array_equal(got[~nonzero], 0.0)  # underflow past x = 26.5, as libm
    # erf = 1 - erfc where erf holds no more than erfc's digits (|x| >= 0.5)
    wide = numpy.abs(x) >= 0.5
    erf = _math_erf(x[wide])
    assert (numpy.abs((1 - got[wide]) - erf) / numpy.abs(erf)).max() <= 1e-15
    special = _erfc(numpy.array([numpy.inf, -numpy.inf, numpy.nan, 0.0, -0.0]))
    numpy.testing.assert_array_equal(special, [0.0, 2.0, numpy.nan, 1.0, 1.0])


def test_numpy_gelu_matches_math_erf_in_float64():
    x = _grid()
    x = x[numpy.abs(x) < 40]
    z = -x * 0.7071067811865476  # the argument the implementation forms
    expected = x * (0.5 * _math_erfc(z))
    got = gpuops.gelu(x)
    nonzero = expected != 0
    relative = numpy.abs(got[nonzero] - expected[nonzero]) / numpy.abs(expected[nonzero])
    assert relative.max() <= 2e-15, (relative.max(), x[nonzero][relative.argmax()])
    positive = x > 0  # 1 + erf has no cancellation there
    numpy.testing.assert_allclose(got[positive], 0.5 * x[positive] *
                                  (1 + _math_erf(x[positive] / math.sqrt(2))), rtol=2e-15)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name,params", [("gelu", {}), ("gelu", {"approximate": "tanh"}),
                                         ("silu", {})], ids=["gelu", "gelu-tanh", "silu"])
def test_matches_torch(backend, name, params):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(0)
    x = numpy.concatenate([rng.uniform(-10, 10, 200), [0.0, -1e-3, 1e-3, 3.0, -3.0]])
    gy = rng.standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    f = {"gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}[name]
    ty = f(tx, **params)
    (tg,) = torch.autograd.grad(ty, tx, torch.tensor(gy))
    op = gpuops.OPERATORS[name]
    with backend.active():
        dx = backend.asarray(x)
        y = op.forward(dx, **params)
        g = op.grads[1](dx, y, backend.asarray(gy), **params)
    # PyTorch forms 1 + tanh u, which cancels for x << 0 (gelu-tanh): absolute there
    numpy.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), rtol=1e-13,
                                  atol=1e-13)
    numpy.testing.assert_allclose(backend.to_numpy(g), tg.numpy(), rtol=1e-12, atol=1e-13)


def _tail_reference(name, params, x):
    """float64 forward and derivative in the negative tail, without cancellation."""
    if name == "silu":
        s = numpy.exp(x) / (1 + numpy.exp(x))
        return x * s, s * (1 + x * (1 - s))
    if params.get("approximate") == "tanh":
        k = math.sqrt(8 / math.pi)
        z = k * x * (1 + 0.044715 * x * x)
        s = numpy.exp(z) / (1 + numpy.exp(z))
        return x * s, s + x * s * (1 - s) * k * (1 + 3 * 0.044715 * x * x)
    cdf = 0.5 * _math_erfc(-x / math.sqrt(2))
    return x * cdf, cdf + x * numpy.exp(-x * x / 2) / math.sqrt(2 * math.pi)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name,params,low", [("gelu", {}, -12.0),
                                             ("gelu", {"approximate": "tanh"}, -8.0),
                                             ("silu", {}, -80.0)],
                         ids=["gelu", "gelu-tanh", "silu"])
def test_float32_negative_tail_keeps_relative_precision(backend, name, params, low):
    """Down to values near 1e-30, where 1 + erf(x/√2) or 1 + tanh u round to 0 (or to a few
    bits) in float32: the forward and the gradient keep float32's relative precision."""
    x = numpy.linspace(low, -2.0, 101).astype(F32)
    y_ref, g_ref = _tail_reference(name, params, x.astype(F64))
    op = gpuops.OPERATORS[name]
    with backend.active():
        dx = backend.asarray(x)
        y = op.forward(dx, **params)
        g = op.grads[1](dx, y, backend.asarray(numpy.ones_like(x)), **params)
    assert numpy.all(numpy.abs(y_ref) > 1e-35)  # normal float32 numbers: not flushed to 0
    numpy.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=2e-5)
    numpy.testing.assert_allclose(backend.to_numpy(g), g_ref, rtol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
@pytest.mark.parametrize("name,params", [("gelu", {}), ("gelu", {"approximate": "tanh"}),
                                         ("silu", {})], ids=["gelu", "gelu-tanh", "silu"])
def test_infinities_and_huge_values(backend, dtype, name, params):
    """y(+inf) = inf and y(-inf) = NaN (the formulas, as PyTorch); the gradients are the limits
    1 and 0 at ±inf and at huge finite x (x³ overflows in the tanh form's 2u')."""
    big = float(numpy.finfo(dtype).max)
    x = numpy.array([numpy.inf, -numpy.inf, big, -big, 1e30, -1e30], dtype)
    op = gpuops.OPERATORS[name]
    with backend.active(), numpy.errstate(all="ignore"):
        dx = backend.asarray(x)
        y = backend.to_numpy(op.forward(dx, **params))
        g = backend.to_numpy(op.grads[1](dx, backend.asarray(y), backend.asarray(
            numpy.ones_like(x)), **params))
    numpy.testing.assert_array_equal(y[[0, 2, 4]], x[[0, 2, 4]])
    assert numpy.isnan(y[1])
    numpy.testing.assert_array_equal(y[[3, 5]], 0.0)
    numpy.testing.assert_array_equal(g, [1, 0, 1, 0, 1, 0])


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_float16_range_ends(backend):
    f16_max = float(numpy.finfo(F16).max)
    x = numpy.array([-f16_max, -20.0, -1.0, 0.0, 1.0, 20.0, f16_max], F16)
    for name, params in (("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {})):
        op = gpuops.OPERATORS[name]
        with backend.active():
            dx = backend.asarray(x)
            y = op.forward(dx, **params)
            g = backend.to_numpy(op.grads[1](dx, y, backend.asarray(numpy.full(7, 30000.0, F16)),
                                             **params))
        y = backend.to_numpy(y)
        numpy.testing.assert_array_equal(y[[5, 6]], x[[5, 6]], err_msg=name)
        numpy.testing.assert_array_equal(y[[0]], 0.0, err_msg=name)
        # y' <= 1.13 (gelu'(x) passes 1 near x = 1.4): 30000 · y' stays below 65504
        assert numpy.isfinite(g).all(), name
        numpy.testing.assert_array_equal(g[[0, 6]], [0.0, 30000.0], err_msg=name)
        assert g[3] == 15000.0, name  # 30000 · y'(0) = 30000 · 0.5
