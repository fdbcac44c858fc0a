"""sum/mean/max beyond the generic record tests: ties and NaN in max and its gradient,
reductions over zero elements, and the two-stage (split) kernel paths on kernel backends."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from gpuops.ops import reduction



def _run(backend, fn, *xs, **params):
    with backend.active():
        return backend.to_numpy(fn(*(backend.asarray(x) for x in xs), **params))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_max_gradient_is_split_evenly_among_ties(backend, dtype):
    x = numpy.array([[1, 3, 3], [2, 2, 2], [0, 5, 1], [-4, -4, -7]], dtype)
    gy = numpy.array([6, 9, 2, 4], dtype)
    y = _run(backend, gpuops.max, x, axis=1)
    numpy.testing.assert_array_equal(y, [3, 2, 5, -4])
    g = _run(backend, gpuops.max_wrt_x1, x, y, gy, axis=1)
    numpy.testing.assert_allclose(g, [[0, 3, 3], [3, 3, 3], [0, 2, 0], [2, 2, 0]], rtol=1e-6)
    # over axis 0 and over everything: the same rule
    g0 = _run(backend, gpuops.max_wrt_x1, x, x.max(axis=0, keepdims=True),
              numpy.ones((1, 3), dtype), axis=0, keepdims=True)
    numpy.testing.assert_allclose(g0, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    ones = numpy.ones((4, 5), dtype)
    g_all = _run(backend, gpuops.max_wrt_x1, ones, numpy.array(1, dtype), numpy.array(10, dtype))
    numpy.testing.assert_allclose(g_all, numpy.full((4, 5), 0.5), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_max_propagates_nan_and_routes_the_gradient_to_it(backend):
    x = numpy.array([[1.0, numpy.nan, 3.0], [1.0, 2.0, 0.5]])
    y = _run(backend, gpuops.max, x, axis=1)
    assert numpy.isnan(y[0]) and y[1] == 2.0
    g = _run(backend, gpuops.max_wrt_x1, x, y, numpy.array([5.0, 7.0]), axis=1)
    numpy.testing.assert_array_equal(g, [[0, 5, 0], [0, 7, 0]])


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_reductions_over_zero_elements(backend):
    x = numpy.ones((0, 3))
    numpy.testing.assert_array_equal(_run(backend, gpuops.sum, x, axis=0), numpy.zeros(3))
    assert numpy.isnan(_run(backend, gpuops.mean, x, axis=0)).all()
    assert _run(backend, gpuops.max, x, axis=1).shape == (0,)
    with backend.active(), pytest.raises(ValueError, match="max: cannot take the max over zero"):
        gpuops.max(backend.asarray(x))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_keepdims_takes_a_numpy_bool(backend, name):
    x = numpy.random.default_rng(1).standard_normal((3, 4, 5))
    forward, grad = getattr(gpuops, name), getattr(gpuops, f"{name}_wrt_x1")
    for keep in (True, False):
        y = _run(backend, forward, x, axis=(0, 2), keepdims=keep)
        numpy.testing.assert_array_equal(
            _run(backend, forward, x, axis=(0, 2), keepdims=numpy.bool_(keep)), y)
        gy = numpy.ones_like(y)
        numpy.testing.assert_array_equal(
            _run(backend, grad, x, y, gy, axis=(0, 2), keepdims=numpy.bool_(keep)),
            _run(backend, grad, x, y, gy, axis=(0, 2), keepdims=keep))


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks so small that the tiny test inputs take the split (multi-stage) paths."""
    monkeypatch.setattr(reduction, "_ROW_CHUNK", 8)
    monkeypatch.setattr(reduction, "_COL_CHUNK", 2)
    monkeypatch.setattr(reduction, "_AXES_CHUNK", 8)


SPLIT_CASES = [((1003,), None), ((2, 301), 1), ((50, 7), 1), ((3, 16), None), ((301, 3), 0),
               ((2, 97, 3), 1), ((30, 2, 21), (0, 2)), ((1, 1000), None),
               ((7, 2, 5, 3, 11), (0, 2, 4))]


