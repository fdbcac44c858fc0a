"""Elementwise family: binary ops with broadcasting, per-axis ops, unary ops.

Kernels in cuda/elementwise.cu. The binary kernels read their operands through
strides, broadcast to the result's shape (a stride of 0 along a broadcast dim).
The gradient of a broadcast input is the gradient over the broadcast shape summed
back to the input's shape (:func:`gpuops.ops.reduction.sum_to_shape`).
"""
from __future__ import annotations

import functools
import operator
from typing import Any, Callable

import numpy

from ..backend import ALL_FLOAT_DTYPES, NUMPY
from ..call import TABLE, Call, Signature, check_shape
from ..kernels import BLOCK, fastdiv
from ..registry import register
from . import _args, _layout, _rows
from .reduction import sum_to_shape

__all__ = ["add", "sub", "mul", "div", "add_wrt_x1", "add_wrt_x2", "sub_wrt_x1", "sub_wrt_x2",
           "mul_wrt_x1", "mul_wrt_x2", "div_wrt_x1", "div_wrt_x2",
           "axis_add", "axis_sub", "axis_mul", "axis_div",
           "axis_add_wrt_x1", "axis_add_wrt_x2", "axis_sub_wrt_x1", "axis_sub_wrt_x2",
           "axis_mul_wrt_x1", "axis_mul_wrt_x2", "axis_div_wrt_x1", "axis_div_wrt_x2",
           "neg", "exp", "log", "sqrt", "square", "abs", "sin", "cos", "pow",
           "neg_wrt_x1", "exp_wrt_x1", "log_wrt_x1", "sqrt_wrt_x1", "square_wrt_x1",
           "abs_wrt_x1", "sin_wrt_x1", "cos_wrt_x1", "pow_wrt_x1", "pow_wrt_x2"]

FAMILY = "elementwise"
Array = Any
_i64 = numpy.int64  # sizes as the kernels take them

_NUMPY_BINARY = {"add": numpy.add, "sub": numpy.subtract, "mul": numpy.multiply,
                 "div": numpy.divide}

# Bytes per thread per access of the vectorized kernels (cuda/half.cuh: Vec16, map_elements;
# cuda/dropout.cu): 8 float16 / bfloat16, 4 float32, 2 float64 elements.
VECTOR_BYTES = 16


