"""The softmax family: softmax and log_softmax along any axis. Kernels in cuda/softmax.cu.

The kernels work on C-contiguous arrays seen as (outer, n, inner), n the softmax axis.
The last axis (inner = 1) goes to the row kernels (launch geometry:
:mod:`gpuops.ops._rows`: several short rows per warp, a warp per row, or a block per row
holding the row in registers when it fits); any other axis to the ``_axis`` kernels, one
thread per (outer, inner) position looping over the axis with inner-contiguous
(coalesced) loads, or for inner < 32 one warp per outer position reading its contiguous
n x inner block in runs of 32 // inner * inner elements: no transposed copies (before,
3x the traffic). Every float dtype on
every backend: float16 and bfloat16 are loaded (widened to float32), computed in float32
(sums too) and rounded once on store.

Numerics: m = max of the row is subtracted before exponentiating, so no finite
logits overflow (±1e4 included); log_softmax is (x - m) - log Σ e^(x - m), never
log of a softmax that underflowed to 0.

``dtype`` (PyTorch's option): x1 is cast to ``dtype`` first, and the result is computed
and returned in it (float32 from bfloat16 logits, say); the gradients take the y and gy
of that dtype and return gx in x1's dtype (the cast's own gradient casts back).

The gradients read the stored y (as PyTorch does), not x: in a 16-bit dtype y carries one
rounding (relative u = 2^-8 bfloat16, 2^-11 float16), so gx_i = y_i (gy_i - Σ y gy) is off
by up to u (|gx_i| + y_i max|gy|) (the row sum cancels), and log_softmax's gy_i - e^(y_i) Σ gy
by up to u s_i |log s_i| |Σ gy| <= u |Σ gy| / e: absolute errors, which the records'
16-bit tolerances are derived from. Computing in float32 from x instead would cost a
second exp pass over x per row; a float32 y (``dtype=float32``) avoids the rounding.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from ..backend import ALL_FLOAT_DTYPES
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args, _math, _rows

__all__ = ["softmax", "log_softmax", "softmax_wrt_x1", "log_softmax_wrt_x1"]

FAMILY = "softmax"
Array = Any


# ---- NumPy: forward f(x, y, axis), gradient g(y, gy, gx, axis) ----------------------------
# (the call protocol hands over an out that overlaps no input)

def _softmax_cpu(x: Array, y: Array, axis: int) -> None:
    numpy.subtract(x, x.max(axis=axis, keepdims=True), out=y)  # e^(x - m) / Σ e^(x - m)
    numpy.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)


def _log_softmax_cpu(x: Array, y: Array, axis: int) -> None:
    shifted, total = _math.log_sum_exp_parts(x, axis)
    numpy.subtract(shifted, numpy.log(total), out=y)


def _softmax_grad_cpu(y: Array, gy: Array, gx: Array, axis: int) -> None:
    numpy.multiply(y, gy - (y * gy).sum(axis=axis, keepdims=True), out=gx)


def _log_softmax_grad_cpu(y: Array, gy: Array, gx: Array, axis: int) -> None:
    numpy.subtract(gy, numpy.exp(y) * gy.sum(axis=axis, keepdims=True), out=gx)


_CPU = {"softmax": (_softmax_cpu, _softmax_grad_cpu),
        "log_softmax": (_log_softmax_cpu, _log_softmax_grad_cpu)}


# ---- kernels: <op>_{lanes<W>,warp<E>,block}_<dtype>(x, y, rows, cols),
#               <op>_wrt_x1_{lanes<W>,warp<E>,block}_<dtype>(y, gy, gx, rows, cols) over the
#               last axis (or any axis followed only by 1s);
#               <op>_axis{,_warp}_<dtype>(x, y, outer, n, inner),
#               <op>_wrt_x1_axis{,_warp}_<dtype>(y, gy, gx, outer, n, inner) over the middle
#               axis of (outer, n, inner): _warp for 1 < inner < 32 (a warp per outer
#               position), else a thread per (outer, inner) position ---------------------

def _rows_gpu(call: Call, *arrays: Array) -> None:
    """Run the kernel of ``call.op`` on ``arrays`` (inputs, then the result; all of one
    C-contiguous shape) along ``axis``, the last argument."""
    *inputs, result, axis = arrays
    n = result.shape[axis]
    inner = math.prod(result.shape[axis + 1:])
    outer = result.size // (n * inner) if n else 0
    if not outer:
        return
    if inner == 1:  # the axis is the rows' last: no index arithmetic
        _rows.launch(call, call.op, outer, n, (*inputs, result), groups=True,
                     arrays=len(inputs))
    else:
        args = (*inputs, result, numpy.int64(outer), numpy.int64(n), numpy.int64(inner))
        if inner < 32:  # a warp per outer position: its n x inner block is contiguous
            warps = _rows.WARPS_PER_BLOCK
            call.launch(f"{call.op}_axis_warp", (max(1, min(math.ceil(outer / warps),
                                                            call.max_blocks)),),
                        (32 * warps,), args)
        else:  # a thread per (outer, inner) position: warps read 32 consecutive positions
            call.launch_1d(f"{call.op}_axis", outer * inner, args)


_FORWARD = {op: Signature(op, FAMILY, ("x1",), kernel_dtypes=ALL_FLOAT_DTYPES) for op in _CPU}
_GRADIENT = {op: Signature(f"{op}_wrt_x1", FAMILY, ("x1", "y", "gy"),
                           kernel_dtypes=ALL_FLOAT_DTYPES) for op in _CPU}
# x1 before its cast to ``dtype``: any float dtype on any backend
_CAST_INPUT = {name: Signature(name, FAMILY, ("x1",), dtypes=ALL_FLOAT_DTYPES)
               for op in _CPU for name in (op, f"{op}_wrt_x1")}


def _cast_dtype(op: str, x1: Array, dtype: Any, signature: Signature) -> tuple[Call, Any]:
    """x1 checked (any float dtype, any backend: it is cast first), and ``dtype`` checked:
    float16, bfloat16, float32 or float64, where ``signature`` computes it on x1's backend."""
    try:
        dt = numpy.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt not in ALL_FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be None, float16, bfloat16, float32 or float64, "
                        f"got {dtype!r}")
    call = _CAST_INPUT[op].bind(x1)
    allowed = signature.kernel_dtypes if call.uses_kernels else signature.dtypes
    if dt not in allowed:
        raise TypeError(f"{op}: dtype {dt} is not computed on the {call.backend.name} "
                        f"backend; expected one of "
                        f"{', '.join(str(d) for d in sorted(allowed, key=str))}")
    return call, dt


