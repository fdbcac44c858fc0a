"""Numerical edges beyond NaN/inf (those are in test_reliability.py): subnormal numbers are
computed, not flushed to zero, on every backend; float16 kernels do their arithmetic in
float32, so intermediate sums past float16's range (65504) do not overflow, and results
past it round to ±inf as in PyTorch; bfloat16 results are rounded once from float32, to
nearest even, bit for bit alike on the NumPy backend and the kernels, with float32's range."""
from __future__ import annotations

import inspect

import ml_dtypes
import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from opinfo import BF16, F32, F64
from records import RECORDS

F16 = numpy.dtype(numpy.float16)
# 2^-K moves values of order 1 into the subnormal range of the dtype
# (float32: below 2^-126; float64: below 2^-1022).
SUBNORMAL_SHIFT = {F32: 130, F64: 1030}
SMALLEST_SUBNORMAL_EXP = {F32: -149, F64: -1074}


def test_kernels_are_compiled_without_flush_to_zero():
    """NVRTC must keep IEEE subnormals and correctly rounded division and square root
    (its defaults, stated explicitly so that no fast-math option sneaks in)."""
    options = gpuops.kernels.NVRTC_OPTIONS
    for required in ("--ftz=false", "--prec-div=true", "--prec-sqrt=true"):
        assert required in options
    assert not any("fast-math" in o or "fast_math" in o for o in options)


# ---- subnormal inputs, forward ------------------------------------------------------

def _sub(dtype, *shape, seed=0):
    """Subnormal values of both signs: (1 + u) · 2^-K, u uniform in [0, 1)."""
    rng = numpy.random.default_rng(seed)
    mantissa = (1 + rng.random(shape)) * rng.choice([-1.0, 1.0], size=shape)
    return _shifted(mantissa, dtype)


def _shifted(x, dtype):
    return numpy.asarray(numpy.ldexp(numpy.asarray(x, F64), -SUBNORMAL_SHIFT[dtype]), dtype)


def _pos(dtype, *shape):
    return numpy.abs(_sub(dtype, *shape, seed=1))


def _normal(dtype, *shape, seed=2):
    return numpy.random.default_rng(seed).uniform(0.5, 2.0, shape).astype(dtype)


# (op, inputs(dtype), params): calls whose exact result is itself subnormal, or is a normal
# number computed from subnormals (sqrt, log, a ratio) that flushing would turn to 0, -inf
# or NaN.
SUBNORMAL_CALLS = [
    ("add", lambda d: (_sub(d, 7, 5), _sub(d, 7, 5, seed=3)), {}),
    ("sub", lambda d: (_sub(d, 7, 5), _sub(d, 5, seed=3)), {}),
    ("mul", lambda d: (_sub(d, 7, 5), _normal(d, 7, 5)), {}),
    ("div", lambda d: (_sub(d, 7, 5), _sub(d, 7, 5, seed=3)), {}),
    ("div", lambda d: (_sub(d, 7, 5), _normal(d, 7, 5)), {}),
    ("axis_mul", lambda d: (_sub(d, 3, 4, 5), _normal(d, 4)), {"axis": 1}),
    ("neg", lambda d: (_sub(d, 33),), {}),
    ("abs", lambda d: (_sub(d, 33),), {}),
    ("sqrt", lambda d: (_pos(d, 33),), {}),
    ("log", lambda d: (_pos(d, 33),), {}),
    ("sin", lambda d: (_sub(d, 33),), {}),
    ("pow", lambda d: (_pos(d, 33),), {"p": 0.5}),
    ("relu", lambda d: (_sub(d, 33),), {}),
    ("leaky_relu", lambda d: (_sub(d, 33),), {"slope": 0.5}),
    ("tanh", lambda d: (_sub(d, 33),), {}),
    ("sum", lambda d: (_pos(d, 6, 40),), {"axis": 1}),
    ("mean", lambda d: (_sub(d, 6, 40),), {"axis": 0}),
    ("max", lambda d: (_sub(d, 6, 40),), {"axis": 1}),
    ("transpose", lambda d: (_sub(d, 6, 40),), {}),
    ("matmul", lambda d: (_sub(d, 9, 17), _normal(d, 17, 5)), {}),
    ("linear", lambda d: (_sub(d, 9, 17), _normal(d, 5, 17), _sub(d, 5, seed=4)), {}),
    ("conv2d", lambda d: (_sub(d, 2, 3, 6, 6), _normal(d, 4, 3, 3, 3), _sub(d, 4, seed=4)),
     {"padding": 1}),
    ("max_pool2d", lambda d: (_sub(d, 2, 3, 6, 6),), {"kernel_size": 2}),
    ("avg_pool2d", lambda d: (_pos(d, 2, 3, 6, 6),), {"kernel_size": 2}),
    ("lrn", lambda d: (_sub(d, 2, 7, 3, 3),), {"size": 3}),
    ("mae", lambda d: (_sub(d, 4, 9), _sub(d, 4, 9, seed=3)), {"reduction": "none"}),
    ("dropout", lambda d: (_sub(d, 64),), {"p": 0.25, "seed": 7}),
]


