"""Local response normalization across channels: ``lrn`` and its gradient.

Kernels in cuda/lrn.cu. The semantics of PyTorch's ``LocalResponseNorm`` /
``local_response_norm``, over axis 1 of an (N, C, ...) input (NCHW, NC, NCL, ...):

    s_c = k + (alpha / size) · Σ_{j ∈ W(c)} x_j²,   y_c = x_c · s_c^(-beta),
    W(c) = [c - size//2, c + (size-1)//2] ∩ [0, C)

(zero padding: size//2 channels before, (size-1)//2 after, the divisor always
``size``). The gradient (derivation in docs/operators.md):

    gx_c = gy_c · s_c^(-beta) - (2·alpha·beta / size) · x_c · Σ_{j: c ∈ W(j)} gy_j x_j s_j^(-beta-1)
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from . import _layout
from ..backend import Backend, check_shape, output, prepare
from ..kernels import BLOCK, contiguous, finish, grid_1d, result_buffer, scalar, suffix
from ..kernels import size as i64
from ..registry import register

__all__ = ["lrn", "lrn_wrt_x1"]

FAMILY = "lrn"
Array = Any


def _check(op: str, shape: tuple, size: Any, alpha: Any, beta: Any, k: Any) -> None:
    if len(shape) < 2:
        raise ValueError(f"{op}: x1 must have a channel axis (N, C, ...), got shape {shape}")
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{op}: size must be an int, got {size!r}")
    if size < 1:
        raise ValueError(f"{op}: size must be >= 1, got {size}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{op}: {name} must be a Python float, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{op}: {name} must be finite, got {value!r}")
    # k > 0 and alpha >= 0 keep s >= k > 0, so s^(-beta) is finite (no NaN/inf output)
    if k <= 0:
        raise ValueError(f"{op}: k must be > 0, got {k!r}")
    if alpha < 0:
        raise ValueError(f"{op}: alpha must be >= 0, got {alpha!r}")


def _window_sum(v: numpy.ndarray, before: int, after: int) -> numpy.ndarray:
    """Σ over channels j ∈ [c - before, c + after] ∩ [0, C) of v[:, j], for every c."""
    total = numpy.zeros_like(v)
    C = v.shape[1]
    for d in range(-before, after + 1):  # total[:, c] += v[:, c + d]
        lo, hi = max(0, -d), min(C, C - d)
        if lo < hi:
            total[:, lo:hi] += v[:, lo + d:hi + d]
    return total


def _scale(x: numpy.ndarray, size: int, alpha: float, k: float) -> numpy.ndarray:
    """s = k + alpha/size · Σ_window x² (NumPy implementation)."""
    dt = x.dtype.type
    return dt(k) + dt(alpha / size) * _window_sum(x * x, size // 2, (size - 1) // 2)


def _launch(backend: Backend, kernel: str, arrays: tuple, target: Array, shape: tuple,
            size: int, alpha: float, beta: float, k: float) -> None:
    dt = target.dtype
    backend.launcher.launch(
        FAMILY, f"{kernel}_{suffix(dt)}", grid_1d(backend.launcher, target.size), (BLOCK,),
        (*arrays, target, i64(target.size), i64(shape[1]), i64(_layout.prod(shape[2:])),
         i64(size), scalar(dt, alpha), scalar(dt, beta), scalar(dt, k)))


def lrn(x1: Array, *, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
        out: Array | None = None) -> Array:
    """y = x1 / (k + alpha/size · Σ_{window} x1²)^beta across channels (axis 1), the
    window of ``size`` channels centred on each channel (size//2 before, (size-1)//2
    after), zero-padded at the edges: PyTorch's ``LocalResponseNorm``."""
    op = "lrn"
    p = prepare(op, ("x1",), (x1,))
    (x1,) = p.arrays
    _check(op, tuple(x1.shape), size, alpha, beta, k)
    out = output(op, p.backend, out, tuple(x1.shape), p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        s = _scale(x1, size, float(alpha), float(k))
        numpy.multiply(x1, s ** p.dtype.type(-beta), out=out)
        return out
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    _launch(backend, op, (contiguous(backend, x1, p.dtype),), target, tuple(x1.shape), size,
            float(alpha), float(beta), float(k))
    return finish(out, target)


def lrn_wrt_x1(x1: Array, y: Array, gy: Array, *, size: int = 5, alpha: float = 1e-4,
               beta: float = 0.75, k: float = 1.0, out: Array | None = None) -> Array:
    """gx_c = gy_c s_c^-β - (2αβ/size) x_c Σ_{j: c ∈ window(j)} gy_j x_j s_j^(-β-1)."""
    op = "lrn_wrt_x1"
    p = prepare(op, ("x1", "y", "gy"), (x1, y, gy))
    x1, y, gy = p.arrays
    _check(op, tuple(x1.shape), size, alpha, beta, k)
    check_shape(op, "y", y, tuple(x1.shape))
    check_shape(op, "gy", gy, tuple(x1.shape))
    out = output(op, p.backend, out, tuple(x1.shape), x1.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        dt = p.dtype.type
        x = x1.astype(p.dtype, copy=False)
        s = _scale(x, size, float(alpha), float(k))
        sb = s ** dt(-beta)
        # the channels j whose window contains c: [c - (size-1)//2, c + size//2]
        cross = _window_sum(gy * x * sb / s, (size - 1) // 2, size // 2)
        out[...] = gy * sb - dt(2 * alpha * beta / size) * x * cross
        return out
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    # the kernel uses gy_j x_j s_j^(-beta-1) = gy_j y_j / s_j (one pow per element)
    _launch(backend, op, tuple(contiguous(backend, v, p.dtype) for v in (x1, y, gy)),
            target, tuple(x1.shape), size, float(alpha), float(beta), float(k))
    return finish(out, target)


register(FAMILY, lrn, lrn_wrt_x1)
