"""Transpose: ``transpose(x1, axes=None)`` (NumPy semantics, materialized) and its gradient.

Kernels in cuda/transpose.cu. Before launching, the permutation is simplified:
size-1 axes are dropped and input axes that stay neighbours, in order, in the output
are merged, so that e.g. NCHW -> NHWC becomes (N, C, H·W) -> (N, H·W, C). A swap of
the last two merged axes (a batched matrix transpose) goes through 32x33
shared-memory tiles; any other permutation through a strided gather.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy

from . import _layout
from ..backend import Backend, check_shape, output, prepare
from ..kernels import BLOCK, contiguous, finish, grid_1d, result_buffer, size, suffix
from ..registry import register

__all__ = ["transpose", "transpose_wrt_x1"]

FAMILY = "transpose"
Array = Any
_TILE, _TILE_ROWS = 32, 8  # cuda/transpose.cu's TILE, TILE_ROWS
_MAX_DIMS = 8  # transpose_nd addresses at most 8 merged axes


def _permutation(op: str, axes: Any, ndim: int) -> tuple:
    """``axes`` (None: reversed; else a permutation of the axes, negative allowed)."""
    if axes is None:
        return tuple(range(ndim - 1, -1, -1))
    if not isinstance(axes, (tuple, list)):
        raise TypeError(f"{op}: axes must be None or a tuple of ints, got {axes!r}")
    perm = tuple(_layout.normalize_axis(op, a, ndim) for a in axes)
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


def _launch(backend: Backend, x: Array, perm: tuple, y: Array) -> None:
    """``y`` (C-contiguous) = ``x`` (C-contiguous) transposed by ``perm``."""
    dims, order = _merge(x.shape, perm)
    launcher = backend.launcher
    sfx = suffix(x.dtype)
    k = len(order)
    if order == list(range(k)):  # nothing moves: a copy
        y[...] = x
    elif order == list(range(k - 2)) + [k - 1, k - 2]:
        batch, rows, cols = math.prod(dims[:-2]), dims[-2], dims[-1]
        tiles = batch * math.ceil(rows / _TILE) * math.ceil(cols / _TILE)
        launcher.launch(FAMILY, f"transpose_tiles_{sfx}",
                        (min(tiles, launcher.max_blocks),), (_TILE, _TILE_ROWS),
                        (x, y, size(batch), size(rows), size(cols)))
    elif k <= _MAX_DIMS:
        in_strides = [math.prod(dims[i + 1:]) for i in range(k)]
        out_dims = [dims[a] for a in order]
        pad = _MAX_DIMS - k
        d = [1] * pad + out_dims
        s = [0] * pad + [in_strides[a] for a in order]
        launcher.launch(FAMILY, f"transpose_nd_{sfx}", grid_1d(launcher, y.size), (BLOCK,),
                        (x, y, size(y.size), *map(size, d[1:]), *map(size, s)))
    else:  # more than 8 axes that all move apart: the array library's own copy
        y[...] = x.transpose(perm)


def _transpose(op: str, backend: Backend, x: Array, perm: tuple, dtype: Any,
               out: Array) -> Array:
    if not backend.uses_kernels:
        numpy.copyto(out, x.transpose(perm))
        return out
    if out.size == 0:
        return out
    target = result_buffer(backend, out, dtype)
    _launch(backend, contiguous(backend, x, dtype), perm, target)
    return finish(out, target)


def transpose(x1: Array, *, axes: Sequence[int] | None = None,
              out: Array | None = None) -> Array:
    """y = x1 with its axes permuted: ``y.shape[i] = x1.shape[axes[i]]`` (``axes`` None
    reverses them), like ``numpy.transpose`` but a new C-contiguous array."""
    op = "transpose"
    p = prepare(op, ("x1",), (x1,))
    (x1,) = p.arrays
    perm = _permutation(op, axes, x1.ndim)
    out = output(op, p.backend, out, tuple(x1.shape[a] for a in perm), p.dtype)
    return _transpose(op, p.backend, x1, perm, p.dtype, out)


def transpose_wrt_x1(x1: Array, y: Array, gy: Array, *, axes: Sequence[int] | None = None,
                     out: Array | None = None) -> Array:
    """gx = gy transposed by the inverse permutation (``gx.shape == x1.shape``)."""
    op = "transpose_wrt_x1"
    p = prepare(op, ("x1", "y", "gy"), (x1, y, gy))
    x1, y, gy = p.arrays
    perm = _permutation(op, axes, x1.ndim)
    shape = tuple(x1.shape[a] for a in perm)
    check_shape(op, "y", y, shape)
    check_shape(op, "gy", gy, shape)
    out = output(op, p.backend, out, tuple(x1.shape), x1.dtype)
    inverse = tuple(int(i) for i in numpy.argsort(perm))
    return _transpose(op, p.backend, gy, inverse, p.dtype, out)


register(FAMILY, transpose, transpose_wrt_x1)
