"""The NumPy backend's fast 16-bit path (gpuops/call.py): elementwise calls computed in
chunks through per-thread float32 scratch buffers, and the float16 widening table, give
the straightforward rule's result bit for bit (widen every input, compute in float32,
round once), for every elementwise and activation operator and gradient."""
from __future__ import annotations

import threading

import ml_dtypes
import numpy
import pytest

import gpuops
from gpuops import call as call_module

BF16 = numpy.dtype(ml_dtypes.bfloat16)
F16 = numpy.dtype(numpy.float16)
SMALL_CHUNK = 64  # the chunked path at test sizes: blocks of 64 elements

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# (name, number of array inputs, keyword arguments): the forward (x1[, x2]) and, for
# gradients, (x1[, x2], y, gy) with y and gy of the broadcast shape.
UNARY = ["neg", "exp", "log", "sqrt", "square", "abs", "sin", "cos", "relu", "sigmoid",
         "tanh", "silu"]
UNARY_KW = [("pow", {"p": 3.0}), ("pow", {"p": 0.5}), ("leaky_relu", {"slope": 0.1}),
            ("gelu", {"approximate": "none"}), ("gelu", {"approximate": "tanh"})]
BINARY = ["add", "sub", "mul", "div", "pow"]


def _values(rng: numpy.random.Generator, shape: tuple, dtype: numpy.dtype) -> numpy.ndarray:
    """Normal values with NaN, ±inf, ±0, subnormals and the largest finite values mixed in."""
    x = numpy.asarray(rng.standard_normal(shape) * 3, numpy.float32)
    info = ml_dtypes.finfo(dtype)
    sub = float(info.smallest_subnormal)
    specials = numpy.array([numpy.nan, numpy.inf, -numpy.inf, 0.0, -0.0, sub, -3 * sub,
                            float(info.max), -float(info.max), float(info.tiny)], numpy.float32)
    flat = x.reshape(-1)
    where = rng.choice(flat.size, size=min(flat.size, 3 * specials.size), replace=False)
    flat[where] = numpy.resize(specials, where.size)
    return numpy.asarray(x.astype(dtype))


def _straight(fn, *args, **kwargs):
    """``fn`` with the chunked path off: every input widened whole, one rounding."""
    saved = call_module.CHUNK
    call_module.CHUNK = 1 << 60
    try:
        return fn(*args, **kwargs)
    finally:
        call_module.CHUNK = saved


def _chunked(fn, *args, **kwargs):
    saved = call_module.CHUNK
    call_module.CHUNK = SMALL_CHUNK
    try:
        return fn(*args, **kwargs)
    finally:
        call_module.CHUNK = saved


