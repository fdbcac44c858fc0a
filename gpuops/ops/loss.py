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
stops the CUDA context with a device-side assert). ``label_smoothing`` and probability
targets (a float x2 of x1's shape, differentiable: softmax_cross_entropy_wrt_x2) follow
PyTorch's cross_entropy; see the section "label smoothing and probability targets" below.

Every dtype on every backend; float16 and bfloat16 are computed in float32 (terms and
per-row losses float32, sums in double on the kernels, one rounding of each result), with
``weight`` / ``pos_weight`` in float32 (not rounded to 16 bits). For training,
``softmax_cross_entropy_with_grad`` gives the loss and its gradient wrt x1 (gy = 1) in one
kernel launch; autograd uses it (the registry's ``forward_saving`` / ``backward``), so a
Tensor's cross-entropy costs one launch forward and one (the saved gradient times gy) backward.
"""
from __future__ import annotations

import functools
import math
import threading
from typing import Any, Callable

import numpy

from .. import kernels
from ..backend import (ALL_FLOAT_DTYPES, BFLOAT16, describe, get_array_module,
                       is_cupy_array)
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args, _math, _rows

__all__ = ["softmax_cross_entropy", "softmax_cross_entropy_wrt_x1",
           "softmax_cross_entropy_wrt_x2", "softmax_cross_entropy_with_grad",
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


def _param_array(call: Call, name: str, value: Any, out: Array | None) -> Array | None:
    """A keyword array parameter (class weights, pos_weight: not differentiable, as in
    PyTorch): None, or a float32/float64 array of the call's backend (a NumPy array is also
    accepted with CuPy inputs and copied to the device), in the call's computing dtype: the
    call's dtype, float32 for a 16-bit call (like a float parameter: not rounded to 16 bits,
    which a sum of weighted terms that cancel would amplify). It reaches the NumPy code and
    the kernels as a parameter of :meth:`Call.run` (the inputs of a 16-bit kernel call are
    cast to 16 bits), so a copy when it shares memory with ``out``."""
    if value is None:
        return None
    op = call.op
    gpu = call.backend.name == "cupy"
    if type(value) is not numpy.ndarray and not (gpu and is_cupy_array(value)):
        if is_cupy_array(value):
            raise TypeError(f"{op}: {name} is a CuPy array but the inputs are NumPy arrays; "
                            "move it with gpuops.to_cpu")
        raise TypeError(f"{op}: {name} must be None or a NumPy or CuPy array, got "
                        f"{describe(value)}")
    if value.dtype not in ALL_FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} has dtype {value.dtype}; expected float16, bfloat16, "
                        "float32 or float64")
    array = call.xp.asarray(value, dtype=call.scalar(0.0).dtype)
    if out is not None and call.xp.may_share_memory(array, out):
        return array.copy()
    return array


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


# Kernels in every float dtype (16 bits: float32 arithmetic, one rounding on store).
_FORWARD = {op: Signature(op, FAMILY, ("x1", "x2"), kernel_dtypes=ALL_FLOAT_DTYPES)
            for op in _TERMS}
_GRADIENT = {(op, k): Signature(f"{op}_wrt_x{k}", FAMILY, ("x1", "x2", "y", "gy"),
                                scalars=("gy",), kernel_dtypes=ALL_FLOAT_DTYPES)
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
    scale = call.scalar(1.0 / n if reduction == "mean" and n else 1.0)
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


# bce_with_logits with weight w and pos_weight p (PyTorch): with l = 1 + (p - 1) v and
# softplus(-u) = -log σ(u) = max(-u, 0) + log(1 + e^-|u|),
# term = w [(1 - v) u + l softplus(-u)], d/du = w [(1 - v) - l σ(-u)],
# d/dv = w [(p - 1) softplus(-u) - u]. (p = 1, w = 1: the unweighted forms above.)
def _softplus_neg(u: Array) -> Array:
    return numpy.maximum(-u, 0) + numpy.log1p(numpy.exp(-numpy.abs(u)))


def _bce_weighted_terms(u: Array, v: Array, w: Array | None, p: Array | None) -> Array:
    if p is None:
        terms = _bce_terms(u, v)
    else:
        terms = (1 - v) * u + (1 + (p - 1) * v) * _softplus_neg(u)
    return terms if w is None else terms * w


def _bce_weighted_grad(k: int, u: Array, v: Array, w: Array | None, p: Array | None,
                       g: Array) -> Array:
    if k == 1:
        d = _math.sigmoid(u) - v if p is None else (1 - v) - (1 + (p - 1) * v) * _math.sigmoid(-u)
    else:
        d = -u if p is None else (p - 1) * _softplus_neg(u) - u
    return d * g if w is None else d * w * g


def _bce_cpu(u: Array, v: Array, y: Array, w: Array | None, p: Array | None,
             reduction: str) -> None:
    _reduce(_bce_weighted_terms(u, v, w, p), reduction, y, u.size)


def _bce_grad_cpu(k: int, u: Array, v: Array, gy: Array, gx: Array, w: Array | None,
                  p: Array | None, scale: numpy.generic) -> None:
    gx[...] = _bce_weighted_grad(k, u, v, w, p, gy * scale)


# Weighted kernels (w and p broadcast to the shape of u, 1 where not given):
# bce_with_logits_weighted_{none,partial}_<dtype>(u, v, w, p, y|partial, n) and
# bce_with_logits_weighted_wrt_x<k>_<dtype>(u, v, w, p, gy, gy_stride, gx, scale, n).
def _full(call: Call, a: Array | None, shape: tuple) -> Array:
    if a is None:  # (the weights' dtype: float32 for a 16-bit call)
        return call.xp.ones(shape, call.scalar(0.0).dtype)
    return call.xp.ascontiguousarray(call.xp.broadcast_to(a, shape))


def _bce_gpu(call: Call, u: Array, v: Array, y: Array, w: Array | None, p: Array | None,
             reduction: str) -> None:
    if w is None and p is None:
        _elementwise_gpu(call, u, v, y, reduction)
        return
    n = u.size
    w, p = _full(call, w, u.shape), _full(call, p, u.shape)
    if reduction == "none":
        call.launch_1d("bce_with_logits_weighted_none", n, (u, v, w, p, y, numpy.int64(n)))
        return
    grid = call.grid_1d(n)
    partial = call.xp.empty(grid[0], numpy.float64)
    call.launch("bce_with_logits_weighted_partial", grid, (kernels.BLOCK,),
                (u, v, w, p, partial, numpy.int64(n)))
    scale = 1.0 if reduction == "sum" else (1.0 / n if n else numpy.nan)
    call.launch("sum_partials", (1,), (kernels.BLOCK,),
                (partial, numpy.int64(grid[0]), y, numpy.float64(scale)))


def _bce_grad_gpu(k: int, call: Call, u: Array, v: Array, gy: Array, gx: Array,
                  w: Array | None, p: Array | None, scale: numpy.generic) -> None:
    if w is None and p is None:
        _elementwise_grad_gpu(call, u, v, gy, gx, scale)
        return
    w, p = _full(call, w, u.shape), _full(call, p, u.shape)
    call.launch_1d(f"bce_with_logits_weighted_wrt_x{k}", gx.size,
                   (u, v, w, p, gy, numpy.int64(gy.size == gx.size), gx,
                    call.scalar(float(scale)), numpy.int64(gx.size)))


def _bce_weights(call: Call, shape: tuple, weight: Any, pos_weight: Any,
                 out: Array | None) -> tuple:
    """weight and pos_weight checked: None or arrays that broadcast to ``shape`` (the
    logits'; PyTorch applies them in place to a loss of that shape)."""
    found = []
    for name, value in (("weight", weight), ("pos_weight", pos_weight)):
        a = _param_array(call, name, value, out)
        if a is not None:
            try:
                ok = numpy.broadcast_shapes(tuple(a.shape), shape) == shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{call.op}: {name} of shape {tuple(a.shape)} does not "
                                 f"broadcast to the shape of x1 {shape}")
        found.append(a)
    return tuple(found)


