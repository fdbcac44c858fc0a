"""Scaled dot-product attention, fused (FlashAttention-2). Kernels in cuda/attention.cu.

``attention(x1, x2, x3)`` with q = x1 (..., Tq, D), k = x2 (..., Tk, D), v = x3 (..., Tk, Dv)
(the same leading batch/head axes, no broadcasting) is PyTorch's
``scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)``:

    s_ij = scale · q_i·k_j   (scale default 1/sqrt(D); causal: keys j > i hidden, the
                              top-left aligned triangle also when Tq != Tk)
    P_ij = e^(s_ij - L_i),  L_i = log Σ_j e^(s_ij)   (over the visible keys)
    y_i  = Σ_j P_ij v_j                               (..., Tq, Dv)

Gradients, with gy = dL/dy (FlashAttention-2's backward):

    dP_ij = gy_i·v_j,  Δ_i = Σ_j P_ij dP_ij = gy_i·y_i,  dS_ij = P_ij (dP_ij - Δ_i)
    gq_i = scale Σ_j dS_ij k_j,  gk_j = scale Σ_i dS_ij q_i,  gv_j = Σ_i P_ij gy_i

Each gradient function takes (x1, x2, x3, y, gy) and recomputes L itself (one pass over
the keys per query row); Δ comes from the given y. With Tk = 0 every row sees no key:
y = 0 (not PyTorch's NaN) and gq = 0; with Tq = 0, gk = gv = 0. With causal=True and
Tk >= 1 every row sees key 0, so no row is ever empty. Keys a row does not see never
enter its result, not even as 0 · NaN. ``scale`` is any finite float (PyTorch's rule).

NumPy (float32/float64): the scores of at most ~2^20 (row, key) pairs at a time (query
rows in chunks, a group of heads when whole slices fit), softmax with the row max
subtracted. Kernels (float16 and bfloat16 too, computed in float32): tiles of Q, K, V in
shared memory, the online softmax (running max and sum, accumulators rescaled), the Tq x Tk
scores never in global memory; the backward is deterministic (no atomics): one kernel
over query tiles for gq, one over key tiles for gk or gv, after a kernel that computes L
and Δ per row (Δ from the rounded 16-bit y, as PyTorch's backward does). D and Dv at most
128 on the kernels (256 for the 16-bit dtypes). A non-causal 16-bit forward with
D, Dv <= 128 runs on tensor cores where the launcher has them (mma.sync .f16 / .bf16,
sm_80+; P rounded to the input dtype for the P·V product, as FlashAttention does).
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from .. import kernels
from ..backend import ALL_FLOAT_DTYPES, SIXTEEN_BIT_DTYPES
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args

__all__ = ["attention", "attention_wrt_x1", "attention_wrt_x2", "attention_wrt_x3"]

FAMILY = "attention"
Array = Any

# (row, key) scores the NumPy path holds at once.
CHUNK_SCORES = 1 << 20


# ---- NumPy: inputs as (B, T, ·) stacks of slices ---------------------------------------

def _chunks(batch: int, tq: int, tk: int, exact: bool):
    """(heads, first row, end row): blocks of query rows whose scores hold about
    CHUNK_SCORES values; one row at a time when ``exact`` (causal with non-finite data:
    then each row reads only its visible keys)."""
    if tq == 0 or tk == 0:
        return
    rows = 1 if exact else max(1, min(tq, CHUNK_SCORES // tk))
    heads = max(1, CHUNK_SCORES // (tq * tk)) if rows == tq else 1
    for b0 in range(0, batch, heads):
        for i0 in range(0, tq, rows):
            yield slice(b0, b0 + heads), i0, min(i0 + rows, tq)


def _probabilities(q: Array, k: Array, i0: int, i1: int, scale: float, causal: bool) -> Array:
    """P of query rows i0..i1-1 against ``k`` (the keys those rows may see)."""
    s = numpy.matmul(q, k.swapaxes(-1, -2))
    s *= scale
    if causal:  # key j hidden from row i when j > i
        s[..., numpy.arange(k.shape[-2]) > numpy.arange(i0, i1)[:, None]] = -numpy.inf
    s -= s.max(axis=-1, keepdims=True)
    numpy.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    return s


def _stacks(*arrays: Array) -> list[Array]:
    """Each array as a (B, T, ·) stack of its slices (B the product of the leading axes)."""
    return [x.reshape((math.prod(x.shape[:-2]),) + x.shape[-2:]) for x in arrays]


def _exact(causal: bool, arrays: tuple) -> bool:
    return causal and not all(numpy.isfinite(x).all() for x in arrays)


def _attention_cpu(x1: Array, x2: Array, x3: Array, y: Array, causal: bool,
                   scale: float) -> None:
    q, k, v = _stacks(x1, x2, x3)
    batch, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    target = y if y.flags.c_contiguous else numpy.empty(y.shape, y.dtype)
    (out,) = _stacks(target)
    out[...] = 0  # with Tk = 0 no row sees a key
    for heads, i0, i1 in _chunks(batch, tq, tk, _exact(causal, (q, k, v))):
        keys = slice(0, min(i1, tk) if causal else tk)
        p = _probabilities(q[heads, i0:i1], k[heads, keys], i0, i1, scale, causal)
        numpy.matmul(p, v[heads, keys], out=out[heads, i0:i1])
    if target is not y:
        y[...] = target


def _gradient_cpu(wrt: int):
    def gradient(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, gx: Array,
                 causal: bool, scale: float) -> None:
        q, k, v, o, g = _stacks(x1, x2, x3, y, gy)
        batch, tq, tk = q.shape[0], q.shape[1], k.shape[1]
        target = gx if gx.flags.c_contiguous else numpy.empty(gx.shape, gx.dtype)
        (grad,) = _stacks(target)
        grad[...] = 0
        for heads, i0, i1 in _chunks(batch, tq, tk, _exact(causal, (q, k, v, o, g))):
            keys = slice(0, min(i1, tk) if causal else tk)
            qc, gc = q[heads, i0:i1], g[heads, i0:i1]
            p = _probabilities(qc, k[heads, keys], i0, i1, scale, causal)
            if wrt == 3:  # gv_j = Σ_i P_ij gy_i
                grad[heads, keys] += numpy.matmul(p.swapaxes(-1, -2), gc)
                continue
            # scale dS = scale P (gy v^T - Δ), Δ_i = gy_i·y_i
            ds = numpy.matmul(gc, v[heads, keys].swapaxes(-1, -2))
            ds -= (gc * o[heads, i0:i1]).sum(axis=-1, keepdims=True)
            ds *= p
            ds *= scale
            if wrt == 1:
                numpy.matmul(ds, k[heads, keys], out=grad[heads, i0:i1])
            else:
                grad[heads, keys] += numpy.matmul(ds.swapaxes(-1, -2), qc)
        if target is not gx:
            gx[...] = target
    return gradient


# ---- kernels -------------------------------------------------------------------------

_TC_THREADS = 128  # attention_tc_{f16,bf16}: 4 warps of 16 query rows (ATTENTION_TC_ROWS = 64)


def _tile(dtype: numpy.dtype) -> int:
    return kernels.CONSTANTS["ATTENTION_TILE_F64" if dtype == numpy.float64
                             else "ATTENTION_TILE"]


def _width(call: Call, d: int, dv: int) -> int:
    """DMAX of the kernels that take D and Dv (their accumulators per row), or ValueError."""
    limit = 256 if call.dtype in SIXTEEN_BIT_DTYPES else 128
    if max(d, dv) > limit:
        raise ValueError(f"{call.op}: D = {d}, Dv = {dv}; the {call.dtype} kernels take D and "
                         f"Dv up to {limit} (their tiles and accumulators live on chip)")
    return 128 if max(d, dv) <= 128 else 256


def _shared_bytes(dtype: numpy.dtype, tile: int, acc: int, rows: int) -> int:
    """Dynamic shared memory: ``acc`` values of the accumulation dtype, then ``rows`` tile
    rows' worth of elements (already counting the one-element pads)."""
    acc_size = 8 if dtype == numpy.float64 else 4
    return acc * acc_size + rows * dtype.itemsize