def _same_bits(a: numpy.ndarray, b: numpy.ndarray) -> None:
    """Bit for bit, NaNs aside: a NaN is a NaN, of any sign and payload (the sign of a NaN
    that NumPy's float32 code makes, log(-1) or 0·inf, depends on whether a SIMD lane or
    the loop's remainder computed it, so on the element's position in the array)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = numpy.isnan(a.astype(numpy.float32))
    numpy.testing.assert_array_equal(nan, numpy.isnan(b.astype(numpy.float32)))
    numpy.testing.assert_array_equal(a.view(numpy.uint16)[~nan], b.view(numpy.uint16)[~nan])


def _check(fn, *args, **kwargs) -> None:
    with numpy.errstate(all="ignore"):
        _same_bits(_chunked(fn, *args, **kwargs), _straight(fn, *args, **kwargs))


SHAPES = [(40,), (7, 9), (37, 29), (3, 130, 5), (1100,)]  # below and above 64 elements


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unary_forward_and_gradient(dtype, shape):
    rng = numpy.random.default_rng(len(shape) * 100 + shape[-1])
    x, gy = _values(rng, shape, dtype), _values(rng, shape, dtype)
    for name, kwargs in [(n, {}) for n in UNARY] + UNARY_KW:
        fn, grad = getattr(gpuops, name), getattr(gpuops, f"{name}_wrt_x1")
        with numpy.errstate(all="ignore"):
            y = _straight(fn, x, **kwargs)
        _check(fn, x, **kwargs)
        _check(grad, x, y, gy, **kwargs)
        if x.ndim == 2:  # non-contiguous: transposed and strided views
            _check(fn, x.T, **kwargs)
            _check(grad, x.T, y.T, gy[:, ::-1].T, **kwargs)
            _check(fn, x[::2, ::3], **kwargs)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("shapes", [((37, 29), (37, 29)), ((37, 29), (29,)), ((37, 29), (37, 1)),
                                    ((29,), (37, 29)), ((1100,), ())], ids=str)
def test_binary_forward_and_gradients(dtype, shapes):
    rng = numpy.random.default_rng(7)
    x1, x2 = (_values(rng, s, dtype) for s in shapes)
    shape = numpy.broadcast_shapes(*shapes)
    gy = _values(rng, shape, dtype)
    for name in BINARY:
        fn = getattr(gpuops, name)
        with numpy.errstate(all="ignore"):
            y = _straight(fn, x1, x2)
        _check(fn, x1, x2)
        for k in (1, 2):
            _check(getattr(gpuops, f"{name}_wrt_x{k}"), x1, x2, y, gy)
    _check(gpuops.add, x1, x2, alpha=2)
    _check(gpuops.sub_wrt_x2, x1, x2, y, gy, alpha=3)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_python_scalar_operand(dtype):
    x = _values(numpy.random.default_rng(3), (1000,), dtype)
    for name in BINARY:
        _check(getattr(gpuops, name), x, 1.5)
    _check(gpuops.sub, 2.0, x)
    _check(gpuops.div, 1.0, x)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_out_fresh_aliased_and_overlapping(dtype):
    rng = numpy.random.default_rng(5)
    x, x2 = _values(rng, (1000,), dtype), _values(rng, (1000,), dtype)
    expected = _straight(gpuops.sigmoid, x)
    out = numpy.full((2000,), 7, dtype)[::2]  # a strided out
    result = _chunked(gpuops.sigmoid, x, out=out)
    assert result is out
    _same_bits(out, expected)
    for fn, args in ((gpuops.sigmoid, ()), (gpuops.mul, (x2,))):
        want = _straight(fn, x, *args)
        same = x.copy()  # out=x: the input itself
        _same_bits(_chunked(fn, same, *args, out=same), want)
        grad = _straight(gpuops.tanh_wrt_x1, x, x2, x)
        gy = x.copy()
        _same_bits(_chunked(gpuops.tanh_wrt_x1, x, x2, gy, out=gy), grad)
    # out shifted by one element over the input: each element must read the input's old value
    buffer = numpy.concatenate([x, x[:1]])
    want = _straight(gpuops.exp, buffer[:-1])
    _same_bits(_chunked(gpuops.exp, buffer[:-1], out=buffer[1:]), want)
    buffer = numpy.concatenate([x[:1], x])
    want = _straight(gpuops.exp, buffer[1:])
    _same_bits(_chunked(gpuops.exp, buffer[1:], out=buffer[:-1]), want)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_threads_share_nothing(dtype):
    """Calls in several threads at once, each its own scratch buffers: each result equal to
    the same call made alone."""
    rng = numpy.random.default_rng(9)
    inputs = [_values(rng, (3000,), dtype) for _ in range(4)]
    expected = [_straight(gpuops.tanh, x) for x in inputs]
    results: list = [None] * len(inputs)
    call_module.CHUNK, saved = SMALL_CHUNK, call_module.CHUNK
    try:
        def work(i):
            for _ in range(20):
                results[i] = gpuops.tanh(inputs[i])
                assert numpy.array_equal(results[i].view(numpy.uint16),
                                         expected[i].view(numpy.uint16))
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        call_module.CHUNK = saved
    for got, want in zip(results, expected):
        _same_bits(got, want)


def test_default_chunk_path_runs_at_full_chunk():
    """The real chunk size: a call over several chunks equals the straightforward rule."""
    x = _values(numpy.random.default_rng(11), (3 * call_module.CHUNK + 5,), BF16)
    with numpy.errstate(all="ignore"):
        _same_bits(gpuops.sigmoid(x), _straight(gpuops.sigmoid, x))
        y = numpy.empty_like(x)
        half = x.astype(F16)
        _same_bits(gpuops.relu(half, out=y.view(F16)), _straight(gpuops.relu, half))


def test_blocks_cover_every_element_once():
    saved = call_module.CHUNK
    call_module.CHUNK = SMALL_CHUNK
    try:
        for shape in [(65,), (64,), (3, 130, 5), (2, 200), (1000, 1), (5, 3, 70), (129, 1, 1)]:
            seen = numpy.zeros(shape, numpy.int64)
            for block in call_module._blocks(shape):
                assert seen[block].size <= SMALL_CHUNK
                seen[block] += 1
            assert (seen == 1).all(), shape
    finally:
        call_module.CHUNK = saved


def test_float16_widening_exact_on_every_pattern():
    bits = numpy.arange(1 << 16, dtype=numpy.uint32).astype(numpy.uint16)
    h = bits.view(numpy.float16)
    numpy.testing.assert_array_equal(call_module.widen(h).view(numpy.uint32),
                                     h.astype(numpy.float32).view(numpy.uint32))
    numpy.testing.assert_array_equal(call_module.widen(h[::-3]).view(numpy.uint32),
                                     h[::-3].astype(numpy.float32).view(numpy.uint32))
    b = bits.view(BF16)
    numpy.testing.assert_array_equal(call_module.widen(b).view(numpy.uint32),
                                     b.astype(numpy.float32).view(numpy.uint32))


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_narrowing_equals_astype(dtype):
    """Every float32 exponent with dense mantissas (ties, halfway-plus-one, NaN payloads,
    infinities, subnormals): rounded exactly as astype."""
    rng = numpy.random.default_rng(13)
    exponents = numpy.arange(256, dtype=numpy.uint32) << 23
    low = numpy.array([0, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x7FFF, 0x8000, 0x8001,
                       0xFFFF, 0x7FFFFF, 0x400000, 0x3FFFFF], numpy.uint32)
    mantissas = numpy.concatenate([low, rng.integers(0, 1 << 23, 2000, dtype=numpy.uint32)])
    patterns = (exponents[:, None] | mantissas[None, :]).reshape(-1)
    patterns = numpy.concatenate([patterns, patterns | numpy.uint32(0x80000000)])
    y = patterns.view(numpy.float32)
    with numpy.errstate(all="ignore"):
        got = call_module.narrow(y, numpy.empty(y.shape, dtype))
        want = y.astype(dtype)
    numpy.testing.assert_array_equal(got.view(numpy.uint16), want.view(numpy.uint16))


def test_chunked_path_is_the_one_tested(monkeypatch):
    """The comparisons above reach the chunked path above the chunk size, and only there."""
    def refuse(*args, **kwargs):
        raise AssertionError("chunked")
    monkeypatch.setattr(call_module.Call, "_run_chunked", refuse)
    x = numpy.ones((SMALL_CHUNK + 1,), BF16)
    with pytest.raises(AssertionError, match="chunked"):
        _chunked(gpuops.relu_wrt_x1, x, x, x)
    _chunked(gpuops.relu, x[:SMALL_CHUNK])
    _chunked(gpuops.sum, x)  # not elementwise


def test_a_float16_result_past_65504_is_inf_without_a_warning():
    """The rounding on store gives ±inf past float16's range, silently (as the kernels' store
    and PyTorch), whether the call is chunked, whole, or writes into out."""
    import warnings
    for n in (2, 300_000):
        x = numpy.full(n, 60000.0, numpy.float16)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = gpuops.add(x, x)
            into = gpuops.mul(x, x, out=numpy.empty(n, numpy.float16))
            gpuops.add(x, x, out=x)
        assert numpy.isposinf(y).all() and numpy.isposinf(into).all() and numpy.isposinf(x).all()
