"""2-d pooling over NCHW: ``max_pool2d``, ``avg_pool2d`` and their gradients.

Kernels in cuda/pooling.cu. Semantics are PyTorch's defaults (floor-mode output size,
``count_include_pad=True``, ``dilation=1``):

- output size ``OH = (H + 2·ph - kh) // sh + 1`` (and likewise OW);
- max: padding counts as -inf (it is never the maximum: with ``padding <= kernel // 2``
  every window holds at least one input element); NaN propagates; the gradient goes to
  the *first* maximal element of each window in row-major order (ties: only the first
  gets it), summed over the windows that pick the same element;
- average: padding counts as 0 and the divisor is always ``kh·kw``.
"""
from __future__ import annotations

import functools
from typing import Any, Iterator, NamedTuple

import numpy

from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args

__all__ = ["max_pool2d", "avg_pool2d", "max_pool2d_wrt_x1", "avg_pool2d_wrt_x1"]

FAMILY = "pooling"
Array = Any


class _Geometry(NamedTuple):
    """Window (oh, ow) covers rows [oh·sh - ph, oh·sh - ph + kh) and columns
    [ow·sw - pw, ow·sw - pw + kw) of the input; the output is OH x OW."""
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    OH: int
    OW: int


def _geometry(op: str, shape: tuple, kernel_size: Any, stride: Any, padding: Any) -> _Geometry:
    """The windows, after validating the input shape and the parameters."""
    kh, kw = _args.pair(op, "kernel_size", kernel_size, 1)
    sh, sw = (kh, kw) if stride is None else _args.pair(op, "stride", stride, 1)
    ph, pw = _args.pair(op, "padding", padding, 0)
    if len(shape) != 4:
        raise ValueError(f"{op}: x1 must be 4-d (N, C, H, W), got shape {shape}")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{op}: padding {(ph, pw)} must be at most half the kernel size "
                         f"{(kh, kw)}")
    H, W = shape[2], shape[3]
    if H + 2 * ph < kh or W + 2 * pw < kw or H == 0 or W == 0:
        raise ValueError(f"{op}: input of height x width {H}x{W} with padding {(ph, pw)} is "
                         f"smaller than the kernel {(kh, kw)}")
    return _Geometry(kh, kw, sh, sw, ph, pw, (H + 2 * ph - kh) // sh + 1,
                     (W + 2 * pw - kw) // sw + 1)


# ---- NumPy: kh·kw passes over shifted strided slices of the padded input ----------------
# (the call protocol hands over an out that overlaps no input)

def _padded(x: Array, g: _Geometry, fill: float) -> Array:
    return numpy.pad(x, ((0, 0), (0, 0), (g.ph, g.ph), (g.pw, g.pw)), constant_values=fill)


def _offsets(g: _Geometry) -> Iterator[tuple]:
    """For each window offset (i, j), row-major: the slices of the padded input that
    hold element (i, j) of every window, an (N, C, OH, OW) strided view."""
    for i in range(g.kh):
        for j in range(g.kw):
            yield (slice(None), slice(None), slice(i, i + g.sh * (g.OH - 1) + 1, g.sh),
                   slice(j, j + g.sw * (g.OW - 1) + 1, g.sw))


def _pool_cpu(x: Array, y: Array, g: _Geometry, *, is_max: bool) -> None:
    """y = max (padding -inf, NaN propagating) or mean (padding 0, divisor kh·kw) of
    each window."""
    padded = _padded(x, g, -numpy.inf if is_max else 0.0)
    combine = numpy.maximum if is_max else numpy.add
    offsets = _offsets(g)
    y[...] = padded[next(offsets)]
    for index in offsets:
        combine(y, padded[index], out=y)
    if not is_max:
        y *= y.dtype.type(1.0 / (g.kh * g.kw))


def _max_shares(x: Array, y: Array, gy: Array, g: _Geometry) -> Iterator[Array]:
    """Per window offset: gy where that element is the window's first equal to y (NaN
    matching NaN, padding never), else 0."""
    H, W = x.shape[2], x.shape[3]
    padded = _padded(x, g, 0.0)
    real = numpy.zeros((H + 2 * g.ph, W + 2 * g.pw), bool)
    real[g.ph:g.ph + H, g.pw:g.pw + W] = True
    y_nan = numpy.isnan(y)
    taken = numpy.zeros(y.shape, bool)  # windows whose first maximum was seen
    for index in _offsets(g):
        part = padded[index]
        hit = (part == y) | (numpy.isnan(part) & y_nan)
        hit &= real[index[2:]]
        hit &= ~taken
        taken |= hit
        yield numpy.where(hit, gy, 0)


def _avg_shares(gy: Array, g: _Geometry) -> Iterator[Array]:
    """Per window offset: gy / (kh·kw), every element of every window alike."""
    share = gy * gy.dtype.type(1.0 / (g.kh * g.kw))
    for _ in _offsets(g):
        yield share


def _pool_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, g: _Geometry, *,
                   is_max: bool) -> None:
    """gx: each window's gradient added back onto the input elements it read."""
    N, C, H, W = x.shape
    gy = gy.astype(numpy.result_type(x.dtype, y.dtype, gy.dtype), copy=False)  # the call dtype
    grad = numpy.zeros((N, C, H + 2 * g.ph, W + 2 * g.pw), gy.dtype)
    shares = _max_shares(x, y, gy, g) if is_max else _avg_shares(gy, g)
    for index, share in zip(_offsets(g), shares):
        grad[index] += share
    gx[...] = grad[:, :, g.ph:g.ph + H, g.pw:g.pw + W]


