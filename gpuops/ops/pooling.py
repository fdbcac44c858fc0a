"""2-d pooling over NCHW (or unbatched CHW): ``max_pool2d``, ``avg_pool2d`` and their
gradients.

Kernels in cuda/pooling.cu. Semantics are PyTorch's (``torch.nn.functional``), options
and defaults included:

- input (N, C, H, W) or unbatched (C, H, W); the result has the same leading dims;
- window (oh, ow) reads rows ``oh·sh - ph + i·dh`` (i < kh) and likewise columns; the
  dilation (dh, dw) is max_pool2d's (1 for the average);
- output size ``OH = (H + 2·ph - dh·(kh - 1) - 1 [+ sh - 1 if ceil_mode]) // sh + 1``
  and, with ``ceil_mode``, one less when the last window would start at or past
  ``H + ph`` (it must start inside the input or the left padding); an output size
  below 1 is an error;
- max: padding counts as -inf (it is never the maximum); NaN propagates; the gradient
  goes to the *first* maximal element of each window in row-major order (ties: only the
  first gets it), summed over the windows that pick the same element; a (dilated) window
  that holds no input element gives -inf and passes no gradient (as PyTorch);
- average: padding counts as 0; the divisor is ``divisor_override`` when given, else
  with ``count_include_pad`` the window's size clipped to the padded input
  (``min(start + kh, H + ph) - start`` rows: with ``ceil_mode`` the part past the right
  padding is not counted), else the number of input elements in the window.

Every float dtype on every backend: float16 and bfloat16 are widened to float32 (the max
compares the widened values, exactly; sums and divisors in float32) and each result is
rounded once.
"""
from __future__ import annotations

import functools
from typing import Any, Iterator, NamedTuple

import numpy

from .. import kernels
from ..backend import ALL_FLOAT_DTYPES
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args

__all__ = ["max_pool2d", "avg_pool2d", "max_pool2d_wrt_x1", "avg_pool2d_wrt_x1"]

FAMILY = "pooling"
Array = Any


class _Geometry(NamedTuple):
    """Window (oh, ow) reads rows oh·sh - ph + i·dh (0 <= i < kh) and columns
    ow·sw - pw + j·dw (0 <= j < kw) of the input; the output is OH x OW. Average only:
    ``divisor`` is the divisor of every window (``divisor_override``, or kh·kw when no
    window reaches past the padding, or the window count when none touches padding) or
    0 when it varies per window (then ``count_include_pad`` says which size)."""
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    OH: int
    OW: int
    divisor: int
    count_include_pad: bool


