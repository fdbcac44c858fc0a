"""The normalization family: ``batch_norm``, ``layer_norm``, ``rms_norm`` and their gradients.
Kernels in cuda/normalization.cu.

**batch_norm.** ``x1`` is normalized per channel, the channels along ``axis`` (default 1: (N, C),
(N, C, L), (N, C, H, W), ...), over every other axis; ``x2`` (weight γ) and ``x3``
(bias β) have shape (C,) and are required (pass ones and zeros for PyTorch's
``affine=False``). With M the number of values per channel:

training mode (the default): the batch statistics, biased variance (PyTorch's)

    μ_c = mean x,  v_c = mean (x - μ_c)²,  σ_c = sqrt(v_c + eps),
    x̂ = (x - μ_c) / σ_c,  y = x̂ · γ_c + β_c

    gx = (γ_c / σ_c) · (gy - mean_c(gy) - x̂ · mean_c(gy · x̂)),
    gγ_c = Σ gy · x̂,  gβ_c = Σ gy;

evaluation mode (``running_mean=`` and ``running_var=`` given, both of shape (C,)):
the same formula with μ = running_mean, v = running_var, which are constants, so
gx = (γ_c / σ_c) · gy (elementwise), gγ_c = Σ gy · x̂, gβ_c = Σ gy. The running
statistics are never written by the operator (``nn.BatchNorm*d`` updates them).

Every float dtype; float16 and bfloat16 are computed in float32 (the statistics and every
sum in float32, one rounding of each result). The kernels reduce per channel in two
deterministic stages (no atomics): partial sums per (channel, chunk), then one thread per
channel adds its chunks in order; the variance is the corrected two-pass one (moments about the mean
of a first pass), so a large common offset does not lose digits. An empty batch
(M = 0) gives an empty y and gγ = gβ = 0.

**layer_norm, rms_norm.** Each row along the last axis of ``x1`` (any leading axes; a 1-d
x1 is one row) of C values is normalized; ``x2`` (weight w) and ``x3`` (bias b, layer_norm
only) have shape (C,). PyTorch's ``layer_norm(x, (C,), w, b, eps)`` and
``rms_norm(x, (C,), w, eps)``:

    layer_norm:  μ = mean x,  r = 1 / sqrt(mean (x - μ)² + eps)   (biased variance)
    rms_norm:    μ = 0,       r = 1 / sqrt(mean x² + eps)
    x̂ = (x - μ) · r,  y = x̂ · w (+ b)

    gx = r · (w·gy - mean(w·gy) - x̂ · mean(w·gy·x̂))   (rms_norm: without mean(w·gy)),
    gw = Σ_rows gy · x̂,  gb = Σ_rows gy

(rms_norm: ∂r/∂x_j = -r³ x_j / C, so gx_i = r w_i gy_i - r³ x_i mean(w·gy·x); layer_norm adds
the mean's term). Means over a row, sums over the rows. Every float dtype (16-bit: float32
inside, one rounding of each result). Kernels: one warp per row (the row in registers, the
exact two-pass mean and variance) or one block per row (Welford moments merged over the
block), the launch geometry of :mod:`gpuops.ops._rows`; gw and gb are column sums in two
deterministic stages (partial sums per (column, chunk of rows), then each column adds its
chunks in order). No rows: gw = gb = 0; rows of C = 0 values: empty results.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from .. import kernels
from ..backend import ALL_FLOAT_DTYPES, SIXTEEN_BIT_DTYPES
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args, _rows

__all__ = ["batch_norm", "batch_norm_wrt_x1", "batch_norm_wrt_x2", "batch_norm_wrt_x3",
           "layer_norm", "layer_norm_wrt_x1", "layer_norm_wrt_x2", "layer_norm_wrt_x3",
           "rms_norm", "rms_norm_wrt_x1", "rms_norm_wrt_x2"]

FAMILY = "normalization"
Array = Any



# ---- parameters ---------------------------------------------------------------------------

def _check(op: str, x: Array, w: Array, b: Array, rm: Array | None, rv: Array | None,
           axis: Any, eps: Any) -> tuple[int, float]:
    """(axis, eps) normalized; ValueError/TypeError naming ``op`` and the value."""
    ax = _args.axis(op, axis, x.ndim)
    C = x.shape[ax]
    check_shape(op, "x2 (weight)", w, (C,))
    check_shape(op, "x3 (bias)", b, (C,))
    check_shape(op, "running_mean", rm, (C,))
    check_shape(op, "running_var", rv, (C,))
    return ax, _eps(op, eps)


def _eps(op: str, eps: Any) -> float:
    value = _args.finite_float(op, "eps", eps)
    if value <= 0:
        raise ValueError(f"{op}: eps must be > 0, got {eps!r}")
    return value


def _running_pair(op: str, running_mean: Any, running_var: Any) -> None:
    if (running_mean is None) != (running_var is None):
        given, missing = (("running_mean", "running_var") if running_var is None
                          else ("running_var", "running_mean"))
        raise ValueError(f"{op}: {given} is given without {missing}; evaluation mode needs "
                         "both (or neither, for batch statistics)")


def _layout(shape: tuple, axis: int) -> tuple[int, int, int]:
    """(C, inner, M): channels, the elements after the channel axis, values per channel."""
    C = shape[axis]
    inner = math.prod(shape[axis + 1:])
    return C, inner, math.prod(shape[:axis]) * inner


# ---- NumPy (the call protocol hands over an out that overlaps no input) ------------------

def _channel_view(v: Array, ndim: int, axis: int) -> Array:
    return v.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))


def _stats_cpu(x: Array, rm: Array | None, rv: Array | None, axis: int, dt: Any) -> tuple:
    """(μ, v) broadcastable against x, in the compute dtype ``dt``."""
    if rm is not None and rv is not None:
        return (_channel_view(rm.astype(dt, copy=False), x.ndim, axis),
                _channel_view(rv.astype(dt, copy=False), x.ndim, axis))
    red = tuple(i for i in range(x.ndim) if i != axis)
    x = x.astype(dt, copy=False)
    # the corrected two-pass algorithm, as the kernels: moments about a first-pass mean
    shift = x.mean(axis=red, keepdims=True)
    d = x - shift
    d1 = d.mean(axis=red, keepdims=True)
    return shift + d1, numpy.maximum((d * d).mean(axis=red, keepdims=True) - d1 * d1, 0)


def _batch_norm_cpu(x, w, b, rm, rv, y, axis, eps):
    dt = y.dtype.type
    mean, var = _stats_cpu(x, rm, rv, axis, dt)
    wv, bv = _channel_view(w, x.ndim, axis), _channel_view(b, x.ndim, axis)
    y[...] = (x - mean) / numpy.sqrt(var + dt(eps)) * wv + bv


def _grad_cpu(k: int):
    def grad(x, w, b, y_, gy, rm, rv, g, axis, eps):
        dt = numpy.result_type(*[a.dtype for a in (x, w, b, gy, rm, rv) if a is not None]).type
        C, _, M = _layout(x.shape, axis)
        red = tuple(i for i in range(x.ndim) if i != axis)
        if M == 0:  # sums over nothing
            g[...] = 0
            return
        if k == 3:
            g[...] = gy.astype(dt, copy=False).sum(axis=red)
            return
        mean, var = _stats_cpu(x, rm, rv, axis, dt)
        inv = 1 / numpy.sqrt(var + dt(eps))
        xhat = (x - mean) * inv
        gy = gy.astype(dt, copy=False)
        if k == 2:
            g[...] = (gy * xhat).sum(axis=red)
            return
        a = _channel_view(w.astype(dt, copy=False), x.ndim, axis) * inv
        if rm is None:  # a distributed over the terms (an infinite weight: NaN), as the kernel
            g[...] = a * gy - a * gy.mean(axis=red, keepdims=True) \
                - a * xhat * (gy * xhat).mean(axis=red, keepdims=True)
        else:
            g[...] = a * gy
    return grad


# ---- kernels (see cuda/normalization.cu) ----------------------------------------------------

def _i64(v: int) -> numpy.int64:
    return numpy.int64(v)


def _acc_dtype(call: Call) -> numpy.dtype:
    """The kernels' accumulation dtype (statistics, partial sums): float32 for 16-bit data."""
    return numpy.dtype(numpy.float32) if call.dtype in SIXTEEN_BIT_DTYPES else call.dtype


