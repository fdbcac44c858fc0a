"""Matrix products: ``matmul``, the fused ``linear`` layer, and their gradients.

Kernels in cuda/matmul.cu: one tiled GEMM per dtype that reads its operands through
element strides (transposed, strided and batch-broadcast operands need no copies),
sums an optional reduction batch into the same output (the gradient of an operand
broadcast over batches), and applies bias + activation in its epilogue. float16
runs on the tensor cores (mma.sync, float32 accumulation) when the launcher has them
(sm_80+), else on the SIMT kernel (half loads, float accumulation).
The NumPy backend computes in float32/float64 only.

Decisions (see docs/operators.md): ``matmul`` needs inputs of at least 2 dims (1-d
operands raise ``ValueError``; reshape them to (1, n) or (n, 1)); ``linear`` takes
x1 of shape (..., in_features), any number of leading dims (a 1-d x1 is one row);
``linear_wrt_x3`` raises ``ValueError`` when the forward had no bias (x3 None).
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from . import _layout
from ..backend import HALF_DTYPES, NUMPY, Backend, check_shape, output, prepare
from ..kernels import contiguous, finish, grid_1d, result_buffer, size, suffix
from .reduction import sum_to_shape
from ..registry import register

__all__ = ["matmul", "matmul_wrt_x1", "matmul_wrt_x2",
           "linear", "linear_wrt_x1", "linear_wrt_x2", "linear_wrt_x3"]

FAMILY = "matmul"
Array = Any

ACTIVATIONS = {None: 0, "relu": 1, "sigmoid": 2, "tanh": 3}
BIAS_NONE, BIAS_PER_COLUMN, BIAS_PER_ROW = 0, 1, 2

_THREADS = 256
_MAX_GRID_YZ = 65535
# dtype -> (BM, BN, elements per vector load) of the SIMT kernel gemm_<sfx>
_SIMT = {numpy.dtype(numpy.float32): (128, 128, 4), numpy.dtype(numpy.float64): (64, 64, 2),
         numpy.dtype(numpy.float16): (64, 64, 1)}
_TENSOR_CORE = (128, 128, 8)  # gemm_tc_f16


# ---- the GEMM launcher shared by matmul, linear and conv2d ---------------------

def _address(x: Array) -> int:
    if isinstance(x, numpy.ndarray):
        return x.__array_interface__["data"][0]
    return x.data.ptr  # CuPy


def _mode(rows_stride: int, k_stride: int, batch_strides: tuple, vec: int, x: Array) -> int:
    """The kernel's load mode of one operand: bit 0 walks the row (m or n) dim with
    consecutive threads (it is the contiguous one), bit 1 allows vector loads of
    ``vec`` elements (stride 1 along the walk, every other stride and the base aligned)."""
    along_row = rows_stride == 1 and k_stride != 1
    unit, other = (rows_stride, k_stride) if along_row else (k_stride, rows_stride)
    aligned = (vec > 1 and unit == 1 and other % vec == 0
               and all(s % vec == 0 for s in batch_strides)
               and _address(x) % (vec * x.itemsize) == 0)
    return int(along_row) | (2 if aligned else 0)


def gemm(backend: Backend, a: Array, b: Array, c: Array, *, bias: Array | None = None,
         bias_mode: int = BIAS_NONE, act: int = 0) -> Array:
    """``c = act(a @ b + bias)`` on the kernel backend ``backend``.

    ``a`` (*batch, M, K) and ``b`` (*batch, K, N): views of one dtype with the same
    batch shape (broadcast views, stride 0, welcome). ``c`` (*cbatch, M, N): C-contiguous,
    same dtype; ``cbatch`` is ``batch`` with some dims reduced (size 1 there, or leading
    dims dropped): the products over those dims are summed into ``c``.
    """
    xp = backend.xp
    batch = tuple(a.shape[:-2])
    m, k = a.shape[-2:]
    n = b.shape[-1]
    cbatch = tuple(c.shape[:-2])
    lead = len(batch) - len(cbatch)
    sa, sb = _layout.element_strides(a), _layout.element_strides(b)
    kept = [i for i in range(len(batch)) if i >= lead and cbatch[i - lead] == batch[i]]
    reduced = [i for i in range(len(batch)) if i not in kept]
    kept_dims, (ka, kb) = _layout.coalesce([batch[i] for i in kept], [sa[i] for i in kept],
                                           [sb[i] for i in kept])
    red_dims, (rda, rdb) = _layout.coalesce([batch[i] for i in reduced],
                                            [sa[i] for i in reduced], [sb[i] for i in reduced])
    if len(kept_dims) > 2:  # copies of the operands make every kept dim one
        return gemm(backend, xp.ascontiguousarray(a), xp.ascontiguousarray(b), c, bias=bias,
                    bias_mode=bias_mode, act=act)
    if len(red_dims) > 1:  # interleaved reduced dims: full products, then sum them
        full = xp.empty(batch + (m, n), c.dtype)
        gemm(backend, a, b, full)
        return sum_to(backend, full, c)
    nz = math.prod(kept_dims)
    if nz == 0 or m == 0 or n == 0:
        return c
    nz2 = kept_dims[-1] if kept_dims else 1
    za1, za2 = ([0, 0] + ka)[-2:]
    zb1, zb2 = ([0, 0] + kb)[-2:]
    nr = red_dims[0] if red_dims else 1
    ra, rb = (rda[0], rdb[0]) if red_dims else (0, 0)
    sam, sak = sa[-2:]
    sbk, sbn = sb[-2:]
    dtype = numpy.dtype(c.dtype)
    launcher = backend.launcher
    tensor_cores = dtype == numpy.float16 and launcher.tensor_cores
    if tensor_cores:
        bm, bn, vec = _TENSOR_CORE
        kernel = "gemm_tc_f16"
    else:
        bm, bn, vec = _SIMT[dtype]
        kernel = f"gemm_{suffix(dtype)}"
    a_mode = _mode(sam, sak, (za1, za2, ra), vec, a)
    b_mode = _mode(sbn, sbk, (zb1, zb2, rb), vec, b)
    c_vec = int(not tensor_cores and vec > 1 and n % vec == 0
                and _address(c) % (vec * c.itemsize) == 0)
    if bias is None:
        bias, bias_mode = xp.zeros(1, dtype), BIAS_NONE
    grid = (math.ceil(n / bn), min(math.ceil(m / bm), _MAX_GRID_YZ), min(nz, _MAX_GRID_YZ))
    args = (a, b, c, bias, size(m), size(n), size(k), size(sam), size(sak), size(sbk),
            size(sbn), size(nz), size(nz2), size(za1), size(za2), size(zb1), size(zb2),
            size(nr), size(ra), size(rb), numpy.int32(a_mode), numpy.int32(b_mode),
            numpy.int32(c_vec), numpy.int32(bias_mode), numpy.int32(act))
    launcher.launch(FAMILY, kernel, grid, (_THREADS,), args)
    return c


def sum_to(backend: Backend, g: Array, out: Array) -> Array:
    """:func:`gpuops.reduction.sum_to_shape`, float16 summed in float32 (the reduction
    kernels have no float16 variant; float32 accumulation is what the GEMM does too)."""
    if numpy.dtype(g.dtype) != numpy.float16 or not backend.uses_kernels:
        return sum_to_shape(backend, g, out)
    wide = backend.xp.empty(out.shape, numpy.float32)
    sum_to_shape(backend, g.astype(numpy.float32), wide)
    out[...] = wide
    return out


def activation_code(op: str, activation: Any) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of None, 'relu', 'sigmoid', 'tanh'; "
                         f"got {activation!r}")
    return ACTIVATIONS[activation]


# ---- matmul ----------------------------------------------------------------------

def _matmul_shapes(op: str, x1: Array, x2: Array) -> tuple:
    """(batch shape, M, K, N) of x1 @ x2, or ValueError naming ``op`` and the shapes."""
    if x1.ndim < 2 or x2.ndim < 2:
        raise ValueError(f"{op}: x1 and x2 need at least 2 dims, got shapes {tuple(x1.shape)} "
                         f"and {tuple(x2.shape)} (reshape a vector to (1, n) or (n, 1))")
    if x1.shape[-1] != x2.shape[-2]:
        raise ValueError(f"{op}: shapes {tuple(x1.shape)} and {tuple(x2.shape)} do not match "
                         f"for a matrix product (x1.shape[-1] = {x1.shape[-1]} != "
                         f"x2.shape[-2] = {x2.shape[-2]})")
    try:
        batch = _layout.broadcast_shape(op, x1.shape[:-2], x2.shape[:-2])
    except ValueError:
        raise ValueError(f"{op}: batch dims of {tuple(x1.shape)} and {tuple(x2.shape)} "
                         "do not broadcast") from None
    return batch, x1.shape[-2], x1.shape[-1], x2.shape[-1]


def matmul(x1: Array, x2: Array, *, out: Array | None = None) -> Array:
    """y = x1 @ x2 with NumPy semantics for inputs of >= 2 dims (batch dims broadcast)."""
    op = "matmul"
    p = prepare(op, ("x1", "x2"), (x1, x2), gpu_dtypes=HALF_DTYPES)
    x1, x2 = p.arrays
    batch, m, k, n = _matmul_shapes(op, x1, x2)
    out = output(op, p.backend, out, batch + (m, n), p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        return numpy.matmul(x1, x2, out=out)
    xp = backend.xp
    target = result_buffer(backend, out, p.dtype)
    a = xp.broadcast_to(x1.astype(p.dtype, copy=False), batch + (m, k))
    b = xp.broadcast_to(x2.astype(p.dtype, copy=False), batch + (k, n))
    gemm(backend, a, b, target)
    return finish(out, target)


def _matmul_grad(k: int, x1: Array, x2: Array, y: Array, gy: Array, out: Array | None) -> Array:
    op = f"matmul_wrt_x{k}"
    p = prepare(op, ("x1", "x2", "y", "gy"), (x1, x2, y, gy), gpu_dtypes=HALF_DTYPES)
    x1, x2, y, gy = p.arrays
    batch, m, kk, n = _matmul_shapes(op, x1, x2)
    check_shape(op, "y", y, batch + (m, n))
    check_shape(op, "gy", gy, batch + (m, n))
    xk = (x1, x2)[k - 1]
    out = output(op, p.backend, out, xk.shape, xk.dtype)
    backend = p.backend
    xp = backend.xp
    # gx1 = gy . x2^T, gx2 = x1^T . gy, summed over the batch dims xk was broadcast along.
    if not backend.uses_kernels:
        full = (numpy.matmul(gy, numpy.swapaxes(x2, -1, -2)) if k == 1
                else numpy.matmul(numpy.swapaxes(x1, -1, -2), gy))
        return sum_to_shape(NUMPY, full, out)
    gy = gy.astype(p.dtype, copy=False)
    target = result_buffer(backend, out, p.dtype)
    if k == 1:
        b = xp.broadcast_to(xp.swapaxes(x2.astype(p.dtype, copy=False), -1, -2), batch + (n, kk))
        gemm(backend, gy, b, target)
    else:
        a = xp.broadcast_to(xp.swapaxes(x1.astype(p.dtype, copy=False), -1, -2), batch + (kk, m))
        gemm(backend, a, gy, target)
    return finish(out, target)


def matmul_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array, *,
                  out: Array | None = None) -> Array:
    """gy @ x2ᵀ, summed over the batch dims along which x1 was broadcast."""
    return _matmul_grad(1, x1, x2, y, gy, out)


def matmul_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array, *,
                  out: Array | None = None) -> Array:
    """x1ᵀ @ gy, summed over the batch dims along which x2 was broadcast."""
    return _matmul_grad(2, x1, x2, y, gy, out)


# ---- linear ----------------------------------------------------------------------

def _prepare_linear(op: str, names: tuple, values: tuple, activation: Any):
    code = activation_code(op, activation)
    p = prepare(op, names, values, optional=("x3",), gpu_dtypes=HALF_DTYPES)
    x1, x2, x3 = p.arrays[:3]
    if x1.ndim < 1 or x2.ndim != 2 or x1.shape[-1] != x2.shape[1]:
        raise ValueError(f"{op}: x1 must be (..., in_features) and x2 (out_features, "
                         f"in_features); got shapes {tuple(x1.shape)} and {tuple(x2.shape)}")
    if x3 is not None and tuple(x3.shape) != (x2.shape[0],):
        raise ValueError(f"{op}: x3 (bias) must have shape ({x2.shape[0]},) to match "
                         f"x2 {tuple(x2.shape)}; got {tuple(x3.shape)}")
    return p, code


def _numpy_activate(y: numpy.ndarray, activation: str | None) -> numpy.ndarray:
    if activation == "relu":
        numpy.maximum(y, 0, out=y)
    elif activation == "sigmoid":
        with numpy.errstate(over="ignore"):  # exp(-y) = inf gives the right 0
            numpy.negative(y, out=y)
            numpy.exp(y, out=y)
            y += 1
            numpy.reciprocal(y, out=y)
    elif activation == "tanh":
        numpy.tanh(y, out=y)
    return y


def linear(x1: Array, x2: Array, x3: Array | None = None, *, activation: str | None = None,
           out: Array | None = None) -> Array:
    """y = act(x1 @ x2ᵀ + x3): x1 (..., in), weight x2 (out, in), bias x3 (out,) or None,
    activation None, "relu", "sigmoid" or "tanh" (fused into the GEMM's epilogue)."""
    op = "linear"
    p, act = _prepare_linear(op, ("x1", "x2", "x3"), (x1, x2, x3), activation)
    x1, x2, x3 = p.arrays
    out_features, in_features = x2.shape
    out = output(op, p.backend, out, x1.shape[:-1] + (out_features,), p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        numpy.matmul(x1, x2.T, out=out)
        if x3 is not None:
            out += x3
        return _numpy_activate(out, activation)
    target = result_buffer(backend, out, p.dtype)
    rows = math.prod(x1.shape[:-1])
    a = x1.astype(p.dtype, copy=False).reshape(rows, in_features)
    b = x2.astype(p.dtype, copy=False).T
    bias = None if x3 is None else contiguous(backend, x3, p.dtype)
    gemm(backend, a, b, target.reshape(rows, out_features), bias=bias,
         bias_mode=BIAS_NONE if bias is None else BIAS_PER_COLUMN, act=act)
    return finish(out, target)


def _pre_activation_grad(backend: Backend, y: Array, gy: Array, activation: str | None,
                         act: int, dtype: numpy.dtype) -> Array:
    """gy · act'(pre-activation), from the output y (relu 1[y>0], sigmoid y(1-y), tanh 1-y²)."""
    if activation is None:
        return gy.astype(dtype, copy=False)
    g = backend.xp.empty(y.shape, dtype)
    if not backend.uses_kernels:  # act'(y), then times gy, in g (no temporaries)
        if activation == "relu":
            numpy.greater(y, 0, out=g)  # 1[y > 0] as 1.0 / 0.0
        elif activation == "sigmoid":
            numpy.subtract(1, y, out=g)
            g *= y
        else:  # tanh
            numpy.multiply(y, y, out=g)
            numpy.subtract(1, g, out=g)
        g *= gy
        return g
    if g.size:
        backend.launcher.launch(FAMILY, f"act_grad_{suffix(dtype)}", grid_1d(backend.launcher, g.size),
                                (_THREADS,), (contiguous(backend, y, dtype),
                                              contiguous(backend, gy, dtype), g, size(g.size),
                                              numpy.int32(act)))
    return g


def _linear_grad(k: int, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                 activation: str | None, out: Array | None) -> Array:
    op = f"linear_wrt_x{k}"
    p, act = _prepare_linear(op, ("x1", "x2", "x3", "y", "gy"), (x1, x2, x3, y, gy), activation)
    x1, x2, x3, y, gy = p.arrays
    if k == 3 and x3 is None:
        raise ValueError(f"{op}: x3 is None (the forward had no bias), so there is no bias "
                         "gradient to compute")
    out_features, in_features = x2.shape
    check_shape(op, "y", y, x1.shape[:-1] + (out_features,))
    check_shape(op, "gy", gy, x1.shape[:-1] + (out_features,))
    xk = (x1, x2, x3)[k - 1]
    out = output(op, p.backend, out, xk.shape, xk.dtype)
    backend = p.backend
    g = _pre_activation_grad(backend, y, gy, activation, act, p.dtype)
    rows = math.prod(x1.shape[:-1])
    g2 = g.reshape(rows, out_features)
    if k == 3:  # Σ over every row of g
        return sum_to(backend, g2, out)
    x1r = x1.reshape(rows, in_features)
    if not backend.uses_kernels:  # g @ W, gᵀ @ x1
        return numpy.matmul(g, x2, out=out) if k == 1 else numpy.matmul(g2.T, x1r, out=out)
    target = result_buffer(backend, out, p.dtype)
    if k == 1:
        gemm(backend, g2, x2.astype(p.dtype, copy=False), target.reshape(rows, in_features))
    else:
        gemm(backend, g2.T, x1r.astype(p.dtype, copy=False), target)
    return finish(out, target)


def linear_wrt_x1(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  activation: str | None = None, out: Array | None = None) -> Array:
    """g @ x2 with g = gy · act'(pre-activation)."""
    return _linear_grad(1, x1, x2, x3, y, gy, activation, out)


def linear_wrt_x2(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  activation: str | None = None, out: Array | None = None) -> Array:
    """gᵀ @ x1 (rows of x1's leading dims summed) with g = gy · act'(pre-activation)."""
    return _linear_grad(2, x1, x2, x3, y, gy, activation, out)


def linear_wrt_x3(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  activation: str | None = None, out: Array | None = None) -> Array:
    """Σ_rows g with g = gy · act'(pre-activation); ValueError when x3 is None."""
    return _linear_grad(3, x1, x2, x3, y, gy, activation, out)


register(FAMILY, matmul, matmul_wrt_x1, matmul_wrt_x2)
register(FAMILY, linear, linear_wrt_x1, linear_wrt_x2, linear_wrt_x3)
