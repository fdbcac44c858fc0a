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

from typing import Any

import numpy

from ..backend import HALF_DTYPES
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args, _math

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh",
           "relu_wrt_x1", "leaky_relu_wrt_x1", "sigmoid_wrt_x1", "tanh_wrt_x1"]

FAMILY = "activation"
Array = Any


# ---- NumPy: forward f(x, y, slope) and gradient g(x, y, gy, gx, slope) ------------------
# (the call protocol hands over an out that overlaps no input)

def _relu_cpu(x: Array, y: Array, slope: Any) -> None:
    numpy.maximum(x, 0, out=y)  # NaN stays NaN


def _relu_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    numpy.multiply(gy, x > 0, out=gx)


def _leaky_relu_cpu(x: Array, y: Array, slope: Any) -> None:
    numpy.multiply(x, slope, out=y)
    numpy.copyto(y, x, where=~(x < 0))  # x itself where x >= 0 (and where x is NaN)


def _leaky_relu_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    numpy.multiply(gy, slope, out=gx)
    numpy.copyto(gx, gy, where=x > 0, casting="same_kind")


def _sigmoid_cpu(x: Array, y: Array, slope: Any) -> None:
    _math.sigmoid(x, out=y)


def _sigmoid_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    numpy.multiply(gy, _math.logistic_slope(x, 1), out=gx)


def _tanh_cpu(x: Array, y: Array, slope: Any) -> None:
    numpy.tanh(x, out=y)


def _tanh_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    numpy.multiply(gy, 4 * _math.logistic_slope(x, 2), out=gx)


_CPU = {"relu": (_relu_cpu, _relu_grad_cpu), "leaky_relu": (_leaky_relu_cpu, _leaky_relu_grad_cpu),
        "sigmoid": (_sigmoid_cpu, _sigmoid_grad_cpu), "tanh": (_tanh_cpu, _tanh_grad_cpu)}


# ---- kernels: <op>_<dtype>(x, y, slope, n), <op>_wrt_x1_<dtype>(x, y, gy, gx, slope, n) ----

def _forward_gpu(call: Call, x: Array, y: Array, slope: Any) -> None:
    call.launch_1d(call.op, y.size, (x, y, call.scalar(slope), numpy.int64(y.size)))


def _gradient_gpu(call: Call, x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    call.launch_1d(call.op, gx.size, (x, y, gy, gx, call.scalar(slope), numpy.int64(gx.size)))


_FORWARD = {op: Signature(op, FAMILY, ("x1",), kernel_dtypes=HALF_DTYPES) for op in _CPU}
_GRADIENT = {op: Signature(f"{op}_wrt_x1", FAMILY, ("x1", "y", "gy"), kernel_dtypes=HALF_DTYPES)
             for op in _CPU}


def _forward(op: str, x1: Array, out: Array | None, slope: float = 0.0) -> Array:
    call = _FORWARD[op].bind(x1)
    (x,) = call.inputs
    return call.run(out, x.shape, _CPU[op][0], _forward_gpu, call.dtype.type(slope))


def _gradient(op: str, x1: Array, y: Array, gy: Array, out: Array | None,
              slope: float = 0.0) -> Array:
    call = _GRADIENT[op].bind(x1, y, gy)
    x, y, gy = call.inputs
    check_shape(call.op, "y", y, x.shape)
    check_shape(call.op, "gy", gy, x.shape)
    return call.run(out, x.shape, _CPU[op][1], _gradient_gpu, call.dtype.type(slope),
                    dtype=x.dtype)


def relu(x1: Array, *, out: Array | None = None) -> Array:
    """y = max(x1, 0) (NaN stays NaN)."""
    return _forward("relu", x1, out)


def leaky_relu(x1: Array, *, slope: float = 0.01, out: Array | None = None) -> Array:
    """y = x1 for x1 >= 0, slope · x1 below."""
    return _forward("leaky_relu", x1, out, _args.finite_float("leaky_relu", "slope", slope))


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
    return _gradient("leaky_relu", x1, y, gy, out, _args.finite_float("leaky_relu_wrt_x1", "slope", slope))


def sigmoid_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · σ'(x1) = gy · y (1 - y), computed from x1 as e/(1+e)², e = e^-|x1|."""
    return _gradient("sigmoid", x1, y, gy, out)


def tanh_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · (1 - y²), y = tanh x1, computed from x1 as 4e/(1+e)², e = e^-2|x1|."""
    return _gradient("tanh", x1, y, gy, out)


for _op in ("relu", "leaky_relu", "sigmoid", "tanh"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"])
del _op
