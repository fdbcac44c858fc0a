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

from . import _layout
from ..backend import Backend, check_shape, output, prepare
from ..kernels import (BLOCK, contiguous, finish, grid_1d, result_buffer, scalar, size,
                      suffix)
from ..registry import register

__all__ = ["sum", "mean", "max", "sum_wrt_x1", "mean_wrt_x1", "max_wrt_x1"]

FAMILY = "reduction"
Array = Any

# Smallest piece of a reduced range worth a warp (rows), a thread (cols) or a block
# (axes) of its own when the range is split; module constants so tests can shrink them.
_ROW_CHUNK = 2048
_COL_CHUNK = 64
_AXES_CHUNK = 4096
_WARPS_PER_BLOCK = BLOCK // 32
_SHORT_ROW = 16  # rows this short are reduced a thread per row, not a warp per row


# ---- launching ---------------------------------------------------------------

def _split(n_out: int, n_red: int, target: int, min_chunk: int, align: int = 1) -> tuple:
    """(chunk, splits): cut each output's ``n_red`` elements into chunks of at least
    ``min_chunk`` (a multiple of ``align``) until ``n_out * splits`` reaches ``target``."""
    if n_out >= target or n_red <= min_chunk:
        return n_red, 1
    splits = builtins.min(math.ceil(n_red / min_chunk), math.ceil(target / n_out))
    chunk = math.ceil(math.ceil(n_red / splits) / align) * align
    return chunk, math.ceil(n_red / chunk)


def _launch_rows(backend: Backend, op: str, x: Array, rows: int, row_len: int, y: Array,
                 init: float, scale: float) -> None:
    """y[r] = scale * op over x[r, :] for x viewed as (rows, row_len) C-contiguous."""
    launcher = backend.launcher
    # Enough (row, chunk) pairs for about two warps per resident warp slot
    # (max_blocks is 32 blocks per SM, an SM holds 64 warps). Chunks stay multiples
    # of 4 elements so an aligned row's chunks stay 16-byte aligned.
    chunk, splits = _split(rows, row_len, 2 * launcher.max_blocks, _ROW_CHUNK, align=4)
    dest = y if splits == 1 else backend.xp.empty(rows * splits, x.dtype)
    n = rows * splits
    grid = (builtins.max(1, builtins.min(math.ceil(n / _WARPS_PER_BLOCK), launcher.max_blocks)),)
    launcher.launch(FAMILY, f"reduce_rows_{op}_{suffix(x.dtype)}", grid, (BLOCK,),
                    (x, dest, size(rows), size(row_len), size(chunk), size(splits),
                     scalar(x.dtype, init), scalar(x.dtype, 1.0 if splits > 1 else scale)))
    if splits > 1:
        _launch_rows(backend, op, dest, rows, splits, y, init, scale)


def _launch_cols(backend: Backend, op: str, x: Array, outer: int, n_red: int, inner: int,
                 y: Array, init: float, scale: float) -> None:
    """y[o, i] = scale * op over r of x[o, r, i] for x viewed as (outer, n_red, inner)."""
    launcher = backend.launcher
    chunk, splits = _split(outer * inner, n_red, 64 * launcher.max_blocks, _COL_CHUNK)
    dest = y if splits == 1 else backend.xp.empty(outer * splits * inner, x.dtype)
    n = outer * splits * inner
    launcher.launch(FAMILY, f"reduce_cols_{op}_{suffix(x.dtype)}", grid_1d(launcher, n),
                    (BLOCK,),
                    (x, dest, size(outer), size(n_red), size(inner), size(chunk), size(splits),
                     scalar(x.dtype, init), scalar(x.dtype, 1.0 if splits > 1 else scale)))
    if splits > 1:  # partials laid out (outer, splits, inner)
        _launch_cols(backend, op, dest, outer, splits, inner, y, init, scale)


