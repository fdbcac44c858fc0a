"""Local response normalization across channels: ``lrn`` and its gradient.

Kernels in cuda/lrn.cu. The semantics of PyTorch's ``LocalResponseNorm`` /
``local_response_norm``, over axis 1 of an (N, C, ...) input (NCHW, NC, NCL, ...):

    s_c = k + (alpha / size) · Σ_{j ∈ W(c)} x_j²,   y_c = x_c · s_c^(-beta),
    W(c) = [c - size//2, c + (size-1)//2] ∩ [0, C)

(zero padding: size//2 channels before, (size-1)//2 after, the divisor always
``size``). The gradient (derivation in docs/operators.md):

    gx_c = gy_c · s_c^(-beta) - (2·alpha·beta / size) · x_c · Σ_{j: c ∈ W(j)} gy_j x_j s_j^(-beta-1)

Every float dtype: float16 and bfloat16 are computed in float32 (the window sums of x² too,
so x² past 65504 is fine in float16), alpha/beta/k as float32, one rounding of each result.
The kernels' gradient reads the rounded y in the cross term (y_j / s_j for x_j s_j^(-beta-1)).
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from .. import kernels
from ..backend import ALL_FLOAT_DTYPES
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args

__all__ = ["lrn", "lrn_wrt_x1"]

FAMILY = "lrn"
Array = Any


def _float(op: str, name: str, value: Any) -> float:
    """alpha, beta, k: a finite Python int or float (:func:`_args.finite_float`, whose
    TypeError reads "a Python int or float"; lrn's has always read "a Python float")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a Python float, got {value!r}")
    return _args.finite_float(op, name, value)


def _parameters(op: str, shape: tuple, size: Any, alpha: Any, beta: Any,
                k: Any) -> tuple[int, float, float, float]:
    """(size, alpha, beta, k) checked against the input's shape and normalized."""
    if len(shape) < 2:
        raise ValueError(f"{op}: x1 must have a channel axis (N, C, ...), got shape {shape}")
    window = _args.integer(op, "size", size, 1)
    alpha_f, beta_f, k_f = (_float(op, "alpha", alpha), _float(op, "beta", beta),
                            _float(op, "k", k))
    # k > 0 and alpha >= 0 keep s >= k > 0, so s^(-beta) is finite (no NaN/inf output)
    if k_f <= 0:
        raise ValueError(f"{op}: k must be > 0, got {k!r}")
    if alpha_f < 0:
        raise ValueError(f"{op}: alpha must be >= 0, got {alpha!r}")
    return window, alpha_f, beta_f, k_f


# ---- NumPy (the call protocol hands over an out that overlaps no input) -----------------

def _window_sum(v: Array, before: int, after: int) -> Array:
    """Σ over channels j ∈ [c - before, c + after] ∩ [0, C) of v[:, j], for every c."""
    total = numpy.zeros_like(v)
    C = v.shape[1]
    for d in range(-before, after + 1):  # total[:, c] += v[:, c + d]
        lo, hi = max(0, -d), min(C, C - d)
        if lo < hi:
            total[:, lo:hi] += v[:, lo + d:hi + d]
    return total


def _scale(x: Array, size: int, alpha: float, k: float) -> Array:
    """s = k + alpha/size · Σ_window x²."""
    dt = x.dtype.type
    return dt(k) + dt(alpha / size) * _window_sum(x * x, size // 2, (size - 1) // 2)


def _lrn_cpu(x: Array, y: Array, size: int, alpha: float, beta: float, k: float) -> None:
    numpy.multiply(x, _scale(x, size, alpha, k) ** x.dtype.type(-beta), out=y)


def _lrn_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, size: int, alpha: float,
                  beta: float, k: float) -> None:
    dt = numpy.result_type(x.dtype, y.dtype, gy.dtype).type  # the call's compute dtype
    x = x.astype(dt, copy=False)
    s = _scale(x, size, alpha, k)
    sb = s ** dt(-beta)
    # the channels j whose window contains c: [c - (size-1)//2, c + size//2]
    cross = _window_sum(gy * x * sb / s, (size - 1) // 2, size // 2)
    gx[...] = gy * sb - dt(2 * alpha * beta / size) * x * cross


# ---- kernels: lrn_<dtype>(x, y, n, C, inner, size, alpha, beta, k),
# lrn_wrt_x1_<dtype>(x, y, gy, gx, n, C, inner, size, alpha, beta, k); C and inner each
# with its fast-division magic word (kernels.fastdiv) ----------------------------------------

def _launch(call: Call, arrays: tuple, size: int, alpha: float, beta: float, k: float) -> None:
    x, result = arrays[0], arrays[-1]
    n = result.size
    call.launch_1d(call.op, n,
                   (*arrays, numpy.int64(n), *kernels.fastdiv(x.shape[1], n),
                    *kernels.fastdiv(math.prod(x.shape[2:]), n), numpy.int64(size),
                    call.scalar(alpha), call.scalar(beta), call.scalar(k)))


def _lrn_gpu(call: Call, x: Array, y: Array, size: int, alpha: float, beta: float,
             k: float) -> None:
    _launch(call, (x, y), size, alpha, beta, k)


def _lrn_grad_gpu(call: Call, x: Array, y: Array, gy: Array, gx: Array, size: int,
                  alpha: float, beta: float, k: float) -> None:
    # the kernel uses gy_j x_j s_j^(-beta-1) = gy_j y_j / s_j (one pow per element)
    _launch(call, (x, y, gy, gx), size, alpha, beta, k)


LRN = Signature("lrn", FAMILY, ("x1",), kernel_dtypes=ALL_FLOAT_DTYPES)
LRN_WRT_X1 = Signature("lrn_wrt_x1", FAMILY, ("x1", "y", "gy"), kernel_dtypes=ALL_FLOAT_DTYPES)


def lrn(x1: Array, *, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
        out: Array | None = None) -> Array:
    """y = x1 / (k + alpha/size · Σ_{window} x1²)^beta across channels (axis 1), the
    window of ``size`` channels centred on each channel (size//2 before, (size-1)//2
    after), zero-padded at the edges: PyTorch's ``LocalResponseNorm``."""
    call = LRN.bind(x1)
    (x,) = call.inputs
    params = _parameters(call.op, tuple(x.shape), size, alpha, beta, k)
    return call.run(out, tuple(x.shape), _lrn_cpu, _lrn_gpu, *params)


def lrn_wrt_x1(x1: Array, y: Array, gy: Array, *, size: int = 5, alpha: float = 1e-4,
               beta: float = 0.75, k: float = 1.0, out: Array | None = None) -> Array:
    """gx_c = gy_c s_c^-β - (2αβ/size) x_c Σ_{j: c ∈ window(j)} gy_j x_j s_j^(-β-1)."""
    call = LRN_WRT_X1.bind(x1, y, gy)
    x, y, gy = call.inputs
    params = _parameters(call.op, tuple(x.shape), size, alpha, beta, k)
    check_shape(call.op, "y", y, tuple(x.shape))
    check_shape(call.op, "gy", gy, tuple(x.shape))
    return call.run(out, tuple(x.shape), _lrn_grad_cpu, _lrn_grad_gpu, *params, dtype=x.dtype)


register(FAMILY, lrn, lrn_wrt_x1)
