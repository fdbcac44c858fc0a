"""max_pool2d / avg_pool2d beyond the generic record tests: the first-maximum rule for
ties, padding that is never the maximum, NaN, and (when PyTorch is installed) agreement
with torch.nn.functional over every stride/padding combination tried."""
from __future__ import annotations

import itertools

import numpy
import pytest

import gpuops
from backends import BACKENDS


def _pool(backend, name, x, gy, **params):
    with backend.active():
        dx = backend.asarray(x)
        y = getattr(gpuops, name)(dx, **params)
        g = getattr(gpuops, f"{name}_wrt_x1")(dx, y, backend.asarray(gy), **params)
        return backend.to_numpy(y), backend.to_numpy(g)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_ties_send_the_gradient_to_the_first_maximum(backend, dtype):
    x = numpy.ones((1, 1, 4, 4), dtype)
    gy = numpy.arange(1, 10, dtype=dtype).reshape(1, 1, 3, 3)
    y, g = _pool(backend, "max_pool2d", x, gy, kernel_size=2, stride=1)
    numpy.testing.assert_array_equal(y, numpy.ones((1, 1, 3, 3)))
    expected = numpy.zeros((4, 4))
    expected[:3, :3] = gy[0, 0]  # window (oh, ow) starts at (oh, ow): its first element
    numpy.testing.assert_array_equal(g[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_overlapping_windows_sum_on_a_shared_maximum(backend):
    x = numpy.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0
    gy = numpy.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    _, g = _pool(backend, "max_pool2d", x, gy, kernel_size=2, stride=1)
    expected = numpy.zeros((3, 3))
    expected[1, 1] = 10.0
    numpy.testing.assert_array_equal(g[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("fill", [-1.0, -numpy.inf])
def test_padding_is_never_the_maximum(backend, fill):
    x = numpy.full((1, 1, 2, 2), fill)
    gy = numpy.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y, g = _pool(backend, "max_pool2d", x, gy, kernel_size=2, padding=1, stride=1)
    numpy.testing.assert_array_equal(y, numpy.full((1, 1, 3, 3), fill))
    # each window's first real element: (0,0) for windows (0,0) (0,1) (1,0) (1,1), ...
    gy2 = gy[0, 0]
    expected = [[gy2[0, 0] + gy2[0, 1] + gy2[1, 0] + gy2[1, 1], gy2[0, 2] + gy2[1, 2]],
                [gy2[2, 0] + gy2[2, 1], gy2[2, 2]]]
    numpy.testing.assert_array_equal(g[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_nan_propagates_and_takes_the_gradient(backend):
    x = numpy.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = numpy.nan
    gy = numpy.ones((1, 1, 2, 2))
    y, g = _pool(backend, "max_pool2d", x, gy, kernel_size=2)
    assert numpy.isnan(y[0, 0, 0, 0]) and not numpy.isnan(y[0, 0, 1:, 1:]).any()
    assert g[0, 0, 0, 1] == 1.0 and g[0, 0, 1, 1] == 0.0


def _torch_cases():
    for (H, W), k, s, p in itertools.product([(5, 7), (6, 6), (1, 1), (4, 9)],
                                             [1, 2, 3, (2, 3)], [None, 1, 2, (1, 2), 3],
                                             [0, 1, (0, 1)]):
        kk = (k, k) if isinstance(k, int) else k
        pp = (p, p) if isinstance(p, int) else p
        if pp[0] > kk[0] // 2 or pp[1] > kk[1] // 2 or H + 2 * pp[0] < kk[0] \
                or W + 2 * pp[1] < kk[1]:
            continue
        yield (H, W), k, s, p


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_matches_pytorch(backend, name):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(0)
    cases = list(_torch_cases())
    if backend.name != "numpy":
        cases = cases[::7]  # the emulator is slow: a spread subset
    for (H, W), k, s, p in cases:
        x = rng.standard_normal((2, 2, H, W))
        x[0, 0] = numpy.round(x[0, 0])  # ties
        tx = torch.tensor(x, requires_grad=True)
        ty = getattr(torch.nn.functional, name)(tx, k, s, p)
        gy = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(gy))
        y, g = _pool(backend, name, x, gy, kernel_size=k, stride=s, padding=p)
        where = f"{name} H,W={H},{W} kernel={k} stride={s} padding={p}"
        numpy.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12,
                                      err_msg=where)
        numpy.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=where)
