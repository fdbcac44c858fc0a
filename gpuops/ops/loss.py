"""Losses: softmax_cross_entropy, bce_with_logits, mse, mae. Kernels in cuda/loss.cu.

``reduction`` is "mean" (default), "sum" or "none". "mean"/"sum" return 0-d
arrays, and their gradients take ``gy`` as a 0-d array or a Python float; "none"
returns the per-element (per-row for cross-entropy) losses and takes a ``gy`` of
that shape. The mean of zero terms is NaN (0/0), as in PyTorch. x1 and x2 must have
the same shape (no broadcasting) for bce_with_logits, mse and mae.

Cross-entropy labels (x2) are int32 or int64 class indices. A row whose label is
``ignore_index`` contributes 0 and is left out of the mean's count. A label outside
[0, C) raises ``ValueError`` on the NumPy path; the kernels (GPU) never index with
it and make that row's loss and gradient NaN instead (PyTorch raises on the CPU and
stops the CUDA context with a device-side assert).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy

from ..backend import Backend, Prepared, check_shape, output, prepare
from ..kernels import (BLOCK, contiguous, finish, grid_1d, result_buffer, scalar, size,
                      suffix)
from ..registry import register
from .softmax import WARP_ROWS_PER_BLOCK, ROW_BLOCK, warp_elems

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_wrt_x1",
           "bce_with_logits", "bce_with_logits_wrt_x1", "bce_with_logits_wrt_x2",
           "mse", "mse_wrt_x1", "mse_wrt_x2", "mae", "mae_wrt_x1", "mae_wrt_x2"]

FAMILY = "loss"
Array = Any
REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op: str, reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
                         f"got {reduction!r}")
    return reduction


def _reduce_numpy(terms: Array, reduction: str, out: Array) -> Array:
    if reduction == "none":
        out[...] = terms
    elif reduction == "sum":
        out[...] = terms.sum()
    else:
        out[...] = terms.sum() / terms.size if terms.size else numpy.nan
    return out


# ---- elementwise losses -----------------------------------------------------

# NumPy: the per-element term f(u, v), and its derivatives (times the upstream g).
def _bce_terms(u: Array, v: Array) -> Array:
    """max(u, 0) - u v + log(1 + e^-|u|): the stable form of
    -[v log σ(u) + (1 - v) log(1 - σ(u))]."""
    return numpy.maximum(u, 0) - u * v + numpy.log1p(numpy.exp(-numpy.abs(u)))


def _sigmoid(u: Array) -> Array:
    e = numpy.exp(-numpy.abs(u))
    return numpy.where(u >= 0, 1, e) / (1 + e)


_ELEMENTWISE_NUMPY: dict[str, tuple[Callable, Callable, Callable]] = {
    "mse": (lambda u, v: numpy.square(u - v),
            lambda u, v, g: 2 * (u - v) * g, lambda u, v, g: -2 * (u - v) * g),
    "mae": (lambda u, v: numpy.abs(u - v),
            lambda u, v, g: numpy.sign(u - v) * g, lambda u, v, g: -numpy.sign(u - v) * g),
    "bce_with_logits": (_bce_terms, lambda u, v, g: (_sigmoid(u) - v) * g,
                        lambda u, v, g: -u * g),
}


def _prepare_pair(op: str, names: tuple, values: tuple, reduction: Any) -> tuple[Prepared, str]:
    reduction = _check_reduction(op, reduction)
    p = prepare(op, names, values, scalars=("gy",))
    x1, x2 = p.arrays[:2]
    if tuple(x1.shape) != tuple(x2.shape):
        raise ValueError(f"{op}: x1 and x2 must have the same shape, got {tuple(x1.shape)} "
                         f"and {tuple(x2.shape)}")
    return p, reduction


def _loss_shape(reduction: str, shape: tuple) -> tuple:
    return tuple(shape) if reduction == "none" else ()


def _elementwise(op: str, x1: Array, x2: Array, reduction: Any, out: Array | None) -> Array:
    p, reduction = _prepare_pair(op, ("x1", "x2"), (x1, x2), reduction)
    x1, x2 = p.arrays
    out = output(op, p.backend, out, _loss_shape(reduction, x1.shape), p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        return _reduce_numpy(_ELEMENTWISE_NUMPY[op][0](x1, x2), reduction, out)
    launcher = backend.launcher
    n = x1.size
    a, b = contiguous(backend, x1, p.dtype), contiguous(backend, x2, p.dtype)
    target = result_buffer(backend, out, p.dtype)
    if reduction == "none":
        if n:
            launcher.launch(FAMILY, f"{op}_none_{suffix(p.dtype)}", grid_1d(launcher, n),
                            (BLOCK,), (a, b, target, size(n)))
        return finish(out, target)
    grid = grid_1d(launcher, n)
    partial = backend.xp.empty(grid[0], numpy.float64)
    launcher.launch(FAMILY, f"{op}_partial_{suffix(p.dtype)}", grid, (BLOCK,),
                    (a, b, partial, size(n)))
    scale = 1.0 if reduction == "sum" else (1.0 / n if n else math.nan)
    launcher.launch(FAMILY, f"sum_partials_{suffix(p.dtype)}", (1,), (BLOCK,),
                    (partial, size(grid[0]), target, numpy.float64(scale)))
    return finish(out, target)


def _elementwise_grad(op: str, k: int, x1: Array, x2: Array, y: Array, gy: Array | float,
                      reduction: Any, out: Array | None) -> Array:
    name = f"{op}_wrt_x{k}"
    p, reduction = _prepare_pair(name, ("x1", "x2", "y", "gy"), (x1, x2, y, gy), reduction)
    x1, x2, y, gy = p.arrays
    shape = _loss_shape(reduction, x1.shape)
    check_shape(name, "y", y, shape)
    check_shape(name, "gy", gy, shape)
    xk = (x1, x2)[k - 1]
    out = output(name, p.backend, out, xk.shape, xk.dtype)
    n = x1.size
    scale = 1.0 / n if reduction == "mean" and n else 1.0
    backend = p.backend
    if not backend.uses_kernels:
        out[...] = _ELEMENTWISE_NUMPY[op][k](x1, x2, gy * p.dtype.type(scale))
        return out
    if n == 0:
        return out
    target = result_buffer(backend, out, p.dtype)
    backend.launcher.launch(
        FAMILY, f"{name}_{suffix(p.dtype)}", grid_1d(backend.launcher, n), (BLOCK,),
        (contiguous(backend, x1, p.dtype), contiguous(backend, x2, p.dtype),
         contiguous(backend, gy, p.dtype), size(1 if reduction == "none" else 0), target,
         scalar(p.dtype, scale), size(n)))
    return finish(out, target)


def mse(x1: Array, x2: Array, *, reduction: str = "mean", out: Array | None = None) -> Array:
    """Squared error (x1 - x2)², x1 the prediction, x2 the target; reduced by ``reduction``
    ("mean" divides by the number of elements)."""
    return _elementwise("mse", x1, x2, reduction, out)


def mse_wrt_x1(x1, x2, y, gy, *, reduction="mean", out=None):
    """2 (x1 - x2) · gy, divided by n for "mean"."""
    return _elementwise_grad("mse", 1, x1, x2, y, gy, reduction, out)


def mse_wrt_x2(x1, x2, y, gy, *, reduction="mean", out=None):
    """-2 (x1 - x2) · gy, divided by n for "mean"."""
    return _elementwise_grad("mse", 2, x1, x2, y, gy, reduction, out)


def mae(x1: Array, x2: Array, *, reduction: str = "mean", out: Array | None = None) -> Array:
    """Absolute error |x1 - x2|, reduced by ``reduction``."""
    return _elementwise("mae", x1, x2, reduction, out)


def mae_wrt_x1(x1, x2, y, gy, *, reduction="mean", out=None):
    """sign(x1 - x2) · gy (0 where x1 = x2), divided by n for "mean"."""
    return _elementwise_grad("mae", 1, x1, x2, y, gy, reduction, out)


def mae_wrt_x2(x1, x2, y, gy, *, reduction="mean", out=None):
    """-sign(x1 - x2) · gy (0 where x1 = x2), divided by n for "mean"."""
    return _elementwise_grad("mae", 2, x1, x2, y, gy, reduction, out)


def bce_with_logits(x1: Array, x2: Array, *, reduction: str = "mean",
                    out: Array | None = None) -> Array:
    """Binary cross-entropy of logits x1 against targets x2 (in [0, 1]):
    max(x1, 0) - x1 x2 + log(1 + e^-|x1|), reduced by ``reduction``."""
    return _elementwise("bce_with_logits", x1, x2, reduction, out)


def bce_with_logits_wrt_x1(x1, x2, y, gy, *, reduction="mean", out=None):
    """(σ(x1) - x2) · gy, divided by n for "mean"."""
    return _elementwise_grad("bce_with_logits", 1, x1, x2, y, gy, reduction, out)


def bce_with_logits_wrt_x2(x1, x2, y, gy, *, reduction="mean", out=None):
    """-x1 · gy, divided by n for "mean"."""
    return _elementwise_grad("bce_with_logits", 2, x1, x2, y, gy, reduction, out)


# ---- softmax cross-entropy --------------------------------------------------

def _prepare_ce(op: str, names: tuple, values: tuple, reduction: Any,
                ignore_index: Any) -> tuple[Prepared, str, int]:
    reduction = _check_reduction(op, reduction)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, numpy.integer)):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    p = prepare(op, names, values, scalars=("gy",), ints=("x2",))
    x1, x2 = p.arrays[:2]
    if x1.ndim != 2:
        raise ValueError(f"{op}: x1 must be 2-d logits (N, C), got shape {tuple(x1.shape)}")
    if tuple(x2.shape) != (x1.shape[0],):
        raise ValueError(f"{op}: x2 must be labels of shape ({x1.shape[0]},) for x1 of shape "
                         f"{tuple(x1.shape)}, got {tuple(x2.shape)}")
    return p, reduction, int(ignore_index)


def _check_labels(op: str, labels: Array, classes: int, ignore_index: int) -> Array:
    """(NumPy path) ``ValueError`` for labels outside [0, classes) other than ignore_index;
    returns the mask of counted rows."""
    counted = labels != ignore_index
    bad = counted & ((labels < 0) | (labels >= classes))
    if bad.any():
        raise ValueError(f"{op}: labels must be in [0, {classes}) or ignore_index "
                         f"({ignore_index}); got {numpy.unique(labels[bad])[:8].tolist()} "
                         f"at rows {numpy.flatnonzero(bad)[:8].tolist()}")
    return counted


def _softmax_numpy(x: Array) -> Array:
    e = numpy.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ce_rows_numpy(x: Array, labels: Array, counted: Array) -> Array:
    """Per-row loss (m - x_t) + log Σ e^(x - m); 0 for the rows not counted."""
    if x.shape[1] == 0:
        return numpy.zeros(x.shape[0], x.dtype)
    m = x.max(axis=1)
    t = numpy.where(counted, labels, 0)
    picked = numpy.take_along_axis(x, t[:, None], axis=1)[:, 0]
    lse_minus_pick = (m - picked) + numpy.log(numpy.exp(x - m[:, None]).sum(axis=1))
    return numpy.where(counted, lse_minus_pick, 0).astype(x.dtype, copy=False)


def _ce_kernel_args(backend: Backend, x1: Array, x2: Array, dtype: numpy.dtype):
    return contiguous(backend, x1, dtype), contiguous(backend, x2, numpy.int64)


def _row_launch(x1: Array, dtype: numpy.dtype, launcher, kernel: str, per_row_elems: bool):
    """Kernel name, grid and block for one warp per row (short rows) or one block per row."""
    rows, cols = x1.shape
    elems = warp_elems(dtype, cols)
    if elems is not None:
        name = f"{kernel}_warp{elems if per_row_elems else ''}_{suffix(dtype)}"
        grid = min(math.ceil(rows / WARP_ROWS_PER_BLOCK), launcher.max_blocks)
        return name, (max(1, grid),), (32 * WARP_ROWS_PER_BLOCK,)
    return (f"{kernel}_block_{suffix(dtype)}", (max(1, min(rows, launcher.max_blocks)),),
            (ROW_BLOCK,))


def softmax_cross_entropy(x1: Array, x2: Array, *, reduction: str = "mean",
                          ignore_index: int = -100, out: Array | None = None) -> Array:
    """Cross-entropy of softmax(x1) (logits (N, C)) against class labels x2 ((N,), int):
    -log softmax(x1)[n, x2[n]] per row, reduced by ``reduction`` ("mean" over the rows
    whose label is not ``ignore_index``)."""
    op = "softmax_cross_entropy"
    p, reduction, ignore = _prepare_ce(op, ("x1", "x2"), (x1, x2), reduction, ignore_index)
    x1, x2 = p.arrays
    rows = x1.shape[0]
    out = output(op, p.backend, out, (rows,) if reduction == "none" else (), p.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        counted = _check_labels(op, x2, x1.shape[1], ignore)
        terms = _ce_rows_numpy(x1, x2, counted)
        if reduction == "mean":
            n = int(counted.sum())
            out[...] = terms.sum() / n if n else numpy.nan
            return out
        return _reduce_numpy(terms, reduction, out)
    launcher = backend.launcher
    x, labels = _ce_kernel_args(backend, x1, x2, p.dtype)
    target = result_buffer(backend, out, p.dtype)
    losses = target if reduction == "none" else backend.xp.empty(rows, p.dtype)
    if rows:
        name, grid, block = _row_launch(x1, p.dtype, launcher, op, per_row_elems=False)
        launcher.launch(FAMILY, name, grid, block,
                        (x, labels, losses, size(ignore), size(rows), size(x1.shape[1])))
    if reduction != "none":
        launcher.launch(FAMILY, f"{op}_total_{suffix(p.dtype)}", (1,), (BLOCK,),
                        (losses, labels, target, size(ignore), size(rows),
                         numpy.int32(reduction == "mean")))
    return finish(out, target)


def softmax_cross_entropy_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array | float, *,
                                 reduction: str = "mean", ignore_index: int = -100,
                                 out: Array | None = None) -> Array:
    """Fused gradient g_n (softmax(x1)[n] - onehot(x2[n])), g_n = gy[n] ("none"), gy
    ("sum") or gy / (number of counted rows) ("mean"); 0 for ignored rows."""
    name = "softmax_cross_entropy_wrt_x1"
    p, reduction, ignore = _prepare_ce(name, ("x1", "x2", "y", "gy"), (x1, x2, y, gy),
                                       reduction, ignore_index)
    x1, x2, y, gy = p.arrays
    rows, cols = x1.shape
    shape = (rows,) if reduction == "none" else ()
    check_shape(name, "y", y, shape)
    check_shape(name, "gy", gy, shape)
    out = output(name, p.backend, out, x1.shape, x1.dtype)
    backend = p.backend
    if not backend.uses_kernels:
        counted = _check_labels(name, x2, cols, ignore)
        if out.size == 0:
            return out
        # (with no counted row the mean's scale is irrelevant: every row's gradient is 0)
        g = gy / max(int(counted.sum()), 1) if reduction == "mean" else gy
        g = numpy.broadcast_to(g, (rows,))
        grad = _softmax_numpy(x1)
        rows_counted = numpy.flatnonzero(counted)
        grad[rows_counted, x2[rows_counted]] -= 1
        grad *= numpy.where(counted, g, 0)[:, None]
        out[...] = grad
        return out
    if out.size == 0:
        return out
    launcher = backend.launcher
    x, labels = _ce_kernel_args(backend, x1, x2, p.dtype)
    g = contiguous(backend, gy, p.dtype)
    if reduction != "none":
        scale = backend.xp.empty((), p.dtype)
        launcher.launch(FAMILY, f"softmax_cross_entropy_grad_scale_{suffix(p.dtype)}", (1,),
                        (BLOCK,), (labels, g, scale, size(ignore), size(rows),
                                   numpy.int32(reduction == "mean")))
        g = scale
    target = result_buffer(backend, out, p.dtype)
    kernel, grid, block = _row_launch(x1, p.dtype, launcher, name, per_row_elems=True)
    launcher.launch(FAMILY, kernel, grid, block,
                    (x, labels, g, size(1 if reduction == "none" else 0), target, size(ignore),
                     size(rows), size(cols)))
    return finish(out, target)


register(FAMILY, softmax_cross_entropy, softmax_cross_entropy_wrt_x1)
for _op in ("bce_with_logits", "mse", "mae"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"], globals()[f"{_op}_wrt_x2"])
del _op