def _launch_axes(backend: Backend, op: str, x: Array, axes: tuple, y: Array, init: float,
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
    launcher = backend.launcher
    n_out, n_red = y.size, x.size // y.size
    chunk, splits = _split(n_out, n_red, launcher.max_blocks, _AXES_CHUNK)
    dest = y if splits == 1 else backend.xp.empty(n_out * splits, x.dtype)
    (k1, k2, k3), (ks,) = kept
    (r1, r2, r3), (rs,) = reduced
    launcher.launch(FAMILY, f"reduce_axes_{op}_{suffix(x.dtype)}",
                    (builtins.min(n_out * splits, launcher.max_blocks),), (BLOCK,),
                    (x, dest, size(n_out), size(n_red), size(chunk), size(splits),
                     size(k1), size(k2), size(k3), *map(size, ks),
                     size(r1), size(r2), size(r3), *map(size, rs),
                     scalar(x.dtype, init), scalar(x.dtype, 1.0 if splits > 1 else scale)))
    if splits > 1:
        _launch_rows(backend, op, dest, n_out, splits, y, init, scale)
    return True


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


def _reduce(backend: Backend, op: str, x: Array, axes: tuple, y: Array, scale: float = 1.0) -> None:
    """``y`` (C-contiguous, ``x``'s dtype, any shape of the right size) = ``scale`` times
    ``op`` ("sum" or "max") of ``x`` (any layout: a strided one is copied first, which
    also opens the fast row/column kernels to it) over ``axes``. ``x`` is not empty."""
    if y.size == 0:
        return
    init = -math.inf if op == "max" else 0.0
    x = contiguous(backend, x, x.dtype)
    blocks = _blocks(x.shape, axes)
    kinds = tuple(r for r, _ in blocks)
    sizes = [d for _, d in blocks]
    if kinds in ((), (True,), (False, True)) and x.size // y.size > _SHORT_ROW:
        _launch_rows(backend, op, x, y.size, x.size // y.size, y, init, scale)
    elif kinds in ((), (True,), (False, True)):  # short rows: a thread per row
        _launch_cols(backend, op, x, y.size, x.size // y.size, 1, y, init, scale)
    elif kinds in ((False,), (True, False), (False, True, False)):
        r = kinds.index(True) if True in kinds else 0
        outer = math.prod(sizes[:r])
        n_red = sizes[r] if True in kinds else 1
        _launch_cols(backend, op, x, outer, n_red, x.size // (outer * n_red), y, init, scale)
    elif not _launch_axes(backend, op, x, axes, y, init, scale):
        # Past 4 dims on a side: one transposed copy makes it (kept, reduced) rows.
        keep = [i for i in range(x.ndim) if i not in axes]
        moved = backend.xp.ascontiguousarray(x.transpose(keep + list(axes)))
        _launch_rows(backend, op, moved, y.size, x.size // y.size, y, init, scale)


def _launch_sum(backend: Backend, x: Array, axes: tuple, y: Array) -> None:
    """``y`` (C-contiguous) = ``x`` summed over ``axes`` (``x`` any layout)."""
    if y.size == 0:
        return
    if x.size == 0:
        y[...] = 0
        return
    _reduce(backend, "sum", x, tuple(sorted(axes)), y)


def sum_to_shape(backend: Backend, g: Any, out: Any) -> Any:
    """Sum ``g`` over the axes along which ``out.shape`` was broadcast to ``g.shape``.

    The reverse of broadcasting (the seeds' ``collapse``): used by every gradient
    of an input that was broadcast. Writes into ``out`` (any layout, any float
    dtype: the sum is taken in ``g``'s dtype and cast) and returns it.
    """
    shape = tuple(out.shape)
    if tuple(g.shape) == shape:
        out[...] = g
        return out
    lead = g.ndim - len(shape)
    reduced = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                         if s == 1 and g.shape[lead + i] != 1)
    if not backend.uses_kernels:
        out[...] = g.sum(axis=reduced).reshape(shape)
        return out
    target = result_buffer(backend, out, g.dtype)
    _launch_sum(backend, g, reduced, target)
    return finish(out, target)


# ---- validation ----------------------------------------------------------------

def _axes(op: str, axis: Any, ndim: int) -> tuple:
    """``axis`` (None, an int or a tuple of ints, negative allowed) as sorted axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    axes = [_layout.normalize_axis(op, a, ndim) for a in items]
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: duplicate axes in axis={axis!r}")
    return tuple(sorted(axes))


def _result_shape(shape: tuple, axes: tuple, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _check_keepdims(op: str, keepdims: Any) -> None:
    if not isinstance(keepdims, (bool, numpy.bool_)):
        raise TypeError(f"{op}: keepdims must be a bool, got {keepdims!r}")


def _check_nonempty(op: str, shape: tuple, axes: tuple) -> None:
    """max has no identity: reducing an empty axis to a non-empty result is an error."""
    n_red = math.prod(shape[a] for a in axes)
    if n_red == 0 and math.prod(_result_shape(shape, axes, False)) > 0:
        raise ValueError(f"{op}: cannot take the max over zero elements "
                         f"(input shape {shape}, axes {axes})")


# ---- forward -------------------------------------------------------------------

def _forward(op: str, x1: Array, axis: Any, keepdims: bool, out: Array | None) -> Array:
    p = prepare(op, ("x1",), (x1,))
    (x1,) = p.arrays
    axes = _axes(op, axis, x1.ndim)
    _check_keepdims(op, keepdims)
    if op == "max":
        _check_nonempty(op, tuple(x1.shape), axes)
    n_red = math.prod(x1.shape[a] for a in axes)
    out = output(op, p.backend, out, _result_shape(x1.shape, axes, keepdims), p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        if op == "max":
            return numpy.max(x1, axis=axes, keepdims=keepdims, out=out)
        numpy.sum(x1, axis=axes, keepdims=keepdims, out=out)
        if op == "mean":
            with numpy.errstate(invalid="ignore"):  # 0/0 = NaN over zero elements
                numpy.divide(out, n_red, out=out)
        return out
    if out.size == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    if x1.size == 0:  # sum over zero elements is 0, their mean NaN
        target[...] = 0 if op == "sum" else math.nan
    else:
        _reduce(backend, "max" if op == "max" else "sum", x1, axes, target,
                1.0 / n_red if op == "mean" else 1.0)
    return finish(out, target)


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


# ---- gradients -----------------------------------------------------------------

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


def _grad(op: str, x1: Array, y: Array, gy: Array, axis: Any, keepdims: bool,
          out: Array | None) -> Array:
    name = f"{op}_wrt_x1"
    p = prepare(name, ("x1", "y", "gy"), (x1, y, gy))
    x1, y, gy = p.arrays
    axes = _axes(name, axis, x1.ndim)
    _check_keepdims(name, keepdims)
    shape = tuple(x1.shape)
    result_shape = _result_shape(shape, axes, keepdims)
    check_shape(name, "y", y, result_shape)
    check_shape(name, "gy", gy, result_shape)
    out = output(name, p.backend, out, shape, x1.dtype)
    if out.size == 0:
        return out
    keep = _result_shape(shape, axes, True)
    n_red = math.prod(shape[a] for a in axes)
    backend = p.backend
    if not backend.uses_kernels:
        gy_keep = gy.reshape(keep)
        if op == "sum":
            out[...] = gy_keep
        elif op == "mean":
            out[...] = gy_keep / p.dtype.type(n_red)
        else:  # split evenly among the elements equal to the maximum (NaN ties NaN)
            y_keep = y.reshape(keep)
            ties = x1 == y_keep
            if numpy.isnan(y).any():
                ties |= numpy.isnan(x1) & numpy.isnan(y_keep)
            count = ties.sum(axis=axes, keepdims=True)
            with numpy.errstate(invalid="ignore", divide="ignore"):
                out[...] = numpy.where(ties, gy_keep / count, 0)
        return out
    xp = backend.xp
    target = result_buffer(backend, out, p.dtype)
    gy_keep = contiguous(backend, gy, p.dtype).reshape(keep)
    mapping = _gather_args(shape, keep)
    if mapping is None:  # past 4 dims: read broadcast copies element for element
        mapping = (1, 1, target.size, 0, 0, 0, 1)

        def expand(a: Array) -> Array:
            return xp.ascontiguousarray(xp.broadcast_to(a.reshape(keep), shape))
    else:
        def expand(a: Array) -> Array:
            return a
    args = tuple(size(v) for v in mapping)
    n = size(target.size)
    grid = grid_1d(backend.launcher, target.size)
    sfx = suffix(p.dtype)
    if op in ("sum", "mean"):
        backend.launcher.launch(FAMILY, f"reduce_broadcast_{sfx}", grid, (BLOCK,),
                                (expand(gy_keep), target, n, *args,
                                 scalar(p.dtype, 1.0 / n_red if op == "mean" else 1.0)))
        return finish(out, target)
    x = contiguous(backend, x1, p.dtype)
    y_keep = contiguous(backend, y, p.dtype).reshape(keep)
    backend.launcher.launch(FAMILY, f"max_tie_mask_{sfx}", grid, (BLOCK,),
                            (x, expand(y_keep), target, n, *args))
    count = xp.empty(keep, p.dtype)
    _reduce(backend, "sum", target, axes, count)
    backend.launcher.launch(FAMILY, f"max_tie_share_{sfx}", grid, (BLOCK,),
                            (expand(gy_keep), expand(count), target, n, *args))
    return finish(out, target)


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