def _reference(name, inputs, params):
    """The record's float64 reference, given every parameter (defaults filled in)."""
    record = next(r for r in RECORDS if r.name == name)
    signature = inspect.signature(record.op.forward)
    full = {p.name: p.default for p in signature.parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name != "out"} | params
    return record.ref(*(x.astype(F64) for x in inputs), **full)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
@pytest.mark.parametrize("name,make,params", SUBNORMAL_CALLS,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(SUBNORMAL_CALLS)])
def test_subnormal_inputs_are_not_flushed(name, make, params, dtype, backend):
    inputs = make(dtype)
    exact = _reference(name, inputs, params)
    with numpy.errstate(under="ignore"):
        expected = numpy.asarray(exact).astype(dtype)  # the correctly rounded result
    with backend.active():
        got = backend.to_numpy(gpuops.OPERATORS[name].forward(
            *backend.asarrays(inputs), **params))
    assert got.dtype == dtype
    ulp = numpy.ldexp(1.0, SMALLEST_SUBNORMAL_EXP[dtype])
    # a few roundings in the subnormal range (absolute ulps), or a few normal ulps
    numpy.testing.assert_allclose(got.astype(F64), exact, rtol=8 * numpy.finfo(dtype).eps,
                                  atol=8 * ulp, err_msg=name)
    flushed = (got == 0) & (expected != 0)
    assert not flushed.any(), f"{name}: {int(flushed.sum())} results flushed to 0"
    assert numpy.isfinite(got).all(), name


# ---- subnormal upstream gradients, every gradient of every operator -------------------

# Gradient kernels that sum many subnormal products round each of them: this many
# smallest-subnormal ulps of absolute error are allowed on top of the record's tolerance.
SUBNORMAL_ULPS = 64


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_subnormal_upstream_gradient(record, dtype, backend):
    """Every gradient is linear in gy: with gy in the subnormal range the gradients are
    2^-K times those of the unscaled gy, within subnormal rounding, and not flushed to 0."""
    if dtype not in record.dtypes:
        pytest.skip(f"{record.name} has no {dtype.name}")
    shift = SUBNORMAL_SHIFT[dtype]
    # 12 elements or more: fewer can make a gradient trivially 0 (a softmax over one element)
    sample = record.small_sample(min_elements=12)
    inputs = record.cast(sample.inputs, dtype)
    inputs64 = record.cast(inputs, F64)  # the NumPy backend's float64 reference
    y64 = record.op.forward(*inputs64, **sample.params)
    rng = numpy.random.default_rng(5)
    gy = _shifted(rng.uniform(1.0, 2.0, numpy.shape(y64)) * rng.choice([-1, 1], numpy.shape(y64)),
                  dtype)
    gy_unscaled = numpy.asarray(numpy.ldexp(gy.astype(F64), shift))  # exact: a power of 2
    with backend.active():
        dev = backend.asarrays(inputs)
        y = record.op.forward(*dev, **sample.params)
        grads = {k: backend.to_numpy(g(*dev, y, backend.asarray(gy), **sample.params))
                 for k, g in record.op.grads.items()}
    rtol, atol = record.tolerance(dtype)
    ulp = numpy.ldexp(1.0, SMALLEST_SUBNORMAL_EXP[dtype] + shift)  # in unscaled units
    for k, got in grads.items():
        expected = numpy.asarray(record.op.grads[k](*inputs64, y64, gy_unscaled,
                                                    **sample.params), F64)
        unscaled = numpy.ldexp(got.astype(F64), shift)
        what = f"{record.name}_wrt_x{k}"
        numpy.testing.assert_allclose(unscaled, expected, rtol=rtol,
                                      atol=atol + SUBNORMAL_ULPS * ulp, err_msg=what)
        flushed = (got == 0) & (numpy.abs(expected) > 4 * SUBNORMAL_ULPS * ulp)
        assert not flushed.any(), f"{what}: {int(flushed.sum())} gradients flushed to 0"


# ---- float16: float32 arithmetic inside, ±inf past the range -------------------------

F16_MAX = float(numpy.finfo(F16).max)  # 65504


def _f16_call(backend, name, *inputs, **params):
    with backend.active():
        return backend.to_numpy(gpuops.OPERATORS[name].forward(
            *(backend.asarray(numpy.asarray(x, F16)) for x in inputs), **params))


