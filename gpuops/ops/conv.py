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
import os
from typing import Any

import numpy

from ..backend import HALF_DTYPES, NUMPY
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args
from .matmul import BIAS_NONE, BIAS_PER_ROW, gemm, sum_to
from .reduction import sum_to_shape

__all__ = ["conv2d", "conv2d_wrt_x1", "conv2d_wrt_x2", "conv2d_wrt_x3"]

FAMILY = "conv"
Array = Any
_COLS_BYTES = 1 << 28  # at most this much im2col buffer per chunk of images


def _geometry(op: str, x1: Array, x2: Array, x3: Array | None, stride: Any, padding: Any,
              dilation: Any) -> dict:
    """Validated sizes of one convolution, or ValueError/TypeError naming ``op``."""
    sh, sw = _args.pair(op, "stride", stride, 1)
    ph, pw = _args.pair(op, "padding", padding, 0)
    dh, dw = _args.pair(op, "dilation", dilation, 1)
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


def _memory_bytes(call: Call) -> int:
    """The memory that holds the call's arrays: the GPU's (CuPy), else the host's RAM
    (numpy's largest array where the OS does not say)."""
    if call.backend.name == "cupy":
        return call.xp.cuda.Device().mem_info[1]
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return numpy.iinfo(numpy.intp).max


def _check_buffers(call: Call, g: dict, padding: Any) -> None:
    """ValueError naming the operator and ``padding`` when the largest buffer the call
    allocates at once (the output; the padded input and the im2col buffer of the whole
    batch for NumPy, of one image for the kernels, which go in chunks) exceeds memory."""
    images = min(g["N"], 1) if call.uses_kernels else g["N"]
    outputs = g["OH"] * g["OW"]
    padded = (g["H"] + 2 * g["PH"]) * (g["W"] + 2 * g["PW"])
    elements = max(g["N"] * g["O"] * outputs,
                   images * g["C"] * g["KH"] * g["KW"] * outputs,
                   0 if call.uses_kernels else g["N"] * g["C"] * padded)
    needed = elements * call.dtype.itemsize
    if needed <= _COLS_BYTES:  # fits any machine: no need to ask the OS or the GPU
        return
    memory = _memory_bytes(call)
    if needed > memory:
        raise ValueError(
            f"{call.op}: padding {padding!r} asks for an impossible buffer: input "
            f"{g['N']}x{g['C']}x{g['H']}x{g['W']}, padded to {g['H'] + 2 * g['PH']}x"
            f"{g['W'] + 2 * g['PW']}, output {g['OH']}x{g['OW']}: {needed} bytes at once, more "
            f"than the {memory} bytes of memory")


# ---- NumPy: im2col through a strided window view of the padded input -----------------

def _numpy_cols(x: numpy.ndarray, g: dict) -> numpy.ndarray:
    """im2col on the CPU: (N, C·KH·KW, OH·OW) through a strided window view of the padded x."""
    xp = numpy.pad(x, ((0, 0), (0, 0), (g["PH"], g["PH"]), (g["PW"], g["PW"])))
    sn, sc, sh, sw = xp.strides
    windows = numpy.lib.stride_tricks.as_strided(
        xp, (g["N"], g["C"], g["KH"], g["KW"], g["OH"], g["OW"]),
        (sn, sc, sh * g["DH"], sw * g["DW"], sh * g["SH"], sw * g["SW"]), writeable=False)
    return windows.reshape(g["N"], g["C"] * g["KH"] * g["KW"], g["OH"] * g["OW"])


def _numpy_col2im(cols: numpy.ndarray, g: dict) -> numpy.ndarray:
    """The adjoint of :func:`_numpy_cols`: each window offset adds its slice back."""
    n, c = g["N"], g["C"]
    padded = numpy.zeros((n, c, g["H"] + 2 * g["PH"], g["W"] + 2 * g["PW"]), cols.dtype)
    cols = cols.reshape(n, c, g["KH"], g["KW"], g["OH"], g["OW"])
    for ki in range(g["KH"]):
        for kj in range(g["KW"]):
            h0, w0 = ki * g["DH"], kj * g["DW"]
            padded[:, :, h0:h0 + g["SH"] * (g["OH"] - 1) + 1:g["SH"],
                   w0:w0 + g["SW"] * (g["OW"] - 1) + 1:g["SW"]] += cols[:, :, ki, kj]
    return padded[:, :, g["PH"]:g["PH"] + g["H"], g["PW"]:g["PW"] + g["W"]]