def _launch(call: Call, kernel: str, items: int, args: tuple, shared: int) -> None:
    tile = _tile(call.dtype)
    threads = tile * kernels.CONSTANTS["ATTENTION_THREADS_PER_ROW"]
    call.launch(kernel, (max(1, min(items, call.max_blocks)),), (threads,), args, shared)


def _sizes(q: Array, k: Array, v: Array) -> tuple:
    batch = math.prod(q.shape[:-2])
    return batch, q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]


def _attention_gpu(call: Call, q: Array, k: Array, v: Array, y: Array, causal: bool,
                   scale: float) -> None:
    batch, tq, tk, d, dv = _sizes(q, k, v)
    width = _width(call, d, dv)
    if tk == 0:
        y.fill(0)
        return
    sizes = tuple(map(numpy.int64, (batch, tq, tk, d, dv)))
    if (call.dtype in SIXTEEN_BIT_DTYPES and not causal and width == 128
            and call.backend.kernel_launcher.tensor_cores):
        rows, keys = kernels.CONSTANTS["ATTENTION_TC_ROWS"], kernels.CONSTANTS["ATTENTION_TC_KEYS"]
        padded_d, padded_dv = -(-d // 16) * 16, -(-dv // 16) * 16
        shared = 2 * ((rows + keys) * (padded_d + 8) + padded_dv * (keys + 8))
        call.launch("attention_tc", (max(1, min(batch * -(-tq // rows), call.max_blocks)),),
                    (_TC_THREADS,), (q, k, v, y, *sizes, call.scalar(scale)), shared)
        return
    tile = _tile(call.dtype)
    shared = _shared_bytes(call.dtype, tile, tile * (tile + 1),
                           tile * (2 * (d + 1) + dv + 1))
    _launch(call, f"attention_d{width}", batch * -(-tq // tile),
            (q, k, v, y, *sizes, call.scalar(scale), numpy.int64(causal)), shared)


def _row_statistics(call: Call, q: Array, k: Array, y: Array, gy: Array, causal: bool,
                    scale: float) -> tuple[Array, Array]:
    """L_i (the row log-sum-exp of the scores) and Δ_i = gy_i·y_i, in the accumulation
    dtype."""
    batch, tq, tk, d, dv = _sizes(q, k, y)
    acc = numpy.float64 if call.dtype == numpy.float64 else numpy.float32
    lse = call.xp.empty(batch * tq, acc)
    delta = call.xp.empty(batch * tq, acc)
    tile = _tile(call.dtype)
    _launch(call, "attention_stats", batch * -(-tq // tile),
            (q, k, y, gy, lse, delta, *map(numpy.int64, (batch, tq, tk, d, dv)),
             call.scalar(scale), numpy.int64(causal)), _shared_bytes(call.dtype, tile, 0,
                                                                      2 * tile * (d + 1)))
    return lse, delta


def _gradient_gpu(wrt: int):
    def gradient(call: Call, q: Array, k: Array, v: Array, y: Array, gy: Array, gx: Array,
                 causal: bool, scale: float) -> None:
        batch, tq, tk, d, dv = _sizes(q, k, v)
        width = _width(call, d, dv)
        if tq == 0 or tk == 0:
            gx.fill(0)
            return
        lse, delta = _row_statistics(call, q, k, y, gy, causal, scale)
        tile = _tile(call.dtype)
        rows = tile * (2 * (d + 1) + 2 * (dv + 1))  # q, gy, k, v tiles
        if wrt == 1:
            items, acc = batch * -(-tq // tile), tile * (tile + 1)
        else:  # + L and Δ of the query tile
            items, acc = batch * -(-tk // tile), tile * (tile + 1) + 2 * tile
        _launch(call, f"attention_wrt_x{wrt}_d{width}", items,
                (q, k, v, gy, lse, delta, gx, *map(numpy.int64, (batch, tq, tk, d, dv)),
                 call.scalar(scale), numpy.int64(causal)),
                _shared_bytes(call.dtype, tile, acc, rows))
    return gradient


# ---- the operator functions -----------------------------------------------------------

_NAMES = ("x1", "x2", "x3")
ATTENTION = Signature("attention", FAMILY, _NAMES, kernel_dtypes=ALL_FLOAT_DTYPES)
_GRADIENTS = {wrt: Signature(f"attention_wrt_x{wrt}", FAMILY, (*_NAMES, "y", "gy"),
                             kernel_dtypes=ALL_FLOAT_DTYPES) for wrt in (1, 2, 3)}


def _check(call: Call, q: Array, k: Array, v: Array, causal: Any,
           scale: Any) -> tuple[bool, float, tuple]:
    """The parameters normalized (causal, scale) and y's shape; ValueError naming the
    input whose shape does not fit."""
    op = call.op
    causal = _args.boolean(op, "causal", causal)
    for name, x in zip(_NAMES, (q, k, v)):
        if x.ndim < 2:
            raise ValueError(f"{op}: {name} must have at least 2 dims (..., T, D), got shape "
                             f"{tuple(x.shape)}")
    lead = tuple(q.shape[:-2])
    for name, x in (("x2", k), ("x3", v)):
        if tuple(x.shape[:-2]) != lead:
            raise ValueError(f"{op}: {name} has shape {tuple(x.shape)}; its leading axes "
                             f"must be x1's {lead} (no broadcasting)")
    d = q.shape[-1]
    if d == 0:
        raise ValueError(f"{op}: x1 has shape {tuple(q.shape)}: D = 0, expected D >= 1")
    if k.shape[-1] != d:
        raise ValueError(f"{op}: x2 has shape {tuple(k.shape)}: D = {k.shape[-1]}, expected "
                         f"x1's D = {d}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"{op}: x3 has shape {tuple(v.shape)}: {v.shape[-2]} keys, expected "
                         f"x2's Tk = {k.shape[-2]}")
    scale = 1.0 / math.sqrt(d) if scale is None else _args.finite_float(op, "scale", scale)
    return causal, scale, (*lead, q.shape[-2], v.shape[-1])


def attention(x1: Array, x2: Array, x3: Array, *, causal: bool = False,
              scale: float | None = None, out: Array | None = None) -> Array:
    """y = softmax(scale · x1 x2^T (causal: keys j > i hidden)) x3 over the last two axes."""
    call = ATTENTION.bind(x1, x2, x3)
    q, k, v = call.inputs
    causal, scale, shape = _check(call, q, k, v, causal, scale)
    return call.run(out, shape, _attention_cpu, _attention_gpu, causal, scale)


def _gradient(wrt: int, x1: Array, x2: Array, x3: Array, y: Array, gy: Array, causal: Any,
              scale: Any, out: Array | None) -> Array:
    call = _GRADIENTS[wrt].bind(x1, x2, x3, y, gy)
    q, k, v, y, gy = call.inputs
    causal, scale, shape = _check(call, q, k, v, causal, scale)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    return call.run(out, call.inputs[wrt - 1].shape, _gradient_cpu(wrt), _gradient_gpu(wrt),
                    causal, scale)


def attention_wrt_x1(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *,
                     causal: bool = False, scale: float | None = None,
                     out: Array | None = None) -> Array:
    """gq_i = scale Σ_j dS_ij k_j (dS = P (gy v^T - Δ), Δ_i = gy_i·y_i)."""
    return _gradient(1, x1, x2, x3, y, gy, causal, scale, out)


def attention_wrt_x2(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *,
                     causal: bool = False, scale: float | None = None,
                     out: Array | None = None) -> Array:
    """gk_j = scale Σ_i dS_ij q_i."""
    return _gradient(2, x1, x2, x3, y, gy, causal, scale, out)


def attention_wrt_x3(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *,
                     causal: bool = False, scale: float | None = None,
                     out: Array | None = None) -> Array:
    """gv_j = Σ_i P_ij gy_i."""
    return _gradient(3, x1, x2, x3, y, gy, causal, scale, out)


register(FAMILY, attention, attention_wrt_x1, attention_wrt_x2, attention_wrt_x3)
