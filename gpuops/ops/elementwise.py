"""Elementwise family: binary ops with broadcasting, per-axis ops, unary ops.

Kernels in cuda/elementwise.cu. The binary kernels read their operands through
strides, broadcast to the result's shape (a stride of 0 along a broadcast dim).
The gradient of a broadcast input is the gradient over the broadcast shape summed
back to the input's shape (:func:`gpuops.ops.reduction.sum_to_shape`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy

from ..backend import NUMPY
from ..call import Call, Signature, check_shape
from ..kernels import BLOCK
from ..registry import register
from . import _args, _layout
from .reduction import sum_to_shape

__all__ = ["add", "sub", "mul", "div", "add_wrt_x1", "add_wrt_x2", "sub_wrt_x1", "sub_wrt_x2",
           "mul_wrt_x1", "mul_wrt_x2", "div_wrt_x1", "div_wrt_x2",
           "axis_add", "axis_sub", "axis_mul", "axis_div",
           "axis_add_wrt_x1", "axis_add_wrt_x2", "axis_sub_wrt_x1", "axis_sub_wrt_x2",
           "axis_mul_wrt_x1", "axis_mul_wrt_x2", "axis_div_wrt_x1", "axis_div_wrt_x2",
           "neg", "exp", "log", "sqrt", "square", "abs", "sin", "cos", "pow",
           "neg_wrt_x1", "exp_wrt_x1", "log_wrt_x1", "sqrt_wrt_x1", "square_wrt_x1",
           "abs_wrt_x1", "sin_wrt_x1", "cos_wrt_x1", "pow_wrt_x1"]

FAMILY = "elementwise"
Array = Any
_i64 = numpy.int64  # sizes as the kernels take them

_NUMPY_BINARY = {"add": numpy.add, "sub": numpy.subtract, "mul": numpy.multiply,
                 "div": numpy.divide}


# ---- binary: y = x1 op x2 with broadcasting ------------------------------------------
# Kernels: <op>(a, b, y, n) on operands of y's shape, C-contiguous; <op>_bcast(..., a, b,
# y, n, d1, d2, d3, a0..a3, b0..b3) on operands of any layout, addressed through strides
# over y's (coalesced, at most 4-d) shape.

def _launch_binary(call: Call, kernel: str, a: Array, b: Array, y: Array,
                   *leading: Array) -> None:
    """y = a <kernel> b, ``a`` and ``b`` (any layout) broadcast to y's shape; ``leading``:
    C-contiguous operands of y's shape that the kernel takes first (``<kernel>_bcast`` only)."""
    a, b = (v.astype(call.dtype, copy=False) for v in (a, b))
    shape = y.shape
    if not leading and a.shape == shape == b.shape and a.flags.c_contiguous \
            and b.flags.c_contiguous:
        call.launch_1d(kernel, y.size, (a, b, y, _i64(y.size)))
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
                   (*leading, a, b, y, _i64(y.size), _i64(d1), _i64(d2), _i64(d3),
                    *map(_i64, sa), *map(_i64, sb)))


def _binary_gpu(call: Call, x1: Array, x2: Array, y: Array) -> None:
    _launch_binary(call, call.op, x1, x2, y)


_BINARY = {op: Signature(op, FAMILY, ("x1", "x2"), scalars=("x2",), strided=True)
           for op in _NUMPY_BINARY}


def _binary(op: str, x1: Array, x2: Array | float, out: Array | None) -> Array:
    call = _BINARY[op].bind(x1, x2)
    x1, x2 = call.inputs
    shape = _layout.broadcast_shape(op, x1.shape, x2.shape)
    return call.run(out, shape, _NUMPY_BINARY[op], _binary_gpu)


def add(x1: Array, x2: Array | float, *, out: Array | None = None) -> Array:
    """y = x1 + x2 with NumPy broadcasting."""
    return _binary("add", x1, x2, out)


def sub(x1: Array, x2: Array | float, *, out: Array | None = None) -> Array:
    """y = x1 - x2 with NumPy broadcasting."""
    return _binary("sub", x1, x2, out)


def mul(x1: Array, x2: Array | float, *, out: Array | None = None) -> Array:
    """y = x1 * x2 with NumPy broadcasting."""
    return _binary("mul", x1, x2, out)


