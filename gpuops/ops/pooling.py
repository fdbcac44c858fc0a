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

from typing import Any

import numpy

from ..backend import Backend, check_shape, output, prepare
from ..kernels import BLOCK, contiguous, finish, grid_1d, result_buffer, size, suffix
from ..registry import register

__all__ = ["max_pool2d", "avg_pool2d", "max_pool2d_wrt_x1", "avg_pool2d_wrt_x1"]

FAMILY = "pooling"
Array = Any


def _pair(op: str, name: str, value: Any, minimum: int) -> tuple[int, int]:
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in items):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(items[0]), int(items[1])


def _geometry(op: str, shape: tuple, kernel_size: Any, stride: Any, padding: Any) -> tuple:
    """(kh, kw, sh, sw, ph, pw, OH, OW) after validating the input shape and parameters."""
    kh, kw = _pair(op, "kernel_size", kernel_size, 1)
    sh, sw = (kh, kw) if stride is None else _pair(op, "stride", stride, 1)
    ph, pw = _pair(op, "padding", padding, 0)
    if len(shape) != 4:
        raise ValueError(f"{op}: x1 must be 4-d (N, C, H, W), got shape {shape}")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{op}: padding {(ph, pw)} must be at most half the kernel size "
                         f"{(kh, kw)}")
    H, W = shape[2], shape[3]
    if H + 2 * ph < kh or W + 2 * pw < kw or H == 0 or W == 0:
        raise ValueError(f"{op}: input of height x width {H}x{W} with padding {(ph, pw)} is "
                         f"smaller than the kernel {(kh, kw)}")
    return kh, kw, sh, sw, ph, pw, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1


def _padded(x: numpy.ndarray, g: tuple, fill: float) -> numpy.ndarray:
    ph, pw = g[4], g[5]
    return numpy.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)


def _offsets(g: tuple):
    """For each window offset (i, j), row-major: the slices of the padded input that
    hold element (i, j) of every window, an (N, C, OH, OW) strided view."""
    kh, kw, sh, sw, _, _, OH, OW = g
    for i in range(kh):
        for j in range(kw):
            yield (slice(None), slice(None), slice(i, i + sh * (OH - 1) + 1, sh),
                   slice(j, j + sw * (OW - 1) + 1, sw))


def _pool_numpy(x: numpy.ndarray, g: tuple, is_max: bool, out: numpy.ndarray) -> None:
    """out = max (padding -inf, NaN propagating) or mean (padding 0, divisor kh·kw) of
    each window, as kh·kw passes over shifted strided slices."""
    padded = _padded(x, g, -numpy.inf if is_max else 0.0)
    first = True
    for index in _offsets(g):
        if first:
            out[...] = padded[index]
            first = False
        elif is_max:
            numpy.maximum(out, padded[index], out=out)
        else:
            out += padded[index]
    if not is_max:
        out *= out.dtype.type(1.0 / (g[0] * g[1]))


def _pool_grad_numpy(x: numpy.ndarray, y: numpy.ndarray, gy: numpy.ndarray, g: tuple,
                     is_max: bool) -> numpy.ndarray:
    """gx: each window's gradient added back onto the input elements it read (max: only
    onto its first element equal to y, NaN matching NaN; avg: gy/(kh·kw) onto all)."""
    N, C, H, W = x.shape
    ph, pw = g[4], g[5]
    grad = numpy.zeros((N, C, H + 2 * ph, W + 2 * pw), gy.dtype)
    if is_max:
        padded = _padded(x, g, 0.0)
        real = numpy.zeros((H + 2 * ph, W + 2 * pw), bool)
        real[ph:ph + H, pw:pw + W] = True
        y_nan = numpy.isnan(y)
        taken = numpy.zeros(y.shape, bool)  # windows whose first maximum was seen
        for index in _offsets(g):
            part = padded[index]
            hit = (part == y) | (numpy.isnan(part) & y_nan)
            hit &= real[index[2:]]
            hit &= ~taken
            taken |= hit
            grad[index] += numpy.where(hit, gy, 0)
    else:
        share = gy * gy.dtype.type(1.0 / (g[0] * g[1]))
        for index in _offsets(g):
            grad[index] += share
    return grad[:, :, ph:ph + H, pw:pw + W]


def _launch(backend: Backend, kernel: str, arrays: tuple, target: Array, n: int,
            x_shape: tuple, g: tuple) -> None:
    kh, kw, sh, sw, ph, pw, OH, OW = g
    H, W = x_shape[2], x_shape[3]
    backend.launcher.launch(FAMILY, f"{kernel}_{suffix(target.dtype)}",
                            grid_1d(backend.launcher, n), (BLOCK,),
                            (*arrays, target, size(n), *map(size, (H, W, OH, OW, kh, kw, sh,
                                                                     sw, ph, pw))))


def _forward(op: str, x1: Array, kernel_size: Any, stride: Any, padding: Any,
             out: Array | None) -> Array:
    p = prepare(op, ("x1",), (x1,))
    (x1,) = p.arrays
    g = _geometry(op, tuple(x1.shape), kernel_size, stride, padding)
    N, C = x1.shape[:2]
    out = output(op, p.backend, out, (N, C, g[6], g[7]), p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        _pool_numpy(x1, g, op == "max_pool2d", out)
        return out
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    _launch(backend, op, (contiguous(backend, x1, p.dtype),), target, out.size, x1.shape, g)
    return finish(out, target)


def _grad(op: str, x1: Array, y: Array, gy: Array, kernel_size: Any, stride: Any,
          padding: Any, out: Array | None) -> Array:
    name = f"{op}_wrt_x1"
    p = prepare(name, ("x1", "y", "gy"), (x1, y, gy))
    x1, y, gy = p.arrays
    g = _geometry(name, tuple(x1.shape), kernel_size, stride, padding)
    y_shape = tuple(x1.shape[:2]) + (g[6], g[7])
    check_shape(name, "y", y, y_shape)
    check_shape(name, "gy", gy, y_shape)
    out = output(name, p.backend, out, tuple(x1.shape), x1.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        out[...] = _pool_grad_numpy(x1, y, gy.astype(p.dtype, copy=False), g,
                                    op == "max_pool2d")
        return out
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    gy = contiguous(backend, gy, p.dtype)
    if op == "max_pool2d":
        arrays = (contiguous(backend, x1, p.dtype), contiguous(backend, y, p.dtype), gy)
    else:
        arrays = (gy,)
    _launch(backend, name, arrays, target, out.size, x1.shape, g)
    return finish(out, target)


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
    return _grad("max_pool2d", x1, y, gy, kernel_size, stride, padding, out)


def avg_pool2d_wrt_x1(x1: Array, y: Array, gy: Array, *, kernel_size: int | tuple[int, int],
                      stride: int | tuple[int, int] | None = None,
                      padding: int | tuple[int, int] = 0, out: Array | None = None) -> Array:
    """gx[n, c, h, w] = Σ gy[n, c, oh, ow] / (kh·kw) over the windows containing (h, w)."""
    return _grad("avg_pool2d", x1, y, gy, kernel_size, stride, padding, out)


register(FAMILY, max_pool2d, max_pool2d_wrt_x1)
register(FAMILY, avg_pool2d, avg_pool2d_wrt_x1)
