"""Elementwise family: binary ops with broadcasting, per-axis ops, unary ops.

Kernels in cuda/elementwise.cu. Each public function validates its inputs with
:func:`gpuops.backend.prepare`, then runs the NumPy implementation or launches
the kernels through the backend's launcher. Gradients of broadcast inputs are
summed back to the input's shape (:func:`gpuops.reduction.sum_to_shape`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy

from . import _layout
from ..backend import Backend, check_shape, output, prepare
from ..kernels import BLOCK, contiguous, finish, grid_1d, result_buffer, scalar, size, suffix
from ..registry import register
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


# ---- binary ----------------------------------------------------------------

_NUMPY_BINARY = {"add": numpy.add, "sub": numpy.subtract, "mul": numpy.multiply,
                 "div": numpy.divide}


def _launch_broadcast(backend: Backend, kernel: str, leading: tuple, a: Array, b: Array,
                      y: Array) -> None:
    """Launch ``<kernel>_bcast``: ``leading`` arrays have y's shape and layout, ``a`` and
    ``b`` are read broadcast to it through strides (any layout, no copies up to 4 dims)."""
    shape = y.shape
    dims, strides = _layout.coalesce(shape, _layout.element_strides(y),
                                     _layout.broadcast_strides(a, shape),
                                     _layout.broadcast_strides(b, shape))
    packed = _layout.pad4(dims, *strides[1:])
    if packed is None:  # past 4 dims: materialize the broadcast operands
        xp = backend.xp
        a, b = (xp.ascontiguousarray(xp.broadcast_to(v, shape)) for v in (a, b))
        packed = (1, 1, y.size), ((0, 0, 0, 1), (0, 0, 0, 1))  # flat: index = i3
    (d1, d2, d3), (sa, sb) = packed
    args = (*leading, a, b, y, size(y.size), size(d1), size(d2), size(d3),
            *map(size, sa), *map(size, sb))
    backend.launcher.launch(FAMILY, f"{kernel}_bcast_{suffix(y.dtype)}",
                            grid_1d(backend.launcher, y.size), (BLOCK,), args)


def _binary(op: str, x1: Array, x2: Array, out: Array) -> Array:
    p = prepare(op, ("x1", "x2"), (x1, x2), scalars=("x2",))
    x1, x2 = p.arrays
    shape = _layout.broadcast_shape(op, x1.shape, x2.shape)
    out = output(op, p.backend, out, shape, p.dtype)
    if not p.backend.uses_kernels:
        return _NUMPY_BINARY[op](x1, x2, out=out)
    if out.size == 0:
        return out
    backend = p.backend
    target = result_buffer(backend, out, p.dtype)
    x1 = x1.astype(p.dtype, copy=False)
    x2 = x2.astype(p.dtype, copy=False)
    if x1.shape == shape == x2.shape and x1.flags.c_contiguous and x2.flags.c_contiguous:
        backend.launcher.launch(FAMILY, f"{op}_{suffix(p.dtype)}",
                                grid_1d(backend.launcher, out.size), (BLOCK,),
                                (x1, x2, target, size(out.size)))
    else:
        _launch_broadcast(backend, op, (), x1, x2, target)
    return finish(out, target)


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


def _div_wrt_x2_full(backend: Backend, x1: Array, x2: Array, gy: Array, shape: tuple,
                     out: Array | None) -> Array:
    """-gy * x1 / x2 / x2 over the broadcast shape (before summing to x2's shape),
    written into ``out`` when given (it then has the broadcast shape)."""
    if not backend.uses_kernels:
        fresh = out is None or _overlaps(out, x1, x2, gy)
        g = numpy.empty(shape, gy.dtype) if fresh else out
        numpy.multiply(gy, x1, out=g)
        g /= x2
        g /= x2
        numpy.negative(g, out=g)
        return g
    g = backend.xp.empty(shape, gy.dtype)
    if g.size:
        _launch_broadcast(backend, "div_wrt_x2", (contiguous(backend, gy, gy.dtype),),
                          x1, x2, g)
    return g


def _overlaps(out: Array, *inputs: Array) -> bool:
    """Whether ``out`` may share memory with an input (then a multi-pass NumPy
    gradient that writes ``out`` before reading every input needs a fresh buffer)."""
    return any(isinstance(x, numpy.ndarray) and numpy.may_share_memory(out, x) for x in inputs)


# d(x1 op x2)/dxk times gy, over the broadcast shape: built from the forward ops.
_BINARY_GRADS: dict[tuple[str, int], Callable] = {
    ("add", 1): lambda b, x1, x2, gy, shape, out: gy,
    ("add", 2): lambda b, x1, x2, gy, shape, out: gy,
    ("sub", 1): lambda b, x1, x2, gy, shape, out: gy,
    ("sub", 2): lambda b, x1, x2, gy, shape, out: neg(gy, out=out),
    ("mul", 1): lambda b, x1, x2, gy, shape, out: mul(gy, x2, out=out),
    ("mul", 2): lambda b, x1, x2, gy, shape, out: mul(gy, x1, out=out),
    ("div", 1): lambda b, x1, x2, gy, shape, out: div(gy, x2, out=out),
    ("div", 2): lambda b, x1, x2, gy, shape, out: _div_wrt_x2_full(b, x1, x2, gy, shape, out),
}


def _binary_grad(op: str, k: int, x1: Array, x2: Array, y: Array, gy: Array,
                 out: Array | None) -> Array:
    name = f"{op}_wrt_x{k}"
    p = prepare(name, ("x1", "x2", "y", "gy"), (x1, x2, y, gy), scalars=("x2",))
    x1, x2, y, gy = p.arrays
    shape = _layout.broadcast_shape(name, x1.shape, x2.shape)
    check_shape(name, "y", y, shape)
    check_shape(name, "gy", gy, shape)
    xk = (x1, x2)[k - 1]
    out = output(name, p.backend, out, xk.shape, xk.dtype)
    # Write straight into out when no sum over broadcast axes is needed.
    direct = xk.shape == shape and out.dtype == p.dtype
    full = _BINARY_GRADS[(op, k)](p.backend, x1, x2, gy, shape, out if direct else None)
    if full is out:
        return out
    return sum_to_shape(p.backend, full, out)


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


# ---- per-axis --------------------------------------------------------------

def _prepare_axis(op: str, names: tuple, values: tuple, axis: Any):
    p = prepare(op, names, values)
    x1, x2 = p.arrays[:2]
    if x1.ndim == 0:
        raise ValueError(f"{op}: x1 must have at least 1 dim, got shape {tuple(x1.shape)}")
    ax = _layout.normalize_axis(op, axis, x1.ndim)
    if x2.ndim != 1 or x2.shape[0] != x1.shape[ax]:
        raise ValueError(f"{op}: x2 must be 1-d of length x1.shape[{axis}] = {x1.shape[ax]}, "
                         f"got shape {tuple(x2.shape)}")
    return p, ax


def _channel_view(x2: Array, ndim: int, axis: int) -> Array:
    """x2 reshaped to broadcast along ``axis`` of an ``ndim``-d array."""
    shape = [1] * ndim
    shape[axis] = x2.shape[0]
    return x2.reshape(shape)


def _axis(op: str, x1: Array, x2: Array, axis: Any, out: Array | None) -> Array:
    name = f"axis_{op}"
    p, ax = _prepare_axis(name, ("x1", "x2"), (x1, x2), axis)
    x1, x2 = p.arrays
    out = output(name, p.backend, out, x1.shape, p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        return _NUMPY_BINARY[op](x1, _channel_view(x2, x1.ndim, ax), out=out)
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    inner = _layout.prod(x1.shape[ax + 1:])
    backend.launcher.launch(FAMILY, f"axis_{op}_{suffix(p.dtype)}",
                            grid_1d(backend.launcher, out.size), (BLOCK,),
                            (contiguous(backend, x1, p.dtype), contiguous(backend, x2, p.dtype),
                             target, size(out.size), size(x2.shape[0]), size(inner)))
    return finish(out, target)


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
_AXIS_WRT_X1 = {"add": None, "sub": None, "mul": axis_mul, "div": axis_div}

# gx2[c] = sum over all but ``axis`` of: gy, -gy, gy x1, -gy x1 / x2[c]^2.
_AXIS_WRT_X2_NUMPY: dict[str, Callable] = {
    "add": lambda x1, x2c, gy: gy,
    "sub": lambda x1, x2c, gy: -gy,
    "mul": lambda x1, x2c, gy: gy * x1,
    "div": lambda x1, x2c, gy: -gy * x1 / (x2c * x2c),
}


def _axis_grad(op: str, k: int, x1: Array, x2: Array, y: Array, gy: Array, axis: Any,
               out: Array | None) -> Array:
    name = f"axis_{op}_wrt_x{k}"
    p, ax = _prepare_axis(name, ("x1", "x2", "y", "gy"), (x1, x2, y, gy), axis)
    x1, x2, y, gy = p.arrays
    check_shape(name, "y", y, x1.shape)
    check_shape(name, "gy", gy, x1.shape)
    backend = p.backend
    if k == 1:
        out = output(name, backend, out, x1.shape, x1.dtype)
        forward = _AXIS_WRT_X1[op]
        if forward is None:
            out[...] = gy
            return out
        if out.dtype == p.dtype:
            return forward(gy, x2, axis=ax, out=out)
        out[...] = forward(gy, x2, axis=ax)
        return out
    out = output(name, backend, out, x2.shape, x2.dtype)
    if not backend.uses_kernels:
        axes = tuple(i for i in range(x1.ndim) if i != ax)
        full = _AXIS_WRT_X2_NUMPY[op](x1, _channel_view(x2, x1.ndim, ax), gy)
        return numpy.sum(full, axis=axes, out=out)
    channels = x2.shape[0]
    if channels == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    outer = _layout.prod(x1.shape[:ax])
    inner = _layout.prod(x1.shape[ax + 1:])
    backend.launcher.launch(
        FAMILY, f"axis_{op}_wrt_x2_{suffix(p.dtype)}",
        grid_1d(backend.launcher, channels, 1), (BLOCK,),
        (contiguous(backend, x1, p.dtype), contiguous(backend, x2, p.dtype),
         contiguous(backend, gy, p.dtype), target, size(outer), size(channels), size(inner)))
    return finish(out, target)


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


# ---- unary -----------------------------------------------------------------

def _times_gy(fill: Callable, sign: float = 1.0) -> Callable:
    """A NumPy gradient ``out = sign * gy * fill(x)`` computed in ``out``: no temporaries."""
    def grad(x: Array, y: Array, gy: Array, out: Array) -> None:
        fill(x, out=out)
        out *= gy
        if sign < 0:
            numpy.negative(out, out=out)
    return grad


def _sqrt_grad(x: Array, y: Array, gy: Array, out: Array) -> None:
    numpy.divide(gy, y, out=out)
    out *= 0.5  # gy / (2y), exactly


def _square_grad(x: Array, y: Array, gy: Array, out: Array) -> None:
    numpy.multiply(x, 2, out=out)
    out *= gy


# NumPy forward and gradient of each unary op; the gradients take (x, y, gy, out)
# and write out in one or more passes (the caller gives a fresh out when it overlaps).
_UNARY_NUMPY: dict[str, tuple[Callable, Callable]] = {
    "neg": (numpy.negative, lambda x, y, gy, out: numpy.negative(gy, out=out)),
    "exp": (numpy.exp, lambda x, y, gy, out: numpy.multiply(gy, y, out=out)),
    "log": (numpy.log, lambda x, y, gy, out: numpy.divide(gy, x, out=out)),
    "sqrt": (numpy.sqrt, _sqrt_grad),
    "square": (numpy.square, _square_grad),
    "abs": (numpy.abs, _times_gy(numpy.sign)),  # sign(0) = 0, sign(NaN) = NaN
    "sin": (numpy.sin, _times_gy(numpy.cos)),
    "cos": (numpy.cos, _times_gy(numpy.sin, sign=-1.0)),
}


def _unary(op: str, x1: Array, out: Array | None, *params: float) -> Array:
    p = prepare(op, ("x1",), (x1,))
    (x1,) = p.arrays
    out = output(op, p.backend, out, x1.shape, p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        if op == "pow":
            return numpy.power(x1, p.dtype.type(params[0]), out=out)
        return _UNARY_NUMPY[op][0](x1, out=out)
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    backend.launcher.launch(FAMILY, f"{op}_{suffix(p.dtype)}",
                            grid_1d(backend.launcher, out.size), (BLOCK,),
                            (contiguous(backend, x1, p.dtype), target,
                             *(scalar(p.dtype, v) for v in params), size(out.size)))
    return finish(out, target)


def _unary_grad(op: str, x1: Array, y: Array, gy: Array, out: Array | None) -> Array:
    name = f"{op}_wrt_x1"
    p = prepare(name, ("x1", "y", "gy"), (x1, y, gy))
    x1, y, gy = p.arrays
    check_shape(name, "y", y, x1.shape)
    check_shape(name, "gy", gy, x1.shape)
    out = output(name, p.backend, out, x1.shape, x1.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        target = numpy.empty_like(out) if _overlaps(out, x1, y, gy) else out
        _UNARY_NUMPY[op][1](x1, y, gy, target)
        return finish(out, target)
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    backend.launcher.launch(FAMILY, f"{op}_wrt_x1_{suffix(p.dtype)}",
                            grid_1d(backend.launcher, out.size), (BLOCK,),
                            tuple(contiguous(backend, v, p.dtype) for v in (x1, y, gy))
                            + (target, size(out.size)))
    return finish(out, target)


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


def _check_exponent(op: str, p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{op}: p must be a Python int or float, got {p!r}")
    return float(p)


def pow(x1: Array, *, p: float, out: Array | None = None) -> Array:  # noqa: A001
    """y = x1^p for a scalar exponent p."""
    return _unary("pow", x1, out, _check_exponent("pow", p))


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


def pow_wrt_x1(x1: Array, y: Array, gy: Array, *, p: float, out: Array | None = None) -> Array:
    """gy · p x^(p-1); 0 when p = 0."""
    name = "pow_wrt_x1"
    exponent = _check_exponent(name, p)
    prep = prepare(name, ("x1", "y", "gy"), (x1, y, gy))
    x1, y, gy = prep.arrays
    check_shape(name, "y", y, x1.shape)
    check_shape(name, "gy", gy, x1.shape)
    out = output(name, prep.backend, out, x1.shape, x1.dtype)
    backend = prep.backend
    if not backend.uses_kernels:
        if exponent == 0:
            out[...] = 0
            return out
        dt = prep.dtype.type
        target = numpy.empty_like(out) if _overlaps(out, x1, gy) else out
        numpy.power(x1, dt(exponent - 1), out=target)
        target *= dt(exponent)
        target *= gy
        return finish(out, target)
    if out.size == 0:
        return out
    target = result_buffer(backend, out, prep.dtype)
    backend.launcher.launch(FAMILY, f"pow_wrt_x1_{suffix(prep.dtype)}",
                            grid_1d(backend.launcher, out.size), (BLOCK,),
                            (contiguous(backend, x1, prep.dtype),
                             contiguous(backend, gy, prep.dtype), target,
                             scalar(prep.dtype, exponent), size(out.size)))
    return finish(out, target)


for _op in ("add", "sub", "mul", "div"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"], globals()[f"{_op}_wrt_x2"])
    register(FAMILY, globals()[f"axis_{_op}"], globals()[f"axis_{_op}_wrt_x1"],
             globals()[f"axis_{_op}_wrt_x2"])
for _op in ("neg", "exp", "log", "sqrt", "square", "abs", "sin", "cos", "pow"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"])
del _op