def launch_vectors(call: Call, kernel: str, n: int, args: tuple) -> None:
    """Launch a kernel that moves ``n`` elements in 16-byte vectors (a scalar tail, scalars
    for misaligned views): one grid-stride thread per vector."""
    per_vector = VECTOR_BYTES // call.dtype.itemsize
    call.launch_1d(kernel, -(-n // per_vector), args)


# ---- binary: y = x1 op x2 with broadcasting ------------------------------------------
# Kernels: <op>(a, b, y, n) on operands of y's shape, C-contiguous; <op>_bcast(..., a, b,
# y, n, d1, d2, d3, a0..a3, b0..b3) on operands of any layout, addressed through strides
# over y's (coalesced, at most 4-d) shape; each d comes with its fast-division magic word
# (kernels.fastdiv: the kernels unravel the flat index without 64-bit division).

def _launch_binary(call: Call, kernel: str, a: Array, b: Array, y: Array,
                   *leading: Array, scalars: tuple = ()) -> None:
    """y = a <kernel> b, ``a`` and ``b`` (any layout) broadcast to y's shape; ``leading``:
    C-contiguous operands of y's shape that the kernel takes first (``<kernel>_bcast`` only);
    ``scalars``: kernel scalars (``call.scalar``) that follow y."""
    a, b = (v.astype(call.dtype, copy=False) for v in (a, b))
    shape = y.shape
    if not leading and a.shape == shape == b.shape and a.flags.c_contiguous \
            and b.flags.c_contiguous:
        launch_vectors(call, kernel, y.size, (a, b, y, *scalars, _i64(y.size)))
        return
    dims, strides = _layout.coalesce(shape, _layout.element_strides(y),
                                     _layout.broadcast_strides(a, shape),
                                     _layout.broadcast_strides(b, shape))
    packed = _layout.pad4(dims, *strides[1:])
    if packed is None:  # past 4 dims: materialize the broadcast operands
        xp = call.xp
        a, b = (xp.ascontiguousarray(xp.broadcast_to(v, shape)) for v in (a, b))
        packed = (1, 1, y.size), ((0, 0, 0, 1), (0, 0, 0, 1))  # flat: index = i3
    (d1, d2, d3), (sa, sb) = packed
    call.launch_1d(f"{kernel}_bcast", y.size,
                   (*leading, a, b, y, *scalars, _i64(y.size),
                    *(v for d in (d1, d2, d3) for v in fastdiv(d, y.size)),
                    *map(_i64, sa), *map(_i64, sb)))


def _binary_gpu(call: Call, x1: Array, x2: Array, y: Array) -> None:
    _launch_binary(call, call.op, x1, x2, y)


# add and sub with alpha != 1: y = x1 ± alpha·x2 in one pass. NumPy writes alpha·x2 into y,
# then x1 ± y (no temporary); the kernels <op>_alpha take alpha as a scalar after y.
def _alpha_cpu(x1: Array, x2: Array, y: Array, op: str, alpha: Any) -> None:
    numpy.multiply(x2, alpha, out=y)
    _NUMPY_BINARY[op](x1, y, out=y)


def _alpha_gpu(call: Call, x1: Array, x2: Array, y: Array, op: str, alpha: Any) -> None:
    _launch_binary(call, f"{op}_alpha", x1, x2, y, scalars=(call.scalar(alpha),))


# Operands that may be a Python scalar: x2 of every binary op, x1 too for the
# non-commutative sub and div (sub(2.0, x), div(1.0, x)).
_SCALAR_OPERANDS = {"add": ("x2",), "sub": ("x1", "x2"), "mul": ("x2",), "div": ("x1", "x2")}
_OPERATOR = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
             "div": operator.truediv}


def _fused_binary(op: str) -> Callable:
    """The 16-bit fused form (gpuops.native.fused) of x1 op x2, and of _alpha_cpu's
    x1 op (x2 alpha) when the call passes (op, alpha)."""
    combine = _OPERATOR[op]
    return lambda x1, x2, *alpha: combine(x1, x2 * alpha[1] if alpha else x2)


_BINARY = {op: Signature(op, FAMILY, ("x1", "x2"), scalars=_SCALAR_OPERANDS[op], strided=True,
                     elementwise=True, kernel_dtypes=ALL_FLOAT_DTYPES, fused=_fused_binary(op))
           for op in _NUMPY_BINARY}


def _alpha(op: str, alpha: Any) -> float:
    """alpha: a finite Python int or float (PyTorch's add/sub alpha)."""
    return _args.finite_float(op, "alpha", alpha)


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _not_both_scalars(op: str, x1: Any, x2: Any) -> None:
    if _is_scalar(x1) and _is_scalar(x2):
        raise TypeError(f"{op}: x1 = {x1!r} and x2 = {x2!r} are both Python scalars; at least "
                        "one must be an array")


def _binary(op: str, x1: Array | float, x2: Array | float, out: Array | None,
            alpha: Any = 1) -> Array:
    scale = _alpha(op, alpha) if op in ("add", "sub") else 1.0
    _not_both_scalars(op, x1, x2)
    call = _BINARY[op].bind(x1, x2)
    x1, x2 = call.inputs
    shape = _layout.broadcast_shape(op, x1.shape, x2.shape)
    if scale == 1:
        return call.run(out, shape, _NUMPY_BINARY[op], _binary_gpu)
    return call.run(out, shape, _alpha_cpu, _alpha_gpu, op, call.scalar(scale))


def add(x1: Array, x2: Array | float, *, alpha: float = 1, out: Array | None = None) -> Array:
    """y = x1 + alpha·x2 with NumPy broadcasting (alpha: a finite Python int or float)."""
    return _binary("add", x1, x2, out, alpha)


def sub(x1: Array | float, x2: Array | float, *, alpha: float = 1,
        out: Array | None = None) -> Array:
    """y = x1 - alpha·x2 with NumPy broadcasting; x1 or x2 may be a Python scalar."""
    return _binary("sub", x1, x2, out, alpha)


def mul(x1: Array, x2: Array | float, *, out: Array | None = None) -> Array:
    """y = x1 * x2 with NumPy broadcasting."""
    return _binary("mul", x1, x2, out)


def div(x1: Array | float, x2: Array | float, *, out: Array | None = None) -> Array:
    """y = x1 / x2 with NumPy broadcasting; x1 or x2 may be a Python scalar."""
    return _binary("div", x1, x2, out)


# ---- binary gradients: the term d(x1 op x2)/dxk · gy over the broadcast shape, summed
# back to xk's shape. NumPy terms write into g (None: a new array) or return gy itself.

def _div_wrt_x2_cpu(x1: Array, x2: Array, gy: Array, g: Array | None) -> Array:
    g = numpy.multiply(gy, x1, out=g)
    g /= x2
    g /= x2
    return numpy.negative(g, out=g)


_TERM_CPU: dict[tuple[str, int], Callable] = {
    ("add", 1): lambda x1, x2, gy, g: gy,
    ("add", 2): lambda x1, x2, gy, g: gy,
    ("sub", 1): lambda x1, x2, gy, g: gy,
    ("sub", 2): lambda x1, x2, gy, g: numpy.negative(gy, out=g),
    ("mul", 1): lambda x1, x2, gy, g: numpy.multiply(gy, x2, out=g),
    ("mul", 2): lambda x1, x2, gy, g: numpy.multiply(gy, x1, out=g),
    ("div", 1): lambda x1, x2, gy, g: numpy.divide(gy, x2, out=g),
    ("div", 2): _div_wrt_x2_cpu,
}

# Kernel terms write g (C-contiguous, the call's dtype, the broadcast shape); x1, x2 and
# gy come in any layout. The terms gy itself (add, sub wrt x1) launch nothing.
_TERM_GPU: dict[tuple[str, int], Callable] = {
    ("sub", 2): lambda call, x1, x2, gy, g: launch_vectors(
        call, "neg", g.size, (call.contiguous(gy), g, _i64(g.size))),
    ("mul", 1): lambda call, x1, x2, gy, g: _launch_binary(call, "mul", gy, x2, g),
    ("mul", 2): lambda call, x1, x2, gy, g: _launch_binary(call, "mul", gy, x1, g),
    ("div", 1): lambda call, x1, x2, gy, g: _launch_binary(call, "div", gy, x2, g),
    ("div", 2): lambda call, x1, x2, gy, g: _launch_binary(call, "div_wrt_x2", x1, x2, g,
                                                           call.contiguous(gy)),
}


# add and sub with alpha != 1: d/dx2 is ±alpha·gy (NumPy: one multiply; kernels: scale);
# summed to a broadcast x2's shape with the factor in the same pass (one rounding).
_ALPHA_SIGN = {"add": 1, "sub": -1}


def _launch_scale(call: Call, x: Array, y: Array, factor: Any) -> None:
    launch_vectors(call, "scale", y.size,
                   (call.contiguous(x), y, call.scalar(factor), _i64(y.size)))


def _binary_grad_cpu(x1: Array, x2: Array, y: Array, gy: Array, gx: Array, term: tuple,
                     dtype: numpy.dtype, alpha: Any) -> None:
    # The term goes straight into gx when no sum is needed and gx has the compute dtype.
    direct = gx.shape == gy.shape and gx.dtype == dtype
    if alpha != 1 and term[1] == 2 and gx.shape != gy.shape:
        sum_to_shape(NUMPY, gy.astype(dtype, copy=False), gx, _ALPHA_SIGN[term[0]] * alpha)
        return
    if alpha != 1 and term[1] == 2:
        g = numpy.multiply(gy, _ALPHA_SIGN[term[0]] * alpha, out=gx if direct else None,
                           dtype=dtype)
    else:
        g = _TERM_CPU[term](x1, x2, gy, gx if direct else None)
    if g is not gx:
        sum_to_shape(NUMPY, g, gx)


def _term_call(call: Call, gx: Array, gy: Array, *operands: Array) -> tuple:
    """(call, g, operands) for a gradient term over gy's shape: g is gx when no sum
    follows, else a buffer summed into gx afterwards, of the accumulation dtype: in a
    16-bit call the term is computed by the float32 kernels on widened operands, so that
    gx is rounded once (after the float32 sum), as on the NumPy backend."""
    if gx.shape == gy.shape:
        return call, gx, operands
    acc = call.scalar(0.0).dtype
    if acc == call.dtype:
        return call, call.xp.empty(gy.shape, acc), operands
    wide = Call(call.signature, call.backend, acc, call.inputs)
    return wide, call.xp.empty(gy.shape, acc), tuple(
        x.astype(acc) if hasattr(x, "astype") else x for x in operands)


def _binary_grad_gpu(call: Call, x1: Array, x2: Array, y: Array, gy: Array, gx: Array,
                     term: tuple, dtype: numpy.dtype, alpha: Any) -> None:
    scaled = alpha != 1 and term[1] == 2
    if scaled and gx.shape != gy.shape:
        sum_to_shape(call.backend, gy.astype(call.dtype, copy=False), gx,
                     _ALPHA_SIGN[term[0]] * alpha)
        return
    if scaled:  # (gx has gy's shape)
        _launch_scale(call, gy, gx, _ALPHA_SIGN[term[0]] * alpha)
        return
    if term in _TERM_GPU:
        term_call, g, (x1, x2, gy) = _term_call(call, gx, gy, x1, x2, gy)
        _TERM_GPU[term](term_call, x1, x2, gy, g)
    else:
        g = gy.astype(call.dtype, copy=False)
    if g is not gx:
        sum_to_shape(call.backend, g, gx)


# The 16-bit fused forms of _TERM_CPU (over gy's shape: gradients that need no sum).
_FUSED_TERM: dict[tuple[str, int], Callable] = {
    ("add", 1): lambda x1, x2, gy: gy,
    ("add", 2): lambda x1, x2, gy: gy,
    ("sub", 1): lambda x1, x2, gy: gy,
    ("sub", 2): lambda x1, x2, gy: -gy,
    ("mul", 1): lambda x1, x2, gy: gy * x2,
    ("mul", 2): lambda x1, x2, gy: gy * x1,
    ("div", 1): lambda x1, x2, gy: gy / x2,
    ("div", 2): lambda x1, x2, gy: -(gy * x1 / x2 / x2),
}


def _sum_to(g: Array, gx: Array) -> None:
    sum_to_shape(NUMPY, g, gx)


def _fused_binary_grad(term: tuple) -> Callable:
    """_binary_grad_cpu's fused form: ±alpha·gy for x2 with alpha != 1, else the term
    (summed to a broadcast operand's shape by NumPy)."""
    def form(x1: Any, x2: Any, y: Any, gy: Any, _term: tuple, dtype: Any, alpha: Any) -> Any:
        summed = (x1, x2)[term[1] - 1].shape != gy.shape
        if alpha != 1 and term[1] == 2:
            return None if summed else gy * (_ALPHA_SIGN[term[0]] * alpha)
        g = _FUSED_TERM[term](x1, x2, gy)
        return g.reduced(_sum_to, gy.shape) if summed else g
    return form


_BINARY_GRAD = {(op, k): Signature(f"{op}_wrt_x{k}", FAMILY, ("x1", "x2", "y", "gy"),
                                   scalars=_SCALAR_OPERANDS[op], strided=True, elementwise=True,
                                   kernel_dtypes=ALL_FLOAT_DTYPES,
                                   fused=_fused_binary_grad((op, k)))
                for op in _NUMPY_BINARY for k in (1, 2)}


def _binary_grad(op: str, k: int, x1: Array | float, x2: Array | float, y: Array, gy: Array,
                 out: Array | None, alpha: Any = 1) -> Array:
    name = f"{op}_wrt_x{k}"
    scale = _alpha(name, alpha) if op in ("add", "sub") else 1.0
    _not_both_scalars(name, x1, x2)
    if k == 1 and _is_scalar(x1):
        raise TypeError(f"{name}: x1 = {x1!r} is a Python scalar, which has no gradient; "
                        f"pass it as an array to differentiate with respect to it")
    call = _BINARY_GRAD[(op, k)].bind(x1, x2, y, gy)
    x1, x2, y, gy = call.inputs
    shape = _layout.broadcast_shape(call.op, x1.shape, x2.shape)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    xk = (x1, x2)[k - 1]
    # NumPy computes in the dtype of the parameters: float32 for a 16-bit call
    return call.run(out, xk.shape, _binary_grad_cpu, _binary_grad_gpu, (op, k),
                    call.scalar(0.0).dtype, call.scalar(scale), dtype=xk.dtype)


def add_wrt_x1(x1: Array, x2: Array | float, y: Array, gy: Array, *, alpha: float = 1,
               out: Array | None = None) -> Array:
    """d(x1 + alpha·x2)/dx1 · gy = gy, summed over x1's broadcast axes."""
    return _binary_grad("add", 1, x1, x2, y, gy, out, alpha)


def add_wrt_x2(x1: Array, x2: Array | float, y: Array, gy: Array, *, alpha: float = 1,
               out: Array | None = None) -> Array:
    """d(x1 + alpha·x2)/dx2 · gy = alpha·gy, summed over x2's broadcast axes."""
    return _binary_grad("add", 2, x1, x2, y, gy, out, alpha)


def sub_wrt_x1(x1: Array, x2: Array | float, y: Array, gy: Array, *, alpha: float = 1,
               out: Array | None = None) -> Array:
    """d(x1 - alpha·x2)/dx1 · gy = gy, summed over x1's broadcast axes (x1 an array: a
    Python scalar x1 has no gradient, TypeError)."""
    return _binary_grad("sub", 1, x1, x2, y, gy, out, alpha)


def sub_wrt_x2(x1: Array | float, x2: Array | float, y: Array, gy: Array, *,
               alpha: float = 1, out: Array | None = None) -> Array:
    """d(x1 - alpha·x2)/dx2 · gy = -alpha·gy, summed over x2's broadcast axes."""
    return _binary_grad("sub", 2, x1, x2, y, gy, out, alpha)


def mul_wrt_x1(x1: Array, x2: Array | float, y: Array, gy: Array, *,
               out: Array | None = None) -> Array:
    """d(x1 x2)/dx1 · gy = gy x2, summed over x1's broadcast axes."""
    return _binary_grad("mul", 1, x1, x2, y, gy, out)


def mul_wrt_x2(x1: Array, x2: Array | float, y: Array, gy: Array, *,
               out: Array | None = None) -> Array:
    """d(x1 x2)/dx2 · gy = gy x1, summed over x2's broadcast axes."""
    return _binary_grad("mul", 2, x1, x2, y, gy, out)


def div_wrt_x1(x1: Array, x2: Array | float, y: Array, gy: Array, *,
               out: Array | None = None) -> Array:
    """d(x1 / x2)/dx1 · gy = gy / x2, summed over x1's broadcast axes (x1 an array: a
    Python scalar x1 has no gradient, TypeError)."""
    return _binary_grad("div", 1, x1, x2, y, gy, out)


def div_wrt_x2(x1: Array | float, x2: Array | float, y: Array, gy: Array, *,
               out: Array | None = None) -> Array:
    """d(x1 / x2)/dx2 · gy = -gy x1 / x2², summed over x2's broadcast axes."""
    return _binary_grad("div", 2, x1, x2, y, gy, out)


# ---- per-axis: y = x1 op x2[c], c the index along ``axis`` ------------------------------
# Kernels: axis_<op>(x1, x2, y, n, channels, inner) with x1 viewed as (outer, C, inner)
# (channels and inner with their fast-division magic words); axis_<op>_wrt_x2(x1, x2, gy,
# partial, outer * inner, channels, inner, chunk, splits): a block per (channel, chunk of
# `chunk` positions), then axis_wrt_x2_finish(partial, gx2, channels, splits) adds each
# channel's `splits` partial sums in order (deterministic, no atomics).

def _channel_view(x2: Array, ndim: int, axis: int) -> Array:
    """x2 reshaped to broadcast along ``axis`` of an ``ndim``-d array."""
    shape = [1] * ndim
    shape[axis] = x2.shape[0]
    return x2.reshape(shape)


def _check_axis(op: str, x1: Array, x2: Array, axis: Any) -> int:
    """``axis`` of x1 normalized, after checking that x2 holds one value per index along it."""
    if x1.ndim == 0:
        raise ValueError(f"{op}: x1 must have at least 1 dim, got shape {tuple(x1.shape)}")
    ax = _args.axis(op, axis, x1.ndim)
    if x2.ndim != 1 or x2.shape[0] != x1.shape[ax]:
        raise ValueError(f"{op}: x2 must be 1-d of length x1.shape[{axis}] = {x1.shape[ax]}, "
                         f"got shape {tuple(x2.shape)}")
    return ax


def _axis_cpu(x1: Array, x2: Array, y: Array, op: str, axis: int) -> None:
    _NUMPY_BINARY[op](x1, _channel_view(x2, x1.ndim, axis), out=y)


def _launch_axis(call: Call, op: str, x1: Array, x2: Array, y: Array, axis: int) -> None:
    call.launch_1d(f"axis_{op}", y.size, (x1, x2, y, _i64(y.size),
                                          *fastdiv(x2.shape[0], y.size),
                                          *fastdiv(_layout.prod(x1.shape[axis + 1:]), y.size)))


def _axis_gpu(call: Call, x1: Array, x2: Array, y: Array, op: str, axis: int) -> None:
    _launch_axis(call, op, x1, x2, y, axis)


_AXIS = {op: Signature(f"axis_{op}", FAMILY, ("x1", "x2"), kernel_dtypes=ALL_FLOAT_DTYPES,
                       fused=lambda x1, x2, op, axis: _OPERATOR[op](x1, x2.along(axis)))
         for op in _NUMPY_BINARY}


def _axis(op: str, x1: Array, x2: Array, axis: Any, out: Array | None) -> Array:
    call = _AXIS[op].bind(x1, x2)
    x1, x2 = call.inputs
    ax = _check_axis(call.op, x1, x2, axis)
    return call.run(out, x1.shape, _axis_cpu, _axis_gpu, op, ax)


def axis_add(x1: Array, x2: Array, *, axis: int = 1, out: Array | None = None) -> Array:
    """y = x1 + x2[c], c the index along ``axis`` (a bias per channel)."""
    return _axis("add", x1, x2, axis, out)


def axis_sub(x1: Array, x2: Array, *, axis: int = 1, out: Array | None = None) -> Array:
    """y = x1 - x2[c], c the index along ``axis``."""
    return _axis("sub", x1, x2, axis, out)


def axis_mul(x1: Array, x2: Array, *, axis: int = 1, out: Array | None = None) -> Array:
    """y = x1 * x2[c], c the index along ``axis`` (a scale per channel)."""
    return _axis("mul", x1, x2, axis, out)


def axis_div(x1: Array, x2: Array, *, axis: int = 1, out: Array | None = None) -> Array:
    """y = x1 / x2[c], c the index along ``axis``."""
    return _axis("div", x1, x2, axis, out)


# gx1 = gy (add, sub), gy * x2[c] (mul), gy / x2[c] (div): the forward ops on gy.
# gx2[c] = sum over all but ``axis`` of: gy, -gy, gy x1, -gy x1 / x2[c]^2.
_AXIS_WRT_X2_NUMPY: dict[str, Callable] = {
    "add": lambda x1, x2c, gy: gy,
    "sub": lambda x1, x2c, gy: -gy,
    "mul": lambda x1, x2c, gy: gy * x1,
    "div": lambda x1, x2c, gy: -gy * x1 / (x2c * x2c),
}


def _axis_grad_cpu(x1: Array, x2: Array, y: Array, gy: Array, g: Array, op: str, k: int,
                   axis: int) -> None:
    if k == 1 and op in ("add", "sub"):
        g[...] = gy
    elif k == 1:
        _axis_cpu(gy, x2, g, op, axis)
    else:
        axes = tuple(i for i in range(x1.ndim) if i != axis)
        full = _AXIS_WRT_X2_NUMPY[op](x1, _channel_view(x2, x1.ndim, axis), gy)
        numpy.sum(full, axis=axes, out=g)


def _axis_grad_gpu(call: Call, x1: Array, x2: Array, y: Array, gy: Array, g: Array, op: str,
                   k: int, axis: int) -> None:
    if k == 1 and op in ("add", "sub"):
        g[...] = gy
    elif k == 1:
        _launch_axis(call, op, gy, x2, g, axis)
    else:
        channels, inner = x2.shape[0], _layout.prod(x1.shape[axis + 1:])
        per_channel = _layout.prod(x1.shape[:axis]) * inner
        chunk, splits = _rows.split_reduction(call, channels, per_channel)
        partial = call.xp.empty(channels * splits, call.scalar(0.0).dtype)
        call.launch(f"axis_{op}_wrt_x2", call.grid_1d(channels * splits, 1), (BLOCK,),
                    (x1, x2, gy, partial, _i64(per_channel), _i64(channels),
                     *fastdiv(inner, per_channel), _i64(chunk),
                     *fastdiv(splits, channels * splits)))
        call.launch_1d("axis_wrt_x2_finish", channels, (partial, g, _i64(channels),
                                                        _i64(splits)))


_FUSED_AXIS_WRT_X2: dict[str, Callable] = {  # _AXIS_WRT_X2_NUMPY's terms
    "add": lambda x1, x2c, gy: gy,
    "sub": lambda x1, x2c, gy: -gy,
    "mul": lambda x1, x2c, gy: gy * x1,
    "div": lambda x1, x2c, gy: -gy * x1 / (x2c * x2c),
}


def _fused_axis_grad(x1: Any, x2: Any, y: Any, gy: Any, op: str, k: int, axis: int) -> Any:
    """_axis_grad_cpu's fused form: wrt x1 gy, or gy op x2 along axis; wrt x2 the term,
    summed over every axis but ``axis`` by NumPy."""
    if k == 1:
        return gy if op in ("add", "sub") else _OPERATOR[op](gy, x2.along(axis))
    axes = tuple(i for i in range(len(gy.shape)) if i != axis)
    term = _FUSED_AXIS_WRT_X2[op](x1, x2.along(axis), gy)
    return term.reduced(functools.partial(_sum_axes, axes), gy.shape)


def _sum_axes(axes: tuple, full: Array, g: Array) -> None:
    numpy.sum(full, axis=axes, out=g)


_AXIS_GRAD = {(op, k): Signature(f"axis_{op}_wrt_x{k}", FAMILY, ("x1", "x2", "y", "gy"),
                                 kernel_dtypes=ALL_FLOAT_DTYPES, fused=_fused_axis_grad)
              for op in _NUMPY_BINARY for k in (1, 2)}


def _axis_grad(op: str, k: int, x1: Array, x2: Array, y: Array, gy: Array, axis: Any,
               out: Array | None) -> Array:
    call = _AXIS_GRAD[(op, k)].bind(x1, x2, y, gy)
    x1, x2, y, gy = call.inputs
    ax = _check_axis(call.op, x1, x2, axis)
    check_shape(call.op, "y", y, x1.shape)
    check_shape(call.op, "gy", gy, x1.shape)
    xk = (x1, x2)[k - 1]
    return call.run(out, xk.shape, _axis_grad_cpu, _axis_grad_gpu, op, k, ax, dtype=xk.dtype)


def axis_add_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array, *, axis: int = 1,
                    out: Array | None = None) -> Array:
    """gy."""
    return _axis_grad("add", 1, x1, x2, y, gy, axis, out)