def bce_with_logits(x1: Array, x2: Array, *, reduction: str = "mean",
                    weight: Array | None = None, pos_weight: Array | None = None,
                    out: Array | None = None) -> Array:
    """Binary cross-entropy of logits x1 against targets x2 (in [0, 1]):
    max(x1, 0) - x1 x2 + log(1 + e^-|x1|), reduced by ``reduction``. With PyTorch's
    ``weight`` w and ``pos_weight`` p (arrays broadcast to x1's shape, not differentiable):
    -w [p x2 log σ(x1) + (1 - x2) log(1 - σ(x1))]; "mean" divides by the number of
    elements."""
    if weight is None and pos_weight is None:
        return _elementwise("bce_with_logits", x1, x2, reduction, out)
    reduction = _check_reduction("bce_with_logits", reduction)
    call = _FORWARD["bce_with_logits"].bind(x1, x2)
    u, v = call.inputs
    _check_pair(call, u, v)
    w, p = _bce_weights(call, tuple(u.shape), weight, pos_weight, out)
    return call.run(out, _loss_shape(reduction, u.shape), _bce_cpu, _bce_gpu, w, p, reduction)


def _bce_gradient(k: int, x1: Array, x2: Array, y: Array, gy: Array | float, reduction: Any,
              weight: Any, pos_weight: Any, out: Array | None) -> Array:
    if weight is None and pos_weight is None:
        return _elementwise_grad("bce_with_logits", k, x1, x2, y, gy, reduction, out)
    op = f"bce_with_logits_wrt_x{k}"
    reduction = _check_reduction(op, reduction)
    call = _GRADIENT["bce_with_logits", k].bind(x1, x2, y, gy)
    u, v, y, gy = call.inputs
    _check_pair(call, u, v)
    shape = _loss_shape(reduction, u.shape)
    check_shape(op, "y", y, shape)
    check_shape(op, "gy", gy, shape)
    w, p = _bce_weights(call, tuple(u.shape), weight, pos_weight, out)
    n = u.size
    scale = call.scalar(1.0 / n if reduction == "mean" and n else 1.0)
    xk = (u, v)[k - 1]
    return call.run(out, xk.shape, functools.partial(_bce_grad_cpu, k),
                    functools.partial(_bce_grad_gpu, k), w, p, scale, dtype=xk.dtype,
                    inputs=(u, v, gy))


def bce_with_logits_wrt_x1(x1, x2, y, gy, *, reduction="mean", weight=None, pos_weight=None,
                           out=None):
    """(σ(x1) - x2) · gy, divided by n for "mean"; with weight w and pos_weight p:
    w [(1 - x2) - (1 + (p - 1) x2) σ(-x1)] · gy."""
    return _bce_gradient(1, x1, x2, y, gy, reduction, weight, pos_weight, out)


def bce_with_logits_wrt_x2(x1, x2, y, gy, *, reduction="mean", weight=None, pos_weight=None,
                           out=None):
    """-x1 · gy, divided by n for "mean"; with weight w and pos_weight p:
    w [(p - 1) softplus(-x1) - x1] · gy."""
    return _bce_gradient(2, x1, x2, y, gy, reduction, weight, pos_weight, out)


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


