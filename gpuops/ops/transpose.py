"""Transpose: ``transpose(x1, axes=None)`` (NumPy semantics, materialized) and its gradient.

Kernels in cuda/transpose.cu. Before launching, the permutation is simplified:
size-1 axes are dropped and input axes that stay neighbours, in order, in the output
are merged, so that e.g. NCHW -> NHWC becomes (N, C, H·W) -> (N, H·W, C). A swap of
the last two merged axes (a batched matrix transpose) goes through shared-memory tiles
(TRANSPOSE_TILE of gpuops.kernels.CONSTANTS); any other permutation of up to 8 merged
axes by transpose_nd: a strided gather when the innermost axis stays (reads and writes
coalesced), else the same shared-memory tiles over the output axes of the input's and the
output's innermost axis. Every float dtype (16-bit elements are moved as they are).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy

from ..backend import ALL_FLOAT_DTYPES
from ..call import Call, Signature, check_shape
from ..kernels import CONSTANTS, fastdiv
from ..registry import register
from . import _args

__all__ = ["transpose", "transpose_wrt_x1"]

FAMILY = "transpose"
Array = Any
_TILE, _TILE_ROWS = CONSTANTS["TRANSPOSE_TILE"], CONSTANTS["TRANSPOSE_TILE_ROWS"]
_MAX_DIMS = 8  # transpose_nd addresses at most 8 merged axes


def _permutation(op: str, axes: Any, ndim: int) -> tuple:
    """``axes`` (None: reversed; else a permutation of the axes, negative allowed)."""
    if axes is None:
        return tuple(range(ndim - 1, -1, -1))
    if not isinstance(axes, (tuple, list)):
        raise TypeError(f"{op}: axes must be None or a tuple of ints, got {axes!r}")
    perm = tuple(_args.axis(op, a, ndim) for a in axes)
    if len(perm) != ndim or sorted(perm) != list(range(ndim)):
        raise ValueError(f"{op}: axes {tuple(axes)!r} is not a permutation of the "
                         f"{ndim} axes of an input with {ndim} dims")
    return perm


def _merge(shape: Sequence[int], perm: Sequence[int]) -> tuple[list, list]:
    """(input dims, permutation) with size-1 axes dropped and neighbours merged."""
    kept = [a for a in range(len(shape)) if shape[a] != 1]
    rank = {a: i for i, a in enumerate(kept)}
    groups: list[list[int]] = []  # runs of consecutive kept input axes, in output order
    for r in (rank[a] for a in perm if shape[a] != 1):
        if groups and groups[-1][-1] + 1 == r:
            groups[-1].append(r)
        else:
            groups.append([r])
    by_input = sorted(groups, key=lambda g: g[0])
    dims = [math.prod(shape[kept[r]] for r in g) for g in by_input]
    return dims, [by_input.index(g) for g in groups]


# ---- NumPy and kernels: y = x transposed by perm (the call protocol hands over a y that
# overlaps no input; for the kernels, x and y are C-contiguous) ----------------------------

def _transpose_cpu(x: Array, y: Array, perm: tuple) -> None:
    numpy.copyto(y, x.transpose(perm))


def _transpose_gpu(call: Call, x: Array, y: Array, perm: tuple) -> None:
    dims, order = _merge(x.shape, perm)
    k = len(order)
    if order == list(range(k)):  # at most size-1 axes move: the elements keep their order
        y[...] = x.reshape(y.shape)
    elif order == list(range(k - 2)) + [k - 1, k - 2]:  # (batch, rows, cols) -> (batch, cols, rows)
        batch, rows, cols = math.prod(dims[:-2]), dims[-2], dims[-1]
        tiles = batch * math.ceil(rows / _TILE) * math.ceil(cols / _TILE)
        call.launch("transpose_tiles", (min(tiles, call.max_blocks),), (_TILE, _TILE_ROWS),
                    (x, y, numpy.int64(batch), numpy.int64(rows), numpy.int64(cols)))
    elif k <= _MAX_DIMS:
        in_strides = [math.prod(dims[a + 1:]) for a in range(k)]
        pad = _MAX_DIMS - k
        out_dims = [1] * pad + [dims[a] for a in order]
        strides = [0] * pad + [in_strides[a] for a in order]
        inner = pad + order.index(k - 1)  # the output dim of the input's unit-stride axis
        args = (x, y, numpy.int64(y.size),
                *(v for d in out_dims[1:] for v in fastdiv(d, y.size)),
                *map(numpy.int64, strides), numpy.int64(inner))
        if inner == _MAX_DIMS - 1:
            call.launch_1d("transpose_nd", y.size, args)
        else:  # 32x32 tiles over (dim inner, the dims after it) at each index of those before
            after = math.prod(out_dims[inner + 1:])
            tiles = (y.size // (out_dims[inner] * after) * math.ceil(out_dims[inner] / _TILE)
                     * math.ceil(after / _TILE))
            call.launch("transpose_nd", (min(tiles, call.max_blocks),), (_TILE, _TILE_ROWS), args)
    else:  # more than 8 axes that all move apart: the array library's own copy
        y[...] = x.transpose(perm)


TRANSPOSE = Signature("transpose", FAMILY, ("x1",), kernel_dtypes=ALL_FLOAT_DTYPES)
TRANSPOSE_WRT_X1 = Signature("transpose_wrt_x1", FAMILY, ("x1", "y", "gy"),
                             kernel_dtypes=ALL_FLOAT_DTYPES)


def transpose(x1: Array, *, axes: Sequence[int] | None = None,
              out: Array | None = None) -> Array:
    """y = x1 with its axes permuted: ``y.shape[i] = x1.shape[axes[i]]`` (``axes`` None
    reverses them), like ``numpy.transpose`` but a new C-contiguous array."""
    call = TRANSPOSE.bind(x1)
    (x,) = call.inputs
    perm = _permutation(call.op, axes, x.ndim)
    return call.run(out, tuple(x.shape[a] for a in perm), _transpose_cpu, _transpose_gpu, perm)


def transpose_wrt_x1(x1: Array, y: Array, gy: Array, *, axes: Sequence[int] | None = None,
                     out: Array | None = None) -> Array:
    """gx = gy transposed by the inverse permutation (``gx.shape == x1.shape``)."""
    call = TRANSPOSE_WRT_X1.bind(x1, y, gy)
    x, y, gy = call.inputs
    perm = _permutation(call.op, axes, x.ndim)
    shape = tuple(x.shape[a] for a in perm)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    inverse = tuple(int(a) for a in numpy.argsort(perm))
    # only gy is read: out may be x1 or y without a staging copy
    return call.run(out, tuple(x.shape), _transpose_cpu, _transpose_gpu, inverse,
                    dtype=x.dtype, inputs=(gy,))


register(FAMILY, transpose, transpose_wrt_x1)
