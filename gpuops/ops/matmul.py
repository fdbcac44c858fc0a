"""Matrix products: ``matmul``, the fused ``linear`` layer, and their gradients.

Kernels in cuda/matmul.cu: one tiled GEMM per dtype that reads its operands through
element strides (transposed, strided and batch-broadcast operands need no copies),
sums an optional reduction batch into the same output (the gradient of an operand
broadcast over batches), and applies bias + activation in its epilogue. float16 and
bfloat16 run on the tensor cores (mma.sync .f16 / .bf16, float32 accumulation, one
rounding of the result) when the launcher has them (sm_80+), else on the SIMT kernel
(16-bit loads, float32 accumulation).
The NumPy backend computes in float32/float64 only.

Decisions (see docs/operators.md): ``matmul`` follows NumPy for 1-d operands (a 1-d x1
is a row (1, n), a 1-d x2 a column (n, 1), the unit axis removed from the result; two
vectors give a 0-d result; gradients have the operands' shapes), 0-d operands raise
``ValueError``; ``linear`` takes
x1 of shape (..., in_features), any number of leading dims (a 1-d x1 is one row);
``linear_wrt_x3`` raises ``ValueError`` when the forward had no bias (x3 None).
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from .. import kernels
from ..backend import ALL_FLOAT_DTYPES, BFLOAT16, NUMPY, SIXTEEN_BIT_DTYPES, Backend
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _layout, _math
from .reduction import sum_to_shape

__all__ = ["matmul", "matmul_wrt_x1", "matmul_wrt_x2",
           "linear", "linear_wrt_x1", "linear_wrt_x2", "linear_wrt_x3"]

FAMILY = "matmul"
Array = Any

# The GEMM epilogue's ``act`` codes (ACT_* in cuda/matmul.cu), from gpuops.kernels.CONSTANTS.
ACTIVATIONS = {None: kernels.CONSTANTS["ACT_NONE"], "relu": kernels.CONSTANTS["ACT_RELU"],
               "sigmoid": kernels.CONSTANTS["ACT_SIGMOID"], "tanh": kernels.CONSTANTS["ACT_TANH"]}
BIAS_NONE, BIAS_PER_COLUMN, BIAS_PER_ROW = 0, 1, 2

_GEMM_THREADS = kernels.CONSTANTS["GEMM_THREADS"]
_MAX_GRID_YZ = 65535
# dtype -> (BM, BN, elements per vector load) of the SIMT kernel gemm_<dtype>
_SIMT = {numpy.dtype(numpy.float32): (128, 128, 4), numpy.dtype(numpy.float64): (64, 64, 2),
         numpy.dtype(numpy.float16): (64, 64, 1), BFLOAT16: (64, 64, 1)}
_TENSOR_CORE = (128, 128, 8)  # gemm_tc_f16, gemm_tc_bf16


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
         bias_mode: int = BIAS_NONE, act: int = ACTIVATIONS[None]) -> Array:
    """``c = act(a @ b + bias)`` on the kernel backend ``backend``.

    ``a`` (*batch, M, K) and ``b`` (*batch, K, N): views of one dtype with the same
    batch shape (broadcast views, stride 0, welcome). ``c`` (*cbatch, M, N): C-contiguous,
    same dtype; ``cbatch`` is ``batch`` with some dims reduced (size 1 there, or leading
    dims dropped): the products over those dims are summed into ``c``.
    The kernels are this family's (cuda/matmul.cu) whichever operator calls.
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
    tensor_cores = dtype in SIXTEEN_BIT_DTYPES and backend.kernel_launcher.tensor_cores
    if tensor_cores:
        bm, bn, vec = _TENSOR_CORE
        kernel = "gemm_tc"
    else:
        bm, bn, vec = _SIMT[dtype]
        kernel = "gemm"
    a_mode = _mode(sam, sak, (za1, za2, ra), vec, a)
    b_mode = _mode(sbn, sbk, (zb1, zb2, rb), vec, b)
    c_vec = int(not tensor_cores and vec > 1 and n % vec == 0
                and _address(c) % (vec * c.itemsize) == 0)
    if bias is None:
        bias, bias_mode = xp.zeros(1, dtype), BIAS_NONE
    grid = (math.ceil(n / bn), min(math.ceil(m / bm), _MAX_GRID_YZ), min(nz, _MAX_GRID_YZ))
    i64 = numpy.int64
    args = (a, b, c, bias, i64(m), i64(n), i64(k), i64(sam), i64(sak), i64(sbk), i64(sbn),
            i64(nz), i64(nz2), i64(za1), i64(za2), i64(zb1), i64(zb2), i64(nr), i64(ra),
            i64(rb), numpy.int32(a_mode), numpy.int32(b_mode), numpy.int32(c_vec),
            numpy.int32(bias_mode), numpy.int32(act))
    backend.kernel_launcher.launch(FAMILY, kernels.kernel_name(kernel, dtype), grid,
                                   (_GEMM_THREADS,), args)
    return c


