"""lrn (size 5, AlexNet parameters) forward, and forward + backward, over NCHW. The issue's
bar: forward + backward >= 3x PyTorch's ``local_response_norm`` (a composite of several
kernels, backward through autograd). ``bytes``: forward reads x and writes y; forward +
backward adds reading x and gy and writing gx. Baselines: the composite in NumPy/CuPy
(square, zero-pad, window sum of shifted slices, power) and PyTorch."""
from __future__ import annotations

import gpuops

from .harness import Case, Env

PARAMS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
SHAPE_CHW = (96, 55, 55)


def _window_sum(m, v, before, after):
    C = v.shape[1]
    padded = m.pad(v, ((0, 0), (before, after), (0, 0), (0, 0)))
    acc = padded[:, 0:C]
    for d in range(1, before + after + 1):
        acc = acc + padded[:, d:d + C]
    return acc


def _forward(m, u):
    if m.__name__ == "torch":
        return m.nn.functional.local_response_norm(u, **PARAMS)
    size, alpha, beta, k = PARAMS["size"], PARAMS["alpha"], PARAMS["beta"], PARAMS["k"]
    s = k + alpha / size * _window_sum(m, u * u, size // 2, (size - 1) // 2)
    return u * s ** -beta


def _forward_backward(m, u, g):
    if m.__name__ == "torch":
        t = u.detach().requires_grad_()
        m.nn.functional.local_response_norm(t, **PARAMS).backward(g)
        return t.grad
    size, alpha, beta, k = PARAMS["size"], PARAMS["alpha"], PARAMS["beta"], PARAMS["k"]
    s = k + alpha / size * _window_sum(m, u * u, size // 2, (size - 1) // 2)
    sb = s ** -beta
    cross = _window_sum(m, g * u * sb / s, (size - 1) // 2, size // 2)
    return g * sb - 2 * alpha * beta / size * u * cross


def _gpuops_forward_backward(u, g):
    return gpuops.lrn_wrt_x1(u, gpuops.lrn(u, **PARAMS), g, **PARAMS)


def cases(env: Env) -> list[Case]:
    c, h, w = SHAPE_CHW
    n = max(1, env.size // (c * h * w))
    x = env.random((n, c, h, w))
    gy = env.random(x.shape)
    tag = f"({n},{c},{h},{w}) size=5"
    return [
        Case(f"lrn {tag}", lambda u: gpuops.lrn(u, **PARAMS), (x,), 2 * 4 * x.size, _forward),
        Case(f"lrn forward+backward {tag}", _gpuops_forward_backward, (x, gy), 5 * 4 * x.size,
             _forward_backward, note="2 kernels; torch: composite + autograd"),
    ]