def _launch_reduce(call: Call, kernel: str, arrays: tuple, C: int, inner: int, M: int) -> tuple:
    """Stage 1 into a new partial buffer; returns (partial, splits)."""
    chunk, splits = _rows.split_reduction(call, C, M)
    partial = call.xp.empty(2 * C * splits, _acc_dtype(call))
    call.launch(kernel, (min(C * splits, call.max_blocks),), (kernels.BLOCK,),
                (*arrays, partial, _i64(C), _i64(inner), _i64(M), _i64(chunk), _i64(splits)))
    return partial, splits


def _stats_gpu(call: Call, x: Array, C: int, inner: int, M: int) -> tuple[Array, Array]:
    """Batch mean and biased variance (C,) of a C-contiguous x (M > 0), in the accumulation
    dtype."""
    xp, acc = call.xp, _acc_dtype(call)
    zeros = xp.zeros(C, acc)
    mean0, var0 = xp.empty(C, acc), xp.empty(C, acc)
    partial, splits = _launch_reduce(call, "batch_norm_moments", (x, zeros), C, inner, M)
    call.launch_1d("batch_norm_finish", C, (partial, zeros, mean0, var0, _i64(C), _i64(splits),
                                            _i64(M)))
    mean, var = xp.empty(C, acc), xp.empty(C, acc)
    partial, splits = _launch_reduce(call, "batch_norm_moments", (x, mean0), C, inner, M)
    call.launch_1d("batch_norm_finish", C, (partial, mean0, mean, var, _i64(C), _i64(splits),
                                            _i64(M)))
    return mean, var


