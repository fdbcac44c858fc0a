"""Batch normalization: ``batch_norm`` and its gradients. Kernels in cuda/normalization.cu.

``x1`` is normalized per channel, the channels along ``axis`` (default 1: (N, C),
(N, C, L), (N, C, H, W), ...), over every other axis; ``x2`` (weight γ) and ``x3``
(bias β) have shape (C,) and are required (pass ones and zeros for PyTorch's
``affine=False``). With M the number of values per channel:

training mode (the default): the batch statistics, biased variance (PyTorch's)

    μ_c = mean x,  v_c = mean (x - μ_c)²,  σ_c = sqrt(v_c + eps),
    x̂ = (x - μ_c) / σ_c,  y = x̂ · γ_c + β_c

    gx = (γ_c / σ_c) · (gy - mean_c(gy) - x̂ · mean_c(gy · x̂)),
    gγ_c = Σ gy · x̂,  gβ_c = Σ gy;

evaluation mode (``running_mean=`` and ``running_var=`` given, both of shape (C,)):
the same formula with μ = running_mean, v = running_var, which are constants, so
gx = (γ_c / σ_c) · gy (elementwise), gγ_c = Σ gy · x̂, gβ_c = Σ gy. The running
statistics are never written by the operator (``nn.BatchNorm*d`` updates them).

float32/float64. The kernels reduce per channel in two deterministic stages (no
atomics): partial sums per (channel, chunk), then one thread per channel adds its
chunks in order; the variance is the corrected two-pass one (moments about the mean
of a first pass), so a large common offset does not lose digits. An empty batch
(M = 0) gives an empty y and gγ = gβ = 0.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from .. import kernels
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args

__all__ = ["batch_norm", "batch_norm_wrt_x1", "batch_norm_wrt_x2", "batch_norm_wrt_x3"]

FAMILY = "normalization"
Array = Any

_MIN_CHUNK = 1024  # values of one channel per block, at least, before a channel is split


# ---- parameters ---------------------------------------------------------------------------

def _check(op: str, x: Array, w: Array, b: Array, rm: Array | None, rv: Array | None,
           axis: Any, eps: Any) -> tuple[int, float]:
    """(axis, eps) normalized; ValueError/TypeError naming ``op`` and the value."""
    ax = _args.axis(op, axis, x.ndim)
    C = x.shape[ax]
    check_shape(op, "x2 (weight)", w, (C,))
    check_shape(op, "x3 (bias)", b, (C,))
    check_shape(op, "running_mean", rm, (C,))
    check_shape(op, "running_var", rv, (C,))
    value = _args.finite_float(op, "eps", eps)
    if value <= 0:
        raise ValueError(f"{op}: eps must be > 0, got {eps!r}")
    return ax, value


def _running_pair(op: str, running_mean: Any, running_var: Any) -> None:
    if (running_mean is None) != (running_var is None):
        given, missing = (("running_mean", "running_var") if running_var is None
                          else ("running_var", "running_mean"))
        raise ValueError(f"{op}: {given} is given without {missing}; evaluation mode needs "
                         "both (or neither, for batch statistics)")


def _layout(shape: tuple, axis: int) -> tuple[int, int, int]:
    """(C, inner, M): channels, the elements after the channel axis, values per channel."""
    C = shape[axis]
    inner = math.prod(shape[axis + 1:])
    return C, inner, math.prod(shape[:axis]) * inner


# ---- NumPy (the call protocol hands over an out that overlaps no input) ------------------

def _channel_view(v: Array, ndim: int, axis: int) -> Array:
    return v.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))


def _stats_cpu(x: Array, rm: Array | None, rv: Array | None, axis: int, dt: Any) -> tuple:
    """(μ, v) broadcastable against x, in the compute dtype ``dt``."""
    if rm is not None and rv is not None:
        return (_channel_view(rm.astype(dt, copy=False), x.ndim, axis),
                _channel_view(rv.astype(dt, copy=False), x.ndim, axis))
    red = tuple(i for i in range(x.ndim) if i != axis)
    x = x.astype(dt, copy=False)
    # the corrected two-pass algorithm, as the kernels: moments about a first-pass mean
    shift = x.mean(axis=red, keepdims=True)
    d = x - shift
    d1 = d.mean(axis=red, keepdims=True)
    return shift + d1, numpy.maximum((d * d).mean(axis=red, keepdims=True) - d1 * d1, 0)


def _batch_norm_cpu(x, w, b, rm, rv, y, axis, eps):
    dt = y.dtype.type
    mean, var = _stats_cpu(x, rm, rv, axis, dt)
    wv, bv = _channel_view(w, x.ndim, axis), _channel_view(b, x.ndim, axis)
    y[...] = (x - mean) / numpy.sqrt(var + dt(eps)) * wv + bv


def _grad_cpu(k: int):
    def grad(x, w, b, y_, gy, rm, rv, g, axis, eps):
        dt = numpy.result_type(*[a.dtype for a in (x, w, b, gy, rm, rv) if a is not None]).type
        C, _, M = _layout(x.shape, axis)
        red = tuple(i for i in range(x.ndim) if i != axis)
        if M == 0:  # sums over nothing
            g[...] = 0
            return
        if k == 3:
            g[...] = gy.astype(dt, copy=False).sum(axis=red)
            return
        mean, var = _stats_cpu(x, rm, rv, axis, dt)
        inv = 1 / numpy.sqrt(var + dt(eps))
        xhat = (x - mean) * inv
        gy = gy.astype(dt, copy=False)
        if k == 2:
            g[...] = (gy * xhat).sum(axis=red)
            return
        a = _channel_view(w.astype(dt, copy=False), x.ndim, axis) * inv
        if rm is None:  # a distributed over the terms (an infinite weight: NaN), as the kernel
            g[...] = a * gy - a * gy.mean(axis=red, keepdims=True) \
                - a * xhat * (gy * xhat).mean(axis=red, keepdims=True)
        else:
            g[...] = a * gy
    return grad


# ---- kernels (see cuda/normalization.cu) ----------------------------------------------------

def _i64(v: int) -> numpy.int64:
    return numpy.int64(v)


def _split(call: Call, C: int, M: int) -> tuple[int, int]:
    """(chunk, splits): each channel's M values in ``splits`` chunks of ``chunk`` values,
    at least _MIN_CHUNK each, until C · splits fills the GPU a few times over."""
    target = 4 * call.max_blocks
    if C >= target or M <= _MIN_CHUNK:
        return max(M, 1), 1
    splits = min(math.ceil(M / _MIN_CHUNK), math.ceil(target / C))
    chunk = math.ceil(M / splits)
    return chunk, math.ceil(M / chunk)


def _launch_reduce(call: Call, kernel: str, arrays: tuple, C: int, inner: int, M: int) -> tuple:
    """Stage 1 into a new partial buffer; returns (partial, splits)."""
    chunk, splits = _split(call, C, M)
    partial = call.xp.empty(2 * C * splits, call.dtype)
    call.launch(kernel, (min(C * splits, call.max_blocks),), (kernels.BLOCK,),
                (*arrays, partial, _i64(C), _i64(inner), _i64(M), _i64(chunk), _i64(splits)))
    return partial, splits


def _stats_gpu(call: Call, x: Array, C: int, inner: int, M: int) -> tuple[Array, Array]:
    """Batch mean and biased variance (C,) of a C-contiguous x (M > 0)."""
    xp = call.xp
    zeros = xp.zeros(C, call.dtype)
    mean0, var0 = xp.empty(C, call.dtype), xp.empty(C, call.dtype)
    partial, splits = _launch_reduce(call, "batch_norm_moments", (x, zeros), C, inner, M)
    call.launch_1d("batch_norm_finish", C, (partial, zeros, mean0, var0, _i64(C), _i64(splits),
                                            _i64(M)))
    mean, var = xp.empty(C, call.dtype), xp.empty(C, call.dtype)
    partial, splits = _launch_reduce(call, "batch_norm_moments", (x, mean0), C, inner, M)
    call.launch_1d("batch_norm_finish", C, (partial, mean0, mean, var, _i64(C), _i64(splits),
                                            _i64(M)))
    return mean, var


def _stats_for(call: Call, x: Array, rm: Array | None, rv: Array | None, C: int, inner: int,
               M: int) -> tuple[Array, Array]:
    if rm is not None:
        return call.contiguous(rm), call.contiguous(rv)
    return _stats_gpu(call, x, C, inner, M)


def _batch_norm_gpu(call, x, w, b, rm, rv, y, axis, eps):
    C, inner, M = _layout(x.shape, axis)
    mean, var = _stats_for(call, x, rm, rv, C, inner, M)
    call.launch_1d("batch_norm", y.size, (x, mean, var, w, b, y, _i64(y.size), _i64(C),
                                          _i64(inner), call.scalar(eps)))


def _channel_sums(call: Call, x: Array, gy: Array, mean: Array, var: Array, C: int, inner: int,
                  M: int, eps: float, which: tuple) -> list:
    """Σ gy (which 0) and Σ gy · x̂ (which 1) per channel, new (C,) arrays."""
    partial, splits = _launch_reduce(call, "batch_norm_grad_moments", (x, gy, mean), C, inner,
                                     M)
    sums = []
    for k in which:
        s = call.xp.empty(C, call.dtype)
        call.launch_1d("batch_norm_channel_grad", C, (partial, var, s, _i64(C), _i64(splits),
                                                      _i64(k), call.scalar(eps)))
        sums.append(s)
    return sums


def _grad_gpu(k: int):
    def grad(call, x, w, b, y_, gy, rm, rv, g, axis, eps):
        C, inner, M = _layout(x.shape, axis)
        if M == 0:
            g[...] = 0
            return
        if k == 3:  # Σ gy needs no statistics (the mean slot only shifts the unused sum)
            zeros = call.xp.zeros(C, call.dtype)
            (s,) = _channel_sums(call, x, gy, zeros, zeros, C, inner, M, eps, (0,))
            g[...] = s
            return
        mean, var = _stats_for(call, x, rm, rv, C, inner, M)
        if k == 2:
            (s,) = _channel_sums(call, x, gy, mean, var, C, inner, M, eps, (1,))
            g[...] = s
            return
        training = rm is None
        if training:
            sg, sgx = _channel_sums(call, x, gy, mean, var, C, inner, M, eps, (0, 1))
        else:
            sg = sgx = var  # not read
        call.launch_1d("batch_norm_wrt_x1", g.size,
                       (x, gy, mean, var, w, sg, sgx, g, _i64(g.size), _i64(C), _i64(inner),
                        _i64(M), _i64(int(training)), call.scalar(eps)))
    return grad


# ---- the operator -------------------------------------------------------------------------

BATCH_NORM = Signature("batch_norm", FAMILY, ("x1", "x2", "x3", "running_mean", "running_var"),
                       optional=("running_mean", "running_var"))
_GRADIENTS = {k: Signature(f"batch_norm_wrt_x{k}", FAMILY,
                           ("x1", "x2", "x3", "y", "gy", "running_mean", "running_var"),
                           optional=("running_mean", "running_var"))
              for k in (1, 2, 3)}
_GRAD_CPU = {k: _grad_cpu(k) for k in (1, 2, 3)}
_GRAD_GPU = {k: _grad_gpu(k) for k in (1, 2, 3)}


def batch_norm(x1: Array, x2: Array, x3: Array, *, axis: int = 1, eps: float = 1e-5,
               running_mean: Array | None = None, running_var: Array | None = None,
               out: Array | None = None) -> Array:
    """y = (x1 - μ) / sqrt(v + eps) · x2 + x3 per channel (channels along ``axis``; x2 the
    weight, x3 the bias, both (C,)). Training mode (default): μ and v the batch mean and
    biased variance over every axis but ``axis``. Evaluation mode: ``running_mean`` and
    ``running_var`` (both (C,)) as μ and v; they are read, never written."""
    _running_pair("batch_norm", running_mean, running_var)
    call = BATCH_NORM.bind(x1, x2, x3, running_mean, running_var)
    x, w, b, rm, rv = call.inputs
    ax, eps_f = _check(call.op, x, w, b, rm, rv, axis, eps)
    return call.run(out, tuple(x.shape), _batch_norm_cpu, _batch_norm_gpu, ax, eps_f)


def _gradient(k: int, x1, x2, x3, y, gy, axis, eps, running_mean, running_var, out):
    op = f"batch_norm_wrt_x{k}"
    _running_pair(op, running_mean, running_var)
    call = _GRADIENTS[k].bind(x1, x2, x3, y, gy, running_mean, running_var)
    x, w, b, y, gy, rm, rv = call.inputs
    ax, eps_f = _check(op, x, w, b, rm, rv, axis, eps)
    check_shape(op, "y", y, tuple(x.shape))
    check_shape(op, "gy", gy, tuple(x.shape))
    target = (x, w, b)[k - 1]
    return call.run(out, tuple(target.shape), _GRAD_CPU[k], _GRAD_GPU[k], ax, eps_f,
                    dtype=target.dtype)


def batch_norm_wrt_x1(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *, axis: int = 1,
                      eps: float = 1e-5, running_mean: Array | None = None,
                      running_var: Array | None = None, out: Array | None = None) -> Array:
    """Training: gx = (x2/σ) (gy - mean(gy) - x̂ mean(gy x̂)) per channel; evaluation
    (running statistics given): gx = (x2/σ) gy."""
    return _gradient(1, x1, x2, x3, y, gy, axis, eps, running_mean, running_var, out)


def batch_norm_wrt_x2(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *, axis: int = 1,
                      eps: float = 1e-5, running_mean: Array | None = None,
                      running_var: Array | None = None, out: Array | None = None) -> Array:
    """g_weight_c = Σ gy · x̂ over the channel's values."""
    return _gradient(2, x1, x2, x3, y, gy, axis, eps, running_mean, running_var, out)


