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