@pytest.mark.skipif(not KERNEL_BACKENDS, reason="no kernel backend (emu, cupy) on this machine")
@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("shape,axis", SPLIT_CASES, ids=str)
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_split_reductions(backend, shape, axis, strided, small_chunks):
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal(shape)
    with backend.active():
        dev = backend.asarray(x, contiguous=not strided)
        numpy.testing.assert_allclose(backend.to_numpy(gpuops.sum(dev, axis=axis)),
                                      x.sum(axis=axis), rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(backend.to_numpy(gpuops.mean(dev, axis=axis)),
                                      x.mean(axis=axis), rtol=1e-12, atol=1e-12)
        numpy.testing.assert_array_equal(backend.to_numpy(gpuops.max(dev, axis=axis)),
                                         x.max(axis=axis))


@pytest.mark.skipif(not KERNEL_BACKENDS, reason="no kernel backend (emu, cupy) on this machine")
@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_split_max_gradient_counts_ties_across_chunks(backend, small_chunks):
    x = numpy.zeros(1000)
    x[[3, 500, 999]] = 2.0
    with backend.active():
        g = backend.to_numpy(gpuops.max_wrt_x1(backend.asarray(x), backend.asarray(numpy.array(2.0)),
                                               backend.asarray(numpy.array(3.0))))
    expected = numpy.zeros(1000)
    expected[[3, 500, 999]] = 1.0
    numpy.testing.assert_array_equal(g, expected)


SIXTEEN_BIT = [numpy.float16, gpuops.bfloat16]
UNIT_ROUNDOFF = {numpy.dtype(numpy.float16): 2.0 ** -11, numpy.dtype(gpuops.bfloat16): 2.0 ** -8}


@pytest.mark.skipif(not KERNEL_BACKENDS, reason="no kernel backend (emu, cupy) on this machine")
@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", SIXTEEN_BIT, ids=lambda d: numpy.dtype(d).name)
@pytest.mark.parametrize("shape,axis", SPLIT_CASES, ids=str)
def test_split_reductions_16bit_round_once(backend, dtype, shape, axis, small_chunks):
    """16-bit inputs summed in float32, partials kept in float32 across the stages, the
    result rounded once: within one rounding (plus float32's summation error) of the
    exact sum of the rounded inputs, and as the NumPy backend computes it (float32 sum,
    one rounding); max is exact."""
    x = numpy.random.default_rng(0).standard_normal(shape).astype(dtype)
    x64 = x.astype(numpy.float64)
    u = UNIT_ROUNDOFF[numpy.dtype(dtype)]
    atol = 1e-6 * numpy.abs(x64).sum(axis=axis)
    with backend.active():
        dev = backend.asarray(x)
        total = backend.to_numpy(gpuops.sum(dev, axis=axis))
        mean = backend.to_numpy(gpuops.mean(dev, axis=axis))
        top = backend.to_numpy(gpuops.max(dev, axis=axis))
    assert total.dtype == mean.dtype == top.dtype == numpy.dtype(dtype)
    numpy.testing.assert_array_less(numpy.abs(total.astype(numpy.float64) - x64.sum(axis=axis)),
                                    u * numpy.abs(x64.sum(axis=axis)) + atol + 1e-30)
    n = x.size // numpy.size(total)
    numpy.testing.assert_array_less(numpy.abs(mean.astype(numpy.float64) - x64.mean(axis=axis)),
                                    u * numpy.abs(x64.mean(axis=axis)) + atol / n + 1e-30)
    numpy.testing.assert_allclose(total.astype(numpy.float64),
                                  gpuops.sum(x, axis=axis).astype(numpy.float64),
                                  rtol=2 * u, atol=numpy.max(atol))
    numpy.testing.assert_array_equal(top, x.max(axis=axis))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_bfloat16_max_gradient_counts_ties_exactly_past_256(backend, small_chunks):
    """257 ties (bfloat16 holds integers exactly only up to 256): the count is float32,
    so each tie gets round(gy / 257), not gy / 256."""
    bf16 = gpuops.bfloat16
    x = numpy.zeros(300).astype(bf16)
    x[:257] = 1.0
    gy = numpy.array(3.0).astype(bf16)
    g = _run(backend, gpuops.max_wrt_x1, x, numpy.array(1.0).astype(bf16), gy)
    assert g.dtype == bf16
    share = numpy.full(257, numpy.float32(3.0) / numpy.float32(257)).astype(bf16)
    numpy.testing.assert_array_equal(g[:257], share)
    numpy.testing.assert_array_equal(g[257:], 0.0)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_16bit_sum_range(backend):
    """bfloat16 has float32's exponent: 4 · 60000 is finite (float16 overflows past
    65504 to inf), and 1e38 + 1e38 is bfloat16's 2e38."""
    with numpy.errstate(over="ignore"):
        half = _run(backend, gpuops.sum, numpy.full(4, 60000.0).astype(numpy.float16))
        brain = _run(backend, gpuops.sum, numpy.full(4, 60000.0).astype(gpuops.bfloat16))
        big = _run(backend, gpuops.sum, numpy.full(2, 1e38).astype(gpuops.bfloat16))
    assert numpy.isinf(half.astype(numpy.float64))
    def rounded(v):
        return float(numpy.array(v, numpy.float32).astype(gpuops.bfloat16))

    assert float(brain) == rounded(4 * rounded(60000.0))
    assert float(big) == rounded(2 * rounded(1e38))