def _stats_for(call: Call, x: Array, rm: Array | None, rv: Array | None, C: int, inner: int,
               M: int) -> tuple[Array, Array]:
    if rm is not None:  # the kernels read statistics in the accumulation dtype
        acc = _acc_dtype(call)
        return (call.xp.ascontiguousarray(rm, dtype=acc),
                call.xp.ascontiguousarray(rv, dtype=acc))
    return _stats_gpu(call, x, C, inner, M)


def _batch_norm_gpu(call, x, w, b, rm, rv, y, axis, eps):
    C, inner, M = _layout(x.shape, axis)
    mean, var = _stats_for(call, x, rm, rv, C, inner, M)
    call.launch_1d("batch_norm", y.size, (x, mean, var, w, b, y, _i64(y.size), _i64(C),
                                          _i64(inner), call.scalar(eps)))


def _channel_sums(call: Call, x: Array, gy: Array, mean: Array, var: Array, C: int, inner: int,
                  M: int, eps: float, which: tuple, dtype: numpy.dtype) -> list:
    """Σ gy (which 0) and Σ gy · x̂ (which 1) per channel, new (C,) arrays of ``dtype``: the
    call's (a result, rounded once) or the accumulation dtype (the sums gx reads; for 16-bit
    data the float32 instantiation of batch_norm_channel_grad, whose inputs are float32
    already)."""
    partial, splits = _launch_reduce(call, "batch_norm_grad_moments", (x, gy, mean), C, inner,
                                     M)
    sums = []
    for k in which:
        s = call.xp.empty(C, dtype)
        call.launch_1d("batch_norm_channel_grad", C,
                       (partial, var, s, _i64(C), _i64(splits), _i64(k), call.scalar(eps)),
                       dtype=dtype)
        sums.append(s)
    return sums


