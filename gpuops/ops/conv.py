"""2-d convolution (NCHW) lowered to matrix products: im2col + GEMM, col2im for the
input gradient. Kernels in cuda/conv.cu (im2col, col2im) and cuda/matmul.cu (GEMM).

Shapes (L = OH·OW, CKK = C·KH·KW, OH = (H + PT + PB - DH·(KH-1) - 1) // SH + 1, PT/PB the
top/bottom padding, equal unless padding="same" makes them differ by one), G = groups:
  cols (N, CKK, L) = im2col(x);   as (N, G, CKK/G, L): group k's channels are rows k·CKK/G..
  y[n, k] (O/G, L) = W[k] (O/G, CKK/G) · cols[n, k] + b[k·O/G..]
  gW[k] = Σ_n gy[n, k] · cols[n, k]ᵀ;   gb[o] = Σ_{n,l} gy[n][o][l]
  gx = col2im(W[k]ᵀ · gy[n, k])   (col2im sums the overlapping windows, as a gather)
One batched GEMM over (images, groups), no atomics. An unbatched (C, H, W) input is a batch
of one. Kernel backends process the batch in chunks so the cols buffer stays bounded.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy

from .. import kernels
from ..backend import ALL_FLOAT_DTYPES, NUMPY
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args
from .matmul import BIAS_NONE, BIAS_PER_ROW, gemm, sum_to
from .reduction import sum_to_shape

__all__ = ["conv2d", "conv2d_wrt_x1", "conv2d_wrt_x2", "conv2d_wrt_x3"]

FAMILY = "conv"
Array = Any
_COLS_BYTES = 1 << 28  # at most this much im2col buffer per chunk of images


def _padding(op: str, padding: Any, stride: tuple, dilation: tuple,
             kernel: tuple) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding: an int or pair (the same before and after),
    or PyTorch's strings: "valid" (none) and "same" (stride 1 only: a total of
    dilation·(k-1) per axis, the odd one extra at the bottom / right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding != "same":
            raise ValueError(f"{op}: padding must be an int, a pair of ints, 'same' or "
                             f"'valid', got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"{op}: padding='same' needs stride 1 (as in PyTorch), got "
                             f"stride {stride if stride[0] != stride[1] else stride[0]}")
        (dh, dw), (kh, kw) = dilation, kernel
        th, tw = dh * max(kh - 1, 0), dw * max(kw - 1, 0)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = _args.pair(op, "padding", padding, 0)
    return ph, ph, pw, pw


def _geometry(op: str, x1: Array, x2: Array, x3: Array | None, stride: Any, padding: Any,
              dilation: Any, groups: Any = 1) -> dict:
    """Validated sizes of one convolution, or ValueError/TypeError naming ``op``.
    ``unbatched``: x1 is (C, H, W), taken as a batch of one (N = 1)."""
    sh, sw = _args.pair(op, "stride", stride, 1)
    dh, dw = _args.pair(op, "dilation", dilation, 1)
    if not isinstance(padding, str):
        _args.pair(op, "padding", padding, 0)
    groups = _args.integer(op, "groups", groups, 1)
    if x1.ndim not in (3, 4) or x2.ndim != 4 or (groups == 1 and x1.shape[-3] != x2.shape[1]):
        raise ValueError(f"{op}: x1 must be (N, C, H, W) or unbatched (C, H, W) and x2 "
                         f"(O, C, KH, KW) with the same C; got shapes {tuple(x1.shape)} and "
                         f"{tuple(x2.shape)}")
    unbatched = x1.ndim == 3
    n, (c, h, w) = (1 if unbatched else x1.shape[0]), x1.shape[-3:]
    o, cg, kh, kw = x2.shape
    if c % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels C={c} of x1 "
                         f"{tuple(x1.shape)}")
    if o % groups:
        raise ValueError(f"{op}: groups={groups} must divide the output channels O={o} of x2 "
                         f"{tuple(x2.shape)}")
    if cg != c // groups:
        raise ValueError(f"{op}: x2 {tuple(x2.shape)} must have C/groups = {c}/{groups} = "
                         f"{c // groups} channels along dim 1, got {cg}")
    if x3 is not None and tuple(x3.shape) != (o,):
        raise ValueError(f"{op}: x3 (bias) must have shape ({o},) to match x2 "
                         f"{tuple(x2.shape)}; got {tuple(x3.shape)}")
    pt, pb, pl, pr = _padding(op, padding, (sh, sw), (dh, dw), (kh, kw))
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if kh == 0 or kw == 0 or span_h > h + pt + pb or span_w > w + pl + pr:
        pads = (pt, pl) if (pt, pl) == (pb, pr) else ((pt, pb), (pl, pr))
        raise ValueError(f"{op}: kernel {kh}x{kw} with dilation {(dh, dw)} spans "
                         f"{span_h}x{span_w}, which does not fit the padded input "
                         f"{h + pt + pb}x{w + pl + pr} (input {h}x{w}, padding {pads})")
    oh, ow = (h + pt + pb - span_h) // sh + 1, (w + pl + pr - span_w) // sw + 1
    return dict(N=n, C=c, H=h, W=w, O=o, KH=kh, KW=kw, OH=oh, OW=ow, SH=sh, SW=sw, PH=pt,
                PW=pl, PH2=pb, PW2=pr, DH=dh, DW=dw, G=groups, unbatched=unbatched)


def _y_shape(g: dict) -> tuple:
    shape = (g["O"], g["OH"], g["OW"])
    return shape if g["unbatched"] else (g["N"],) + shape


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
    padded = (g["H"] + g["PH"] + g["PH2"]) * (g["W"] + g["PW"] + g["PW2"])
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
            f"{g['N']}x{g['C']}x{g['H']}x{g['W']}, padded to {g['H'] + g['PH'] + g['PH2']}x"
            f"{g['W'] + g['PW'] + g['PW2']}, output {g['OH']}x{g['OW']}: {needed} bytes at "
            f"once, more than the {memory} bytes of memory")


# ---- NumPy: im2col through a strided window view of the padded input -----------------

def _numpy_cols(x: numpy.ndarray, g: dict) -> numpy.ndarray:
    """im2col on the CPU: (N, C·KH·KW, OH·OW) through a strided window view of the padded x."""
    xp = numpy.pad(x, ((0, 0), (0, 0), (g["PH"], g["PH2"]), (g["PW"], g["PW2"])))
    sn, sc, sh, sw = xp.strides
    windows = numpy.lib.stride_tricks.as_strided(
        xp, (g["N"], g["C"], g["KH"], g["KW"], g["OH"], g["OW"]),
        (sn, sc, sh * g["DH"], sw * g["DW"], sh * g["SH"], sw * g["SW"]), writeable=False)
    return windows.reshape(g["N"], g["C"] * g["KH"] * g["KW"], g["OH"] * g["OW"])


def _numpy_col2im(cols: numpy.ndarray, g: dict) -> numpy.ndarray:
    """The adjoint of :func:`_numpy_cols`: each window offset adds its slice back."""
    n, c = g["N"], g["C"]
    padded = numpy.zeros((n, c, g["H"] + g["PH"] + g["PH2"], g["W"] + g["PW"] + g["PW2"]),
                         cols.dtype)
    cols = cols.reshape(n, c, g["KH"], g["KW"], g["OH"], g["OW"])
    for ki in range(g["KH"]):
        for kj in range(g["KW"]):
            h0, w0 = ki * g["DH"], kj * g["DW"]
            padded[:, :, h0:h0 + g["SH"] * (g["OH"] - 1) + 1:g["SH"],
                   w0:w0 + g["SW"] * (g["OW"] - 1) + 1:g["SW"]] += cols[:, :, ki, kj]
    return padded[:, :, g["PH"]:g["PH"] + g["H"], g["PW"]:g["PW"] + g["W"]]


def _groups(g: dict) -> tuple:
    """The group axis of the grouped shapes: () for groups=1 (the plain products), else (G,)."""
    return () if g["G"] == 1 else (g["G"],)


def _weights(x2: Array, dtype: numpy.dtype, g: dict) -> Array:
    """The weight (O, C/G, KH, KW) as the GEMM's (G, O/G, C/G·KH·KW) matrices (no G axis for
    groups=1)."""
    return x2.astype(dtype, copy=False).reshape(
        _groups(g) + (g["O"] // g["G"], g["C"] // g["G"] * g["KH"] * g["KW"]))


def _split(a: Array, g: dict, rows: int, images: int | None = None) -> Array:
    """(N, G·rows, ...) data as (N, G, rows, L): each group's channels, a contiguous slice."""
    return a.reshape((g["N"] if images is None else images,) + _groups(g)
                     + (rows // g["G"], g["OH"] * g["OW"]))


def _cols_rows(g: dict) -> int:
    return g["C"] * g["KH"] * g["KW"]


def _conv2d_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, g: dict) -> None:
    cols = _split(_numpy_cols(x1.astype(y.dtype, copy=False), g), g, _cols_rows(g))
    products = numpy.matmul(_weights(x2, y.dtype, g), cols)
    if x3 is not None:
        products += x3.reshape(_groups(g) + (g["O"] // g["G"], 1))
    y[...] = products.reshape(y.shape)


def _conv2d_wrt_x1_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, gx1: Array,
                       g: dict, dtype: numpy.dtype) -> None:
    gy4 = _split(gy.astype(dtype, copy=False), g, g["O"])
    gcols = numpy.matmul(numpy.swapaxes(_weights(x2, dtype, g), -1, -2), gy4)
    gx1[...] = _numpy_col2im(gcols.reshape(g["N"], _cols_rows(g), g["OH"] * g["OW"]),
                             g).reshape(gx1.shape)


def _conv2d_wrt_x2_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, gx2: Array,
                       g: dict, dtype: numpy.dtype) -> None:
    gy3 = gy.astype(dtype, copy=False).reshape(g["N"], g["O"], g["OH"] * g["OW"])
    cols = _numpy_cols(x1.astype(dtype, copy=False), g)
    o, r = g["O"] // g["G"], _cols_rows(g) // g["G"]
    gw = numpy.empty((g["O"], r), dtype)
    for k in range(g["G"]):  # Σ over images and positions: one product per group
        gw[k * o:(k + 1) * o] = numpy.tensordot(gy3[:, k * o:(k + 1) * o],
                                                cols[:, k * r:(k + 1) * r], axes=([0, 2], [0, 2]))
    gx2[...] = gw.reshape(x2.shape)


def _conv2d_wrt_x3_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, gx3: Array,
                       g: dict, dtype: numpy.dtype) -> None:
    sum_to_shape(NUMPY, gy.astype(dtype, copy=False), gx3.reshape(1, g["O"], 1, 1))


