"""Reductions: ``sum``, ``mean``, ``max`` over axes, their gradients, and
:func:`sum_to_shape` (the reverse of broadcasting, used by the elementwise gradients).

Kernels in cuda/reduction.cu. A reduction of a C-contiguous input is first seen as
alternating blocks of kept and reduced dims (adjacent dims of one kind merged, size-1
dims dropped), then launched as:

- ``(kept, reduced)`` or ``(reduced,)``: ``reduce_rows`` (a warp per row, vector loads;
  rows of at most 16 elements: ``reduce_cols`` with ``inner = 1``, a thread per row);
- ``(kept, reduced, kept)`` or ``(reduced, kept)``: ``reduce_cols`` (a thread per output);
- anything else: ``reduce_axes`` (a block per output, gathering through strides).

When there are too few outputs to fill the GPU, each output's reduced range is split
into chunks reduced in parallel into a partial buffer, which a second launch reduces
(two stages; deterministic, no float atomics).

The module's public functions are named ``sum`` and ``max`` (the operator names), so
inside this module the builtins are spelled ``builtins.sum``/``builtins.max``.
"""
from __future__ import annotations

import builtins
import math
from typing import Any

import numpy

from ..backend import ALL_FLOAT_DTYPES, Backend
from ..call import Call, Signature, check_shape
from ..kernels import BLOCK
from ..registry import register
from . import _args, _layout

__all__ = ["sum", "mean", "max", "sum_wrt_x1", "mean_wrt_x1", "max_wrt_x1"]

FAMILY = "reduction"
Array = Any
_i64 = numpy.int64  # sizes as the kernels take them

# Smallest piece of a reduced range worth a warp (rows), a thread (cols) or a block
# (axes) of its own when the range is split; module constants so tests can shrink them.
_ROW_CHUNK = 2048
_COL_CHUNK = 64
_AXES_CHUNK = 4096
_WARPS_PER_BLOCK = BLOCK // 32
_SHORT_ROW = 16  # rows this short are reduced a thread per row, not a warp per row


# ---- kernels: y = scale * (sum or max) of a C-contiguous x of the call's dtype ----------

def _split(n_out: int, n_red: int, target: int, min_chunk: int, align: int = 1) -> tuple:
    """(chunk, splits): cut each output's ``n_red`` elements into chunks of at least
    ``min_chunk`` (a multiple of ``align``) until ``n_out * splits`` reaches ``target``."""
    if n_out >= target or n_red <= min_chunk:
        return n_red, 1
    splits = builtins.min(math.ceil(n_red / min_chunk), math.ceil(target / n_out))
    chunk = math.ceil(math.ceil(n_red / splits) / align) * align
    return chunk, math.ceil(n_red / chunk)


def _launch_rows(call: Call, op: str, x: Array, rows: int, row_len: int, y: Array,
                 init: float, scale: float) -> None:
    """y[r] = scale * op over x[r, :] for x viewed as (rows, row_len) C-contiguous."""
    # Enough (row, chunk) pairs for about two warps per resident warp slot
    # (max_blocks is 32 blocks per SM, an SM holds 64 warps). Chunks stay multiples
    # of 4 elements so an aligned row's chunks stay 16-byte aligned.
    chunk, splits = _split(rows, row_len, 2 * call.max_blocks, _ROW_CHUNK, align=4)
    dest = y if splits == 1 else call.xp.empty(rows * splits, y.dtype)
    n = rows * splits
    grid = (builtins.max(1, builtins.min(math.ceil(n / _WARPS_PER_BLOCK), call.max_blocks)),)
    call.launch(f"reduce_rows_{op}", grid, (BLOCK,),
                (x, dest, _i64(rows), _i64(row_len), _i64(chunk), _i64(splits),
                 call.scalar(init), call.scalar(1.0 if splits > 1 else scale)))
    if splits > 1:
        _launch_rows(_partials_call(call), op, dest, rows, splits, y, init, scale)