def _grad_gpu(k: int):
    def grad(call, x, w, b, y_, gy, rm, rv, g, axis, eps):
        C, inner, M = _layout(x.shape, axis)
        if M == 0:
            g[...] = 0
            return
        if k == 3:  # Σ gy needs no statistics (the mean slot only shifts the unused sum)
            zeros = call.xp.zeros(C, _acc_dtype(call))
            (s,) = _channel_sums(call, x, gy, zeros, zeros, C, inner, M, eps, (0,), g.dtype)
            g[...] = s
            return
        mean, var = _stats_for(call, x, rm, rv, C, inner, M)
        if k == 2:
            (s,) = _channel_sums(call, x, gy, mean, var, C, inner, M, eps, (1,), g.dtype)
            g[...] = s
            return
        training = rm is None
        if training:
            sg, sgx = _channel_sums(call, x, gy, mean, var, C, inner, M, eps, (0, 1),
                                    _acc_dtype(call))
        else:
            sg = sgx = var  # not read
        call.launch_1d("batch_norm_wrt_x1", g.size,
                       (x, gy, mean, var, w, sg, sgx, g, _i64(g.size), _i64(C), _i64(inner),
                        _i64(M), _i64(int(training)), call.scalar(eps)))
    return grad


# ---- the operator -------------------------------------------------------------------------

BATCH_NORM = Signature("batch_norm", FAMILY, ("x1", "x2", "x3", "running_mean", "running_var"),
                       optional=("running_mean", "running_var"), kernel_dtypes=ALL_FLOAT_DTYPES)
_GRADIENTS = {k: Signature(f"batch_norm_wrt_x{k}", FAMILY,
                           ("x1", "x2", "x3", "y", "gy", "running_mean", "running_var"),
                           optional=("running_mean", "running_var"),
                           kernel_dtypes=ALL_FLOAT_DTYPES)
              for k in (1, 2, 3)}
_GRAD_CPU = {k: _grad_cpu(k) for k in (1, 2, 3)}
_GRAD_GPU = {k: _grad_gpu(k) for k in (1, 2, 3)}


def batch_norm(x1: Array, x2: Array, x3: Array, *, axis: int = 1, eps: float = 1e-5,
               running_mean: Array | None = None, running_var: Array | None = None,
               out: Array | None = None) -> Array:
    """y = (x1 - μ) / sqrt(v + eps) · x2 + x3 per channel (channels along ``axis``; x2 the
    weight, x3 the bias, both (C,)). Training mode (default): μ and v the batch mean and
    biased variance over every axis but ``axis``. Evaluation mode: ``running_mean`` and
    ``running_var`` (both (C,)) as μ and v; they are read, never written."""
    _running_pair("batch_norm", running_mean, running_var)
    call = BATCH_NORM.bind(x1, x2, x3, running_mean, running_var)
    x, w, b, rm, rv = call.inputs
    ax, eps_f = _check(call.op, x, w, b, rm, rv, axis, eps)
    return call.run(out, tuple(x.shape), _batch_norm_cpu, _batch_norm_gpu, ax, eps_f)


def _gradient(k: int, x1, x2, x3, y, gy, axis, eps, running_mean, running_var, out):
    op = f"batch_norm_wrt_x{k}"
    _running_pair(op, running_mean, running_var)
    call = _GRADIENTS[k].bind(x1, x2, x3, y, gy, running_mean, running_var)
    x, w, b, y, gy, rm, rv = call.inputs
    ax, eps_f = _check(op, x, w, b, rm, rv, axis, eps)
    check_shape(op, "y", y, tuple(x.shape))
    check_shape(op, "gy", gy, tuple(x.shape))
    target = (x, w, b)[k - 1]
    return call.run(out, tuple(target.shape), _GRAD_CPU[k], _GRAD_GPU[k], ax, eps_f,
                    dtype=target.dtype)


def batch_norm_wrt_x1(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *, axis: int = 1,
                      eps: float = 1e-5, running_mean: Array | None = None,
                      running_var: Array | None = None, out: Array | None = None) -> Array:
    """Training: gx = (x2/σ) (gy - mean(gy) - x̂ mean(gy x̂)) per channel; evaluation
    (running statistics given): gx = (x2/σ) gy."""
    return _gradient(1, x1, x2, x3, y, gy, axis, eps, running_mean, running_var, out)


