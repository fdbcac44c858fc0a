"""The launch geometry of the row kernels (softmax family, cross-entropy): one rule for
C-contiguous ``(rows, cols)`` arrays, reduced along each row; and the one rule that splits
many independent reductions over blocks (:func:`split_reduction`: batch_norm's channels,
the row norms' weight columns, the per-axis gradients' channels).

Every row kernel ``<op>`` comes in these strategies (cuda/softmax.cu, cuda/loss.cu,
cuda/normalization.cu; the last two take ``groups=`` and ``arrays=``):

- ``<op>_lanes<W>`` (``groups=True``): rows of cols <= 16 take W = 2, 4, 8 or 16 lanes
  (the power of two >= cols), so a warp holds 32 / W rows; 4 warps per block;
- ``<op>_warp<E>``: one warp per row, the row held in E registers per lane
  (cols <= 32 E; E = 1, 2, 4, ..., 32, at most 16 for float64), 4 warps (rows) per block;
- ``<op>_block``: one block per row, for the longer rows: 256 threads, or (``arrays=``:
  kernels that hold :func:`held` values per thread of each of ``arrays`` row arrays) the
  fewest warps whose registers hold the row, at most 256.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy

from .. import kernels
from ..call import Call

WARPS_PER_BLOCK = 4  # rows of a block of the warp-per-row kernels
ROW_BLOCK = 256  # threads of a block-per-row kernel


def warp_elems(dtype: Any, cols: int) -> int | None:
    """E of the ``_warp<E>`` kernel for rows of ``cols`` (registers per lane and array),
    or None when the row is too long for one warp (then a block takes the row)."""
    limit = 16 if numpy.dtype(dtype) == numpy.float64 else 32
    per_lane = max(1, math.ceil(cols / 32))
    elems = 1 << (per_lane - 1).bit_length()
    return elems if elems <= limit else None


def lanes(cols: int) -> int | None:
    """W of the ``_lanes<W>`` kernel for rows of ``cols`` elements, or None past 16."""
    return max(2, 1 << (cols - 1).bit_length()) if cols <= 16 else None


def held(dtype: Any, arrays: int) -> int:
    """Values of each row array that a thread of a ``_block`` kernel holds in registers:
    ``ROW_HELD`` floats (half as many doubles; 16 bits are held as float32) over ``arrays``
    arrays (the ``ROW_HELD_OF`` of the kernels)."""
    acc_bytes = 8 if numpy.dtype(dtype) == numpy.float64 else 4
    return kernels.CONSTANTS["ROW_HELD"] * 4 // acc_bytes // arrays


def launch(call: Call, op: str, rows: int, cols: int, args: Sequence[Any], *,
           groups: bool = False, arrays: int | None = None) -> None:
    """Launch ``<op>_lanes<W>`` (when ``groups``), ``<op>_warp<E>`` or ``<op>_block`` over
    ``rows`` rows of ``cols`` elements; the kernel takes ``(*args, rows, cols)``."""
    width = lanes(cols) if groups else None
    elems = warp_elems(call.dtype, cols)
    if width is not None:
        rows_per_block = 32 * WARPS_PER_BLOCK // width
        kernel, blocks, threads = (f"{op}_lanes{width}", math.ceil(rows / rows_per_block),
                                   32 * WARPS_PER_BLOCK)
    elif elems is not None:
        kernel, blocks, threads = (f"{op}_warp{elems}", math.ceil(rows / WARPS_PER_BLOCK),
                                   32 * WARPS_PER_BLOCK)
    else:
        threads = ROW_BLOCK
        if arrays is not None:  # the fewest warps that hold the row (one tile)
            threads = min(ROW_BLOCK, 32 * math.ceil(cols / (32 * held(call.dtype, arrays))))
        kernel, blocks = f"{op}_block", rows
    call.launch(kernel, (max(1, min(blocks, call.max_blocks)),), (threads,),
                (*args, numpy.int64(rows), numpy.int64(cols)))


SPLIT_MIN_CHUNK = 1024  # values of one reduction per block, at least, before it is split


def split_reduction(call: Call, count: int, size: int,
                    min_chunk: int = SPLIT_MIN_CHUNK) -> tuple[int, int]:
    """(chunk, splits): each of ``count`` reductions (a channel; a tile of columns) over
    ``size`` values in ``splits`` chunks of ``chunk`` values, at least ``min_chunk`` each,
    until count · splits blocks fill the GPU a few times over. The partial sums are then
    added in a fixed order (no atomics), so the split never changes between runs."""
    target = 4 * call.max_blocks
    if count >= target or size <= min_chunk:
        return max(size, 1), 1
    splits = min(math.ceil(size / min_chunk), math.ceil(target / count))
    chunk = math.ceil(size / splits)
    return chunk, math.ceil(size / chunk)