def _cross_entropy_cpu(x: Array, labels: Array, y: Array, weight: Array | None,
                       reduction: str, ignore: int) -> None:
    """Per row w[t] (log Σ e^(x - m) - (x_t - m)), 0 for the rows not counted; reduced
    ("mean" divides by the number of counted rows, or by the sum of their weights)."""
    rows, classes = x.shape
    counted = _counted_rows("softmax_cross_entropy", labels, classes, ignore)
    t = numpy.where(counted, labels, 0)
    if classes:
        shifted, total = _math.log_sum_exp_parts(x, 1)
        picked = numpy.take_along_axis(shifted, t[:, None], axis=1)[:, 0]
        terms = numpy.where(counted, numpy.log(total[:, 0]) - picked, 0).astype(x.dtype,
                                                                                copy=False)
    else:  # no classes: every row is ignored
        terms = numpy.zeros(rows, x.dtype)
    if weight is None:
        _reduce(terms, reduction, y, int(counted.sum()))
        return
    w = numpy.where(counted, weight[t] if classes else 0, 0).astype(x.dtype, copy=False)
    terms = terms * w
    if reduction == "mean":
        with numpy.errstate(divide="ignore", invalid="ignore"):
            y[...] = terms.sum() / w.sum()  # 0/0 = NaN, as PyTorch
    else:
        _reduce(terms, reduction, y, 0)


def _cross_entropy_grad_cpu(x: Array, labels: Array, gy: Array, gx: Array,
                            weight: Array | None, reduction: str, ignore: int) -> None:
    """gx = g_n w[t_n] (softmax(x)[n] - onehot(t_n)), 0 for the rows not counted."""
    counted = _counted_rows("softmax_cross_entropy_wrt_x1", labels, x.shape[1], ignore)
    t = numpy.where(counted, labels, 0)
    w = None if weight is None else numpy.where(counted, weight[t], 0).astype(x.dtype,
                                                                            copy=False)
    if reduction != "mean":
        g = gy
    elif w is None:
        # (with no counted row the mean's scale is irrelevant: every row's gradient is 0)
        g = gy / max(int(counted.sum()), 1)
    else:
        with numpy.errstate(divide="ignore", invalid="ignore"):
            g = gy / w.sum()
    shifted, total = _math.log_sum_exp_parts(x, 1)
    numpy.divide(numpy.exp(shifted), total, out=gx)
    rows_counted = numpy.flatnonzero(counted)
    gx[rows_counted, labels[rows_counted]] -= 1
    scale = numpy.broadcast_to(g, counted.shape)
    if w is not None:
        with numpy.errstate(invalid="ignore"):
            scale = scale * w
    gx *= numpy.where(counted, scale, 0)[:, None]


# Kernels (labels as int64; row kernels through gpuops.ops._rows: W lanes for rows of up
# to 16 classes, a warp, or a block holding the row when it fits; w the class weights in
# the accumulation dtype, read only when weighted is 1, else any array of that dtype):
# softmax_cross_entropy_{lanes<W>,warp<E>,block}_<dtype>(x, t, w, weighted, losses, ignore,
#     rows, cols)
#     (losses: per row, in the accumulation dtype: float32 for 16-bit x),
# softmax_cross_entropy_total_<dtype>(losses, t, w, weighted, y, ignore, rows, cols, mean),
# softmax_cross_entropy_wrt_x1_{lanes<W>,warp<E>,block}_<dtype>(x, t, w, weighted, gy,
#     gy_stride, mean, gx, ignore, rows, cols) (mean = 1: each block divides gy by the
#     counted rows, or the sum of their weights, computed in a fixed order: no extra launch).
def _weight_args(call: Call, weight: Array | None) -> tuple:
    """(w, weighted) for the kernels: w an array of the accumulation dtype (a 1-element
    stand-in when there are no class weights)."""
    if weight is None:
        return call.xp.empty(1, call.scalar(0.0).dtype), numpy.int32(0)
    return call.xp.ascontiguousarray(weight), numpy.int32(1)


def _row_losses(call: Call, y: Array, reduction: str, rows: int) -> Array:
    """Where the row kernels write the per-row losses (accumulation dtype): y itself for
    "none" when it has that dtype, else a new array."""
    acc = call.scalar(0.0).dtype
    return y if reduction == "none" and y.dtype == acc else call.xp.empty(rows, acc)


def _cross_entropy_gpu(call: Call, x: Array, labels: Array, y: Array, weight: Array | None,
                       reduction: str, ignore: int) -> None:
    rows, cols = x.shape
    labels = call.xp.ascontiguousarray(labels, dtype=numpy.int64)
    w = _weight_args(call, weight)
    losses = _row_losses(call, y, reduction, rows)
    if rows:
        _rows.launch(call, call.op, rows, cols, (x, labels, *w, losses, numpy.int64(ignore)),
                     groups=True, arrays=1)
    if reduction == "none":
        if losses is not y:
            y[...] = losses  # 16 bits: one rounding
    else:
        call.launch(f"{call.op}_total", (1,), (kernels.BLOCK,),
                    (losses, labels, *w, y, numpy.int64(ignore), numpy.int64(rows),
                     numpy.int64(cols), numpy.int32(reduction == "mean")))


def _cross_entropy_grad_gpu(call: Call, x: Array, labels: Array, gy: Array, gx: Array,
                            weight: Array | None, reduction: str, ignore: int) -> None:
    rows, cols = x.shape
    labels = call.xp.ascontiguousarray(labels, dtype=numpy.int64)
    _rows.launch(call, call.op, rows, cols,
                 (x, labels, *_weight_args(call, weight), gy, numpy.int64(reduction == "none"),
                  numpy.int32(reduction == "mean"), gx, numpy.int64(ignore)),
                 groups=True, arrays=1)


# ---- label smoothing and probability targets (PyTorch's cross_entropy) ---------------
# Per row r a target a_rc over the C classes, with ε = label_smoothing and w_c the class
# weights (1 when None):
#   labels t:        a_rc = w_c ((1 - ε) [c == t_r] + ε / C), 0 for an ignored row;
#   probabilities q: a_rc = w_c ((1 - ε) q_rc + ε / C).
# loss_r = Σ_c a_rc (lse_r - x_rc), lse_r = log Σ_c e^x_rc (= -Σ_c a_rc log softmax(x_r)_c);
# d/dx_rc = g_r (S_r softmax(x_r)_c - a_rc), S_r = Σ_c a_rc;
# d/dq_rc = g_r (1 - ε) w_c (lse_r - x_rc).
# "mean": labels divide by Σ w_t over the counted rows (their number without weights, as
# without smoothing); probabilities by the number of rows (not the weights), as PyTorch.