def batch_norm_wrt_x3(x1: Array, x2: Array, x3: Array, y: Array, gy: Array, *, axis: int = 1,
                      eps: float = 1e-5, running_mean: Array | None = None,
                      running_var: Array | None = None, out: Array | None = None) -> Array:
    """g_bias_c = Σ gy over the channel's values."""
    return _gradient(3, x1, x2, x3, y, gy, axis, eps, running_mean, running_var, out)


register(FAMILY, batch_norm, batch_norm_wrt_x1, batch_norm_wrt_x2, batch_norm_wrt_x3)


# ---- for nn.BatchNorm1d/2d: the running statistics ---------------------------------------

def update_running_stats(x1: Array, running_mean: Array, running_var: Array, *, axis: int = 1,
                         momentum: float = 0.1) -> None:
    """In place, as PyTorch: r_mean = (1 - m) r_mean + m μ, r_var = (1 - m) r_var +
    m v · M/(M - 1) (the unbiased batch variance; M > 1 values per channel), μ and v the
    batch statistics that :func:`batch_norm` uses (through the same kernels)."""
    op = "batch_norm"
    call = BATCH_NORM.bind(x1, running_mean, running_var, None, None)
    x = call.inputs[0]
    ax = _args.axis(op, axis, x.ndim)
    C, inner, M = _layout(tuple(x.shape), ax)
    check_shape(op, "running_mean", running_mean, (C,))
    check_shape(op, "running_var", running_var, (C,))
    if M < 2:
        raise ValueError(f"{op}: the running variance needs more than 1 value per channel, "
                         f"got input shape {tuple(x.shape)}")
    if call.uses_kernels:
        mean, var = _stats_gpu(call, call.contiguous(x), C, inner, M)
    else:
        mean, var = _stats_cpu(x, None, None, ax, call.dtype.type)
        mean, var = mean.reshape(C), var.reshape(C)
    m = float(momentum)
    running_mean[...] = (1 - m) * running_mean + m * mean
    running_var[...] = (1 - m) * running_var + m * var * (M / (M - 1))