# ---- kernels: im2col_<dtype>(x, cols, n, geometry), col2im_<dtype>(cols, gx, n, geometry),
# the products on cuda/matmul.cu's GEMM, images in chunks whose cols fit _COLS_BYTES.
# groups > 1: the GEMM's batch is (images, groups): group k multiplies rows k·C/G·KH·KW ...
# of the im2col buffer (its channels, contiguous) by its O/G filters; no atomics.
# Asymmetric padding ("same") needs only the top/left padding in the kernels: OH and OW,
# passed in, hold the bottom/right. -------------------------------------------------------

def _geometry_args(g: dict, n: int) -> tuple:
    """The kernels' geometry for a launch over ``n`` elements: the sizes they divide by
    with their fast-division magic words (every dividend is below n or the padded size)."""
    bound = max(n, g["H"] + g["PH"], g["W"] + g["PW"])
    return (numpy.int64(g["C"]),
            *(v for k in ("H", "W", "KH", "KW", "OH", "OW", "SH", "SW")
              for v in kernels.fastdiv(g[k], bound)),
            *(numpy.int64(g[k]) for k in ("PH", "PW", "DH", "DW")))


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
        call.launch_1d("im2col", cols.size, (x, cols, numpy.int64(cols.size),
                                             *_geometry_args(g, cols.size)))
    return cols