def _output_size(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape (``//`` rounds toward -inf like its div_rtn)."""
    size = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (size - 1) * s >= n + p:  # the last window starts past the padding
        size -= 1
    return size


def _uniform_divisor(n: int, k: int, s: int, p: int, o: int, count_include_pad: bool) -> int:
    """The number of rows every window divides by along one axis, or 0 when it varies."""
    if count_include_pad:
        return k if (o - 1) * s + k <= n + 2 * p else 0
    return k if p == 0 and (o - 1) * s + k <= n else 0


def _geometry(op: str, shape: tuple, kernel_size: Any, stride: Any, padding: Any,
              dilation: Any = 1, ceil_mode: Any = False, count_include_pad: Any = True,
              divisor_override: Any = None) -> _Geometry:
    """The windows, after validating the input shape and the parameters."""
    kh, kw = _args.pair(op, "kernel_size", kernel_size, 1)
    sh, sw = (kh, kw) if stride is None else _args.pair(op, "stride", stride, 1)
    ph, pw = _args.pair(op, "padding", padding, 0)
    dh, dw = _args.pair(op, "dilation", dilation, 1)
    ceil_mode = _args.boolean(op, "ceil_mode", ceil_mode)
    count_include_pad = _args.boolean(op, "count_include_pad", count_include_pad)
    if divisor_override is not None:
        divisor_override = _args.integer(op, "divisor_override", divisor_override)
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be nonzero, got 0")
    if len(shape) not in (3, 4):
        raise ValueError(f"{op}: x1 must be 3-d (C, H, W) or 4-d (N, C, H, W), got shape "
                         f"{shape}")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{op}: padding {(ph, pw)} must be at most half the kernel size "
                         f"{(kh, kw)}")
    H, W = shape[-2], shape[-1]
    OH = _output_size(H, kh, sh, ph, dh, ceil_mode)
    OW = _output_size(W, kw, sw, pw, dw, ceil_mode)
    if OH < 1 or OW < 1 or H == 0 or W == 0:
        dilated = f" dilated by {(dh, dw)}" if (dh, dw) != (1, 1) else ""
        raise ValueError(f"{op}: input of height x width {H}x{W} with padding {(ph, pw)} is "
                         f"smaller than the kernel {(kh, kw)}{dilated}")
    if divisor_override is not None:
        divisor = divisor_override
    else:
        divisor = (_uniform_divisor(H, kh, sh, ph, OH, count_include_pad)
                   * _uniform_divisor(W, kw, sw, pw, OW, count_include_pad))
    return _Geometry(kh, kw, sh, sw, ph, pw, dh, dw, OH, OW, divisor, count_include_pad)


# ---- NumPy: kh·kw passes over shifted strided slices of the padded input ----------------
# (the call protocol hands over an out that overlaps no input; unbatched arrays are taken
# as a batch of one)

def _pads(n: int, k: int, s: int, p: int, d: int, o: int) -> tuple[int, int]:
    """Padding before and after one axis: p, and past p where (ceil_mode) windows reach
    beyond the padded input."""
    return p, max(p, (o - 1) * s + d * (k - 1) + 1 - n - p)


def _padded(x: Array, g: _Geometry, fill: float) -> Array:
    return numpy.pad(x, ((0, 0), (0, 0), _pads(x.shape[2], g.kh, g.sh, g.ph, g.dh, g.OH),
                         _pads(x.shape[3], g.kw, g.sw, g.pw, g.dw, g.OW)),
                     constant_values=fill)


def _offsets(g: _Geometry) -> Iterator[tuple]:
    """For each window offset (i, j), row-major: the slices of the padded input that
    hold element (i, j) of every window, an (N, C, OH, OW) strided view."""
    for i in range(0, g.kh * g.dh, g.dh):
        for j in range(0, g.kw * g.dw, g.dw):
            yield (slice(None), slice(None), slice(i, i + g.sh * (g.OH - 1) + 1, g.sh),
                   slice(j, j + g.sw * (g.OW - 1) + 1, g.sw))


def _axis_divisors(n: int, k: int, s: int, p: int, o: int, count_include_pad: bool) -> Array:
    """Per window along one axis: the rows it divides by (PyTorch's avg_pool2d)."""
    start = numpy.arange(o) * s - p
    end = numpy.minimum(start + k, n + p)
    if count_include_pad:
        return end - start
    return numpy.minimum(end, n) - numpy.maximum(start, 0)


def _reciprocals(g: _Geometry, H: int, W: int, dtype: Any) -> Any:
    """1 / divisor: a scalar when every window has the same, else an (OH, OW) array."""
    if g.divisor:
        return dtype.type(1.0 / g.divisor)
    rows = _axis_divisors(H, g.kh, g.sh, g.ph, g.OH, g.count_include_pad)
    cols = _axis_divisors(W, g.kw, g.sw, g.pw, g.OW, g.count_include_pad)
    return (1.0 / numpy.multiply.outer(rows, cols)).astype(dtype)


def _pool_cpu(x: Array, y: Array, g: _Geometry, *, is_max: bool) -> None:
    """y = max (padding -inf, NaN propagating) or mean (padding 0, PyTorch's divisor) of
    each window."""
    if x.ndim == 3:
        x, y = x[None], y[None]
    padded = _padded(x, g, -numpy.inf if is_max else 0.0)
    combine = numpy.maximum if is_max else numpy.add
    offsets = _offsets(g)
    y[...] = padded[next(offsets)]
    for index in offsets:
        combine(y, padded[index], out=y)
    if not is_max:
        y *= _reciprocals(g, x.shape[2], x.shape[3], y.dtype)


def _max_shares(x: Array, y: Array, gy: Array, g: _Geometry) -> Iterator[Array]:
    """Per window offset: gy where that element is the window's first equal to y (NaN
    matching NaN, padding never), else 0."""
    H, W = x.shape[2], x.shape[3]
    padded = _padded(x, g, 0.0)
    real = numpy.zeros(padded.shape[2:], bool)
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


def _avg_shares(gy: Array, g: _Geometry, H: int, W: int) -> Iterator[Array]:
    """Per window offset: gy / divisor, every element of every window alike."""
    share = gy * _reciprocals(g, H, W, gy.dtype)
    for _ in _offsets(g):
        yield share


def _pool_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, g: _Geometry, *,
                   is_max: bool) -> None:
    """gx: each window's gradient added back onto the input elements it read."""
    if x.ndim == 3:
        x, y, gy, gx = x[None], y[None], gy[None], gx[None]
    N, C, H, W = x.shape
    gy = gy.astype(numpy.result_type(x.dtype, y.dtype, gy.dtype), copy=False)  # the call dtype
    (top, bottom), (left, right) = (_pads(H, g.kh, g.sh, g.ph, g.dh, g.OH),
                                    _pads(W, g.kw, g.sw, g.pw, g.dw, g.OW))
    grad = numpy.zeros((N, C, top + H + bottom, left + W + right), gy.dtype)
    shares = _max_shares(x, y, gy, g) if is_max else _avg_shares(gy, g, H, W)
    for index, share in zip(_offsets(g), shares):
        grad[index] += share
    gx[...] = grad[:, :, g.ph:g.ph + H, g.pw:g.pw + W]


