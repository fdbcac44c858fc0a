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

import functools
from typing import Any, Callable

import numpy

from .. import kernels
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args, _math, _rows

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


def _loss_shape(reduction: str, shape: tuple) -> tuple:
    return tuple(shape) if reduction == "none" else ()


def _reduce(terms: Array, reduction: str, y: Array, count: int) -> None:
    """(NumPy) y = the terms, their sum, or their sum / count (NaN when count is 0)."""
    if reduction == "none":
        y[...] = terms
    elif reduction == "sum":
        y[...] = terms.sum()
    else:
        y[...] = terms.sum() / count if count else numpy.nan


# ---- elementwise losses: u = x1 (prediction / logit), v = x2 (target) ------------------

def _bce_terms(u: Array, v: Array) -> Array:
    """max(u, 0) - u v + log(1 + e^-|u|): the stable form of
    -[v log σ(u) + (1 - v) log(1 - σ(u))]."""
    return numpy.maximum(u, 0) - u * v + numpy.log1p(numpy.exp(-numpy.abs(u)))


def _bce_grad(u: Array, v: Array, g: Array) -> Array:
    # (sigmoid's out: NumPy's ufuncs make a 0-d u a scalar, which cannot be an out)
    return (_math.sigmoid(u) - v) * g


# NumPy: the per-element term f(u, v), and its derivatives times the upstream g.
_TERMS: dict[str, tuple[Callable, Callable, Callable]] = {
    "mse": (lambda u, v: numpy.square(u - v),
            lambda u, v, g: 2 * (u - v) * g, lambda u, v, g: -2 * (u - v) * g),
    "mae": (lambda u, v: numpy.abs(u - v),
            lambda u, v, g: numpy.sign(u - v) * g, lambda u, v, g: -numpy.sign(u - v) * g),
    "bce_with_logits": (_bce_terms, _bce_grad, lambda u, v, g: -u * g),
}


def _elementwise_cpu(term: Callable, u: Array, v: Array, y: Array, reduction: str) -> None:
    _reduce(term(u, v), reduction, y, u.size)


def _elementwise_grad_cpu(grad: Callable, u: Array, v: Array, gy: Array, gx: Array,
                          scale: numpy.generic) -> None:
    gx[...] = grad(u, v, gy * scale)


# op -> (forward, gradient wrt x1, gradient wrt x2) on NumPy arrays
_CPU = {op: (functools.partial(_elementwise_cpu, term),
             functools.partial(_elementwise_grad_cpu, d1),
             functools.partial(_elementwise_grad_cpu, d2))
        for op, (term, d1, d2) in _TERMS.items()}


# Kernels: <op>_none_<dtype>(u, v, y, n) writes the terms; for "sum"/"mean",
# <op>_partial_<dtype>(u, v, partial, n) one float64 sum per block, and
# sum_partials_<dtype>(partial, blocks, y, scale) their total times scale (1/n for "mean").
def _elementwise_gpu(call: Call, u: Array, v: Array, y: Array, reduction: str) -> None:
    n = u.size
    if reduction == "none":
        call.launch_1d(f"{call.op}_none", n, (u, v, y, numpy.int64(n)))
        return
    grid = call.grid_1d(n)
    partial = call.xp.empty(grid[0], numpy.float64)
    call.launch(f"{call.op}_partial", grid, (kernels.BLOCK,), (u, v, partial, numpy.int64(n)))
    scale = 1.0 if reduction == "sum" else (1.0 / n if n else numpy.nan)
    call.launch("sum_partials", (1,), (kernels.BLOCK,),
                (partial, numpy.int64(grid[0]), y, numpy.float64(scale)))


# <op>_wrt_x<k>_<dtype>(u, v, gy, gy_stride, gx, scale, n): gy_stride 1 for the
# per-element gy of "none", 0 for the one gy of "sum"/"mean".
def _elementwise_grad_gpu(call: Call, u: Array, v: Array, gy: Array, gx: Array,
                          scale: numpy.generic) -> None:
    call.launch_1d(call.op, gx.size, (u, v, gy, numpy.int64(gy.size == gx.size), gx,
                                      call.scalar(float(scale)), numpy.int64(gx.size)))


_FORWARD = {op: Signature(op, FAMILY, ("x1", "x2")) for op in _TERMS}
_GRADIENT = {(op, k): Signature(f"{op}_wrt_x{k}", FAMILY, ("x1", "x2", "y", "gy"),
                                scalars=("gy",))
             for op in _TERMS for k in (1, 2)}