def _conv2d_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, g: dict) -> None:
    xp = call.xp
    w = _weights(x2, call.dtype, g)
    y4 = _split(y, g, g["O"])
    grouped = g["G"] > 1
    for start, stop in _chunks(g, call.dtype.itemsize):
        count = stop - start
        cols = _split(_im2col(call, x1[start:stop], g), g, _cols_rows(g), count)
        # groups=1: the bias in the GEMM's epilogue (bias[row]); grouped, the rows restart
        # at every group, so the bias is added once after the products (as gw += partial
        # below: one elementwise pass of the array library)
        gemm(call.backend, xp.broadcast_to(w, (count,) + w.shape), cols, y4[start:stop],
             bias=None if grouped else x3,
             bias_mode=BIAS_PER_ROW if x3 is not None and not grouped else BIAS_NONE)
    if grouped and x3 is not None:
        y4 += x3.reshape(_groups(g) + (g["O"] // g["G"], 1))


def _conv2d_wrt_x1_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx1: Array, g: dict, dtype: numpy.dtype) -> None:
    xp = call.xp
    wt = xp.swapaxes(_weights(x2, dtype, g), -1, -2)
    gy4 = _split(gy, g, g["O"])
    gx4 = gx1.reshape(g["N"], g["C"], g["H"], g["W"])
    for start, stop in _chunks(g, dtype.itemsize):
        count = stop - start
        gcols = xp.empty((count, g["C"] * g["KH"] * g["KW"], g["OH"] * g["OW"]), dtype)
        gemm(call.backend, xp.broadcast_to(wt, (count,) + wt.shape), gy4[start:stop],
             _split(gcols, g, _cols_rows(g), count))
        part = gx4[start:stop]
        call.launch_1d("col2im", part.size, (gcols, part, numpy.int64(part.size),
                                             *_geometry_args(g, part.size)))


def _conv2d_wrt_x2_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx2: Array, g: dict, dtype: numpy.dtype) -> None:
    xp = call.xp
    gy4 = _split(gy, g, g["O"])
    gw = gx2.reshape(_groups(g) + (g["O"] // g["G"], _cols_rows(g) // g["G"]))
    if g["N"] == 0:
        gw[...] = 0
    for i, (start, stop) in enumerate(_chunks(g, dtype.itemsize)):
        cols = _split(_im2col(call, x1[start:stop], g), g, _cols_rows(g), stop - start)
        # Σ over the chunk's images happens inside the GEMM (a reduction batch).
        partial = gw if i == 0 else xp.empty(gw.shape, dtype)
        gemm(call.backend, gy4[start:stop], xp.swapaxes(cols, -1, -2), partial)
        if i:
            gw += partial


def _conv2d_wrt_x3_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx3: Array, g: dict, dtype: numpy.dtype) -> None:
    sum_to(call.backend, gy, gx3.reshape(1, g["O"], 1, 1))


# ---- public functions ---------------------------------------------------------------

CONV2D = Signature("conv2d", FAMILY, ("x1", "x2", "x3"), optional=("x3",),
                   kernel_dtypes=ALL_FLOAT_DTYPES)
_GRADIENT = {k: (Signature(f"conv2d_wrt_x{k}", FAMILY, ("x1", "x2", "x3", "y", "gy"),
                           optional=("x3",), kernel_dtypes=ALL_FLOAT_DTYPES), cpu, gpu)
             for k, cpu, gpu in ((1, _conv2d_wrt_x1_cpu, _conv2d_wrt_x1_gpu),
                                 (2, _conv2d_wrt_x2_cpu, _conv2d_wrt_x2_gpu),
                                 (3, _conv2d_wrt_x3_cpu, _conv2d_wrt_x3_gpu))}


def conv2d(x1: Array, x2: Array, x3: Array | None = None, *, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1, out: Array | None = None) -> Array:
    """y[n, o] = Σ_{c,ki,kj} x1[n, k·C/G + c, oh·SH - PT + ki·DH, ow·SW - PL + kj·DW]
    · x2[o, c, ki, kj] + x3[o], k = o // (O/G) the group of o: input (N, C, H, W) or
    unbatched (C, H, W) (result (O, OH, OW)), weight (O, C/groups, KH, KW), bias (O,) or
    None; stride and dilation an int or an (h, w) pair; zero padding an int, a pair,
    "valid" (none) or "same" (stride 1; PyTorch's split, the odd one at the bottom/right);
    groups divides C and O (groups = C: depthwise)."""
    call = CONV2D.bind(x1, x2, x3)
    x1, x2, x3 = call.inputs
    g = _geometry(call.op, x1, x2, x3, stride, padding, dilation, groups)
    _check_buffers(call, g, padding)
    if g["unbatched"]:
        return call.run(out, _y_shape(g), _conv2d_cpu, _conv2d_gpu, g,
                        inputs=(x1[None], x2, x3))
    return call.run(out, _y_shape(g), _conv2d_cpu, _conv2d_gpu, g)


def _gradient(k: int, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, stride: Any,
              padding: Any, dilation: Any, groups: Any, out: Array | None) -> Array:
    signature, cpu, gpu = _GRADIENT[k]
    call = signature.bind(x1, x2, x3, y, gy)
    x1, x2, x3, y, gy = call.inputs
    g = _geometry(call.op, x1, x2, x3, stride, padding, dilation, groups)
    if k == 3 and x3 is None:
        raise ValueError(f"{call.op}: x3 is None (the forward had no bias), so there is no bias "
                         "gradient to compute")
    _check_buffers(call, g, padding)
    shape = _y_shape(g)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    xk = (x1, x2, x3)[k - 1]
    inputs = (x1[None], x2, x3, y[None], gy[None]) if g["unbatched"] else None
    return call.run(out, xk.shape, cpu, gpu, g, call.dtype, dtype=xk.dtype, inputs=inputs)


def conv2d_wrt_x1(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                  out: Array | None = None) -> Array:
    """col2im(x2ᵀ · gy), per group: every input element gets the sum over the windows that
    read it; of x1's shape (unbatched too)."""
    return _gradient(1, x1, x2, x3, y, gy, stride, padding, dilation, groups, out)


def conv2d_wrt_x2(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                  out: Array | None = None) -> Array:
    """Σ_n gy[n] · im2col(x1)[n]ᵀ per group, reshaped to (O, C/groups, KH, KW)."""
    return _gradient(2, x1, x2, x3, y, gy, stride, padding, dilation, groups, out)


def conv2d_wrt_x3(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                  out: Array | None = None) -> Array:
    """Σ gy over n, oh, ow; ValueError when x3 is None."""
    return _gradient(3, x1, x2, x3, y, gy, stride, padding, dilation, groups, out)


register(FAMILY, conv2d, conv2d_wrt_x1, conv2d_wrt_x2, conv2d_wrt_x3)