def div(x1: Array, x2: Array | float, *, out: Array | None = None) -> Array:
    """y = x1 / x2 with NumPy broadcasting."""
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
    ("sub", 2): lambda call, x1, x2, gy, g: call.launch_1d(
        "neg", g.size, (call.contiguous(gy), g, _i64(g.size))),
    ("mul", 1): lambda call, x1, x2, gy, g: _launch_binary(call, "mul", gy, x2, g),
    ("mul", 2): lambda call, x1, x2, gy, g: _launch_binary(call, "mul", gy, x1, g),
    ("div", 1): lambda call, x1, x2, gy, g: _launch_binary(call, "div", gy, x2, g),
    ("div", 2): lambda call, x1, x2, gy, g: _launch_binary(call, "div_wrt_x2", x1, x2, g,
                                                           call.contiguous(gy)),
}


def _binary_grad_cpu(x1: Array, x2: Array, y: Array, gy: Array, gx: Array, term: tuple,
                     dtype: numpy.dtype) -> None:
    # The term goes straight into gx when no sum is needed and gx has the compute dtype.
    direct = gx.shape == gy.shape and gx.dtype == dtype
    g = _TERM_CPU[term](x1, x2, gy, gx if direct else None)
    if g is not gx:
        sum_to_shape(NUMPY, g, gx)


def _binary_grad_gpu(call: Call, x1: Array, x2: Array, y: Array, gy: Array, gx: Array,
                     term: tuple, dtype: numpy.dtype) -> None:
    if term in _TERM_GPU:
        g = gx if gx.shape == gy.shape else call.xp.empty(gy.shape, call.dtype)
        _TERM_GPU[term](call, x1, x2, gy, g)
    else:
        g = gy.astype(call.dtype, copy=False)
    if g is not gx:
        sum_to_shape(call.backend, g, gx)


_BINARY_GRAD = {(op, k): Signature(f"{op}_wrt_x{k}", FAMILY, ("x1", "x2", "y", "gy"),
                                   scalars=("x2",), strided=True)
                for op in _NUMPY_BINARY for k in (1, 2)}


def _binary_grad(op: str, k: int, x1: Array, x2: Array | float, y: Array, gy: Array,
                 out: Array | None) -> Array:
    call = _BINARY_GRAD[(op, k)].bind(x1, x2, y, gy)
    x1, x2, y, gy = call.inputs
    shape = _layout.broadcast_shape(call.op, x1.shape, x2.shape)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    xk = (x1, x2)[k - 1]
    return call.run(out, xk.shape, _binary_grad_cpu, _binary_grad_gpu, (op, k), call.dtype,
                    dtype=xk.dtype)


def add_wrt_x1(x1: Array, x2: Array | float, y: Array, gy: Array, *,
               out: Array | None = None) -> Array:
    """d(x1 + x2)/dx1 · gy = gy, summed over x1's broadcast axes."""
    return _binary_grad("add", 1, x1, x2, y, gy, out)


def add_wrt_x2(x1: Array, x2: Array | float, y: Array, gy: Array, *,
               out: Array | None = None) -> Array:
    """d(x1 + x2)/dx2 · gy = gy, summed over x2's broadcast axes."""
    return _binary_grad("add", 2, x1, x2, y, gy, out)


def sub_wrt_x1(x1: Array, x2: Array | float, y: Array, gy: Array, *,
               out: Array | None = None) -> Array:
    """d(x1 - x2)/dx1 · gy = gy, summed over x1's broadcast axes."""
    return _binary_grad("sub", 1, x1, x2, y, gy, out)


def sub_wrt_x2(x1: Array, x2: Array | float, y: Array, gy: Array, *,
               out: Array | None = None) -> Array:
    """d(x1 - x2)/dx2 · gy = -gy, summed over x2's broadcast axes."""
    return _binary_grad("sub", 2, x1, x2, y, gy, out)


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
    """d(x1 / x2)/dx1 · gy = gy / x2, summed over x1's broadcast axes."""
    return _binary_grad("div", 1, x1, x2, y, gy, out)


def div_wrt_x2(x1: Array, x2: Array | float, y: Array, gy: Array, *,
               out: Array | None = None) -> Array:
    """d(x1 / x2)/dx2 · gy = -gy x1 / x2², summed over x2's broadcast axes."""
    return _binary_grad("div", 2, x1, x2, y, gy, out)