def _f16_grad(backend, name, k, inputs, gy, **params):
    with backend.active():
        dev = tuple(backend.asarray(numpy.asarray(x, F16)) for x in inputs)
        op = gpuops.OPERATORS[name]
        y = op.forward(*dev, **params)
        return backend.to_numpy(op.grads[k](*dev, y, backend.asarray(numpy.asarray(gy, F16)),
                                            **params))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_float16_softmax_sums_past_the_range(backend):
    """A row of 70,000 equal logits sums to 70,000 > 65504; each probability 1/70000 is a
    float16 subnormal. Logits ±60000 give exact 0.5 / 0 (the max is subtracted)."""
    n = 70_000
    y = _f16_call(backend, "softmax", numpy.zeros((2, n)))
    assert y.dtype == F16
    numpy.testing.assert_allclose(y.astype(F64), 1 / n, rtol=2e-3)
    logy = _f16_call(backend, "log_softmax", numpy.zeros((2, n)))
    numpy.testing.assert_allclose(logy.astype(F64), -numpy.log(n), rtol=1e-3)
    big = numpy.array([[60000.0, 60000.0, -60000.0], [-F16_MAX, F16_MAX, F16_MAX]])
    numpy.testing.assert_array_equal(_f16_call(backend, "softmax", big),
                                     [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    numpy.testing.assert_array_equal(_f16_call(backend, "log_softmax", big)[0, :2],
                                     -numpy.float16(numpy.log(2)))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_float16_softmax_gradients_with_large_upstream(backend):
    """softmax': y·(gy − Σ gy·y) has gy − Σ = −108000 (past float16) for a result of −10800;
    log_softmax': gy − softmax·Σ gy has Σ gy = 120000 for a result of 0."""
    x = numpy.array([[numpy.log(9.0), 0.0]])
    gy = numpy.array([[60000.0, -60000.0]])
    g = _f16_grad(backend, "softmax", 1, (x,), gy)
    y16 = _f16_call(backend, "softmax", x).astype(F64)
    gy64 = gy.astype(F16).astype(F64)
    exact = y16 * (gy64 - (gy64 * y16).sum(axis=-1, keepdims=True))
    assert numpy.isfinite(g).all()
    numpy.testing.assert_allclose(g.astype(F64), exact, rtol=2e-3)
    g = _f16_grad(backend, "log_softmax", 1, (numpy.zeros((1, 2)),), [[60000.0, 60000.0]])
    # exact 0; the softmax is exp(y) of the float16 y = -0.6929 (as PyTorch's backward),
    # 2^-11 off, times Σ gy = 120000: a half-precision sum would give inf - inf = NaN
    assert numpy.all(numpy.abs(g.astype(F64)) <= 120000 * 2.0 ** -11)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_float16_activations_at_the_range_ends(backend):
    x = numpy.array([-F16_MAX, -60000.0, -1.0, 0.0, 1.0, 60000.0, F16_MAX])
    x16 = x.astype(F16).astype(F64)
    numpy.testing.assert_array_equal(_f16_call(backend, "relu", x), numpy.maximum(x16, 0))
    numpy.testing.assert_array_equal(_f16_call(backend, "leaky_relu", x, slope=0.5),
                                     numpy.where(x16 > 0, x16, 0.5 * x16).astype(F16))
    numpy.testing.assert_array_equal(_f16_call(backend, "sigmoid", x)[[0, 1, 5, 6]], [0, 0, 1, 1])
    numpy.testing.assert_array_equal(_f16_call(backend, "tanh", x)[[0, 1, 5, 6]], [-1, -1, 1, 1])
    for name in ("sigmoid", "tanh", "relu", "leaky_relu"):
        g = _f16_grad(backend, name, 1, (x,), numpy.full(7, F16_MAX))
        assert numpy.isfinite(g).all(), name
    # 65504 · σ'(0) = 16376: the product is formed in float32
    numpy.testing.assert_array_equal(_f16_grad(backend, "sigmoid", 1, (x,),
                                               numpy.full(7, F16_MAX))[3], 16376.0)


def _cancelling(rows, k):
    """Rows of +60000 and −60000 in equal numbers: the running sum leaves float16's range
    (in any summation order that does not pair them), the total is 0."""
    a = numpy.full((rows, k), 60000.0)
    a[:, k // 2:] = -60000.0
    return a


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("m,k,n", [(3, 8, 5), (64, 128, 48)])
def test_float16_gemm_accumulates_in_float32(backend, m, k, n):
    """matmul, linear and conv2d in float16: partial sums of ±60000 pass 65504 but cancel
    (exact 0, plus bias); results past 65504 are ±inf, as a float32 result rounded to
    float16 (and as PyTorch's float16 matmul)."""
    a, ones = _cancelling(m, k), numpy.ones((k, n))
    numpy.testing.assert_array_equal(_f16_call(backend, "matmul", a, ones), 0.0)
    bias = numpy.linspace(-3, 3, n)
    numpy.testing.assert_array_equal(
        _f16_call(backend, "linear", a, ones.T, bias, activation="relu"),
        numpy.broadcast_to(numpy.maximum(bias, 0).astype(F16), (m, n)))
    over = _f16_call(backend, "matmul", numpy.abs(a), ones)
    assert numpy.isposinf(over).all()
    under = _f16_call(backend, "matmul", -numpy.abs(a), ones)
    assert numpy.isneginf(under).all()
    # the gradient wrt x1 is gy @ x2^T: the same accumulation
    g = _f16_grad(backend, "matmul", 1, (numpy.zeros((m, n)), numpy.ones((n, k))),
                  _cancelling(m, k))
    numpy.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_float16_conv2d_accumulates_in_float32(backend):
    x = numpy.full((2, 4, 5, 5), 60000.0)
    w = numpy.ones((3, 4, 3, 3))
    w[:, :2] = -1.0  # 18 terms of +60000 and 18 of -60000 per output
    numpy.testing.assert_array_equal(_f16_call(backend, "conv2d", x, w), 0.0)
    assert numpy.isposinf(_f16_call(backend, "conv2d", x, numpy.abs(w))).all()


# ---- bfloat16: one rounding to nearest even from float32, float32's range ---------------

BF16_MAX = float(ml_dtypes.finfo(BF16).max)  # 3.39e38


def _bf16_leaky(backend, x, slope):
    with backend.active():
        return backend.to_numpy(gpuops.leaky_relu(backend.asarray(x), slope=slope))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_bfloat16_store_rounds_once_to_nearest_even(backend):
    """leaky_relu(x) = slope · x below 0: the float32 product of the bfloat16 x and the
    float32 slope (a parameter is not rounded to 16 bits), rounded once to nearest even
    (ml_dtypes' astype), bit for bit: ties, subnormals, overflow to -inf, NaN."""
    rng = numpy.random.default_rng(7)
    bits = rng.integers(0x8000, 0xFF80, 4000, dtype=numpy.uint16)  # x < 0, finite or -0
    x = numpy.concatenate([bits.view(BF16), numpy.array([-1.0, -3.0, -BF16_MAX, -1e-38,
                                                         float("nan")], BF16)])
    x32 = x.astype(F32)
    for slope in (1 + 2.0 ** -8, -0.01, 3.0, 2.0 ** -10, 1 / 3):
        with numpy.errstate(over="ignore", invalid="ignore"):
            expected = (x32 * numpy.float32(slope)).astype(BF16)
            rounded_slope = (x32 * numpy.float32(BF16.type(slope))).astype(BF16)
        got = _bf16_leaky(backend, x, slope)
        assert got.dtype == BF16
        nan = numpy.isnan(expected.astype(F32))
        numpy.testing.assert_array_equal(numpy.isnan(got.astype(F32)), nan)
        numpy.testing.assert_array_equal(got[~nan].view(numpy.uint16),
                                         expected[~nan].view(numpy.uint16), err_msg=str(slope))
        if slope in (-0.01, 1 / 3):  # the test tells a float32 slope from a rounded one
            assert (rounded_slope[~nan].view(numpy.uint16)
                    != expected[~nan].view(numpy.uint16)).any()
    # the ties: -1 · (1 + 2^-8) is halfway between -1 and -(1 + 2^-7): to even, -1
    assert _bf16_leaky(backend, numpy.array([-1.0], BF16), 1 + 2.0 ** -8)[0] == -1.0


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_bfloat16_has_float32_range(backend):
    """No overflow at float16's 65504: 3 · -1e38 is finite, 4 · -1e38 past 3.39e38 is -inf,
    and 2^-10 · -1e-36 a bfloat16 subnormal (kept, not flushed)."""
    x = numpy.array([-60000.0, -1e38, -1e-36], BF16)
    numpy.testing.assert_array_equal(_bf16_leaky(backend, x, 3.0).astype(F64),
                                     (x.astype(F64) * 3).astype(BF16).astype(F64))
    with numpy.errstate(over="ignore"):
        assert _bf16_leaky(backend, x, 4.0)[1] == -float("inf")
    tiny = _bf16_leaky(backend, x, 2.0 ** -10)[2]
    assert tiny != 0 and abs(float(tiny)) < float(ml_dtypes.finfo(BF16).smallest_normal)