# ---- kernels: <op>_<dtype>(x, y, n, <geometry>), <op>_wrt_x1_<dtype>(x, y, gy, gx, n,
# <geometry>), <geometry> = H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw,
# count_include_pad, divisor, pairs; the sizes the kernels divide by (H, W, OH, OW, sh, sw,
# dh, dw) each with its fast-division magic word (kernels.fastdiv); pairs: the forward
# kernels read window rows as aligned pairs of elements (stride 2, no dilation, even W, x
# aligned to two elements: each warp's loads then coalesce) ---------------------------------

def _address(x: Array) -> int:
    """The device (CuPy) or host (NumPy) address of x's first element."""
    interface = getattr(x, "__cuda_array_interface__", None) or x.__array_interface__
    return int(interface["data"][0])


def _launch(call: Call, arrays: tuple, g: _Geometry) -> None:
    x, result = arrays[0], arrays[-1]
    H, W = x.shape[-2], x.shape[-1]
    n = result.size
    bound = max(n, H + g.ph, W + g.pw)
    pairs = g.sw == 2 and g.dw == 1 and W % 2 == 0 and _address(x) % (2 * x.itemsize) == 0
    div = functools.partial(kernels.fastdiv, max_dividend=bound)
    call.launch_1d(call.op, n,
                   (*arrays, numpy.int64(n), *div(H), *div(W), *div(g.OH), *div(g.OW),
                    numpy.int64(g.kh), numpy.int64(g.kw), *div(g.sh), *div(g.sw),
                    numpy.int64(g.ph), numpy.int64(g.pw), *div(g.dh), *div(g.dw),
                    *map(numpy.int64, (g.count_include_pad, g.divisor, pairs))))


def _pool_gpu(call: Call, x: Array, y: Array, g: _Geometry) -> None:
    _launch(call, (x, y), g)


def _pool_grad_gpu(call: Call, x: Array, y: Array, gy: Array, gx: Array, g: _Geometry) -> None:
    _launch(call, (x, y, gy, gx), g)


_CPU = {op: (functools.partial(_pool_cpu, is_max=op == "max_pool2d"),
             functools.partial(_pool_grad_cpu, is_max=op == "max_pool2d"))
        for op in ("max_pool2d", "avg_pool2d")}