def axis_add_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array, *, axis: int = 1,
                    out: Array | None = None) -> Array:
    """Σ gy over every axis but ``axis``."""
    return _axis_grad("add", 2, x1, x2, y, gy, axis, out)


def axis_sub_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array, *, axis: int = 1,
                    out: Array | None = None) -> Array:
    """gy."""
    return _axis_grad("sub", 1, x1, x2, y, gy, axis, out)


def axis_sub_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array, *, axis: int = 1,
                    out: Array | None = None) -> Array:
    """-Σ gy over every axis but ``axis``."""
    return _axis_grad("sub", 2, x1, x2, y, gy, axis, out)


def axis_mul_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array, *, axis: int = 1,
                    out: Array | None = None) -> Array:
    """gy · x2[c]."""
    return _axis_grad("mul", 1, x1, x2, y, gy, axis, out)


def axis_mul_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array, *, axis: int = 1,
                    out: Array | None = None) -> Array:
    """Σ gy · x1 over every axis but ``axis``."""
    return _axis_grad("mul", 2, x1, x2, y, gy, axis, out)


def axis_div_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array, *, axis: int = 1,
                    out: Array | None = None) -> Array:
    """gy / x2[c]."""
    return _axis_grad("div", 1, x1, x2, y, gy, axis, out)


