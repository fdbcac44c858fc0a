"""softmax / log_softmax and their gradients over rows of several lengths: W lanes per row
(cols <= 16: 32 / W rows per warp), one warp per row (cols <= 1024) and one block per row
(longer: held in registers up to 4096 float32 columns, streamed past), the last axis and
axes that are not the last (the _axis kernels: one thread per (outer, inner) position, no
transposed copies). Baselines: the stable NumPy/CuPy expression and
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
    notes = {10: "16 lanes per row", 32: "warp per row", 1024: "warp per row",
             4096: "block, row in registers", 32768: "block, streamed"}
    for cols, note in notes.items():
        x = env.random((n // cols, cols), -4.0, 4.0)
        out.append(Case(f"softmax (n/{cols},{cols})", gpuops.softmax, (x,), 2 * x.nbytes,
                        _softmax, note=note))
    x = env.random((n // 1024, 1024), -4.0, 4.0)
    gy = env.random(x.shape)
    out.append(Case("log_softmax (n/1024,1024)", gpuops.log_softmax, (x,), 2 * 4 * n,
                    _log_softmax))
    xt = env.random((1024, n // 1024), -4.0, 4.0)
    out.append(Case("softmax axis=0 (1024,n/1024)", lambda u: gpuops.softmax(u, axis=0), (xt,),
                    2 * 4 * n, lambda m, u: _softmax(m, u, 0), note="axis kernel, inner n/1024"))
    x3 = env.random((n // 192, 64, 3), -4.0, 4.0)
    out.append(Case("softmax axis=1 (n/192,64,3)", lambda u: gpuops.softmax(u, axis=1), (x3,),
                    2 * x3.nbytes, lambda m, u: _softmax(m, u, 1),
                    note="axis kernel, inner 3"))
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
