"""The NumPy backend's 16-bit conversions (gpuops/call.py: widen, narrow and their float16
passes) bit for bit against NumPy's and ml_dtypes' own casts (``astype``): every float16 and
bfloat16 pattern widened, dense float32 patterns rounded (every exponent; ties, the values
next to them, subnormals, the float16 overflow threshold, ±inf, NaN payloads), the float16
passes on arrays past ``_PASSES_MIN`` elements and NumPy's cast below it; and elementwise
calls past one chunk (the flat and the block paths) equal to the straightforward rule."""
from __future__ import annotations

import warnings

import ml_dtypes
import numpy
import pytest

import gpuops
from gpuops import call as call_module

BF16 = numpy.dtype(ml_dtypes.bfloat16)
F16 = numpy.dtype(numpy.float16)
ALL_16 = numpy.arange(1 << 16, dtype=numpy.uint32).astype(numpy.uint16)


def _bits(a: numpy.ndarray) -> numpy.ndarray:
    return a.view(numpy.uint16 if a.dtype.itemsize == 2 else numpy.uint32)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_widen_every_pattern(dtype):
    x = ALL_16.view(dtype)
    assert x.size >= call_module._PASSES_MIN  # the float16 passes
    for view in (x, x[::-3], x.reshape(256, 256).T, x[:100]):  # strided, 2-D, NumPy's cast
        numpy.testing.assert_array_equal(_bits(call_module.widen(view)),
                                         _bits(view.astype(numpy.float32)))
        out = numpy.empty(view.shape, numpy.float32)
        assert call_module.widen(view, out) is out


def _float32_patterns(rng: numpy.random.Generator) -> numpy.ndarray:
    """Every exponent with mantissas at and around the float16 and bfloat16 rounding points
    (ties to even, one below and above a tie, all ones), plus random ones; both signs."""
    exponents = numpy.arange(256, dtype=numpy.uint32) << 23
    marks = []
    for shift in (13, 16):  # float16 keeps 10 of float32's 23 mantissa bits, bfloat16 7
        half = 1 << (shift - 1)
        for lsb in (0, 1 << shift):  # the kept part even / odd
            marks += [lsb + half - 1, lsb + half, lsb + half + 1, lsb, lsb + 1]
    marks += [0x7FFFFF, 0x400000, 0x3FFFFF, 0x7FE000, 0x7FF000, 0x7FEFFF, 0x7FFFFE]
    mantissas = numpy.concatenate([numpy.array(marks, numpy.uint32),
                                   rng.integers(0, 1 << 23, 3000, dtype=numpy.uint32)])
    patterns = (exponents[:, None] | mantissas[None, :]).reshape(-1)
    return numpy.concatenate([patterns, patterns | numpy.uint32(0x80000000)])


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("nan", [False, True], ids=["finite-and-inf", "with-nan"])
def test_narrow_dense_float32_patterns(dtype, nan):
    """float16 without NaN: the passes; with NaN: NumPy's cast (payloads kept as it keeps
    them). bfloat16: ml_dtypes' cast either way (quiet NaN, sign kept)."""
    patterns = _float32_patterns(numpy.random.default_rng(13))
    is_nan = (patterns & numpy.uint32(0x7FFFFFFF)) > numpy.uint32(0x7F800000)
    y = (patterns if nan else patterns[~is_nan]).view(numpy.float32)
    with numpy.errstate(all="ignore"):
        want = y.astype(dtype)
    got = call_module.narrow(y, numpy.empty(y.shape, dtype))
    numpy.testing.assert_array_equal(_bits(got), _bits(want))
    numpy.testing.assert_array_equal(_bits(y), _bits(patterns if nan else patterns[~is_nan]))


