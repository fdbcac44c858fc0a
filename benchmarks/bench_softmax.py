"""softmax / log_softmax and their gradients over rows of several lengths: one warp per
row (cols <= 1024) and one block per row (longer), the last axis and axis 0 (which
costs a transposed copy each way). Baselines: the stable NumPy/CuPy expression and
PyTorch's fused ``torch.softmax`` / ``log_softmax``. ``bytes``: x read once and y
written once (gradients: y and gy read, gx written)."""
from __future__ import annotations

import numpy

import gpuops

from .harness import Case, Env


def _is_torch(m) -> bool:
    return m.__name__ == "torch"


def _softmax(m, u, axis=-1):
    if _is_torch(m):
        return m.softmax(u, axis)
    e = m.exp(u - u.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(m, u, axis=-1):
    if _is_torch(m):
        return m.log_softmax(u, axis)
    s = u - u.max(axis=axis, keepdims=True)
    return s - m.log(m.exp(s).sum(axis=axis, keepdims=True))


def cases(env: Env) -> list[Case]:
    n = env.size
    out: list[Case] = []
    for cols in (32, 1024, 4096, 32768):
        x = env.random((n // cols, cols), -4.0, 4.0)
        out.append(Case(f"softmax (n/{cols},{cols})", gpuops.softmax, (x,), 2 * 4 * n,
                        _softmax, note="warp per row" if cols <= 1024 else "block per row"))
    x = env.random((n // 1024, 1024), -4.0, 4.0)
    gy = env.random(x.shape)
    out.append(Case("log_softmax (n/1024,1024)", gpuops.log_softmax, (x,), 2 * 4 * n,
                    _log_softmax))
    xt = env.random((1024, n // 1024), -4.0, 4.0)
    out.append(Case("softmax axis=0 (1024,n/1024)", lambda u: gpuops.softmax(u, axis=0), (xt,),
                    2 * 4 * n, lambda m, u: _softmax(m, u, 0), note="transposed copies"))
    y = gpuops.softmax(x)
    out.append(Case("softmax_wrt_x1 (n/1024,1024)", gpuops.softmax_wrt_x1, (x, y, gy), 3 * 4 * n,
                    lambda m, x, y, g: y * (g - (y * g).sum(axis=-1, keepdims=True))))
    ly = gpuops.log_softmax(x)
    out.append(Case("log_softmax_wrt_x1 (n/1024,1024)", gpuops.log_softmax_wrt_x1, (x, ly, gy),
                    3 * 4 * n,
                    lambda m, x, y, g: g - m.exp(y) * g.sum(axis=-1, keepdims=True)))
    if env.on_gpu:
        h = env.random((n // 1024, 1024), -4.0, 4.0, numpy.float16)
        out.append(Case("softmax f16 (n/1024,1024)", gpuops.softmax, (h,), 2 * 2 * n,
                        _softmax, note="float32 accumulation"))
    return out