def _soft_targets(op: str, x: Array, labels: Array | None, q: Array | None,
                  w: Array | None, eps: float, ignore: int) -> tuple[Array, Array | None]:
    """(NumPy) a (rows, C) in x's dtype, and the mask of the counted rows (labels only)."""
    rows, classes = x.shape
    dtype = x.dtype
    wc = numpy.ones(classes, dtype) if w is None else w.astype(dtype, copy=False)
    uniform = dtype.type(eps / classes) if classes else dtype.type(0)
    if q is not None:
        return (wc * (dtype.type(1 - eps) * q.astype(dtype, copy=False) + uniform)), None
    assert labels is not None  # without probability targets the call has labels
    counted = _counted_rows(op, labels, classes, ignore)
    a = numpy.empty(x.shape, dtype)
    a[...] = wc * uniform
    at = numpy.flatnonzero(counted)
    t = labels[at]
    a[at, t] += dtype.type(1 - eps) * wc[t]
    a[~counted] = 0
    return a, counted


def _neg_log_softmax(x: Array) -> Array:
    """lse_r - x_rc = -log softmax(x)_rc."""
    shifted, total = _math.log_sum_exp_parts(x, 1)
    return numpy.log(total) - shifted


def _soft_mean_count(x: Array, labels: Array | None, w: Array | None,
                     counted: Array | None) -> Any:
    if labels is None or counted is None:  # probability targets: the mean is over rows
        return x.shape[0]
    if w is None:
        return int(counted.sum())
    t = numpy.where(counted, labels, 0)
    return numpy.where(counted, w.astype(x.dtype, copy=False)[t], 0).sum()


def _soft_cpu(x: Array, labels: Array | None, q: Array | None, y: Array, w: Array | None,
              reduction: str, ignore: int, eps: float) -> None:
    x = x.astype(y.dtype, copy=False)
    a, counted = _soft_targets("softmax_cross_entropy", x, labels, q, w, eps, ignore)
    if x.shape[1]:
        with numpy.errstate(invalid="ignore"):
            terms = (a * _neg_log_softmax(x)).sum(axis=1)
    else:
        terms = numpy.zeros(x.shape[0], x.dtype)
    if counted is not None:
        terms = numpy.where(counted, terms, 0).astype(x.dtype, copy=False)
    if reduction == "mean":
        with numpy.errstate(divide="ignore", invalid="ignore"):
            y[...] = terms.sum() / numpy.asarray(_soft_mean_count(x, labels, w, counted),
                                                 numpy.float64)
    else:
        _reduce(terms, reduction, y, 0)


def _soft_grad_cpu(k: int, x: Array, labels: Array | None, q: Array | None, gy: Array,
                   gx: Array, w: Array | None, reduction: str, ignore: int,
                   eps: float) -> None:
    dtype = numpy.result_type(x, gx) if q is None else numpy.result_type(x, q)
    x = x.astype(dtype, copy=False)
    op = f"softmax_cross_entropy_wrt_x{k}"
    a, counted = _soft_targets(op, x, labels, q, w, eps, ignore)
    g = numpy.asarray(gy, dtype)
    if reduction == "mean":
        with numpy.errstate(divide="ignore", invalid="ignore"):
            g = g / dtype.type(_soft_mean_count(x, labels, w, counted))
    g = numpy.broadcast_to(g, (x.shape[0],))[:, None]
    with numpy.errstate(invalid="ignore"):
        if k == 1:
            shifted, total = _math.log_sum_exp_parts(x, 1)
            p = numpy.exp(shifted) / total
            d = (a.sum(axis=1, keepdims=True) * p - a) * g
        else:
            wc = numpy.ones(x.shape[1], dtype) if w is None else w.astype(dtype, copy=False)
            d = dtype.type(1 - eps) * wc * _neg_log_softmax(x) * g
    if counted is not None:
        d = numpy.where(counted[:, None], d, 0)
    gx[...] = d


# Kernels, one block of _rows.ROW_BLOCK threads per row (labels as int64, or a dummy when
# dense = 1: q the probabilities, else any array of the dtype; w as above):
# softmax_cross_entropy_soft_block_<dtype>(x, t, q, dense, w, weighted, eps, losses,
#     ignore, rows, cols),
# softmax_cross_entropy_soft_total_<dtype>(losses, y, rows, mean) (probabilities; labels
#     use softmax_cross_entropy_total above),
# softmax_cross_entropy_soft_wrt_x1_block_<dtype>(x, t, q, dense, w, weighted, eps, gy,
#     gy_stride, mean, gx, ignore, rows, cols),
# softmax_cross_entropy_soft_wrt_x2_block_<dtype>(x, w, weighted, eps, gy, gy_stride, mean,
#     gq, rows, cols).
def _launch_row_blocks(call: Call, kernel: str, rows: int, cols: int, args: tuple) -> None:
    call.launch(kernel, (max(1, min(rows, call.max_blocks)),), (_rows.ROW_BLOCK,),
                (*args, numpy.int64(rows), numpy.int64(cols)))


def _soft_gpu_args(call: Call, x: Array, labels: Array | None, q: Array | None,
                   w: Array | None, eps: float) -> tuple:
    dense = q is not None
    t = (call.xp.zeros(1, numpy.int64) if dense
         else call.xp.ascontiguousarray(labels, dtype=numpy.int64))
    return (t, q if dense else x, numpy.int32(dense), *_weight_args(call, w),
            call.scalar(eps))