def batch_norm_wrt_x2(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *, axis: int = 1,
                      eps: float = 1e-5, running_mean: Array | None = None,
                      running_var: Array | None = None, out: Array | None = None) -> Array:
    """g_weight_c = Σ gy · x̂ over the channel's values."""
    return _gradient(2, x1, x2, x3, y, gy, axis, eps, running_mean, running_var, out)


def batch_norm_wrt_x3(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *, axis: int = 1,
                      eps: float = 1e-5, running_mean: Array | None = None,
                      running_var: Array | None = None, out: Array | None = None) -> Array:
    """g_bias_c = Σ gy over the channel's values."""
    return _gradient(3, x1, x2, x3, y, gy, axis, eps, running_mean, running_var, out)


register(FAMILY, batch_norm, batch_norm_wrt_x1, batch_norm_wrt_x2, batch_norm_wrt_x3)


# ---- for nn.BatchNorm1d/2d: the running statistics ---------------------------------------

def update_running_stats(x1: Array, running_mean: Array, running_var: Array, *, axis: int = 1,
                         momentum: float = 0.1) -> None:
    """In place, as PyTorch: r_mean = (1 - m) r_mean + m μ, r_var = (1 - m) r_var +
    m v · M/(M - 1) (the unbiased batch variance; M > 1 values per channel), μ and v the
    batch statistics that :func:`batch_norm` uses (through the same kernels)."""
    op = "batch_norm"
    call = BATCH_NORM.bind(x1, running_mean, running_var, None, None)
    x = call.inputs[0]
    ax = _args.axis(op, axis, x.ndim)
    C, inner, M = _layout(tuple(x.shape), ax)
    check_shape(op, "running_mean", running_mean, (C,))
    check_shape(op, "running_var", running_var, (C,))
    if M < 2:
        raise ValueError(f"{op}: the running variance needs more than 1 value per channel, "
                         f"got input shape {tuple(x.shape)}")
    if call.uses_kernels:
        mean, var = _stats_gpu(call, call.contiguous(x), C, inner, M)
    else:
        mean, var = _stats_cpu(x, None, None, ax, _acc_dtype(call).type)  # float32 for 16 bits
        mean, var = mean.reshape(C), var.reshape(C)
    m = float(momentum)
    running_mean[...] = (1 - m) * running_mean + m * mean
    running_var[...] = (1 - m) * running_var + m * var * (M / (M - 1))


# ---- layer_norm and rms_norm: rows of the last axis -----------------------------------------

_COL_TILE = 32  # columns of a block of row_norm_col_partial (a warp's width)...
_COL_LANES = 8  # ...and its threads per column, each summing every 8th row of the chunk
_MIN_CHUNK_ROWS = 8 * _COL_LANES  # rows per chunk (8 per thread), at least, before a split


def _check_rows(op: str, x: Array, w: Array, b: Array | None, eps: Any) -> float:
    """eps normalized; ValueError naming ``op`` for a 0-d x1 or a w/b not of shape (C,)."""
    if x.ndim == 0:
        raise ValueError(f"{op}: x1 must have at least 1 dim (the normalized last axis), "
                         f"got shape {tuple(x.shape)}")
    C = x.shape[-1]
    check_shape(op, "x2 (weight)", w, (C,))
    check_shape(op, "x3 (bias)", b, (C,))
    return _eps(op, eps)


def _row_stats_cpu(x: Array, rms: bool, eps: float, dt: Any) -> tuple:
    """(μ, r) per row, shape (..., 1), in the compute dtype ``dt`` (the kernels' two-pass
    mean and variance)."""
    x = x.astype(dt, copy=False)
    if rms:
        return dt(0), 1 / numpy.sqrt((x * x).mean(axis=-1, keepdims=True) + dt(eps))
    mean = x.mean(axis=-1, keepdims=True)
    d = x - mean
    return mean, 1 / numpy.sqrt((d * d).mean(axis=-1, keepdims=True) + dt(eps))


def _row_norm_cpu(rms: bool):
    def forward(x, w, *rest):
        *b, y, eps = rest
        mean, rstd = _row_stats_cpu(x, rms, eps, y.dtype.type)
        y[...] = (x - mean) * rstd * w
        if b:
            y += b[0]
    return forward