# ---- kernels: <op>_<dtype>(x, y, n, <geometry>), <op>_wrt_x1_<dtype>(x, y, gy, gx, n,
# <geometry>), <geometry> = H, W, OH, OW, kh, kw, sh, sw, ph, pw ---------------------------

def _launch(call: Call, arrays: tuple, g: _Geometry) -> None:
    x, result = arrays[0], arrays[-1]
    H, W = x.shape[2], x.shape[3]
    call.launch_1d(call.op, result.size,
                   (*arrays, numpy.int64(result.size),
                    *map(numpy.int64, (H, W, g.OH, g.OW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw))))


def _pool_gpu(call: Call, x: Array, y: Array, g: _Geometry) -> None:
    _launch(call, (x, y), g)


def _pool_grad_gpu(call: Call, x: Array, y: Array, gy: Array, gx: Array, g: _Geometry) -> None:
    _launch(call, (x, y, gy, gx), g)


_CPU = {op: (functools.partial(_pool_cpu, is_max=op == "max_pool2d"),
             functools.partial(_pool_grad_cpu, is_max=op == "max_pool2d"))
        for op in ("max_pool2d", "avg_pool2d")}
_FORWARD = {op: Signature(op, FAMILY, ("x1",)) for op in _CPU}
_GRADIENT = {op: Signature(f"{op}_wrt_x1", FAMILY, ("x1", "y", "gy")) for op in _CPU}


def _forward(op: str, x1: Array, kernel_size: Any, stride: Any, padding: Any,
             out: Array | None) -> Array:
    call = _FORWARD[op].bind(x1)
    (x,) = call.inputs
    g = _geometry(call.op, tuple(x.shape), kernel_size, stride, padding)
    return call.run(out, (*x.shape[:2], g.OH, g.OW), _CPU[op][0], _pool_gpu, g)


def _gradient(op: str, x1: Array, y: Array, gy: Array, kernel_size: Any, stride: Any,
              padding: Any, out: Array | None) -> Array:
    call = _GRADIENT[op].bind(x1, y, gy)
    x, y, gy = call.inputs
    g = _geometry(call.op, tuple(x.shape), kernel_size, stride, padding)
    y_shape = (*x.shape[:2], g.OH, g.OW)
    check_shape(call.op, "y", y, y_shape)
    check_shape(call.op, "gy", gy, y_shape)
    return call.run(out, tuple(x.shape), _CPU[op][1], _pool_grad_gpu, g, dtype=x.dtype)


def max_pool2d(x1: Array, *, kernel_size: int | tuple[int, int],
               stride: int | tuple[int, int] | None = None,
               padding: int | tuple[int, int] = 0, out: Array | None = None) -> Array:
    """y[n, c, oh, ow] = max of x1[n, c] over window (oh, ow); padding is -inf.
    ``stride`` None means ``kernel_size``; ``padding`` at most ``kernel_size // 2``."""
    return _forward("max_pool2d", x1, kernel_size, stride, padding, out)


def avg_pool2d(x1: Array, *, kernel_size: int | tuple[int, int],
               stride: int | tuple[int, int] | None = None,
               padding: int | tuple[int, int] = 0, out: Array | None = None) -> Array:
    """y[n, c, oh, ow] = Σ x1[n, c] over window (oh, ow) / (kh·kw); padding is 0 and
    counted in the divisor (PyTorch's ``count_include_pad=True``)."""
    return _forward("avg_pool2d", x1, kernel_size, stride, padding, out)


def max_pool2d_wrt_x1(x1: Array, y: Array, gy: Array, *, kernel_size: int | tuple[int, int],
                      stride: int | tuple[int, int] | None = None,
                      padding: int | tuple[int, int] = 0, out: Array | None = None) -> Array:
    """gx[n, c, h, w] = Σ gy[n, c, oh, ow] over the windows whose first maximal element
    (row-major) is (h, w)."""
    return _gradient("max_pool2d", x1, y, gy, kernel_size, stride, padding, out)


def avg_pool2d_wrt_x1(x1: Array, y: Array, gy: Array, *, kernel_size: int | tuple[int, int],
                      stride: int | tuple[int, int] | None = None,
                      padding: int | tuple[int, int] = 0, out: Array | None = None) -> Array:
    """gx[n, c, h, w] = Σ gy[n, c, oh, ow] / (kh·kw) over the windows containing (h, w)."""
    return _gradient("avg_pool2d", x1, y, gy, kernel_size, stride, padding, out)


register(FAMILY, max_pool2d, max_pool2d_wrt_x1)
register(FAMILY, avg_pool2d, avg_pool2d_wrt_x1)