def _soft_gpu(call: Call, x: Array, labels: Array | None, q: Array | None, y: Array,
              w: Array | None, reduction: str, ignore: int, eps: float) -> None:
    rows, cols = x.shape
    t, qa, dense, wa, weighted, e = _soft_gpu_args(call, x, labels, q, w, eps)
    losses = _row_losses(call, y, reduction, rows)
    if rows:
        _launch_row_blocks(call, "softmax_cross_entropy_soft_block", rows, cols,
                           (x, t, qa, dense, wa, weighted, e, losses, numpy.int64(ignore)))
    if reduction == "none":
        if losses is not y:
            y[...] = losses  # 16 bits: one rounding
        return
    mean = numpy.int32(reduction == "mean")
    if q is not None:
        call.launch("softmax_cross_entropy_soft_total", (1,), (kernels.BLOCK,),
                    (losses, y, numpy.int64(rows), mean))
    else:
        call.launch("softmax_cross_entropy_total", (1,), (kernels.BLOCK,),
                    (losses, t, wa, weighted, y, numpy.int64(ignore), numpy.int64(rows),
                     numpy.int64(cols), mean))


def _soft_grad_gpu(k: int, call: Call, x: Array, labels: Array | None, q: Array | None,
                   gy: Array, gx: Array, w: Array | None, reduction: str, ignore: int,
                   eps: float) -> None:
    rows, cols = x.shape
    t, qa, dense, wa, weighted, e = _soft_gpu_args(call, x, labels, q, w, eps)
    g_args = (gy, numpy.int64(reduction == "none"), numpy.int32(reduction == "mean"), gx)
    if k == 1:
        _launch_row_blocks(call, "softmax_cross_entropy_soft_wrt_x1_block", rows, cols,
                           (x, t, qa, dense, wa, weighted, e, *g_args, numpy.int64(ignore)))
    else:
        _launch_row_blocks(call, "softmax_cross_entropy_soft_wrt_x2_block", rows, cols,
                           (x, wa, weighted, e, *g_args))


CROSS_ENTROPY = Signature("softmax_cross_entropy", FAMILY, ("x1", "x2"), ints=("x2",),
                          kernel_dtypes=ALL_FLOAT_DTYPES)
CROSS_ENTROPY_GRAD = Signature("softmax_cross_entropy_wrt_x1", FAMILY, ("x1", "x2", "y", "gy"),
                               scalars=("gy",), ints=("x2",), kernel_dtypes=ALL_FLOAT_DTYPES)
# probability targets: x2 a float array of x1's shape
CROSS_ENTROPY_PROBS = Signature("softmax_cross_entropy", FAMILY, ("x1", "x2"),
                                kernel_dtypes=ALL_FLOAT_DTYPES)
CROSS_ENTROPY_PROBS_GRAD = {k: Signature(f"softmax_cross_entropy_wrt_x{k}", FAMILY,
                                         ("x1", "x2", "y", "gy"), scalars=("gy",),
                                         kernel_dtypes=ALL_FLOAT_DTYPES)
                            for k in (1, 2)}


def _is_float(dtype: numpy.dtype) -> bool:
    """Whether ``dtype`` is a float dtype (bfloat16's kind is "V", not "f")."""
    return dtype.kind == "f" or dtype == BFLOAT16


def _is_probabilities(x2: Any) -> bool:
    """Whether x2 is a float array (class probabilities) rather than class labels."""
    dtype = getattr(x2, "dtype", None)
    return isinstance(dtype, numpy.dtype) and _is_float(dtype)


def _label_smoothing(op: str, value: Any) -> float:
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(
            value, (int, float, numpy.integer, numpy.floating)):
        raise TypeError(f"{op}: label_smoothing must be a float in [0, 1], got {value!r}")
    eps = float(value)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {value!r}")
    return eps


def _bind_cross_entropy(signature: Signature, values: tuple, reduction: Any,
                        ignore_index: Any, weight: Any, label_smoothing: Any,
                        out: Array | None) -> tuple[Call, str, int, Array | None, float]:
    op = signature.op
    reduction = _check_reduction(op, reduction)
    ignore = _args.integer(op, "ignore_index", ignore_index)
    eps = _label_smoothing(op, label_smoothing)
    call = signature.bind(*values)
    x, target = call.inputs[:2]
    if x.ndim < 2:
        raise ValueError(f"{op}: x1 must be logits (N, C) or (N, C, d1, ...), got shape "
                         f"{tuple(x.shape)}")
    expected = (x.shape[0], *x.shape[2:])
    if _is_float(target.dtype):
        if tuple(target.shape) != tuple(x.shape):
            raise ValueError(f"{op}: a float x2 holds class probabilities and must have the "
                             f"shape of x1 {tuple(x.shape)}, got {tuple(target.shape)} "
                             f"(class labels of shape {expected} must be int32 or int64)")
        if ignore != -100:
            raise ValueError(f"{op}: ignore_index is not supported with probability targets "
                             f"(a float x2), got ignore_index={ignore}")
    elif tuple(target.shape) == tuple(x.shape):
        raise TypeError(f"{op}: x2 has the shape of x1 {tuple(x.shape)} (class "
                        f"probabilities) but dtype {target.dtype}; probability targets must "
                        f"be a float dtype (class labels have shape {expected})")
    elif tuple(target.shape) != expected:
        raise ValueError(f"{op}: x2 must be labels of shape {expected} for x1 of shape "
                         f"{tuple(x.shape)}, got {tuple(target.shape)}")
    w = _param_array(call, "weight", weight, out)
    if w is not None and tuple(w.shape) != (x.shape[1],):
        raise ValueError(f"{op}: weight must have shape ({x.shape[1]},) (one per class of x1 "
                         f"of shape {tuple(x.shape)}), got {tuple(w.shape)}")
    return call, reduction, ignore, w, eps


# Logits (N, C, d1, ...) with labels (N, d1, ...): the class axis moved last, rows
# (N d1 ..., C) (one transposed copy, as softmax along an inner axis), the row functions
# above, and the per-row losses / the gradient's rows put back in place.
def _as_rows(xp: Any, x: Array, labels: Array) -> tuple[Array, Array]:
    return xp.moveaxis(x, 1, -1).reshape(labels.size, x.shape[1]), labels.reshape(-1)