def _launch_cols(call: Call, op: str, x: Array, outer: int, n_red: int, inner: int,
                 y: Array, init: float, scale: float) -> None:
    """y[o, i] = scale * op over r of x[o, r, i] for x viewed as (outer, n_red, inner)."""
    chunk, splits = _split(outer * inner, n_red, 64 * call.max_blocks, _COL_CHUNK)
    dest = y if splits == 1 else call.xp.empty(outer * splits * inner, y.dtype)
    call.launch_1d(f"reduce_cols_{op}", outer * splits * inner,
                   (x, dest, _i64(outer), _i64(n_red), _i64(inner), _i64(chunk), _i64(splits),
                    call.scalar(init), call.scalar(1.0 if splits > 1 else scale)))
    if splits > 1:  # partials laid out (outer, splits, inner)
        _launch_cols(_partials_call(call), op, dest, outer, splits, inner, y, init, scale)


def _launch_axes(call: Call, op: str, x: Array, axes: tuple, y: Array, init: float,
                 scale: float) -> bool:
    """The gather kernel (kept and reduced dims each addressed through at most 4
    coalesced dims of strides); False (nothing launched) past 4 dims on either side."""
    strides = _layout.element_strides(x)
    keep = [i for i in range(x.ndim) if i not in axes]
    keep_dims, (keep_strides,) = _layout.coalesce([x.shape[i] for i in keep],
                                                  [strides[i] for i in keep])
    red_dims, (red_strides,) = _layout.coalesce([x.shape[i] for i in axes],
                                                [strides[i] for i in axes])
    kept = _layout.pad4(keep_dims, keep_strides)
    reduced = _layout.pad4(red_dims, red_strides)
    if kept is None or reduced is None:
        return False
    n_out, n_red = y.size, x.size // y.size
    chunk, splits = _split(n_out, n_red, call.max_blocks, _AXES_CHUNK)
    dest = y if splits == 1 else call.xp.empty(n_out * splits, y.dtype)
    (k1, k2, k3), (ks,) = kept
    (r1, r2, r3), (rs,) = reduced
    call.launch(f"reduce_axes_{op}", (builtins.min(n_out * splits, call.max_blocks),), (BLOCK,),
                (x, dest, _i64(n_out), _i64(n_red), _i64(chunk), _i64(splits),
                 _i64(k1), _i64(k2), _i64(k3), *map(_i64, ks),
                 _i64(r1), _i64(r2), _i64(r3), *map(_i64, rs),
                 call.scalar(init), call.scalar(1.0 if splits > 1 else scale)))
    if splits > 1:
        _launch_rows(_partials_call(call), op, dest, n_out, splits, y, init, scale)
    return True


def _partials_call(call: Call) -> Call:
    """The call that reduces ``call``'s partials: they have the accumulation dtype
    (float32 for a 16-bit call, whose kernels write float)."""
    acc = call.scalar(0.0).dtype
    return call if acc == call.dtype else Call(call.signature, call.backend, acc, call.inputs)


def _blocks(shape: tuple, axes: tuple) -> list:
    """[(reduced?, size)]: the dims as alternating kept/reduced blocks, size-1 dims dropped."""
    blocks: list = []
    for i, d in enumerate(shape):
        if d == 1:
            continue
        reduced = i in axes
        if blocks and blocks[-1][0] == reduced:
            blocks[-1] = (reduced, blocks[-1][1] * d)
        else:
            blocks.append((reduced, d))
    return blocks