def sum_to(backend: Backend, g: Array, out: Array) -> Array:
    """:func:`gpuops.ops.reduction.sum_to_shape` on the kernel backend ``backend``, 16-bit
    floats summed in float32 (the reduction kernels have no 16-bit variant; float32
    accumulation is what the GEMM does too)."""
    if numpy.dtype(g.dtype) not in SIXTEEN_BIT_DTYPES:
        return sum_to_shape(backend, g, out)
    wide = backend.xp.empty(out.shape, numpy.float32)
    sum_to_shape(backend, g.astype(numpy.float32), wide)
    out[...] = wide
    return out


def _check_activation(op: str, activation: Any) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of None, 'relu', 'sigmoid', 'tanh'; "
                         f"got {activation!r}")


# ---- matmul: y = x1 @ x2; gx1 = gy @ x2ᵀ, gx2 = x1ᵀ @ gy (summed over broadcast batches) ----
# NumPy computes with numpy.matmul; the kernels read the (batch-broadcast, transposed)
# operands through strides, and sum a gradient's broadcast batches inside the GEMM.

def _matmul_shapes(op: str, x1: Array, x2: Array) -> tuple:
    """(batch shape, M, K, N) of x1 @ x2 (a 1-d x1 as (1, K), a 1-d x2 as (K, 1)), or
    ValueError naming ``op`` and the shapes."""
    if x1.ndim < 1 or x2.ndim < 1:
        raise ValueError(f"{op}: x1 and x2 need at least 1 dim, got shapes {tuple(x1.shape)} "
                         f"and {tuple(x2.shape)}")
    s1 = tuple(x1.shape) if x1.ndim > 1 else (1,) + tuple(x1.shape)
    s2 = tuple(x2.shape) if x2.ndim > 1 else tuple(x2.shape) + (1,)
    if s1[-1] != s2[-2]:
        raise ValueError(f"{op}: shapes {tuple(x1.shape)} and {tuple(x2.shape)} do not match "
                         f"for a matrix product (x1.shape[-1] = {x1.shape[-1]} != "
                         f"x2.shape[{-2 if x2.ndim > 1 else 0}] = {s2[-2]})")
    try:
        batch = _layout.broadcast_shape(op, s1[:-2], s2[:-2])
    except ValueError:
        raise ValueError(f"{op}: batch dims of {tuple(x1.shape)} and {tuple(x2.shape)} "
                         "do not broadcast") from None
    return batch, s1[-2], s1[-1], s2[-1]


def _result_shape(x1: Array, x2: Array, batch: tuple, m: int, n: int) -> tuple:
    """batch + (m, n) without the unit axes of a 1-d x1 (m) or x2 (n), as NumPy's matmul."""
    return batch + ((m,) if x1.ndim > 1 else ()) + ((n,) if x2.ndim > 1 else ())


def _as_matrices(xp: Any, x1: Array, x2: Array, *results: Array) -> tuple:
    """x1 and x2 as matrices (a 1-d x1 a row, a 1-d x2 a column) and ``results`` (of the
    product's shape: y, gy) with those unit axes back: views, no copies."""
    if x2.ndim == 1:
        x2 = x2[:, None]
        results = tuple(xp.expand_dims(r, -1) for r in results)
    if x1.ndim == 1:
        x1 = x1[None, :]
        results = tuple(xp.expand_dims(r, -2) for r in results)
    return (x1, x2, *results)


def _matmul_cpu(x1: Array, x2: Array, y: Array) -> None:
    numpy.matmul(x1, x2, out=y)  # NumPy's own 1-d rules


