"""lrn against PyTorch's local_response_norm (forward and backward) when PyTorch is
installed: pins the window convention (size//2 channels before, (size-1)//2 after); 16-bit
inputs whose squares leave float16's range."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS
from records.lrn import _grad, _ref


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("shape", [(2, 7, 3, 4), (3, 6, 1), (2, 5, 4)], ids=str)
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8])
def test_matches_pytorch(backend, shape, size):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(size)
    x = 3 * rng.standard_normal(shape)
    params = {"size": size, "alpha": 0.3, "beta": 0.75, "k": 2.0}
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.local_response_norm(tx, **params)
    gy = rng.standard_normal(shape)
    ty.backward(torch.tensor(gy))
    with backend.active():
        dx = backend.asarray(x)
        y = gpuops.lrn(dx, **params)
        g = gpuops.lrn_wrt_x1(dx, y, backend.asarray(gy), **params)
        y, g = backend.to_numpy(y), backend.to_numpy(g)
    numpy.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-13)
    numpy.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype,scale", [(numpy.dtype(numpy.float16), 300.0),
                                         (numpy.dtype(gpuops.bfloat16), 1e15)],
                         ids=["float16", "bfloat16"])
def test_sixteen_bit_window_sums_in_float32(backend, dtype, scale):
    """The window sums Σ x² are float32 in 16-bit calls: x near 300 in float16 (x² = 9e4
    passes float16's 65504) and 1e15 in bfloat16 (x² = 1e30, float32's range): y and gx
    within one rounding of the float64 reference on the rounded inputs (gx: plus one
    rounding of its scale, as the record: the kernels read the rounded y)."""
    rng = numpy.random.default_rng(11)
    x = (scale * rng.uniform(0.5, 1.5, (2, 6, 3)) * rng.choice([-1.0, 1.0], (2, 6, 3)))
    gy = rng.standard_normal(x.shape).astype(dtype).astype(numpy.float64)
    x = x.astype(dtype).astype(numpy.float64)
    params = {"size": 3, "alpha": 1.0, "beta": 0.75, "k": 1.0}
    y_want = _ref(x, **params)
    g_want = _grad(x, y_want, gy, **params)
    with backend.active():
        dx = backend.asarray(x, dtype=dtype)
        y = gpuops.lrn(dx, **params)
        g = gpuops.lrn_wrt_x1(dx, y, backend.asarray(gy, dtype=dtype), **params)
        y, g = backend.to_numpy(y), backend.to_numpy(g)
    u = 2.0 ** -11 if dtype == numpy.float16 else 2.0 ** -8
    assert y.dtype == dtype and g.dtype == dtype
    numpy.testing.assert_allclose(y.astype(numpy.float64), y_want, rtol=2 * u, atol=0)
    numpy.testing.assert_allclose(g.astype(numpy.float64), g_want, rtol=2 * u,
                                  atol=u * numpy.abs(g_want).max())