def _reduce(call: Call, op: str, x: Array, axes: tuple, y: Array, scale: float = 1.0) -> None:
    """``y`` (C-contiguous, any shape of the right size) = ``scale`` times ``op`` ("sum"
    or "max") of ``x`` (C-contiguous, not empty, of the call's dtype) over the sorted
    ``axes``. The kernels write the accumulation dtype (float32 for 16-bit x): a ``y``
    of another dtype gets the result through a float32 buffer, rounded once."""
    acc = call.scalar(0.0).dtype
    if y.dtype != acc:
        wide = call.xp.empty(y.shape, acc)
        _reduce(call, op, x, axes, wide, scale)
        y[...] = wide
        return
    init = -math.inf if op == "max" else 0.0
    blocks = _blocks(x.shape, axes)
    kinds = tuple(r for r, _ in blocks)
    sizes = [d for _, d in blocks]
    if kinds in ((), (True,), (False, True)) and x.size // y.size > _SHORT_ROW:
        _launch_rows(call, op, x, y.size, x.size // y.size, y, init, scale)
    elif kinds in ((), (True,), (False, True)):  # short rows: a thread per row
        _launch_cols(call, op, x, y.size, x.size // y.size, 1, y, init, scale)
    elif kinds in ((False,), (True, False), (False, True, False)):
        r = kinds.index(True) if True in kinds else 0
        outer = math.prod(sizes[:r])
        n_red = sizes[r] if True in kinds else 1
        _launch_cols(call, op, x, outer, n_red, x.size // (outer * n_red), y, init, scale)
    elif not _launch_axes(call, op, x, axes, y, init, scale):
        # Past 4 dims on a side: one transposed copy makes it (kept, reduced) rows.
        keep = [i for i in range(x.ndim) if i not in axes]
        moved = call.xp.ascontiguousarray(x.transpose(keep + list(axes)))
        _launch_rows(call, op, moved, y.size, x.size // y.size, y, init, scale)


# ---- sum_to_shape: the reverse of broadcasting ----------------------------------------

def _sum_to_shape_cpu(g: Array, y: Array, axes: tuple, scale: Any) -> None:
    total = g.sum(axis=axes).reshape(y.shape) if axes else g
    if scale == 1:
        y[...] = total
    else:
        numpy.multiply(total, scale, out=y)


def _sum_to_shape_gpu(call: Call, g: Array, y: Array, axes: tuple, scale: Any) -> None:
    if not axes:
        y[...] = g if scale == 1 else g * scale
    elif g.size == 0:  # a sum over zero elements
        y[...] = 0
    else:
        _reduce(call, "sum", g, axes, y, scale)


# An internal step of another operator's call (its inputs are checked there): no bind.
_SUM_TO_SHAPE = Signature("sum_to_shape", FAMILY, ("g",), kernel_dtypes=ALL_FLOAT_DTYPES)


def sum_to_shape(backend: Backend, g: Array, out: Array, scale: float = 1.0) -> Array:
    """Sum ``g`` over the axes along which ``out.shape`` was broadcast to ``g.shape``,
    times ``scale`` (in the same pass: one rounding to ``out``'s dtype, which matters in 16
    bits: add's alpha).

    The reverse of broadcasting (the seeds' ``collapse``): used by every gradient
    of an input that was broadcast. Writes into ``out`` (any layout, any float
    dtype: the sum is taken in ``g``'s dtype and cast) and returns it.
    """
    shape = tuple(out.shape)
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and g.shape[lead + i] != 1)
    call = Call(_SUM_TO_SHAPE, backend, numpy.dtype(g.dtype), (g,))
    return call.run(out, shape, _sum_to_shape_cpu, _sum_to_shape_gpu, axes,
                    call.scalar(scale), dtype=out.dtype)


# ---- parameters ------------------------------------------------------------------

def _axes(op: str, axis: Any, ndim: int) -> tuple:
    """``axis`` (None, an int or a tuple of ints, negative allowed) as sorted axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    axes = [_args.axis(op, a, ndim) for a in items]
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: duplicate axes in axis={axis!r}")
    return tuple(sorted(axes))


def _result_shape(shape: tuple, axes: tuple, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _check_nonempty(op: str, shape: tuple, axes: tuple) -> None:
    """max has no identity: reducing an empty axis to a non-empty result is an error."""
    n_red = math.prod(shape[a] for a in axes)
    if n_red == 0 and math.prod(_result_shape(shape, axes, False)) > 0:
        raise ValueError(f"{op}: cannot take the max over zero elements "
                         f"(input shape {shape}, axes {axes})")


# ---- forward: NumPy f(x, y, axes, keepdims, n) and the kernels ---------------------------
# (n: the number of elements reduced into each output)

def _sum_cpu(x: Array, y: Array, axes: tuple, keepdims: bool, n: int) -> None:
    numpy.sum(x, axis=axes, keepdims=keepdims, out=y)


def _mean_cpu(x: Array, y: Array, axes: tuple, keepdims: bool, n: int) -> None:
    numpy.sum(x, axis=axes, keepdims=keepdims, out=y)
    with numpy.errstate(invalid="ignore"):  # 0/0 = NaN over zero elements
        numpy.divide(y, n, out=y)


def _max_cpu(x: Array, y: Array, axes: tuple, keepdims: bool, n: int) -> None:
    numpy.max(x, axis=axes, keepdims=keepdims, out=y)


def _forward_gpu(call: Call, x: Array, y: Array, axes: tuple, keepdims: bool, n: int) -> None:
    if x.size == 0:  # sum over zero elements is 0, their mean NaN
        y[...] = 0 if call.op == "sum" else math.nan
    elif call.op == "max":
        _reduce(call, "max", x, axes, y)
    else:
        _reduce(call, "sum", x, axes, y, 1.0 / n if call.op == "mean" else 1.0)


_FORWARD_CPU = {"sum": _sum_cpu, "mean": _mean_cpu, "max": _max_cpu}
_FORWARD = {op: Signature(op, FAMILY, ("x1",), kernel_dtypes=ALL_FLOAT_DTYPES)
            for op in _FORWARD_CPU}


def _forward(op: str, x1: Array, axis: Any, keepdims: Any, out: Array | None) -> Array:
    call = _FORWARD[op].bind(x1)
    (x,) = call.inputs
    axes = _axes(op, axis, x.ndim)
    keepdims = _args.boolean(op, "keepdims", keepdims)
    if op == "max":
        _check_nonempty(op, tuple(x.shape), axes)
    n = math.prod(x.shape[a] for a in axes)
    return call.run(out, _result_shape(x.shape, axes, keepdims), _FORWARD_CPU[op], _forward_gpu,
                    axes, keepdims, n)


def sum(x1: Array, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False,  # noqa: A001
        out: Array | None = None) -> Array:
    """y = Σ x1 over ``axis`` (None: every axis; an int or a tuple of ints, negative
    counted from the end) like ``numpy.sum``; 0 over zero elements."""
    return _forward("sum", x1, axis, keepdims, out)


def mean(x1: Array, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False,
         out: Array | None = None) -> Array:
    """y = (1/n) Σ x1 over ``axis`` (n elements per output) like ``numpy.mean``;
    NaN over zero elements."""
    return _forward("mean", x1, axis, keepdims, out)


def max(x1: Array, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False,  # noqa: A001
        out: Array | None = None) -> Array:
    """y = max x1 over ``axis`` like ``numpy.max`` (NaN propagates); ``ValueError``
    for a maximum over zero elements."""
    return _forward("max", x1, axis, keepdims, out)


# ---- gradients: NumPy g(x, y, gy, gx, axes, keep, n) and the kernels ---------------------
# (keep: the keepdims shape of y; n: the number of elements per output)

def _sum_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, axes: tuple, keep: tuple,
                  n: int) -> None:
    gx[...] = gy.reshape(keep)


def _mean_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, axes: tuple, keep: tuple,
                   n: int) -> None:
    gx[...] = gy.reshape(keep) / numpy.result_type(x, y, gy).type(n)  # in the call's dtype


def _max_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, axes: tuple, keep: tuple,
                  n: int) -> None:
    # split evenly among the elements equal to the maximum (NaN ties NaN)
    y_keep = y.reshape(keep)
    ties = x == y_keep
    if numpy.isnan(y).any():
        ties |= numpy.isnan(x) & numpy.isnan(y_keep)
    count = ties.sum(axis=axes, keepdims=True)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        gx[...] = numpy.where(ties, gy.reshape(keep) / count, 0)


def _gather_args(shape: tuple, keep: tuple) -> tuple | None:
    """Kernel arguments (d1, d2, d3, s0..s3) that map the flat index of a C-contiguous
    array of ``shape`` to the flat index of its output in the C-contiguous ``keep``
    (keepdims) shape; None past 4 (coalesced) dims."""
    x_strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    y_strides = [0 if k == 1 else math.prod(keep[i + 1:]) for i, k in enumerate(keep)]
    dims, (_, ys) = _layout.coalesce(shape, x_strides, y_strides)
    packed = _layout.pad4(dims, ys)
    if packed is None:
        return None
    (d1, d2, d3), (s,) = packed
    return (d1, d2, d3, *s)


def _grad_gpu(call: Call, x: Array, y: Array, gy: Array, gx: Array, axes: tuple, keep: tuple,
              n: int) -> None:
    """gx[i] = gy[j] · w[i], j the output of element i: w = 1 (sum), 1/n (mean), or
    1/count where x[i] ties its group's maximum y[j] and 0 elsewhere (max)."""
    xp = call.xp
    shape = tuple(x.shape)
    mapping = _gather_args(shape, keep)
    if mapping is None:  # past 4 dims: read broadcast copies element for element
        mapping = (1, 1, gx.size, 0, 0, 0, 1)

        def expand(a: Array) -> Array:
            return xp.ascontiguousarray(xp.broadcast_to(a.reshape(keep), shape))
    else:
        def expand(a: Array) -> Array:
            return a
    to_output = tuple(_i64(v) for v in mapping)
    size = _i64(gx.size)
    gy_keep = gy.reshape(keep)
    if call.op != "max_wrt_x1":
        call.launch_1d("reduce_broadcast", gx.size,
                       (expand(gy_keep), gx, size, *to_output,
                        call.scalar(1.0 / n if call.op == "mean_wrt_x1" else 1.0)))
        return
    call.launch_1d("max_tie_mask", gx.size, (x, expand(y.reshape(keep)), gx, size, *to_output))
    count = xp.empty(keep, call.scalar(0.0).dtype)  # float32 for 16 bits: exact counts
    _reduce(call, "sum", gx, axes, count)
    call.launch_1d("max_tie_share", gx.size, (expand(gy_keep), expand(count), gx, size,
                                              *to_output))


_GRAD_CPU = {"sum": _sum_grad_cpu, "mean": _mean_grad_cpu, "max": _max_grad_cpu}
_GRADIENT = {op: Signature(f"{op}_wrt_x1", FAMILY, ("x1", "y", "gy"),
                           kernel_dtypes=ALL_FLOAT_DTYPES) for op in _GRAD_CPU}


def _grad(op: str, x1: Array, y: Array, gy: Array, axis: Any, keepdims: Any,
          out: Array | None) -> Array:
    call = _GRADIENT[op].bind(x1, y, gy)
    x, y, gy = call.inputs
    axes = _axes(call.op, axis, x.ndim)
    keepdims = _args.boolean(call.op, "keepdims", keepdims)
    shape = tuple(x.shape)
    result_shape = _result_shape(shape, axes, keepdims)
    check_shape(call.op, "y", y, result_shape)
    check_shape(call.op, "gy", gy, result_shape)
    n = math.prod(shape[a] for a in axes)
    return call.run(out, shape, _GRAD_CPU[op], _grad_gpu, axes,
                    _result_shape(shape, axes, True), n, dtype=x.dtype)


def sum_wrt_x1(x1: Array, y: Array, gy: Array, *, axis: int | tuple[int, ...] | None = None,
               keepdims: bool = False, out: Array | None = None) -> Array:
    """gx = gy broadcast back over the summed axes."""
    return _grad("sum", x1, y, gy, axis, keepdims, out)


def mean_wrt_x1(x1: Array, y: Array, gy: Array, *, axis: int | tuple[int, ...] | None = None,
                keepdims: bool = False, out: Array | None = None) -> Array:
    """gx = gy / n broadcast back over the averaged axes (n elements per output)."""
    return _grad("mean", x1, y, gy, axis, keepdims, out)


def max_wrt_x1(x1: Array, y: Array, gy: Array, *, axis: int | tuple[int, ...] | None = None,
               keepdims: bool = False, out: Array | None = None) -> Array:
    """gx = gy / t where x1 equals its group's maximum (t such elements: ties share the
    gradient evenly; NaN counts as equal to a NaN maximum), 0 elsewhere."""
    return _grad("max", x1, y, gy, axis, keepdims, out)


register(FAMILY, sum, sum_wrt_x1)
register(FAMILY, mean, mean_wrt_x1)
register(FAMILY, max, max_wrt_x1)