def _class_rows(xp: Any, a: Array) -> Array:
    """(N, C, d1, ...) as rows (N d1 ..., C)."""
    return xp.moveaxis(a, 1, -1).reshape(a.shape[0] * math.prod(a.shape[2:]), a.shape[1])


def _losses_in_place(xp: Any, fn: Callable, head: tuple, y: Array, params: tuple) -> None:
    """fn(*head, flat y, *params) for a per-row "none" loss of the labels' shape."""
    if y.ndim <= 1:
        fn(*head, y, *params)
        return
    flat = xp.empty(y.size, y.dtype)
    fn(*head, flat, *params)
    y[...] = flat.reshape(y.shape)


def _grad_in_place(xp: Any, fn: Callable, head: tuple, gx: Array, params: tuple) -> None:
    """fn(*head, gx rows, *params) for the gradient of logits (N, C, d1, ...)."""
    if gx.ndim == 2:
        fn(*head, gx, *params)
        return
    classes = gx.shape[1]
    rows = xp.empty((gx.shape[0] * math.prod(gx.shape[2:]), classes), gx.dtype)
    fn(*head, rows, *params)
    gx[...] = xp.moveaxis(rows.reshape(gx.shape[0], *gx.shape[2:], classes), -1, 1)


def _ce_cpu(x, labels, y, *params):
    _losses_in_place(numpy, _cross_entropy_cpu, (x, labels), y, params)


def _ce_gpu(call, x, labels, y, *params):
    _losses_in_place(call.xp, _cross_entropy_gpu, (call, x, labels), y, params)


def _ce_grad_cpu(x, labels, gy, gx, *params):
    _grad_in_place(numpy, _cross_entropy_grad_cpu, (x, labels, gy), gx, params)


def _ce_grad_gpu(call, x, labels, gy, gx, *params):
    _grad_in_place(call.xp, _cross_entropy_grad_gpu, (call, x, labels, gy), gx, params)


def _soft_nd_cpu(x, labels, q, y, *params):
    _losses_in_place(numpy, _soft_cpu, (x, labels, q), y, params)


def _soft_nd_gpu(call, x, labels, q, y, *params):
    _losses_in_place(call.xp, _soft_gpu, (call, x, labels, q), y, params)


def _soft_inputs(call: Call, x: Array, target: Array) -> tuple:
    """(x rows, labels or None, probabilities or None) for the row functions."""
    probs = _is_float(target.dtype)
    if x.ndim == 2:
        return (x, None, target) if probs else (x, target, None)
    rows = _class_rows(call.xp, x)
    if probs:
        return rows, None, _class_rows(call.xp, target)
    return rows, target.reshape(-1), None


def softmax_cross_entropy(x1: Array, x2: Array, *, reduction: str = "mean",
                          ignore_index: int = -100, weight: Array | None = None,
                          label_smoothing: float = 0.0, out: Array | None = None) -> Array:
    """Cross-entropy of softmax(x1) (logits (N, C), or (N, C, d1, ...) with the classes
    along axis 1) against class labels x2 ((N,) or (N, d1, ...), int):
    -weight[x2[n]] log softmax(x1)[n, x2[n]] per row (weight (C,) or None: all 1), reduced
    by ``reduction`` ("mean" divides by the sum of weight[x2[n]] over the rows whose label
    is not ``ignore_index``: their number when weight is None; "none" has x2's shape).

    ``label_smoothing`` ε in [0, 1] (PyTorch): the target mixes the label with the uniform
    distribution, (1 - ε) loss + ε/C Σ_c -weight[c] log softmax(x1)[n, c].
    A float x2 of x1's shape holds class probabilities (PyTorch): -Σ_c weight[c] q_c
    log softmax(x1)[n, c] per row, q = (1 - ε) x2 + ε/C; "mean" divides by the number of
    rows; ``ignore_index`` is not supported (left at -100); differentiable wrt x2."""
    probs = _is_probabilities(x2)
    call, reduction, ignore, w, eps = _bind_cross_entropy(
        CROSS_ENTROPY_PROBS if probs else CROSS_ENTROPY, (x1, x2), reduction, ignore_index,
        weight, label_smoothing, out)
    x, target = call.inputs
    shape = _loss_shape(reduction, (x.shape[0], *x.shape[2:]))
    # (the class weights are parameters, not inputs: see _param_array)
    if not probs and eps == 0.0:
        if x.ndim == 2:
            return call.run(out, shape, _cross_entropy_cpu, _cross_entropy_gpu, w, reduction,
                            ignore)
        return call.run(out, shape, _ce_cpu, _ce_gpu, w, reduction, ignore,
                        inputs=_as_rows(call.xp, x, target))
    cpu, gpu = (_soft_cpu, _soft_gpu) if x.ndim == 2 else (_soft_nd_cpu, _soft_nd_gpu)
    return call.run(out, shape, cpu, gpu, w, reduction, ignore, eps,
                    inputs=_soft_inputs(call, x, target))


def _soft_gradient(call: Call, k: int, x: Array, target: Array, w: Array | None, gy: Array,
                   reduction: str, ignore: int, eps: float, out: Array | None) -> Array:
    cpu: Callable[..., None] = functools.partial(_soft_grad_cpu, k)
    gpu: Callable[..., None] = functools.partial(_soft_grad_gpu, k)
    if x.ndim > 2:
        cpu2, gpu2 = cpu, gpu
        cpu = lambda x, t, q, gy, gx, *p: _grad_in_place(numpy, cpu2, (x, t, q, gy), gx, p)
        gpu = lambda call, x, t, q, gy, gx, *p: _grad_in_place(
            call.xp, gpu2, (call, x, t, q, gy), gx, p)
        if reduction == "none":
            gy = gy.reshape(-1)
    xk = (x, target)[k - 1]
    # the gradients read x, the targets, the weights and gy (not y)
    return call.run(out, x.shape, cpu, gpu, w, reduction, ignore, eps, dtype=xk.dtype,
                    inputs=(*_soft_inputs(call, x, target), gy))


