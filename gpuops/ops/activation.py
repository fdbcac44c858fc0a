"""Activations: relu, leaky_relu, sigmoid, tanh. Kernels in cuda/activation.cu.

float32/float64 everywhere; float16 too where the kernels compute (CuPy, the
emulator), loaded as half, computed in float32, rounded on store.

The gradients read x (y is accepted, per the API, and unused): relu'(0) = 0 and
leaky_relu'(0) = slope (the conventions of PyTorch); σ'(x) = e/(1+e)², e = e^-|x|, and
tanh'(x) = 4e/(1+e)², e = e^-2|x|. Those are as cheap as y(1-y) and 1-y² on a
memory-bound GPU (same bytes read) and stay accurate in the tails, where a rounded y
equals 1 (|x| > 17 in float32, > 8 in float16) and y(1-y), 1-y² give 0.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy

from ..backend import FLOAT_DTYPES, HALF_DTYPES, check_shape, output, prepare
from ..kernels import BLOCK, contiguous, finish, grid_1d, result_buffer, scalar, size, suffix
from ..registry import register

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh",
           "relu_wrt_x1", "leaky_relu_wrt_x1", "sigmoid_wrt_x1", "tanh_wrt_x1"]

FAMILY = "activation"
Array = Any


def _sigmoid_numpy(x: Array, out: Array) -> Array:
    """σ(x) = e^min(x,0) / (1 + e^-|x|) (1/(1+e^-x) for x >= 0, e^x/(1+e^x) below):
    no overflow, full relative precision in both tails."""
    numpy.minimum(x, 0, out=out)
    numpy.exp(out, out=out)
    denominator = numpy.exp(-numpy.abs(x))
    denominator += 1
    return numpy.divide(out, denominator, out=out)


def _leaky_relu_numpy(x: Array, slope: Any, out: Array) -> Array:
    numpy.multiply(x, slope, out=out)
    numpy.copyto(out, x, where=~(x < 0))  # x itself where x >= 0 (and where x is NaN)
    return out


def _leaky_relu_grad_numpy(x: Array, gy: Array, slope: Any, out: Array) -> Array:
    numpy.multiply(gy, slope, out=out)
    numpy.copyto(out, gy, where=x > 0, casting="same_kind")
    return out


def _logistic_slope(x: Array, k: int) -> Array:
    """e/(1+e)² with e = e^(-k|x|): σ'(x) for k = 1, tanh'(x)/4 for k = 2."""
    e = numpy.exp(-k * numpy.abs(x))
    return e / numpy.square(1 + e)


# NumPy forward f(x, slope, out) and gradient g(x, y, gy, slope, out) of each activation.
_NUMPY: dict[str, tuple[Callable, Callable]] = {
    "relu": (lambda x, s, out: numpy.maximum(x, 0, out=out),  # NaN stays NaN
             lambda x, y, gy, s, out: numpy.multiply(gy, x > 0, out=out)),
    "leaky_relu": (lambda x, s, out: _leaky_relu_numpy(x, s, out),
                   lambda x, y, gy, s, out: _leaky_relu_grad_numpy(x, gy, s, out)),
    "sigmoid": (lambda x, s, out: _sigmoid_numpy(x, out),
                lambda x, y, gy, s, out: numpy.copyto(out, gy * _logistic_slope(x, 1))),
    "tanh": (lambda x, s, out: numpy.tanh(x, out=out),
             lambda x, y, gy, s, out: numpy.copyto(out, gy * 4 * _logistic_slope(x, 2))),
}


def _check_slope(op: str, slope: Any) -> float:
    if isinstance(slope, bool) or not isinstance(slope, (int, float)):
        raise TypeError(f"{op}: slope must be a Python int or float, got {slope!r}")
    if not math.isfinite(slope):
        raise ValueError(f"{op}: slope must be finite, got {slope!r}")
    return float(slope)


def _forward(op: str, x1: Array, out: Array | None, slope: float = 0.0) -> Array:
    p = prepare(op, ("x1",), (x1,), dtypes=FLOAT_DTYPES, gpu_dtypes=HALF_DTYPES)
    (x1,) = p.arrays
    out = output(op, p.backend, out, x1.shape, p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        _NUMPY[op][0](x1, p.dtype.type(slope), out)
        return out
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    backend.launcher.launch(FAMILY, f"{op}_{suffix(p.dtype)}",
                            grid_1d(backend.launcher, out.size), (BLOCK,),
                            (contiguous(backend, x1, p.dtype), target, scalar(p.dtype, slope),
                             size(out.size)))
    return finish(out, target)


def _gradient(op: str, x1: Array, y: Array, gy: Array, out: Array | None,
              slope: float = 0.0) -> Array:
    name = f"{op}_wrt_x1"
    p = prepare(name, ("x1", "y", "gy"), (x1, y, gy), dtypes=FLOAT_DTYPES,
                gpu_dtypes=HALF_DTYPES)
    x1, y, gy = p.arrays
    check_shape(name, "y", y, x1.shape)
    check_shape(name, "gy", gy, x1.shape)
    out = output(name, p.backend, out, x1.shape, x1.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        _NUMPY[op][1](x1, y, gy, p.dtype.type(slope), out)
        return out
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    backend.launcher.launch(FAMILY, f"{op}_wrt_x1_{suffix(p.dtype)}",
                            grid_1d(backend.launcher, out.size), (BLOCK,),
                            tuple(contiguous(backend, v, p.dtype) for v in (x1, y, gy))
                            + (target, scalar(p.dtype, slope), size(out.size)))
    return finish(out, target)


def relu(x1: Array, *, out: Array | None = None) -> Array:
    """y = max(x1, 0) (NaN stays NaN)."""
    return _forward("relu", x1, out)


def leaky_relu(x1: Array, *, slope: float = 0.01, out: Array | None = None) -> Array:
    """y = x1 for x1 >= 0, slope · x1 below."""
    return _forward("leaky_relu", x1, out, _check_slope("leaky_relu", slope))


def sigmoid(x1: Array, *, out: Array | None = None) -> Array:
    """y = 1 / (1 + e^-x1), evaluated without overflow for any x1."""
    return _forward("sigmoid", x1, out)


def tanh(x1: Array, *, out: Array | None = None) -> Array:
    """y = tanh x1."""
    return _forward("tanh", x1, out)


def relu_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy where x1 > 0, else 0 (0 at x1 = 0)."""
    return _gradient("relu", x1, y, gy, out)


def leaky_relu_wrt_x1(x1: Array, y: Array, gy: Array, *, slope: float = 0.01,
                      out: Array | None = None) -> Array:
    """gy where x1 > 0, else slope · gy (slope at x1 = 0)."""
    return _gradient("leaky_relu", x1, y, gy, out, _check_slope("leaky_relu_wrt_x1", slope))


def sigmoid_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · σ'(x1) = gy · y (1 - y), computed from x1 as e/(1+e)², e = e^-|x1|."""
    return _gradient("sigmoid", x1, y, gy, out)


def tanh_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · (1 - y²), y = tanh x1, computed from x1 as 4e/(1+e)², e = e^-2|x1|."""
    return _gradient("tanh", x1, y, gy, out)


for _op in ("relu", "leaky_relu", "sigmoid", "tanh"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"])
del _op