def _row_norm_grad_cpu(k: int, rms: bool):
    def grad(x, w, *rest):
        *others, gy, g, eps = rest  # others: (b,) y
        dt = numpy.result_type(x, w, *others, gy).type
        C = x.shape[-1]
        gy = gy.astype(dt, copy=False)
        if k == 3:  # Σ gy over the rows (0 for no rows)
            g[...] = gy.reshape(-1, C).sum(axis=0)
            return
        mean, rstd = _row_stats_cpu(x, rms, eps, dt)
        xhat = (x - mean) * rstd
        if k == 2:
            g[...] = (gy * xhat).reshape(-1, C).sum(axis=0)
            return
        wg = w * gy
        centered = wg if rms else wg - wg.mean(axis=-1, keepdims=True)
        g[...] = (centered - xhat * (wg * xhat).mean(axis=-1, keepdims=True)) * rstd
    return grad


def _row_norm_gpu(call, x, w, *rest):
    *b, y, eps = rest
    C = x.shape[-1]
    _rows.launch(call, call.op, y.size // C, C, (x, w, *b, y, call.scalar(eps)))


def _col_sums(call: Call, x: Array, gy: Array, mean: Array, rstd: Array, g: Array,
              with_x: bool) -> None:
    """g = Σ_rows gy (x - μ) r (with_x) or Σ_rows gy, per column, rows > 0."""
    C = x.shape[-1]
    rows = x.size // C
    tiles = math.ceil(C / _COL_TILE)
    chunk, splits = _rows.split_reduction(call, tiles, rows, _MIN_CHUNK_ROWS)
    partial = call.xp.empty(splits * C, _acc_dtype(call))
    call.launch("row_norm_col_partial", (min(tiles * splits, call.max_blocks),),
                (_COL_TILE, _COL_LANES),
                (x, gy, mean, rstd, partial, _i64(rows), _i64(C), _i64(chunk), _i64(splits),
                 _i64(int(with_x))))
    call.launch_1d("row_norm_col_finish", C, (partial, g, _i64(C), _i64(splits)))


def _row_norm_grad_gpu(k: int, base: str):
    def grad(call, x, w, *rest):
        *_, gy, g, eps = rest
        C = x.shape[-1]
        rows = x.size // C
        if k == 1:
            _rows.launch(call, f"{base}_wrt_x1", rows, C, (x, w, gy, g, call.scalar(eps)))
            return
        if rows == 0:  # sums over no rows
            g[...] = 0
            return
        xp, acc = call.xp, _acc_dtype(call)
        if k == 3:  # Σ gy: no statistics (μ and r are not read)
            unused = xp.empty(1, acc)
            _col_sums(call, x, gy, unused, unused, g, with_x=False)
            return
        mean, rstd = xp.empty(rows, acc), xp.empty(rows, acc)
        call.launch(f"{base}_stats", (max(1, min(math.ceil(rows / _rows.WARPS_PER_BLOCK),
                                                  call.max_blocks)),),
                    (32 * _rows.WARPS_PER_BLOCK,),
                    (x, mean, rstd, call.scalar(eps), _i64(rows), _i64(C)))
        _col_sums(call, x, gy, mean, rstd, g, with_x=True)
    return grad


def _row_norm_signatures(op: str, params: tuple[str, ...]) -> dict[int, Signature]:
    """0: the forward's signature, k: that of op_wrt_x<k>."""
    table = {0: Signature(op, FAMILY, ("x1", *params), kernel_dtypes=ALL_FLOAT_DTYPES)}
    for k in range(1, len(params) + 2):
        table[k] = Signature(f"{op}_wrt_x{k}", FAMILY, ("x1", *params, "y", "gy"),
                             kernel_dtypes=ALL_FLOAT_DTYPES)
    return table


_LAYER_NORM = _row_norm_signatures("layer_norm", ("x2", "x3"))
_RMS_NORM = _row_norm_signatures("rms_norm", ("x2",))
_ROW_CPU = {"layer_norm": _row_norm_cpu(rms=False), "rms_norm": _row_norm_cpu(rms=True)}
_ROW_GRAD_CPU = {(op, k): _row_norm_grad_cpu(k, rms=op == "rms_norm")
                 for op, n in (("layer_norm", 3), ("rms_norm", 2)) for k in range(1, n + 1)}
_ROW_GRAD_GPU = {(op, k): _row_norm_grad_gpu(k, op) for op, k in _ROW_GRAD_CPU}


def _row_norm(signature: Signature, inputs: tuple, eps: Any, out: Array | None) -> Array:
    call = signature.bind(*inputs)
    x, w, *b = call.inputs
    eps_f = _check_rows(call.op, x, w, b[0] if b else None, eps)
    return call.run(out, tuple(x.shape), _ROW_CPU[call.op], _row_norm_gpu, eps_f)


def _row_norm_grad(op: str, k: int, signature: Signature, inputs: tuple, eps: Any,
                   out: Array | None) -> Array:
    call = signature.bind(*inputs)
    x, w, *b, y, gy = call.inputs
    eps_f = _check_rows(call.op, x, w, b[0] if b else None, eps)
    check_shape(call.op, "y", y, tuple(x.shape))
    check_shape(call.op, "gy", gy, tuple(x.shape))
    target = (x, w, *b)[k - 1]
    return call.run(out, tuple(target.shape), _ROW_GRAD_CPU[op, k], _ROW_GRAD_GPU[op, k],
                    eps_f, dtype=target.dtype)


def layer_norm(x1: Array, x2: Array, x3: Array, *, eps: float = 1e-5,
               out: Array | None = None) -> Array:
    """y = (x1 - μ) / sqrt(v + eps) · x2 + x3 along the last axis of x1 (μ, v: each row's
    mean and biased variance; x2 the weight, x3 the bias, both (C,))."""
    return _row_norm(_LAYER_NORM[0], (x1, x2, x3), eps, out)


def layer_norm_wrt_x1(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *,
                      eps: float = 1e-5, out: Array | None = None) -> Array:
    """gx = r (x2·gy - mean(x2·gy) - x̂ mean(x2·gy·x̂)) per row, r = 1/sqrt(v + eps)."""
    return _row_norm_grad("layer_norm", 1, _LAYER_NORM[1], (x1, x2, x3, y, gy), eps, out)


def layer_norm_wrt_x2(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *,
                      eps: float = 1e-5, out: Array | None = None) -> Array:
    """g_weight = Σ gy · x̂ over the rows."""
    return _row_norm_grad("layer_norm", 2, _LAYER_NORM[2], (x1, x2, x3, y, gy), eps, out)


def layer_norm_wrt_x3(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *,
                      eps: float = 1e-5, out: Array | None = None) -> Array:
    """g_bias = Σ gy over the rows."""
    return _row_norm_grad("layer_norm", 3, _LAYER_NORM[3], (x1, x2, x3, y, gy), eps, out)


def rms_norm(x1: Array, x2: Array, *, eps: float = 1e-6, out: Array | None = None) -> Array:
    """y = x1 / sqrt(mean(x1²) + eps) · x2 along the last axis of x1 (x2 the weight, (C,))."""
    return _row_norm(_RMS_NORM[0], (x1, x2), eps, out)


def rms_norm_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array, *, eps: float = 1e-6,
                    out: Array | None = None) -> Array:
    """gx = r (x2·gy - x̂ mean(x2·gy·x̂)) per row, r = 1/sqrt(mean(x1²) + eps), x̂ = x1·r."""
    return _row_norm_grad("rms_norm", 1, _RMS_NORM[1], (x1, x2, y, gy), eps, out)


def rms_norm_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array, *, eps: float = 1e-6,
                    out: Array | None = None) -> Array:
    """g_weight = Σ gy · x̂ over the rows."""
    return _row_norm_grad("rms_norm", 2, _RMS_NORM[2], (x1, x2, y, gy), eps, out)


register(FAMILY, layer_norm, layer_norm_wrt_x1, layer_norm_wrt_x2, layer_norm_wrt_x3)
register(FAMILY, rms_norm, rms_norm_wrt_x1, rms_norm_wrt_x2)