def _check_pair(call: Call, x1: Array, x2: Array) -> None:
    if tuple(x1.shape) != tuple(x2.shape):
        raise ValueError(f"{call.op}: x1 and x2 must have the same shape, got "
                         f"{tuple(x1.shape)} and {tuple(x2.shape)}")


def _elementwise(op: str, x1: Array, x2: Array, reduction: Any, out: Array | None) -> Array:
    reduction = _check_reduction(op, reduction)
    call = _FORWARD[op].bind(x1, x2)
    u, v = call.inputs
    _check_pair(call, u, v)
    return call.run(out, _loss_shape(reduction, u.shape), _CPU[op][0], _elementwise_gpu,
                    reduction)


def _elementwise_grad(op: str, k: int, x1: Array, x2: Array, y: Array, gy: Array | float,
                      reduction: Any, out: Array | None) -> Array:
    reduction = _check_reduction(f"{op}_wrt_x{k}", reduction)
    call = _GRADIENT[op, k].bind(x1, x2, y, gy)
    u, v, y, gy = call.inputs
    _check_pair(call, u, v)
    shape = _loss_shape(reduction, u.shape)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    n = u.size
    scale = call.dtype.type(1.0 / n if reduction == "mean" and n else 1.0)
    xk = (u, v)[k - 1]
    # the gradients read u, v and gy (not y)
    return call.run(out, xk.shape, _CPU[op][k], _elementwise_grad_gpu, scale, dtype=xk.dtype,
                    inputs=(u, v, gy))


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


# ---- softmax cross-entropy: logits x (rows, cols), labels t (rows,) --------------------

def _counted_rows(op: str, labels: Array, classes: int, ignore: int) -> Array:
    """(NumPy) The mask of the rows whose label is not ``ignore``; ``ValueError`` for a
    label outside [0, classes)."""
    counted = labels != ignore
    bad = counted & ((labels < 0) | (labels >= classes))
    if bad.any():
        raise ValueError(f"{op}: labels must be in [0, {classes}) or ignore_index "
                         f"({ignore}); got {numpy.unique(labels[bad])[:8].tolist()} "
                         f"at rows {numpy.flatnonzero(bad)[:8].tolist()}")
    return counted


def _cross_entropy_cpu(x: Array, labels: Array, y: Array, reduction: str, ignore: int) -> None:
    """Per row log Σ e^(x - m) - (x_t - m), 0 for the rows not counted; reduced."""
    rows, classes = x.shape
    counted = _counted_rows("softmax_cross_entropy", labels, classes, ignore)
    if classes:
        shifted, total = _math.log_sum_exp_parts(x, 1)
        t = numpy.where(counted, labels, 0)
        picked = numpy.take_along_axis(shifted, t[:, None], axis=1)[:, 0]
        terms = numpy.where(counted, numpy.log(total[:, 0]) - picked, 0).astype(x.dtype,
                                                                                copy=False)
    else:  # no classes: every row is ignored
        terms = numpy.zeros(rows, x.dtype)
    _reduce(terms, reduction, y, int(counted.sum()))


def _cross_entropy_grad_cpu(x: Array, labels: Array, gy: Array, gx: Array, reduction: str,
                            ignore: int) -> None:
    """gx = g_n (softmax(x)[n] - onehot(t_n)), 0 for the rows not counted."""
    counted = _counted_rows("softmax_cross_entropy_wrt_x1", labels, x.shape[1], ignore)
    # (with no counted row the mean's scale is irrelevant: every row's gradient is 0)
    g = gy / max(int(counted.sum()), 1) if reduction == "mean" else gy
    shifted, total = _math.log_sum_exp_parts(x, 1)
    numpy.divide(numpy.exp(shifted), total, out=gx)
    rows_counted = numpy.flatnonzero(counted)
    gx[rows_counted, labels[rows_counted]] -= 1
    gx *= numpy.where(counted, numpy.broadcast_to(g, counted.shape), 0)[:, None]