def axis_div_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array, *, axis: int = 1,
                    out: Array | None = None) -> Array:
    """-Σ gy · x1 / x2[c]² over every axis but ``axis``."""
    return _axis_grad("div", 2, x1, x2, y, gy, axis, out)


# ---- unary: y = f(x), gx = gy · f'(x) --------------------------------------------------
# Kernels: <op>(x, y, n) and <op>_wrt_x1(x, y, gy, gx, n).

def _times_gy(fill: Callable, sign: float = 1.0) -> Callable:
    """A NumPy gradient ``gx = sign * gy * fill(x)`` computed in ``gx``: no temporaries."""
    def grad(x: Array, y: Array, gy: Array, gx: Array) -> None:
        fill(x, out=gx)
        gx *= gy
        if sign < 0:
            numpy.negative(gx, out=gx)
    return grad


def _sqrt_grad(x: Array, y: Array, gy: Array, gx: Array) -> None:
    numpy.divide(gy, y, out=gx)
    gx *= 0.5  # gy / (2y), exactly


def _square_grad(x: Array, y: Array, gy: Array, gx: Array) -> None:
    numpy.multiply(x, 2, out=gx)
    gx *= gy


# NumPy forward f(x, y) and gradient g(x, y, gy, gx) of each unary op.
_UNARY_NUMPY: dict[str, tuple[Callable, Callable]] = {
    "neg": (numpy.negative, lambda x, y, gy, gx: numpy.negative(gy, out=gx)),
    "exp": (numpy.exp, lambda x, y, gy, gx: numpy.multiply(gy, y, out=gx)),
    "log": (numpy.log, lambda x, y, gy, gx: numpy.divide(gy, x, out=gx)),
    "sqrt": (numpy.sqrt, _sqrt_grad),
    "square": (numpy.square, _square_grad),
    "abs": (numpy.abs, _times_gy(numpy.sign)),  # sign(0) = 0, sign(NaN) = NaN
    "sin": (numpy.sin, _times_gy(numpy.cos)),
    "cos": (numpy.cos, _times_gy(numpy.sin, sign=-1.0)),
}