def _matmul_gpu(call: Call, x1: Array, x2: Array, y: Array) -> None:
    x1, x2, y = _as_matrices(call.xp, x1, x2, y)
    batch, (m, k), n = y.shape[:-2], x1.shape[-2:], x2.shape[-1]
    a = call.xp.broadcast_to(x1.astype(call.dtype, copy=False), batch + (m, k))
    b = call.xp.broadcast_to(x2.astype(call.dtype, copy=False), batch + (k, n))
    gemm(call.backend, a, b, y)


# The gradients get x1, x2, y, gy as matrices (_as_matrices) and write gx through a view with
# the unit axis of a 1-d operand back (``unit``: -2 for a 1-d x1, -1 for a 1-d x2, else None).

def _matmul_wrt_x1_cpu(x1: Array, x2: Array, y: Array, gy: Array, gx1: Array,
                       unit: int | None) -> None:
    gx1 = gx1 if unit is None else numpy.expand_dims(gx1, unit)
    sum_to_shape(NUMPY, numpy.matmul(gy, numpy.swapaxes(x2, -1, -2)), gx1)


def _matmul_wrt_x1_gpu(call: Call, x1: Array, x2: Array, y: Array, gy: Array,
                       gx1: Array, unit: int | None) -> None:
    xp = call.xp
    gx1 = gx1 if unit is None else xp.expand_dims(gx1, unit)
    k, n = x2.shape[-2:]
    x2t = xp.broadcast_to(xp.swapaxes(x2.astype(call.dtype, copy=False), -1, -2),
                          gy.shape[:-2] + (n, k))
    gemm(call.backend, gy.astype(call.dtype, copy=False), x2t, gx1)


def _matmul_wrt_x2_cpu(x1: Array, x2: Array, y: Array, gy: Array, gx2: Array,
                       unit: int | None) -> None:
    gx2 = gx2 if unit is None else numpy.expand_dims(gx2, unit)
    sum_to_shape(NUMPY, numpy.matmul(numpy.swapaxes(x1, -1, -2), gy), gx2)


def _matmul_wrt_x2_gpu(call: Call, x1: Array, x2: Array, y: Array, gy: Array,
                       gx2: Array, unit: int | None) -> None:
    xp = call.xp
    gx2 = gx2 if unit is None else xp.expand_dims(gx2, unit)
    m, k = x1.shape[-2:]
    x1t = xp.broadcast_to(xp.swapaxes(x1.astype(call.dtype, copy=False), -1, -2),
                          gy.shape[:-2] + (k, m))
    gemm(call.backend, x1t, gy.astype(call.dtype, copy=False), gx2)


MATMUL = Signature("matmul", FAMILY, ("x1", "x2"), kernel_dtypes=ALL_FLOAT_DTYPES, strided=True)
_MATMUL_GRADIENT = {k: (Signature(f"matmul_wrt_x{k}", FAMILY, ("x1", "x2", "y", "gy"),
                                  kernel_dtypes=ALL_FLOAT_DTYPES, strided=True), cpu, gpu)
                    for k, cpu, gpu in ((1, _matmul_wrt_x1_cpu, _matmul_wrt_x1_gpu),
                                        (2, _matmul_wrt_x2_cpu, _matmul_wrt_x2_gpu))}


def matmul(x1: Array, x2: Array, *, out: Array | None = None) -> Array:
    """y = x1 @ x2 with NumPy semantics (batch dims broadcast; a 1-d x1 is a row, a 1-d x2
    a column, their unit axis removed from y; two 1-d operands give a 0-d y)."""
    call = MATMUL.bind(x1, x2)
    x1, x2 = call.inputs
    batch, m, _, n = _matmul_shapes(call.op, x1, x2)
    return call.run(out, _result_shape(x1, x2, batch, m, n), _matmul_cpu, _matmul_gpu)


def _matmul_gradient(k: int, x1: Array, x2: Array, y: Array, gy: Array,
                     out: Array | None) -> Array:
    signature, cpu, gpu = _MATMUL_GRADIENT[k]
    call = signature.bind(x1, x2, y, gy)
    x1, x2, y, gy = call.inputs
    batch, m, _, n = _matmul_shapes(call.op, x1, x2)
    shape = _result_shape(x1, x2, batch, m, n)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    xk = (x1, x2)[k - 1]
    unit = None if xk.ndim > 1 else (-2, -1)[k - 1]
    return call.run(out, xk.shape, cpu, gpu, unit, dtype=xk.dtype,
                    inputs=_as_matrices(call.xp, x1, x2, y, gy))