def _weight_matrix(x2: Array, dtype: numpy.dtype) -> Array:
    """The weight (O, C, KH, KW) as the GEMM's (O, C·KH·KW) matrix."""
    return x2.astype(dtype, copy=False).reshape(x2.shape[0], math.prod(x2.shape[1:]))


def _conv2d_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, g: dict) -> None:
    cols = _numpy_cols(x1.astype(y.dtype, copy=False), g)
    products = numpy.matmul(_weight_matrix(x2, y.dtype), cols)
    if x3 is not None:
        products += x3[:, None]
    y[...] = products.reshape(y.shape)


def _conv2d_wrt_x1_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, gx1: Array,
                       g: dict, dtype: numpy.dtype) -> None:
    gy3 = gy.astype(dtype, copy=False).reshape(g["N"], g["O"], g["OH"] * g["OW"])
    gx1[...] = _numpy_col2im(numpy.matmul(_weight_matrix(x2, dtype).T, gy3), g)


def _conv2d_wrt_x2_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, gx2: Array,
                       g: dict, dtype: numpy.dtype) -> None:
    gy3 = gy.astype(dtype, copy=False).reshape(g["N"], g["O"], g["OH"] * g["OW"])
    cols = _numpy_cols(x1.astype(dtype, copy=False), g)
    gx2[...] = numpy.tensordot(gy3, cols, axes=([0, 2], [0, 2])).reshape(x2.shape)


def _conv2d_wrt_x3_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, gx3: Array,
                       g: dict, dtype: numpy.dtype) -> None:
    sum_to_shape(NUMPY, gy.astype(dtype, copy=False), gx3.reshape(1, g["O"], 1, 1))


# ---- kernels: im2col_<dtype>(x, cols, n, geometry), col2im_<dtype>(cols, gx, n, geometry),
# the products on cuda/matmul.cu's GEMM, images in chunks whose cols fit _COLS_BYTES ------

def _geometry_args(g: dict) -> tuple:
    return tuple(numpy.int64(g[k]) for k in ("C", "H", "W", "KH", "KW", "OH", "OW", "SH", "SW",
                                             "PH", "PW", "DH", "DW"))


def _chunks(g: dict, itemsize: int):
    """Ranges of images whose im2col buffer fits in _COLS_BYTES (at least one image)."""
    per_image = g["C"] * g["KH"] * g["KW"] * g["OH"] * g["OW"] * itemsize
    step = max(1, _COLS_BYTES // max(per_image, 1))
    for start in range(0, g["N"], step):
        yield start, min(g["N"], start + step)


def _im2col(call: Call, x: Array, g: dict) -> Array:
    cols = call.xp.empty((x.shape[0], g["C"] * g["KH"] * g["KW"], g["OH"] * g["OW"]),
                         call.dtype)
    if cols.size:
        call.launch_1d("im2col", cols.size, (x, cols, numpy.int64(cols.size), *_geometry_args(g)))
    return cols


def _conv2d_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, g: dict) -> None:
    w2 = _weight_matrix(x2, call.dtype)
    y3 = y.reshape(g["N"], g["O"], g["OH"] * g["OW"])
    for start, stop in _chunks(g, call.dtype.itemsize):
        cols = _im2col(call, x1[start:stop], g)
        gemm(call.backend, call.xp.broadcast_to(w2, (stop - start,) + w2.shape), cols,
             y3[start:stop], bias=x3, bias_mode=BIAS_NONE if x3 is None else BIAS_PER_ROW)


def _conv2d_wrt_x1_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx1: Array, g: dict, dtype: numpy.dtype) -> None:
    xp = call.xp
    w2t = _weight_matrix(x2, dtype).T
    gy3 = gy.reshape(g["N"], g["O"], g["OH"] * g["OW"])
    for start, stop in _chunks(g, dtype.itemsize):
        count = stop - start
        gcols = xp.empty((count, g["C"] * g["KH"] * g["KW"], g["OH"] * g["OW"]), dtype)
        gemm(call.backend, xp.broadcast_to(w2t, (count,) + w2t.shape), gy3[start:stop], gcols)
        part = gx1[start:stop]
        call.launch_1d("col2im", part.size, (gcols, part, numpy.int64(part.size),
                                             *_geometry_args(g)))