def _unary_gpu(call: Call, x: Array, y: Array) -> None:
    launch_vectors(call, call.op, y.size, (x, y, _i64(y.size)))


def _unary_grad_gpu(call: Call, x: Array, y: Array, gy: Array, gx: Array) -> None:
    launch_vectors(call, call.op, gx.size, (x, y, gy, gx, _i64(gx.size)))


# The 16-bit fused forms of the gradients (gpuops.native.fused): _UNARY_NUMPY's float32 math.
_FUSED_UNARY_GRAD: dict[str, Callable] = {
    "neg": lambda x, y, gy: -gy,
    "exp": lambda x, y, gy: gy * y,
    "log": lambda x, y, gy: gy / x,
    "sqrt": lambda x, y, gy: gy / y * 0.5,
    "square": lambda x, y, gy: x * 2 * gy,
    "abs": lambda x, y, gy: x.map(numpy.sign) * gy,
    "sin": lambda x, y, gy: x.map(numpy.cos) * gy,
    "cos": lambda x, y, gy: -(x.map(numpy.sin) * gy),
}
# The forwards: a table of the NumPy code's results, or (memory-bound NumPy loops, which a
# lookup per element would not keep up with) their float32 math.
_FUSED_UNARY: dict[str, Any] = {"neg": operator.neg, "abs": operator.abs,
                                "square": lambda x: x * x}