def _softmax_axis(call: Call, x: Array, axis: Any) -> int:
    if x.ndim == 0:
        raise ValueError(f"{call.op}: x1 must have at least 1 dim, got shape {tuple(x.shape)}")
    return _args.axis(call.op, axis, x.ndim)


def _forward(op: str, x1: Array, axis: Any, dtype: Any, out: Array | None) -> Array:
    if dtype is not None:  # PyTorch: x1 cast to dtype first
        cast, dt = _cast_dtype(op, x1, dtype, _FORWARD[op])
        x1 = cast.inputs[0].astype(dt, copy=False)
    call = _FORWARD[op].bind(x1)
    (x,) = call.inputs
    ax = _softmax_axis(call, x, axis)
    return call.run(out, x.shape, _CPU[op][0], _rows_gpu, ax)


def _gradient(op: str, x1: Array, y: Array, gy: Array, axis: Any, dtype: Any,
              out: Array | None) -> Array:
    x_dtype = None
    if dtype is not None:
        # only x1's shape is read: a stand-in of the cast dtype (no memory, no copy)
        cast, dt = _cast_dtype(f"{op}_wrt_x1", x1, dtype, _GRADIENT[op])
        x_dtype = x1.dtype
        x1 = cast.xp.broadcast_to(cast.xp.zeros((), dt), x1.shape)
    call = _GRADIENT[op].bind(x1, y, gy)
    x, y, gy = call.inputs
    ax = _softmax_axis(call, x, axis)
    check_shape(call.op, "y", y, x.shape)
    check_shape(call.op, "gy", gy, x.shape)
    # the gradients read y and gy only
    return call.run(out, x.shape, _CPU[op][1], _rows_gpu, ax,
                    dtype=x.dtype if x_dtype is None else x_dtype, inputs=(y, gy))


def softmax(x1: Array, *, axis: int = -1, dtype: Any = None,
            out: Array | None = None) -> Array:
    """y = e^x1 / Σ e^x1 along ``axis``, computed as e^(x - m) / Σ e^(x - m), m the max."""
    return _forward("softmax", x1, axis, dtype, out)


def log_softmax(x1: Array, *, axis: int = -1, dtype: Any = None,
                out: Array | None = None) -> Array:
    """y = x1 - log Σ e^x1 along ``axis``, computed as (x - m) - log Σ e^(x - m)."""
    return _forward("log_softmax", x1, axis, dtype, out)


def softmax_wrt_x1(x1: Array, y: Array, gy: Array, *, axis: int = -1, dtype: Any = None,
                   out: Array | None = None) -> Array:
    """gx = y · (gy - Σ y·gy) along ``axis`` (the Jacobian dy_i/dx_j = y_i (δ_ij - y_j)
    applied to gy, without forming it)."""
    return _gradient("softmax", x1, y, gy, axis, dtype, out)


def log_softmax_wrt_x1(x1: Array, y: Array, gy: Array, *, axis: int = -1, dtype: Any = None,
                       out: Array | None = None) -> Array:
    """gx = gy - e^y · Σ gy along ``axis`` (e^y is the softmax)."""
    return _gradient("log_softmax", x1, y, gy, axis, dtype, out)


register(FAMILY, softmax, softmax_wrt_x1)
register(FAMILY, log_softmax, log_softmax_wrt_x1)