# Kernels (labels as int64; row kernels through gpuops.ops._rows):
# softmax_cross_entropy_{warp<E>,block}_<dtype>(x, t, losses, ignore, rows, cols),
# softmax_cross_entropy_total_<dtype>(losses, t, y, ignore, rows, mean),
# softmax_cross_entropy_grad_scale_<dtype>(t, gy, g, ignore, rows, mean): g = gy or
# gy / (counted rows), and softmax_cross_entropy_wrt_x1_{warp<E>,block}_<dtype>(x, t, g,
# g_stride, gx, ignore, rows, cols).
def _cross_entropy_gpu(call: Call, x: Array, labels: Array, y: Array, reduction: str,
                       ignore: int) -> None:
    rows, cols = x.shape
    labels = call.xp.ascontiguousarray(labels, dtype=numpy.int64)
    losses = y if reduction == "none" else call.xp.empty(rows, call.dtype)
    if rows:
        _rows.launch(call, call.op, rows, cols, (x, labels, losses, numpy.int64(ignore)))
    if reduction != "none":
        call.launch(f"{call.op}_total", (1,), (kernels.BLOCK,),
                    (losses, labels, y, numpy.int64(ignore), numpy.int64(rows),
                     numpy.int32(reduction == "mean")))


def _cross_entropy_grad_gpu(call: Call, x: Array, labels: Array, gy: Array, gx: Array,
                            reduction: str, ignore: int) -> None:
    rows, cols = x.shape
    labels = call.xp.ascontiguousarray(labels, dtype=numpy.int64)
    if reduction != "none":
        g = call.xp.empty((), call.dtype)
        call.launch("softmax_cross_entropy_grad_scale", (1,), (kernels.BLOCK,),
                    (labels, gy, g, numpy.int64(ignore), numpy.int64(rows),
                     numpy.int32(reduction == "mean")))
        gy = g
    _rows.launch(call, call.op, rows, cols, (x, labels, gy, numpy.int64(reduction == "none"),
                                             gx, numpy.int64(ignore)))


CROSS_ENTROPY = Signature("softmax_cross_entropy", FAMILY, ("x1", "x2"), ints=("x2",))
CROSS_ENTROPY_GRAD = Signature("softmax_cross_entropy_wrt_x1", FAMILY, ("x1", "x2", "y", "gy"),
                               scalars=("gy",), ints=("x2",))


def _bind_cross_entropy(signature: Signature, values: tuple, reduction: Any,
                        ignore_index: Any) -> tuple[Call, str, int]:
    op = signature.op
    reduction = _check_reduction(op, reduction)
    ignore = _args.integer(op, "ignore_index", ignore_index)
    call = signature.bind(*values)
    x, labels = call.inputs[:2]
    if x.ndim != 2:
        raise ValueError(f"{op}: x1 must be 2-d logits (N, C), got shape {tuple(x.shape)}")
    if tuple(labels.shape) != (x.shape[0],):
        raise ValueError(f"{op}: x2 must be labels of shape ({x.shape[0]},) for x1 of shape "
                         f"{tuple(x.shape)}, got {tuple(labels.shape)}")
    return call, reduction, ignore


def softmax_cross_entropy(x1: Array, x2: Array, *, reduction: str = "mean",
                          ignore_index: int = -100, out: Array | None = None) -> Array:
    """Cross-entropy of softmax(x1) (logits (N, C)) against class labels x2 ((N,), int):
    -log softmax(x1)[n, x2[n]] per row, reduced by ``reduction`` ("mean" over the rows
    whose label is not ``ignore_index``)."""
    call, reduction, ignore = _bind_cross_entropy(CROSS_ENTROPY, (x1, x2), reduction,
                                                  ignore_index)
    x, _ = call.inputs
    return call.run(out, _loss_shape(reduction, x.shape[:1]), _cross_entropy_cpu,
                    _cross_entropy_gpu, reduction, ignore)


def softmax_cross_entropy_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array | float, *,
                                 reduction: str = "mean", ignore_index: int = -100,
                                 out: Array | None = None) -> Array:
    """Fused gradient g_n (softmax(x1)[n] - onehot(x2[n])), g_n = gy[n] ("none"), gy
    ("sum") or gy / (number of counted rows) ("mean"); 0 for ignored rows."""
    call, reduction, ignore = _bind_cross_entropy(CROSS_ENTROPY_GRAD, (x1, x2, y, gy),
                                                  reduction, ignore_index)
    x, labels, y, gy = call.inputs
    shape = _loss_shape(reduction, x.shape[:1])
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    # the gradient reads x, the labels and gy (not y)
    return call.run(out, x.shape, _cross_entropy_grad_cpu, _cross_entropy_grad_gpu,
                    reduction, ignore, dtype=x.dtype, inputs=(x, labels, gy))


register(FAMILY, softmax_cross_entropy, softmax_cross_entropy_wrt_x1)
for _op in ("bce_with_logits", "mse", "mae"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"], globals()[f"{_op}_wrt_x2"])
del _op