_UNARY = {op: Signature(op, FAMILY, ("x1",), elementwise=True, kernel_dtypes=ALL_FLOAT_DTYPES,
                        fused=_FUSED_UNARY.get(op, TABLE))
          for op in _UNARY_NUMPY}
_UNARY_GRAD = {op: Signature(f"{op}_wrt_x1", FAMILY, ("x1", "y", "gy"), elementwise=True,
                             kernel_dtypes=ALL_FLOAT_DTYPES, fused=_FUSED_UNARY_GRAD[op])
               for op in _UNARY_NUMPY}


def _unary(op: str, x1: Array, out: Array | None) -> Array:
    call = _UNARY[op].bind(x1)
    (x,) = call.inputs
    return call.run(out, x.shape, _UNARY_NUMPY[op][0], _unary_gpu)


def _unary_grad(op: str, x1: Array, y: Array, gy: Array, out: Array | None) -> Array:
    call = _UNARY_GRAD[op].bind(x1, y, gy)
    x, y, gy = call.inputs
    check_shape(call.op, "y", y, x.shape)
    check_shape(call.op, "gy", gy, x.shape)
    return call.run(out, x.shape, _UNARY_NUMPY[op][1], _unary_grad_gpu, dtype=x.dtype)


def neg(x1: Array, *, out: Array | None = None) -> Array:
    """y = -x1."""
    return _unary("neg", x1, out)