def test_narrow_float16_edges_through_the_passes():
    """The float16 passes near its limits, each value in a NaN-free array past
    _PASSES_MIN: the overflow threshold (65520 rounds to inf, 65519.99 to 65504), ±inf,
    the smallest subnormal and half of it (a tie: to 0), the normal/subnormal boundary,
    ±0, and strided input and output."""
    edges = numpy.array([65504, 65519.996, 65520, 65536, 1e30, numpy.inf, 2.0 ** -24,
                         2.0 ** -25, 2.0 ** -25 * 1.0000001, 3 * 2.0 ** -26, 2.0 ** -14,
                         2.0 ** -14 * (1 - 2.0 ** -11), 2.0 ** -14 * (1 - 2.0 ** -12), 0.0,
                         1.0, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2049, 2051], numpy.float32)
    edges = numpy.concatenate([edges, -edges])
    y = numpy.resize(edges, 4 * call_module._PASSES_MIN)
    with numpy.errstate(all="ignore"):
        want = y.astype(F16)
    numpy.testing.assert_array_equal(_bits(call_module.narrow(y, numpy.empty(y.shape, F16))),
                                     _bits(want))
    out = numpy.zeros((y.size, 2), F16)
    call_module.narrow(y[::-1], out[:, 1])  # strided input and output
    numpy.testing.assert_array_equal(_bits(out[:, 1]), _bits(want[::-1]))
    numpy.testing.assert_array_equal(_bits(out[:, 0]), 0)


def test_narrow_past_the_range_is_silent():
    y = numpy.full(2 * call_module._PASSES_MIN, 1e6, numpy.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with numpy.errstate(all="raise"):  # no overflow or underflow escapes
            assert numpy.isposinf(call_module.narrow(y, numpy.empty(y.shape, F16))).all()
            tiny = numpy.full(y.shape, 2.0 ** -20, numpy.float32)
            numpy.testing.assert_array_equal(
                _bits(call_module.narrow(tiny, numpy.empty(y.shape, F16))), 16)


def _values(rng: numpy.random.Generator, shape: tuple, dtype: numpy.dtype,
            nan: bool) -> numpy.ndarray:
    x = (rng.standard_normal(shape) * 4).astype(numpy.float32)
    flat = x.reshape(-1)
    info = ml_dtypes.finfo(dtype)
    specials = [numpy.inf, -numpy.inf, 0.0, -0.0, float(info.smallest_subnormal),
                float(info.max), -float(info.tiny)] + ([numpy.nan] if nan else [])
    where = rng.choice(flat.size, size=len(specials), replace=False)
    flat[where] = specials
    return x.astype(dtype)


def _straight(fn, *args):
    """The rule itself: every input widened by astype, the call in float32, one astype."""
    widened = [a.astype(numpy.float32) for a in args]
    with numpy.errstate(all="ignore"):
        return fn(*widened).astype(args[0].dtype)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_calls_past_one_chunk_equal_the_rule(dtype):
    """Real chunk size, several chunks: the flat path (C-contiguous), the block path
    (transposed, broadcast); NaN in one input (float16: that chunk through NumPy's cast)."""
    rng = numpy.random.default_rng(21)
    n = 2 * call_module.CHUNK + 1000
    x, x2, gy = (_values(rng, (n,), dtype, nan=k == 0) for k in range(3))
    with numpy.errstate(all="ignore"):
        y = gpuops.tanh(x)
        checks = [(gpuops.add(x, x2), _straight(gpuops.add, x, x2)),
                  (gpuops.tanh_wrt_x1(x, y, gy), _straight(gpuops.tanh_wrt_x1, x, y, gy)),
                  (gpuops.mul(x, 3.0), _straight(lambda u: gpuops.mul(u, 3.0), x))]
        rows = x2[:(n // 1000) * 1000].reshape(-1, 1000)
        row = x[:1000]
        checks.append((gpuops.mul(rows.T, row[:, None]),
                       _straight(gpuops.mul, rows.T, numpy.broadcast_to(row[:, None],
                                                                        rows.T.shape))))
        checks.append((gpuops.sigmoid(rows.T), _straight(gpuops.sigmoid, rows.T)))
    for got, want in checks:
        nan = numpy.isnan(want.astype(numpy.float32))
        numpy.testing.assert_array_equal(numpy.isnan(got.astype(numpy.float32)), nan)
        numpy.testing.assert_array_equal(_bits(got)[~nan], _bits(want)[~nan])