def matmul_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array, *,
                  out: Array | None = None) -> Array:
    """gy @ x2ᵀ, summed over the batch dims along which x1 was broadcast (x1's shape,
    1-d for a 1-d x1)."""
    return _matmul_gradient(1, x1, x2, y, gy, out)


def matmul_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array, *,
                  out: Array | None = None) -> Array:
    """x1ᵀ @ gy, summed over the batch dims along which x2 was broadcast (x2's shape,
    1-d for a 1-d x2)."""
    return _matmul_gradient(2, x1, x2, y, gy, out)


# ---- linear: y = act(x1 @ x2ᵀ + x3), x1's leading dims as rows ----------------------
# Gradients through g = gy · act'(pre-activation), read from y: gx1 = g @ x2,
# gx2 = gᵀ @ x1 (over all rows), gx3 = Σ_rows g.

def _linear_shapes(op: str, x1: Array, x2: Array, x3: Array | None) -> None:
    if x1.ndim < 1 or x2.ndim != 2 or x1.shape[-1] != x2.shape[1]:
        raise ValueError(f"{op}: x1 must be (..., in_features) and x2 (out_features, "
                         f"in_features); got shapes {tuple(x1.shape)} and {tuple(x2.shape)}")
    if x3 is not None and tuple(x3.shape) != (x2.shape[0],):
        raise ValueError(f"{op}: x3 (bias) must have shape ({x2.shape[0]},) to match "
                         f"x2 {tuple(x2.shape)}; got {tuple(x3.shape)}")


def _linear_cpu(x1: Array, x2: Array, x3: Array | None, y: Array,
                activation: str | None) -> None:
    numpy.matmul(x1, x2.T, out=y)
    if x3 is not None:
        y += x3
    if activation == "relu":
        numpy.maximum(y, 0, out=y)
    elif activation == "sigmoid":
        _math.sigmoid(y.copy(), out=y)
    elif activation == "tanh":
        numpy.tanh(y, out=y)


def _linear_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array,
                activation: str | None) -> None:
    out_features, in_features = x2.shape
    rows = math.prod(x1.shape[:-1])
    a = x1.astype(call.dtype, copy=False).reshape(rows, in_features)
    bias = call.contiguous(x3)
    gemm(call.backend, a, x2.astype(call.dtype, copy=False).T, y.reshape(rows, out_features),
         bias=bias, bias_mode=BIAS_NONE if bias is None else BIAS_PER_COLUMN,
         act=ACTIVATIONS[activation])


def _pre_activation_grad_cpu(y: Array, gy: Array, activation: str | None,
                             dtype: numpy.dtype) -> Array:
    """gy · act'(pre-activation), from the output y (relu 1[y>0], sigmoid y(1-y), tanh 1-y²)."""
    if activation is None:
        return gy.astype(dtype, copy=False)
    g = numpy.empty(y.shape, dtype)  # act'(y), then times gy, in g (no temporaries)
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


def _pre_activation_grad_gpu(call: Call, y: Array, gy: Array, activation: str | None) -> Array:
    """The kernel act_grad: gy · act'(pre-activation), from the output y."""
    if activation is None:
        return gy.astype(call.dtype, copy=False)
    g = call.xp.empty(y.shape, call.dtype)
    call.launch_1d("act_grad", g.size, (call.contiguous(y), call.contiguous(gy), g,
                                        numpy.int64(g.size), numpy.int32(ACTIVATIONS[activation])))
    return g


def _linear_wrt_x1_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx1: Array, activation: str | None, dtype: numpy.dtype) -> None:
    numpy.matmul(_pre_activation_grad_cpu(y, gy, activation, dtype), x2, out=gx1)


def _linear_wrt_x1_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx1: Array, activation: str | None, dtype: numpy.dtype) -> None:
    out_features, in_features = x2.shape
    rows = math.prod(x1.shape[:-1])
    g = _pre_activation_grad_gpu(call, y, gy, activation).reshape(rows, out_features)
    gemm(call.backend, g, x2.astype(dtype, copy=False), gx1.reshape(rows, in_features))


def _linear_wrt_x2_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx2: Array, activation: str | None, dtype: numpy.dtype) -> None:
    out_features, in_features = x2.shape
    rows = math.prod(x1.shape[:-1])
    g = _pre_activation_grad_cpu(y, gy, activation, dtype).reshape(rows, out_features)
    numpy.matmul(g.T, x1.reshape(rows, in_features), out=gx2)