def exp(x1: Array, *, out: Array | None = None) -> Array:
    """y = e^x1."""
    return _unary("exp", x1, out)


def log(x1: Array, *, out: Array | None = None) -> Array:
    """y = ln x1 (NaN below 0, -inf at 0, as NumPy)."""
    return _unary("log", x1, out)


def sqrt(x1: Array, *, out: Array | None = None) -> Array:
    """y = √x1 (NaN below 0, as NumPy)."""
    return _unary("sqrt", x1, out)


def square(x1: Array, *, out: Array | None = None) -> Array:
    """y = x1²."""
    return _unary("square", x1, out)


def abs(x1: Array, *, out: Array | None = None) -> Array:  # noqa: A001 (public name)
    """y = |x1|."""
    return _unary("abs", x1, out)


def sin(x1: Array, *, out: Array | None = None) -> Array:
    """y = sin x1."""
    return _unary("sin", x1, out)


def cos(x1: Array, *, out: Array | None = None) -> Array:
    """y = cos x1."""
    return _unary("cos", x1, out)


def neg_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """-gy."""
    return _unary_grad("neg", x1, y, gy, out)


def exp_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · y (y = e^x)."""
    return _unary_grad("exp", x1, y, gy, out)


def log_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy / x."""
    return _unary_grad("log", x1, y, gy, out)


def sqrt_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy / (2y) (y = √x)."""
    return _unary_grad("sqrt", x1, y, gy, out)


def square_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """2 x gy."""
    return _unary_grad("square", x1, y, gy, out)


def abs_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · sign(x), 0 at x = 0."""
    return _unary_grad("abs", x1, y, gy, out)


def sin_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · cos x."""
    return _unary_grad("sin", x1, y, gy, out)


def cos_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """-gy · sin x."""
    return _unary_grad("cos", x1, y, gy, out)


# ---- pow: y = x1^p for a scalar keyword p, or y = x1^x2 for an exponent operand x2 ---------
# Scalar p: gx1 = gy · p x1^(p-1), 0 when p = 0. Kernels: pow(x, y, p, n) and
# pow_wrt_x1(x, gy, gx, p, n).
# Operand x2 (an array broadcast against x1, or a Python scalar), PyTorch's conventions:
# gx1 = gy · x2 x1^(x2-1), 0 where x2 = 0; gx2 = gy · y log x1, 0 where x1 = 0 and x2 >= 0.
# Kernels: pow_array(_bcast) like the binary ops, pow_array_wrt_x1_bcast(gy, a, b, g, ...)
# and pow_array_wrt_x2_bcast(gy, y, a, b, g, ...) over the broadcast shape.

def _exponent(op: str, p: Any) -> float:
    """p as a float: a Python int or float (any, inf and NaN too, as x ** p takes them)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{op}: p must be a Python int or float, got {p!r}")
    try:
        return float(p)
    except OverflowError:  # an int past the float range (10**400)
        raise ValueError(f"{op}: p is beyond the float range") from None


def _pow_cpu(x: Array, y: Array, p: Any) -> None:
    numpy.power(x, p, out=y)


def _pow_gpu(call: Call, x: Array, y: Array, p: Any) -> None:
    launch_vectors(call, "pow", y.size, (x, y, call.scalar(p), _i64(y.size)))


def _pow_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, p: Any, p_minus_1: Any) -> None:
    if p == 0:
        gx[...] = 0
        return
    numpy.power(x, p_minus_1, out=gx)
    gx *= p
    gx *= gy


def _pow_grad_gpu(call: Call, x: Array, y: Array, gy: Array, gx: Array, p: Any,
                  p_minus_1: Any) -> None:
    launch_vectors(call, "pow_wrt_x1", gx.size, (x, gy, gx, call.scalar(p), _i64(gx.size)))


def _pow_array_gpu(call: Call, x1: Array, x2: Array, y: Array) -> None:
    _launch_binary(call, "pow_array", x1, x2, y)


def _pow_array_term_cpu(k: int, x1: Array, x2: Array, y: Array, gy: Array, g: Array) -> None:
    """The gradient term wrt x<k> over the broadcast shape, into g (gy's shape)."""
    with numpy.errstate(divide="ignore", invalid="ignore"):
        if k == 1:
            numpy.power(x1, x2 - 1, out=g)
            g *= x2
            g *= gy
            numpy.copyto(g, 0, where=numpy.broadcast_to(x2 == 0, g.shape))
        else:
            numpy.log(x1, out=g)
            g *= y
            g *= gy
            numpy.copyto(g, 0, where=numpy.broadcast_to((x1 == 0) & (x2 >= 0), g.shape))


def _pow_array_grad_cpu(x1: Array, x2: Array, y: Array, gy: Array, gx: Array, k: int,
                        dtype: numpy.dtype) -> None:
    direct = gx.shape == gy.shape and gx.dtype == dtype
    g = gx if direct else numpy.empty(gy.shape, dtype)
    _pow_array_term_cpu(k, x1, x2, y, gy, g)
    if g is not gx:
        sum_to_shape(NUMPY, g, gx)


def _pow_array_grad_gpu(call: Call, x1: Array, x2: Array, y: Array, gy: Array, gx: Array,
                        k: int, dtype: numpy.dtype) -> None:
    call, g, (x1, x2, gy, y) = _term_call(call, gx, gy, x1, x2, gy, y)
    leading = (call.contiguous(gy),) if k == 1 else (call.contiguous(gy), call.contiguous(y))
    _launch_binary(call, f"pow_array_wrt_x{k}", x1, x2, g, *leading)
    if g is not gx:
        sum_to_shape(call.backend, g, gx)