def _cross_entropy_gradient(k: int, x1: Array, x2: Array, y: Array, gy: Array | float,
                            reduction: Any, ignore_index: Any, weight: Any,
                            label_smoothing: Any, out: Array | None) -> Array:
    probs = _is_probabilities(x2)
    signature = CROSS_ENTROPY_PROBS_GRAD[k] if probs or k == 2 else CROSS_ENTROPY_GRAD
    call, reduction, ignore, w, eps = _bind_cross_entropy(
        signature, (x1, x2, y, gy), reduction, ignore_index, weight, label_smoothing, out)
    x, target, y, gy = call.inputs
    shape = _loss_shape(reduction, (x.shape[0], *x.shape[2:]))
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    if probs or eps != 0.0:
        return _soft_gradient(call, k, x, target, w, gy, reduction, ignore, eps, out)
    # the gradient reads x, the labels, the weights and gy (not y)
    if x.ndim == 2:
        return call.run(out, x.shape, _cross_entropy_grad_cpu, _cross_entropy_grad_gpu, w,
                        reduction, ignore, dtype=x.dtype, inputs=(x, target, gy))
    return call.run(out, x.shape, _ce_grad_cpu, _ce_grad_gpu, w, reduction, ignore,
                    dtype=x.dtype, inputs=(*_as_rows(call.xp, x, target),
                                           gy.reshape(-1) if reduction == "none" else gy))


def softmax_cross_entropy_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array | float, *,
                                 reduction: str = "mean", ignore_index: int = -100,
                                 weight: Array | None = None, label_smoothing: float = 0.0,
                                 out: Array | None = None) -> Array:
    """Fused gradient g_n w_n (softmax(x1)[n] - onehot(x2[n])), w_n = weight[x2[n]] (1 when
    weight is None), g_n = gy[n] ("none"), gy ("sum") or gy / (Σ w_n over the counted
    rows) ("mean"); 0 for ignored rows. Rows n along the class axis 1 of x1. With label
    smoothing or probability targets: g_n (S_n softmax(x1)[n] - a_n), a_n the row's
    weighted target (w_c ((1 - ε) target_c + ε/C)) and S_n = Σ_c a_nc."""
    return _cross_entropy_gradient(1, x1, x2, y, gy, reduction, ignore_index, weight,
                                   label_smoothing, out)


def softmax_cross_entropy_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array | float, *,
                                 reduction: str = "mean", ignore_index: int = -100,
                                 weight: Array | None = None, label_smoothing: float = 0.0,
                                 out: Array | None = None) -> Array:
    """Gradient wrt probability targets x2 (a float x2 of x1's shape):
    -g_n (1 - ε) weight[c] log softmax(x1)[n, c], g_n as for x1 ("mean": gy / N).
    Integer class labels have no gradient: ``TypeError``."""
    if not _is_probabilities(x2) and isinstance(getattr(x2, "dtype", None), numpy.dtype):
        raise TypeError(f"softmax_cross_entropy_wrt_x2: x2 has dtype {x2.dtype}: integer class "
                        "labels have no gradient; the gradient wrt x2 exists for probability "
                        "targets (a float32 or float64 x2 of x1's shape)")
    return _cross_entropy_gradient(2, x1, x2, y, gy, reduction, ignore_index, weight,
                                   label_smoothing, out)


# ---- forward and gradient in one pass (training) -------------------------------------
# softmax_cross_entropy_with_grad: the loss and d loss / d x1 for gy = 1, integer labels
# (label smoothing included) in one launch (the logits read once):
# softmax_cross_entropy_with_grad_{warp<E>,block}_<dtype>(x, t, w, weighted, eps, losses,
#     partial, ticket, y, reduction, gx, ignore, rows, cols): reduction 0 ("none") writes
#     the row losses into losses; 1 ("sum") and 2 ("mean") one double partial per block,
#     which the last block to finish (the ticket counter, see cuda/loss.cu) adds in index
#     order into y: deterministic. gx is the gradient for gy = 1 (the mean's divisor
#     included: each block computes it).
# Autograd saves that gradient; its backward is one launch,
# softmax_cross_entropy_scale_grad_<dtype>(grad, gy, per_row, gx, n, classes, inner).
CROSS_ENTROPY_WITH_GRAD = Signature("softmax_cross_entropy_with_grad", FAMILY, ("x1", "x2"),
                                    ints=("x2",), kernel_dtypes=ALL_FLOAT_DTYPES)
CROSS_ENTROPY_SCALE_GRAD = Signature("softmax_cross_entropy_wrt_x1", FAMILY, ("grad", "gy"),
                                     scalars=("gy",), kernel_dtypes=ALL_FLOAT_DTYPES)
_REDUCTION_CODE = {"none": 0, "sum": 1, "mean": 2}
_tickets = threading.local()


def _ticket(call: Call) -> Array:
    """This thread's ticket counter (one unsigned int, 0 between launches) on the call's
    backend and device. Per thread: the launches of one thread run in order."""
    table = getattr(_tickets, "table", None)
    if table is None:
        table = _tickets.table = {}
    device = call.xp.cuda.runtime.getDevice() if call.backend.name == "cupy" else None
    ticket = table.get((call.backend.name, device))
    if ticket is None:
        ticket = table[call.backend.name, device] = call.xp.zeros(1, numpy.uint32)
    return ticket


def _with_grad_cpu(x: Array, labels: Array, y: Array, w: Array | None, reduction: str,
                   ignore: int, eps: float, grads: list) -> None:
    gx = numpy.empty(x.shape, y.dtype)
    gy = numpy.ones(() if reduction != "none" else x.shape[0], y.dtype)
    if eps == 0.0:
        _losses_in_place(numpy, _cross_entropy_cpu, (x, labels), y, (w, reduction, ignore))
        _cross_entropy_grad_cpu(x, labels, gy, gx, w, reduction, ignore)
    else:
        _losses_in_place(numpy, _soft_cpu, (x, labels, None), y, (w, reduction, ignore, eps))
        _soft_grad_cpu(1, x, labels, None, gy, gx, w, reduction, ignore, eps)
    grads.append(gx)


