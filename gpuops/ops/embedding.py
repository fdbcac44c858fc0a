"""Embedding: ``embedding`` (a table lookup) and its gradient. Kernels in cuda/embedding.cu.

x1 holds integer ids (int32 or int64, any shape, 0-d too), x2 the table (V, C):

    y[..., c] = x2[x1[...], c]                         (shape x1.shape + (C,))
    ∂L/∂x2[v, c] = Σ_{positions p with x1[p] = v} gy[p, c]   (0 for ids never seen)

The ids are no variables: there is no embedding_wrt_x1. An id outside [0, V) raises
``ValueError`` on the NumPy path (negative ids are not wrapped, unlike Python indexing); the
kernels never read with it: its output row is NaN and the gradient leaves it out (the rule
of softmax_cross_entropy's labels: no device sync to check).

The gradient is deterministic, without atomics: the ids are sorted on the host side
(``argsort(kind="stable")``: positions of one id stay in ascending order) and
``searchsorted`` gives each table row v its segment of the sorted positions; then one thread
per (v, c) sums gy[p, c] over its segment in that order. NumPy's ``add.at`` adds in the
same order (positions ascending), so both backends round alike. Every float dtype: a
16-bit gradient is summed in float32 and rounded once (the lookup copies the bits).
"""
from __future__ import annotations

from typing import Any

import numpy

from ..backend import ALL_FLOAT_DTYPES
from ..call import Call, Signature, check_shape
from ..registry import register

__all__ = ["embedding", "embedding_wrt_x2"]

FAMILY = "embedding"
Array = Any

EMBEDDING = Signature("embedding", FAMILY, ("x1", "x2"), ints=("x1",),
                      kernel_dtypes=ALL_FLOAT_DTYPES)
EMBEDDING_WRT_X2 = Signature("embedding_wrt_x2", FAMILY, ("x1", "x2", "y", "gy"), ints=("x1",),
                             kernel_dtypes=ALL_FLOAT_DTYPES)
# The forward copies 16-byte words when a row is a whole number of them and both arrays
# are 16-byte aligned (embedding_vec_<dtype>), else elements (embedding_<dtype>).
_WORD = 16


def _table_shape(op: str, table: Array) -> tuple[int, int]:
    if table.ndim != 2:
        raise ValueError(f"{op}: x2 (the table) must have shape (V, C), got "
                         f"{tuple(table.shape)}")
    return int(table.shape[0]), int(table.shape[1])


def _check_ids(op: str, ids: Array, rows: int) -> None:
    """(NumPy) ``ValueError`` naming the ids outside [0, rows)."""
    bad = (ids < 0) | (ids >= rows)
    if bad.any():
        raise ValueError(f"{op}: ids (x1) must be in [0, {rows}) for a table of {rows} rows; "
                         f"got {numpy.unique(ids[bad])[:8].tolist()}")


def _address(x: Array) -> int:
    """The address of an array's first element (CuPy device pointer, or the NumPy host
    address the emulator reads)."""
    # (not x.data for NumPy: a memoryview, which bfloat16 cannot be exported to)
    return int(x.ctypes.data) if isinstance(x, numpy.ndarray) else int(x.data.ptr)


# ---- forward ------------------------------------------------------------------------

def _embedding_cpu(ids: Array, table: Array, y: Array) -> None:
    _check_ids("embedding", ids, table.shape[0])
    y[...] = table[ids]


def _embedding_gpu(call: Call, ids: Array, table: Array, y: Array) -> None:
    rows, cols = table.shape
    ids = call.xp.ascontiguousarray(ids, dtype=numpy.int64)
    per_word = _WORD // table.itemsize
    if cols % per_word == 0 and _address(table) % _WORD == 0 and _address(y) % _WORD == 0:
        kernel, width = "embedding_vec", cols // per_word  # a row in 16-byte words
    else:
        kernel, width = "embedding", cols
    call.launch_1d(kernel, ids.size * width, (ids, table, y, numpy.int64(ids.size),
                                              numpy.int64(rows), numpy.int64(width)))


def embedding(x1: Array, x2: Array, *, out: Array | None = None) -> Array:
    """y[..., :] = x2[x1[...], :]: the rows of the table x2 (V, C) at the integer ids x1
    (any shape); the result has shape x1.shape + (C,). Ids outside [0, V): ValueError on
    NumPy, a NaN row on kernel backends."""
    call = EMBEDDING.bind(x1, x2)
    ids, table = call.inputs
    _, cols = _table_shape(call.op, table)
    return call.run(out, tuple(ids.shape) + (cols,), _embedding_cpu, _embedding_gpu)


# ---- gradient wrt the table ---------------------------------------------------------

def _embedding_grad_cpu(ids: Array, gy: Array, gx: Array) -> None:
    rows, cols = gx.shape
    _check_ids("embedding_wrt_x2", ids, rows)
    gx[...] = 0
    numpy.add.at(gx, ids.reshape(-1), gy.reshape(-1, cols))  # positions in ascending order


def _embedding_grad_gpu(call: Call, ids: Array, gy: Array, gx: Array) -> None:
    xp = call.xp
    rows, cols = gx.shape
    flat = ids.reshape(-1)
    # CuPy's argsort is always stable (a radix sort; older versions take no kind=)
    order = xp.argsort(flat, kind="stable") if xp is numpy else xp.argsort(flat)
    order = order.astype(numpy.int64, copy=False)
    # segment of table row v: order[starts[v]:starts[v + 1]]; ids < 0 sort before
    # starts[0] and ids >= rows after starts[rows], so no segment holds them
    starts = xp.searchsorted(flat[order], xp.arange(rows + 1, dtype=flat.dtype))
    starts = xp.ascontiguousarray(starts, dtype=numpy.int64)
    call.launch_1d("embedding_wrt_x2", gx.size, (order, starts, gy, gx, numpy.int64(rows),
                                                 numpy.int64(cols)))


def embedding_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array, *,
                     out: Array | None = None) -> Array:
    """The table's gradient (V, C): row v is the sum of gy[p, :] over the positions p with
    x1[p] = v, 0 for ids never seen; deterministic (no atomics). y is accepted, per the
    API, and unused. Ids outside [0, V): ValueError on NumPy, left out on kernel backends."""
    call = EMBEDDING_WRT_X2.bind(x1, x2, y, gy)
    ids, table, y, gy = call.inputs
    _, cols = _table_shape(call.op, table)
    shape = tuple(ids.shape) + (cols,)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    return call.run(out, tuple(table.shape), _embedding_grad_cpu, _embedding_grad_gpu,
                    dtype=table.dtype, inputs=(ids, gy))


register(FAMILY, embedding, embedding_wrt_x2)
