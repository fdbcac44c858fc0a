"""lrn against PyTorch's local_response_norm (forward and backward) when PyTorch is
installed: pins the window convention (size//2 channels before, (size-1)//2 after)."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS


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