_FORWARD = {op: Signature(op, FAMILY, ("x1",), kernel_dtypes=ALL_FLOAT_DTYPES) for op in _CPU}
_GRADIENT = {op: Signature(f"{op}_wrt_x1", FAMILY, ("x1", "y", "gy"),
                           kernel_dtypes=ALL_FLOAT_DTYPES) for op in _CPU}


def _forward(op: str, x1: Array, out: Array | None, kernel_size: Any, *options: Any) -> Array:
    call = _FORWARD[op].bind(x1)
    (x,) = call.inputs
    g = _geometry(call.op, tuple(x.shape), kernel_size, *options)
    return call.run(out, (*x.shape[:-2], g.OH, g.OW), _CPU[op][0], _pool_gpu, g)


def _gradient(op: str, x1: Array, y: Array, gy: Array, out: Array | None, kernel_size: Any,
              *options: Any) -> Array:
    call = _GRADIENT[op].bind(x1, y, gy)
    x, y, gy = call.inputs
    g = _geometry(call.op, tuple(x.shape), kernel_size, *options)
    y_shape = (*x.shape[:-2], g.OH, g.OW)
    check_shape(call.op, "y", y, y_shape)
    check_shape(call.op, "gy", gy, y_shape)
    return call.run(out, tuple(x.shape), _CPU[op][1], _pool_grad_gpu, g, dtype=x.dtype)


def max_pool2d(x1: Array, *, kernel_size: int | tuple[int, int],
               stride: int | tuple[int, int] | None = None,
               padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
               ceil_mode: bool = False, out: Array | None = None) -> Array:
    """y[..., oh, ow] = max of x1[...] over window (oh, ow) (x1 is (N, C, H, W) or
    (C, H, W)); padding is -inf. ``stride`` None means ``kernel_size``; ``padding`` at
    most ``kernel_size // 2``; ``dilation`` spaces the window's elements; ``ceil_mode``
    rounds the output size up (PyTorch's rule)."""
    return _forward("max_pool2d", x1, out, kernel_size, stride, padding, dilation, ceil_mode)


def avg_pool2d(x1: Array, *, kernel_size: int | tuple[int, int],
               stride: int | tuple[int, int] | None = None,
               padding: int | tuple[int, int] = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None,
               out: Array | None = None) -> Array:
    """y[..., oh, ow] = Σ x1[...] over window (oh, ow) / divisor (x1 is (N, C, H, W) or
    (C, H, W)); padding is 0. The divisor: ``divisor_override`` when given, else the
    window's size (padding included with ``count_include_pad``, never past the padded
    input) or its count of input elements, as PyTorch."""
    return _forward("avg_pool2d", x1, out, kernel_size, stride, padding, 1, ceil_mode,
                    count_include_pad, divisor_override)


def max_pool2d_wrt_x1(x1: Array, y: Array, gy: Array, *, kernel_size: int | tuple[int, int],
                      stride: int | tuple[int, int] | None = None,
                      padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
                      ceil_mode: bool = False, out: Array | None = None) -> Array:
    """gx[..., h, w] = Σ gy[..., oh, ow] over the windows whose first maximal element
    (row-major) is (h, w)."""
    return _gradient("max_pool2d", x1, y, gy, out, kernel_size, stride, padding, dilation,
                     ceil_mode)


def avg_pool2d_wrt_x1(x1: Array, y: Array, gy: Array, *, kernel_size: int | tuple[int, int],
                      stride: int | tuple[int, int] | None = None,
                      padding: int | tuple[int, int] = 0, ceil_mode: bool = False,
                      count_include_pad: bool = True, divisor_override: int | None = None,
                      out: Array | None = None) -> Array:
    """gx[..., h, w] = Σ gy[..., oh, ow] / divisor(oh, ow) over the windows containing
    (h, w)."""
    return _gradient("avg_pool2d", x1, y, gy, out, kernel_size, stride, padding, 1, ceil_mode,
                     count_include_pad, divisor_override)


register(FAMILY, max_pool2d, max_pool2d_wrt_x1)
register(FAMILY, avg_pool2d, avg_pool2d_wrt_x1)
