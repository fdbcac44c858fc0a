"""2-d convolution (NCHW) lowered to matrix products: im2col + GEMM, col2im for the
input gradient. Kernels in cuda/conv.cu (im2col, col2im) and cuda/matmul.cu (GEMM).

Shapes (L = OH·OW, CKK = C·KH·KW, OH = (H + 2·PH - DH·(KH-1) - 1) // SH + 1):
  cols (N, CKK, L) = im2col(x);   y[n] (O, L) = W (O, CKK) · cols[n] + b[o]
  gW = Σ_n gy[n] · cols[n]ᵀ;      gb[o] = Σ_{n,l} gy[n][o][l]
  gx = col2im(Wᵀ · gy[n])         (col2im sums the overlapping windows, as a gather)
Kernel backends process the batch in chunks so the cols buffer stays bounded.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from ..backend import HALF_DTYPES, Backend, check_shape, output, prepare
from ..kernels import contiguous, finish, grid_1d, result_buffer, size, suffix
from .matmul import BIAS_PER_ROW, gemm, sum_to
from ..registry import register

__all__ = ["conv2d", "conv2d_wrt_x1", "conv2d_wrt_x2", "conv2d_wrt_x3"]

FAMILY = "conv"
Array = Any
_BLOCK = 256
_COLS_BYTES = 1 << 28  # at most this much im2col buffer per chunk of images


def _pair(op: str, name: str, value: Any, minimum: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints) as a pair, each at least ``minimum``."""
    pair = (value, value) if isinstance(value, (int, numpy.integer)) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, numpy.integer)) for v in pair)):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _geometry(op: str, x1: Array, x2: Array, x3: Array | None, stride: Any, padding: Any,
              dilation: Any) -> dict:
    """Validated sizes of one convolution, or ValueError/TypeError naming ``op``."""
    sh, sw = _pair(op, "stride", stride, 1)
    ph, pw = _pair(op, "padding", padding, 0)
    dh, dw = _pair(op, "dilation", dilation, 1)
    if x1.ndim != 4 or x2.ndim != 4 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"{op}: x1 must be (N, C, H, W) and x2 (O, C, KH, KW) with the same C; "
                         f"got shapes {tuple(x1.shape)} and {tuple(x2.shape)}")
    if x3 is not None and tuple(x3.shape) != (x2.shape[0],):
        raise ValueError(f"{op}: x3 (bias) must have shape ({x2.shape[0]},) to match x2 "
                         f"{tuple(x2.shape)}; got {tuple(x3.shape)}")
    n, c, h, w = x1.shape
    o, _, kh, kw = x2.shape
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if kh == 0 or kw == 0 or span_h > h + 2 * ph or span_w > w + 2 * pw:
        raise ValueError(f"{op}: kernel {kh}x{kw} with dilation {(dh, dw)} spans "
                         f"{span_h}x{span_w}, which does not fit the padded input "
                         f"{h + 2 * ph}x{w + 2 * pw} (input {h}x{w}, padding {(ph, pw)})")
    oh, ow = (h + 2 * ph - span_h) // sh + 1, (w + 2 * pw - span_w) // sw + 1
    return dict(N=n, C=c, H=h, W=w, O=o, KH=kh, KW=kw, OH=oh, OW=ow, SH=sh, SW=sw, PH=ph,
                PW=pw, DH=dh, DW=dw)


def _prepare(op: str, names: tuple, values: tuple, stride, padding, dilation):
    p = prepare(op, names, values, optional=("x3",), gpu_dtypes=HALF_DTYPES)
    x1, x2, x3 = p.arrays[:3]
    return p, _geometry(op, x1, x2, x3, stride, padding, dilation)


# ---- NumPy implementation ----------------------------------------------------------

def _numpy_cols(x: numpy.ndarray, g: dict) -> numpy.ndarray:
    """im2col on the CPU: (N, C·KH·KW, OH·OW) through a strided window view of the padded x."""
    xp = numpy.pad(x, ((0, 0), (0, 0), (g["PH"], g["PH"]), (g["PW"], g["PW"])))
    sn, sc, sh, sw = xp.strides
    windows = numpy.lib.stride_tricks.as_strided(
        xp, (g["N"], g["C"], g["KH"], g["KW"], g["OH"], g["OW"]),
        (sn, sc, sh * g["DH"], sw * g["DW"], sh * g["SH"], sw * g["SW"]), writeable=False)
    return windows.reshape(g["N"], g["C"] * g["KH"] * g["KW"], g["OH"] * g["OW"])


