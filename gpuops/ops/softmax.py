"""The softmax family: softmax and log_softmax along any axis. Kernels in cuda/softmax.cu.

The kernels work on C-contiguous (rows, cols) arrays whose rows are the softmax
axis. When ``axis`` is not the last axis, the input is copied with that axis moved
last (one transposed copy) and the result copied back into place; the last axis
needs no copy. float16 is accepted where the kernels compute (CuPy, the emulator)
and computed in float32.

Numerics: m = max of the row is subtracted before exponentiating, so no finite
logits overflow (±1e4 included); log_softmax is (x - m) - log Σ e^(x - m), never
log of a softmax that underflowed to 0.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from . import _layout
from ..backend import FLOAT_DTYPES, HALF_DTYPES, Backend, check_shape, output, prepare
from ..kernels import finish, result_buffer, size, suffix
from ..registry import register

__all__ = ["softmax", "log_softmax", "softmax_wrt_x1", "log_softmax_wrt_x1"]

FAMILY = "softmax"
Array = Any

WARP_ROWS_PER_BLOCK = 4  # warp-per-row kernels run 4 warps (rows) per block
ROW_BLOCK = 256  # threads of a block-per-row kernel


def warp_elems(dtype: numpy.dtype, cols: int) -> int | None:
    """E of the ``_warpE`` kernel for rows of ``cols`` (registers per lane and array),
    or None when the row is too long for one warp (then a block takes the row)."""
    limit = 16 if numpy.dtype(dtype) == numpy.float64 else 32
    per_lane = max(1, math.ceil(cols / 32))
    elems = 1 << (per_lane - 1).bit_length()
    return elems if elems <= limit else None


def launch_rows(backend: Backend, family: str, kernel: str, arrays: tuple, rows: int,
                cols: int, dtype: numpy.dtype, extra: tuple = ()) -> None:
    """Launch ``<kernel>_warpE`` (one warp per row) or ``<kernel>_block`` (one block per
    row) over C-contiguous ``(rows, cols)`` arrays; shared with the cross-entropy."""
    launcher = backend.launcher
    elems = warp_elems(dtype, cols)
    if elems is not None:
        name = f"{kernel}_warp{elems}_{suffix(dtype)}"
        block = 32 * WARP_ROWS_PER_BLOCK
        grid = min(math.ceil(rows / WARP_ROWS_PER_BLOCK), launcher.max_blocks)
    else:
        name = f"{kernel}_block_{suffix(dtype)}"
        block = ROW_BLOCK
        grid = min(rows, launcher.max_blocks)
    launcher.launch(family, name, (max(1, grid),), (block,),
                    (*arrays, *extra, size(rows), size(cols)))


def _rows_view(backend: Backend, x: Array, axis: int, dtype: numpy.dtype) -> Array:
    """``x`` with ``axis`` last, C-contiguous in ``dtype`` (a copy unless already so)."""
    return backend.xp.ascontiguousarray(backend.xp.moveaxis(x, axis, -1), dtype=dtype)


def _run_rows(backend: Backend, kernel: str, inputs: tuple, out: Array, axis: int,
              dtype: numpy.dtype) -> Array:
    """Run a row kernel over ``inputs`` (all of out's shape) along ``axis`` into ``out``."""
    if out.size == 0:
        return out
    dest = backend.xp.moveaxis(out, axis, -1)
    target = result_buffer(backend, dest, dtype)
    cols = out.shape[axis]
    rows = out.size // cols
    launch_rows(backend, FAMILY, kernel,
                tuple(_rows_view(backend, v, axis, dtype) for v in inputs) + (target,),
                rows, cols, dtype)
    finish(dest, target)
    return out


def _prepare(op: str, names: tuple, values: tuple, axis: Any):
    p = prepare(op, names, values, dtypes=FLOAT_DTYPES, gpu_dtypes=HALF_DTYPES)
    x1 = p.arrays[0]
    if x1.ndim == 0:
        raise ValueError(f"{op}: x1 must have at least 1 dim, got shape {tuple(x1.shape)}")
    ax = _layout.normalize_axis(op, axis, x1.ndim)
    for name, v in zip(names[1:], p.arrays[1:]):
        check_shape(op, name, v, x1.shape)
    return p, ax


def _log_sum_exp_parts(x: Array, axis: int) -> tuple[Array, Array]:
    """(x - m, Σ e^(x - m)) along ``axis`` (keepdims), m the max: the stable pieces."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted, numpy.exp(shifted).sum(axis=axis, keepdims=True)


def softmax(x1: Array, *, axis: int = -1, out: Array | None = None) -> Array:
    """y = e^x1 / Σ e^x1 along ``axis``, computed as e^(x - m) / Σ e^(x - m), m the max."""
    p, ax = _prepare("softmax", ("x1",), (x1,), axis)
    (x1,) = p.arrays
    out = output("softmax", p.backend, out, x1.shape, p.dtype)
    if p.backend.uses_kernels:
        return _run_rows(p.backend, "softmax", (x1,), out, ax, p.dtype)
    if out.size:
        shifted, total = _log_sum_exp_parts(x1, ax)
        numpy.divide(numpy.exp(shifted), total, out=out)
    return out


def log_softmax(x1: Array, *, axis: int = -1, out: Array | None = None) -> Array:
    """y = x1 - log Σ e^x1 along ``axis``, computed as (x - m) - log Σ e^(x - m)."""
    p, ax = _prepare("log_softmax", ("x1",), (x1,), axis)
    (x1,) = p.arrays
    out = output("log_softmax", p.backend, out, x1.shape, p.dtype)
    if p.backend.uses_kernels:
        return _run_rows(p.backend, "log_softmax", (x1,), out, ax, p.dtype)
    if out.size:
        shifted, total = _log_sum_exp_parts(x1, ax)
        numpy.subtract(shifted, numpy.log(total), out=out)
    return out


def softmax_wrt_x1(x1: Array, y: Array, gy: Array, *, axis: int = -1,
                   out: Array | None = None) -> Array:
    """gx = y · (gy - Σ y·gy) along ``axis`` (the Jacobian dy_i/dx_j = y_i (δ_ij - y_j)
    applied to gy, without forming it)."""
    name = "softmax_wrt_x1"
    p, ax = _prepare(name, ("x1", "y", "gy"), (x1, y, gy), axis)
    x1, y, gy = p.arrays
    out = output(name, p.backend, out, x1.shape, x1.dtype)
    if p.backend.uses_kernels:
        return _run_rows(p.backend, name, (y, gy), out, ax, p.dtype)
    if out.size:
        numpy.multiply(y, gy - (y * gy).sum(axis=ax, keepdims=True), out=out)
    return out


def log_softmax_wrt_x1(x1: Array, y: Array, gy: Array, *, axis: int = -1,
                       out: Array | None = None) -> Array:
    """gx = gy - e^y · Σ gy along ``axis`` (e^y is the softmax)."""
    name = "log_softmax_wrt_x1"
    p, ax = _prepare(name, ("x1", "y", "gy"), (x1, y, gy), axis)
    x1, y, gy = p.arrays
    out = output(name, p.backend, out, x1.shape, x1.dtype)
    if p.backend.uses_kernels:
        return _run_rows(p.backend, name, (y, gy), out, ax, p.dtype)
    if out.size:
        numpy.subtract(gy, numpy.exp(y) * gy.sum(axis=ax, keepdims=True), out=out)
    return out


register(FAMILY, softmax, softmax_wrt_x1)
register(FAMILY, log_softmax, log_softmax_wrt_x1)