def _with_grad_gpu(call: Call, x: Array, labels: Array, y: Array, w: Array | None,
                   reduction: str, ignore: int, eps: float, grads: list) -> None:
    rows, cols = x.shape
    gx = call.xp.empty((rows, cols), call.dtype)
    grads.append(gx)
    losses = y.reshape(-1)  # (y is C-contiguous: a view) the row losses of "none"
    partial = call.xp.empty(max(1, min(rows, call.max_blocks)), numpy.float64)
    ticket = _ticket(call)
    try:
        _rows.launch(call, "softmax_cross_entropy_with_grad", rows, cols,
                     (x, call.xp.ascontiguousarray(labels, dtype=numpy.int64),
                      *_weight_args(call, w), call.scalar(eps), losses, partial, ticket, y,
                      numpy.int32(_REDUCTION_CODE[reduction]), gx, numpy.int64(ignore)),
                     groups=True, arrays=1)
    except BaseException:
        ticket[...] = 0  # a launch stopped part way may leave it counting
        raise


def softmax_cross_entropy_with_grad(x1: Array, x2: Array, *, reduction: str = "mean",
                                    ignore_index: int = -100, weight: Array | None = None,
                                    label_smoothing: float = 0.0) -> tuple[Array, Array]:
    """(softmax_cross_entropy(x1, x2, ...), its gradient wrt x1 for an upstream gradient
    of 1): the training step's forward and backward in one pass. The same parameters and
    results as the pair softmax_cross_entropy / softmax_cross_entropy_wrt_x1 (gy = 1);
    integer labels (with or without label smoothing) take one kernel launch that reads the
    logits once and writes the loss (its "sum"/"mean" too) and the gradient; probability
    targets run the pair."""
    if _is_probabilities(x2):
        y = softmax_cross_entropy(x1, x2, reduction=reduction, ignore_index=ignore_index,
                                  weight=weight, label_smoothing=label_smoothing)
        gy = 1.0 if reduction != "none" else get_array_module(y).ones(y.shape, y.dtype)
        return y, softmax_cross_entropy_wrt_x1(
            x1, x2, y, gy, reduction=reduction, ignore_index=ignore_index, weight=weight,
            label_smoothing=label_smoothing)
    call, reduction, ignore, w, eps = _bind_cross_entropy(
        CROSS_ENTROPY_WITH_GRAD, (x1, x2), reduction, ignore_index, weight, label_smoothing,
        None)
    x, labels = call.inputs
    shape = _loss_shape(reduction, (x.shape[0], *x.shape[2:]))
    grads: list = []
    y = call.run(None, shape, _with_grad_cpu, _with_grad_gpu, w, reduction, ignore, eps,
                 grads, inputs=_as_rows(call.xp, x, labels))
    rows = grads[0] if grads else call.xp.zeros((0, x.shape[1]), y.dtype)
    if rows.dtype != y.dtype:  # the NumPy backend's float32 for 16-bit x: one rounding
        rows = rows.astype(y.dtype)
    if x.ndim == 2:
        return y, rows
    classes = x.shape[1]
    return y, call.xp.ascontiguousarray(
        call.xp.moveaxis(rows.reshape(x.shape[0], *x.shape[2:], classes), -1, 1))


def _scale_grad_cpu(grad: Array, gy: Array, gx: Array, per_row: bool) -> None:
    gx[...] = grad * (numpy.expand_dims(gy, 1) if per_row else gy)


def _scale_grad_gpu(call: Call, grad: Array, gy: Array, gx: Array, per_row: bool) -> None:
    call.launch_1d("softmax_cross_entropy_scale_grad", gx.size,
                   (grad, gy, numpy.int32(per_row), gx, numpy.int64(gx.size),
                    numpy.int64(gx.shape[1]), numpy.int64(math.prod(gx.shape[2:]))))


def _cross_entropy_forward_saving(x1: Array, x2: Array, **params: Any) -> tuple[Array, Any]:
    """Autograd's forward: the loss, and the gradient for gy = 1 where one launch gives
    both (integer labels), else None (probability targets: their gradient functions)."""
    if _is_probabilities(x2):
        return softmax_cross_entropy(x1, x2, **params), None
    return softmax_cross_entropy_with_grad(x1, x2, **params)


def _cross_entropy_backward(x1: Array, x2: Array, y: Array, gy: Array, *, needs: tuple,
                            saved: Any = None, **params: Any) -> tuple:
    """Autograd's backward: the saved gradient times gy (one launch), or the gradient
    functions where nothing was saved."""
    g1 = g2 = None
    if needs[0] and saved is not None:
        call = CROSS_ENTROPY_SCALE_GRAD.bind(saved, gy)
        grad, g = call.inputs
        check_shape(call.op, "gy", g, tuple(y.shape))
        g1 = call.run(None, grad.shape, _scale_grad_cpu, _scale_grad_gpu,
                      params.get("reduction", "mean") == "none")
    elif needs[0]:
        g1 = softmax_cross_entropy_wrt_x1(x1, x2, y, gy, **params)
    if len(needs) > 1 and needs[1]:
        g2 = softmax_cross_entropy_wrt_x2(x1, x2, y, gy, **params)
    return g1, g2


register(FAMILY, softmax_cross_entropy, softmax_cross_entropy_wrt_x1,
         softmax_cross_entropy_wrt_x2, forward_saving=_cross_entropy_forward_saving,
         backward=_cross_entropy_backward)
for _op in ("bce_with_logits", "mse", "mae"):
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"], globals()[f"{_op}_wrt_x2"])
del _op