def _pow_slope(x: Array, p: Any, p_minus_1: Any) -> Array:
    """p x^(p-1) as _pow_grad_cpu computes it (the table of its fused form)."""
    return numpy.power(x, p_minus_1) * p


_POW = Signature("pow", FAMILY, ("x1",), elementwise=True, kernel_dtypes=ALL_FLOAT_DTYPES,
                 fused=TABLE)
_POW_GRAD = Signature("pow_wrt_x1", FAMILY, ("x1", "y", "gy"), elementwise=True,
                      kernel_dtypes=ALL_FLOAT_DTYPES,
                      fused=lambda x, y, gy, p, p_minus_1: None if p == 0
                      else x.map(_pow_slope, p, p_minus_1) * gy)
_POW_ARRAY = Signature("pow", FAMILY, ("x1", "x2"), scalars=("x2",), strided=True,
                       elementwise=True, kernel_dtypes=ALL_FLOAT_DTYPES)
_POW_ARRAY_GRAD = {k: Signature(f"pow_wrt_x{k}", FAMILY, ("x1", "x2", "y", "gy"),
                                scalars=("x2",), strided=True, elementwise=True,
                                kernel_dtypes=ALL_FLOAT_DTYPES) for k in (1, 2)}


def _one_exponent(op: str, x2: Any, p: Any) -> None:
    """TypeError naming ``op`` unless exactly one of x2 and p is given."""
    if x2 is None and p is None:
        raise TypeError(f"{op}: p must be a Python int or float, got None (or give the "
                        "exponent as the operand x2)")
    if x2 is not None and p is not None:
        raise TypeError(f"{op}: give the exponent as the operand x2 or as the keyword p, "
                        "not both")


def pow(x1: Array, x2: Array | float | None = None, *, p: float | None = None,  # noqa: A001
        out: Array | None = None) -> Array:
    """y = x1^x2 (x2 an array broadcast against x1, or a Python scalar) or y = x1^p for a
    scalar keyword exponent p; exactly one of x2 and p."""
    _one_exponent("pow", x2, p)
    if p is not None:
        exponent = _exponent("pow", p)
        call = _POW.bind(x1)
        (x,) = call.inputs
        return call.run(out, x.shape, _pow_cpu, _pow_gpu, call.scalar(exponent))
    call = _POW_ARRAY.bind(x1, x2)
    base, exponent_array = call.inputs
    shape = _layout.broadcast_shape("pow", base.shape, exponent_array.shape)
    return call.run(out, shape, numpy.power, _pow_array_gpu)


def _pow_array_grad(k: int, x1: Array, x2: Array | float, y: Array, gy: Array,
                    out: Array | None) -> Array:
    call = _POW_ARRAY_GRAD[k].bind(x1, x2, y, gy)
    x1, x2, y, gy = call.inputs
    shape = _layout.broadcast_shape(call.op, x1.shape, x2.shape)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    xk = (x1, x2)[k - 1]
    return call.run(out, xk.shape, _pow_array_grad_cpu, _pow_array_grad_gpu, k,
                    call.scalar(0.0).dtype, dtype=xk.dtype)


def pow_wrt_x1(x1: Array, x2: Array | float | None = None, y: Array | None = None,
               gy: Array | None = None, *, p: float | None = None,
               out: Array | None = None) -> Array:
    """The exponent operand x2: pow_wrt_x1(x1, x2, y, gy) = gy · x2 x1^(x2-1), 0 where
    x2 = 0, summed over x1's broadcast axes. The keyword p: pow_wrt_x1(x1, y, gy, p=p) =
    gy · p x1^(p-1); 0 when p = 0."""
    if p is None:
        # pow_wrt_x1(x1, y, gy) without p: no exponent given
        _one_exponent("pow_wrt_x1", None if gy is None else x2, p)
        return _pow_array_grad(1, x1, x2, y, gy, out)
    if gy is None:  # pow_wrt_x1(x1, y, gy, p=p): the arrays after x1 are y and gy
        x2, y, gy = None, x2, y
    _one_exponent("pow_wrt_x1", x2, p)
    exponent = _exponent("pow_wrt_x1", p)
    call = _POW_GRAD.bind(x1, y, gy)
    x, y, gy = call.inputs
    check_shape(call.op, "y", y, x.shape)
    check_shape(call.op, "gy", gy, x.shape)
    return call.run(out, x.shape, _pow_grad_cpu, _pow_grad_gpu, call.scalar(exponent),
                    call.scalar(exponent - 1), dtype=x.dtype)


def pow_wrt_x2(x1: Array, x2: Array | float, y: Array, gy: Array, *, p: float | None = None,
               out: Array | None = None) -> Array:
    """gy · y log x1 (y = x1^x2), 0 where x1 = 0 and x2 >= 0, summed over x2's broadcast
    axes. Only for the exponent operand x2: the keyword p has no gradient (TypeError)."""
    if p is not None:
        raise TypeError(f"pow_wrt_x2: p = {p!r} is a keyword exponent, which has no gradient; "
                        "pass the exponent as the operand x2 to differentiate with respect to it")
    return _pow_array_grad(2, x1, x2, y, gy, out)


for _op in ("add", "sub", "mul", "div"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"], globals()[f"{_op}_wrt_x2"])
    register(FAMILY, globals()[f"axis_{_op}"], globals()[f"axis_{_op}_wrt_x1"],
             globals()[f"axis_{_op}_wrt_x2"])
for _op in ("neg", "exp", "log", "sqrt", "square", "abs", "sin", "cos"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"])
register(FAMILY, pow, pow_wrt_x1, pow_wrt_x2)
del _op