def _conv2d_wrt_x2_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx2: Array, g: dict, dtype: numpy.dtype) -> None:
    xp = call.xp
    gy3 = gy.reshape(g["N"], g["O"], g["OH"] * g["OW"])
    gw = gx2.reshape(g["O"], g["C"] * g["KH"] * g["KW"])
    if g["N"] == 0:
        gw[...] = 0
    for i, (start, stop) in enumerate(_chunks(g, dtype.itemsize)):
        cols = _im2col(call, x1[start:stop], g)
        # Σ over the chunk's images happens inside the GEMM (a reduction batch).
        partial = gw if i == 0 else xp.empty(gw.shape, dtype)
        gemm(call.backend, gy3[start:stop], xp.swapaxes(cols, 1, 2), partial)
        if i:
            gw += partial


def _conv2d_wrt_x3_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx3: Array, g: dict, dtype: numpy.dtype) -> None:
    sum_to(call.backend, gy, gx3.reshape(1, g["O"], 1, 1))


# ---- public functions ---------------------------------------------------------------

CONV2D = Signature("conv2d", FAMILY, ("x1", "x2", "x3"), optional=("x3",),
                   kernel_dtypes=HALF_DTYPES)
_GRADIENT = {k: (Signature(f"conv2d_wrt_x{k}", FAMILY, ("x1", "x2", "x3", "y", "gy"),
                           optional=("x3",), kernel_dtypes=HALF_DTYPES), cpu, gpu)
             for k, cpu, gpu in ((1, _conv2d_wrt_x1_cpu, _conv2d_wrt_x1_gpu),
                                 (2, _conv2d_wrt_x2_cpu, _conv2d_wrt_x2_gpu),
                                 (3, _conv2d_wrt_x3_cpu, _conv2d_wrt_x3_gpu))}


def conv2d(x1: Array, x2: Array, x3: Array | None = None, *, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, out: Array | None = None) -> Array:
    """y[n, o] = Σ_{c,ki,kj} x1[n, c, oh·SH - PH + ki·DH, ow·SW - PW + kj·DW] · x2[o, c, ki, kj]
    + x3[o]: NCHW input, weight (O, C, KH, KW), bias (O,) or None; stride, padding and
    dilation an int or an (h, w) pair; zero padding."""
    call = CONV2D.bind(x1, x2, x3)
    x1, x2, x3 = call.inputs
    g = _geometry(call.op, x1, x2, x3, stride, padding, dilation)
    _check_buffers(call, g, padding)
    return call.run(out, (g["N"], g["O"], g["OH"], g["OW"]), _conv2d_cpu, _conv2d_gpu, g)


def _gradient(k: int, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, stride: Any,
              padding: Any, dilation: Any, out: Array | None) -> Array:
    signature, cpu, gpu = _GRADIENT[k]
    call = signature.bind(x1, x2, x3, y, gy)
    x1, x2, x3, y, gy = call.inputs
    g = _geometry(call.op, x1, x2, x3, stride, padding, dilation)
    if k == 3 and x3 is None:
        raise ValueError(f"{call.op}: x3 is None (the forward had no bias), so there is no bias "
                         "gradient to compute")
    _check_buffers(call, g, padding)
    shape = (g["N"], g["O"], g["OH"], g["OW"])
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    xk = (x1, x2, x3)[k - 1]
    return call.run(out, xk.shape, cpu, gpu, g, call.dtype, dtype=xk.dtype)


def conv2d_wrt_x1(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                  out: Array | None = None) -> Array:
    """col2im(x2ᵀ · gy): every input element gets the sum over the windows that read it."""
    return _gradient(1, x1, x2, x3, y, gy, stride, padding, dilation, out)


def conv2d_wrt_x2(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                  out: Array | None = None) -> Array:
    """Σ_n gy[n] · im2col(x1)[n]ᵀ, reshaped to (O, C, KH, KW)."""
    return _gradient(2, x1, x2, x3, y, gy, stride, padding, dilation, out)


def conv2d_wrt_x3(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                  out: Array | None = None) -> Array:
    """Σ gy over n, oh, ow; ValueError when x3 is None."""
    return _gradient(3, x1, x2, x3, y, gy, stride, padding, dilation, out)


register(FAMILY, conv2d, conv2d_wrt_x1, conv2d_wrt_x2, conv2d_wrt_x3)