def _linear_wrt_x2_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx2: Array, activation: str | None, dtype: numpy.dtype) -> None:
    out_features, in_features = x2.shape
    rows = math.prod(x1.shape[:-1])
    g = _pre_activation_grad_gpu(call, y, gy, activation).reshape(rows, out_features)
    gemm(call.backend, g.T, x1.astype(dtype, copy=False).reshape(rows, in_features), gx2)


def _linear_wrt_x3_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx3: Array, activation: str | None, dtype: numpy.dtype) -> None:
    g = _pre_activation_grad_cpu(y, gy, activation, dtype)
    sum_to_shape(NUMPY, g.reshape(math.prod(x1.shape[:-1]), x2.shape[0]), gx3)


def _linear_wrt_x3_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx3: Array, activation: str | None, dtype: numpy.dtype) -> None:
    g = _pre_activation_grad_gpu(call, y, gy, activation)
    sum_to(call.backend, g.reshape(math.prod(x1.shape[:-1]), x2.shape[0]), gx3)


LINEAR = Signature("linear", FAMILY, ("x1", "x2", "x3"), optional=("x3",),
                   kernel_dtypes=ALL_FLOAT_DTYPES, strided=True)
_LINEAR_GRADIENT = {k: (Signature(f"linear_wrt_x{k}", FAMILY, ("x1", "x2", "x3", "y", "gy"),
                                  optional=("x3",), kernel_dtypes=ALL_FLOAT_DTYPES, strided=True),
                        cpu, gpu)
                    for k, cpu, gpu in ((1, _linear_wrt_x1_cpu, _linear_wrt_x1_gpu),
                                        (2, _linear_wrt_x2_cpu, _linear_wrt_x2_gpu),
                                        (3, _linear_wrt_x3_cpu, _linear_wrt_x3_gpu))}


def linear(x1: Array, x2: Array, x3: Array | None = None, *, activation: str | None = None,
           out: Array | None = None) -> Array:
    """y = act(x1 @ x2ᵀ + x3): x1 (..., in), weight x2 (out, in), bias x3 (out,) or None,
    activation None, "relu", "sigmoid" or "tanh" (fused into the GEMM's epilogue)."""
    _check_activation(LINEAR.op, activation)
    call = LINEAR.bind(x1, x2, x3)
    x1, x2, x3 = call.inputs
    _linear_shapes(call.op, x1, x2, x3)
    return call.run(out, x1.shape[:-1] + (x2.shape[0],), _linear_cpu, _linear_gpu, activation)


def _linear_gradient(k: int, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                     activation: str | None, out: Array | None) -> Array:
    signature, cpu, gpu = _LINEAR_GRADIENT[k]
    _check_activation(signature.op, activation)
    call = signature.bind(x1, x2, x3, y, gy)
    x1, x2, x3, y, gy = call.inputs
    _linear_shapes(call.op, x1, x2, x3)
    if k == 3 and x3 is None:
        raise ValueError(f"{call.op}: x3 is None (the forward had no bias), so there is no "
                         "bias gradient to compute")
    check_shape(call.op, "y", y, x1.shape[:-1] + (x2.shape[0],))
    check_shape(call.op, "gy", gy, x1.shape[:-1] + (x2.shape[0],))
    xk = (x1, x2, x3)[k - 1]
    return call.run(out, xk.shape, cpu, gpu, activation, call.dtype, dtype=xk.dtype)


def linear_wrt_x1(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  activation: str | None = None, out: Array | None = None) -> Array:
    """g @ x2 with g = gy · act'(pre-activation)."""
    return _linear_gradient(1, x1, x2, x3, y, gy, activation, out)


def linear_wrt_x2(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  activation: str | None = None, out: Array | None = None) -> Array:
    """gᵀ @ x1 (rows of x1's leading dims summed) with g = gy · act'(pre-activation)."""
    return _linear_gradient(2, x1, x2, x3, y, gy, activation, out)


def linear_wrt_x3(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  activation: str | None = None, out: Array | None = None) -> Array:
    """Σ_rows g with g = gy · act'(pre-activation); ValueError when x3 is None."""
    return _linear_gradient(3, x1, x2, x3, y, gy, activation, out)


register(FAMILY, matmul, matmul_wrt_x1, matmul_wrt_x2)
register(FAMILY, linear, linear_wrt_x1, linear_wrt_x2, linear_wrt_x3)