def _numpy_col2im(cols: numpy.ndarray, g: dict, dtype) -> numpy.ndarray:
    """The adjoint of :func:`_numpy_cols`: each window offset adds its slice back."""
    n, c = g["N"], g["C"]
    padded = numpy.zeros((n, c, g["H"] + 2 * g["PH"], g["W"] + 2 * g["PW"]), dtype)
    cols = cols.reshape(n, c, g["KH"], g["KW"], g["OH"], g["OW"])
    for ki in range(g["KH"]):
        for kj in range(g["KW"]):
            h0, w0 = ki * g["DH"], kj * g["DW"]
            padded[:, :, h0:h0 + g["SH"] * (g["OH"] - 1) + 1:g["SH"],
                   w0:w0 + g["SW"] * (g["OW"] - 1) + 1:g["SW"]] += cols[:, :, ki, kj]
    return padded[:, :, g["PH"]:g["PH"] + g["H"], g["PW"]:g["PW"] + g["W"]]


# ---- kernel launches ----------------------------------------------------------------

def _geometry_args(g: dict) -> tuple:
    return tuple(size(g[k]) for k in ("C", "H", "W", "KH", "KW", "OH", "OW", "SH", "SW", "PH",
                                      "PW", "DH", "DW"))


def _chunks(g: dict, itemsize: int):
    """Ranges of images whose im2col buffer fits in _COLS_BYTES (at least one image)."""
    per_image = g["C"] * g["KH"] * g["KW"] * g["OH"] * g["OW"] * itemsize
    step = max(1, _COLS_BYTES // max(per_image, 1))
    for start in range(0, g["N"], step):
        yield start, min(g["N"], start + step)


def _im2col(backend: Backend, x: Array, g: dict) -> Array:
    cols = backend.xp.empty((x.shape[0], g["C"] * g["KH"] * g["KW"], g["OH"] * g["OW"]),
                            x.dtype)
    if cols.size:
        backend.launcher.launch(FAMILY, f"im2col_{suffix(x.dtype)}",
                                grid_1d(backend.launcher, cols.size), (_BLOCK,),
                                (x, cols, size(cols.size), *_geometry_args(g)))
    return cols


def _weight_matrix(x2: Array, dtype) -> Array:
    o = x2.shape[0]
    return x2.astype(dtype, copy=False).reshape(o, math.prod(x2.shape[1:]))


# ---- public functions ---------------------------------------------------------------

def conv2d(x1: Array, x2: Array, x3: Array | None = None, *, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, out: Array | None = None) -> Array:
    """y[n, o] = Σ_{c,ki,kj} x1[n, c, oh·SH - PH + ki·DH, ow·SW - PW + kj·DW] · x2[o, c, ki, kj]
    + x3[o]: NCHW input, weight (O, C, KH, KW), bias (O,) or None; stride, padding and
    dilation an int or an (h, w) pair; zero padding."""
    op = "conv2d"
    p, g = _prepare(op, ("x1", "x2", "x3"), (x1, x2, x3), stride, padding, dilation)
    x1, x2, x3 = p.arrays
    shape = (g["N"], g["O"], g["OH"], g["OW"])
    out = output(op, p.backend, out, shape, p.dtype)
    backend = p.backend
    w2 = _weight_matrix(x2, p.dtype)
    if not backend.uses_kernels:
        y = numpy.matmul(w2, _numpy_cols(x1.astype(p.dtype, copy=False), g))
        if x3 is not None:
            y += x3[:, None]
        out[...] = y.reshape(shape)
        return out
    target = result_buffer(backend, out, p.dtype)
    x = contiguous(backend, x1, p.dtype)
    bias = None if x3 is None else contiguous(backend, x3, p.dtype)
    y = target.reshape(g["N"], g["O"], g["OH"] * g["OW"])
    for start, stop in _chunks(g, p.dtype.itemsize):
        cols = _im2col(backend, x[start:stop], g)
        a = backend.xp.broadcast_to(w2, (stop - start,) + w2.shape)
        gemm(backend, a, cols, y[start:stop], bias=bias,
             bias_mode=BIAS_PER_ROW if bias is not None else 0)
    return finish(out, target)


def _grad(k: int, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, stride: Any,
          padding: Any, dilation: Any, out: Array | None) -> Array:
    op = f"conv2d_wrt_x{k}"
    p, g = _prepare(op, ("x1", "x2", "x3", "y", "gy"), (x1, x2, x3, y, gy), stride, padding,
                    dilation)
    x1, x2, x3, y, gy = p.arrays
    if k == 3 and x3 is None:
        raise ValueError(f"{op}: x3 is None (the forward had no bias), so there is no bias "
                         "gradient to compute")
    shape = (g["N"], g["O"], g["OH"], g["OW"])
    check_shape(op, "y", y, shape)
    check_shape(op, "gy", gy, shape)
    xk = (x1, x2, x3)[k - 1]
    out = output(op, p.backend, out, xk.shape, xk.dtype)
    backend = p.backend
    if k == 3:  # Σ over n, oh, ow
        sum_to(backend, gy.astype(p.dtype, copy=False), out.reshape(1, g["O"], 1, 1))
        return out
    gy3 = gy.astype(p.dtype, copy=False).reshape(g["N"], g["O"], g["OH"] * g["OW"])
    w2 = _weight_matrix(x2, p.dtype)
    if not backend.uses_kernels:
        if k == 1:
            out[...] = _numpy_col2im(numpy.matmul(w2.T, gy3), g, p.dtype)
        else:
            cols = _numpy_cols(x1.astype(p.dtype, copy=False), g)
            out[...] = numpy.tensordot(gy3, cols, axes=([0, 2], [0, 2])).reshape(x2.shape)
        return out
    xp = backend.xp
    target = result_buffer(backend, out, p.dtype)
    if k == 1:
        for start, stop in _chunks(g, p.dtype.itemsize):
            count = stop - start
            gcols = xp.empty((count, w2.shape[1], g["OH"] * g["OW"]), p.dtype)
            gemm(backend, xp.broadcast_to(w2.T, (count,) + w2.T.shape), gy3[start:stop], gcols)
            part = target[start:stop]
            if part.size:
                backend.launcher.launch(FAMILY, f"col2im_{suffix(p.dtype)}",
                                        grid_1d(backend.launcher, part.size), (_BLOCK,),
                                        (gcols, part, size(part.size), *_geometry_args(g)))
        return finish(out, target)
    x = contiguous(backend, x1, p.dtype)
    gw = target.reshape(w2.shape)
    for i, (start, stop) in enumerate(_chunks(g, p.dtype.itemsize)):
        cols = _im2col(backend, x[start:stop], g)
        # Σ over the chunk's images happens inside the GEMM (a reduction batch).
        dest = gw if i == 0 else xp.empty(w2.shape, p.dtype)
        gemm(backend, gy3[start:stop], xp.swapaxes(cols, 1, 2), dest)
        if i:
            gw += dest
    if g["N"] == 0:
        gw[...] = 0
    return finish(out, target)


def conv2d_wrt_x1(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                  out: Array | None = None) -> Array:
    """col2im(x2ᵀ · gy): every input element gets the sum over the windows that read it."""
    return _grad(1, x1, x2, x3, y, gy, stride, padding, dilation, out)


def conv2d_wrt_x2(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                  out: Array | None = None) -> Array:
    """Σ_n gy[n] · im2col(x1)[n]ᵀ, reshaped to (O, C, KH, KW)."""
    return _grad(2, x1, x2, x3, y, gy, stride, padding, dilation, out)


def conv2d_wrt_x3(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                  out: Array | None = None) -> Array:
    """Σ gy over n, oh, ow; ValueError when x3 is None."""
    return _grad(3, x1, x2, x3, y, gy, stride, padding, dilation, out)


register(FAMILY, conv2d, conv2d_wrt_x1, conv2d_wrt_x2, conv2d_wrt_x3)