# ---- per-axis: y = x1 op x2[c], c the index along ``axis`` ------------------------------
# Kernels: axis_<op>(x1, x2, y, n, channels, inner) with x1 viewed as (outer, C, inner);
# axis_<op>_wrt_x2(x1, x2, gy, gx2, outer, channels, inner): a block per channel.

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
    call.launch_1d(f"axis_{op}", y.size, (x1, x2, y, _i64(y.size), _i64(x2.shape[0]),
                                          _i64(_layout.prod(x1.shape[axis + 1:]))))


def _axis_gpu(call: Call, x1: Array, x2: Array, y: Array, op: str, axis: int) -> None:
    _launch_axis(call, op, x1, x2, y, axis)


_AXIS = {op: Signature(f"axis_{op}", FAMILY, ("x1", "x2")) for op in _NUMPY_BINARY}


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
        channels = x2.shape[0]
        call.launch(f"axis_{op}_wrt_x2", call.grid_1d(channels, 1), (BLOCK,),
                    (x1, x2, gy, g, _i64(_layout.prod(x1.shape[:axis])), _i64(channels),
                     _i64(_layout.prod(x1.shape[axis + 1:]))))


_AXIS_GRAD = {(op, k): Signature(f"axis_{op}_wrt_x{k}", FAMILY, ("x1", "x2", "y", "gy"))
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
    call.launch_1d(call.op, y.size, (x, y, _i64(y.size)))


def _unary_grad_gpu(call: Call, x: Array, y: Array, gy: Array, gx: Array) -> None:
    call.launch_1d(call.op, gx.size, (x, y, gy, gx, _i64(gx.size)))


_UNARY = {op: Signature(op, FAMILY, ("x1",)) for op in _UNARY_NUMPY}
_UNARY_GRAD = {op: Signature(f"{op}_wrt_x1", FAMILY, ("x1", "y", "gy")) for op in _UNARY_NUMPY}


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


# ---- pow: y = x^p for a scalar p; gx = gy · p x^(p-1), 0 when p = 0 ----------------------
# Kernels: pow(x, y, p, n) and pow_wrt_x1(x, gy, gx, p, n).

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
    call.launch_1d("pow", y.size, (x, y, call.scalar(p), _i64(y.size)))


def _pow_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, p: Any, p_minus_1: Any) -> None:
    if p == 0:
        gx[...] = 0
        return
    numpy.power(x, p_minus_1, out=gx)
    gx *= p
    gx *= gy


def _pow_grad_gpu(call: Call, x: Array, y: Array, gy: Array, gx: Array, p: Any,
                  p_minus_1: Any) -> None:
    call.launch_1d("pow_wrt_x1", gx.size, (x, gy, gx, call.scalar(p), _i64(gx.size)))


_POW = Signature("pow", FAMILY, ("x1",))
_POW_GRAD = Signature("pow_wrt_x1", FAMILY, ("x1", "y", "gy"))


def pow(x1: Array, *, p: float, out: Array | None = None) -> Array:  # noqa: A001
    """y = x1^p for a scalar exponent p."""
    exponent = _exponent("pow", p)
    call = _POW.bind(x1)
    (x,) = call.inputs
    return call.run(out, x.shape, _pow_cpu, _pow_gpu, call.dtype.type(exponent))


def pow_wrt_x1(x1: Array, y: Array, gy: Array, *, p: float, out: Array | None = None) -> Array:
    """gy · p x^(p-1); 0 when p = 0."""
    exponent = _exponent("pow_wrt_x1", p)
    call = _POW_GRAD.bind(x1, y, gy)
    x, y, gy = call.inputs
    check_shape(call.op, "y", y, x.shape)
    check_shape(call.op, "gy", gy, x.shape)
    dt = call.dtype.type
    return call.run(out, x.shape, _pow_grad_cpu, _pow_grad_gpu, dt(exponent), dt(exponent - 1),
                    dtype=x.dtype)


for _op in ("add", "sub", "mul", "div"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"], globals()[f"{_op}_wrt_x2"])
    register(FAMILY, globals()[f"axis_{_op}"], globals()[f"axis_{_op}_wrt_x1"],
             globals()[f"axis_{_op}_wrt_x2"])
for _op in ("neg", "exp", "log", "sqrt", "square", "abs", "sin", "cos", "pow"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"])
del _op
