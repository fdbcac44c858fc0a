"""Inverted dropout with a counter-based mask. Kernels in cuda/dropout.cu.

y = x / (1 - p) where element i is kept, 0 where it is dropped. Whether element i
is kept is a pure function of (seed, i) computed with Philox-4x32-10
(:func:`philox4x32_10`, the same arithmetic as ``cuda/philox.cuh``): the NumPy and
the CUDA paths drop the same elements bit for bit, and the gradient regenerates the
mask from the seed instead of storing it. Dropped elements are exactly 0 (also for
inf/NaN inputs). Every float dtype on every backend: a 16-bit x is widened to float32,
scaled by the float32 1/(1 - p) and rounded once.
"""
from __future__ import annotations

from typing import Any

import numpy

from ..backend import ALL_FLOAT_DTYPES
from ..call import Call, Signature, check_shape
from ..registry import register
from . import _args
from .elementwise import launch_vectors

__all__ = ["dropout", "dropout_wrt_x1"]

FAMILY = "dropout"
Array = Any

_MASK32 = numpy.uint64(0xFFFFFFFF)
_MULTIPLIERS = (numpy.uint64(0xD2511F53), numpy.uint64(0xCD9E8D57))
_WEYL = (numpy.uint64(0x9E3779B9), numpy.uint64(0xBB67AE85))


def philox4x32_10(counter: tuple, key: tuple) -> tuple:
    """Philox-4x32-10 (Salmon et al., SC 2011; Random123) on arrays of counters.

    ``counter``: four arrays (or ints) of 32-bit words, ``key``: two 32-bit ints.
    Returns four uint64 arrays holding the 32-bit output words. Each round:
    (c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
    with the key bumped by the Weyl constants before rounds 2..10.
    """
    c0, c1, c2, c3 = (numpy.asarray(c, dtype=numpy.uint64) for c in counter)
    k0, k1 = numpy.uint64(key[0]), numpy.uint64(key[1])
    m0, m1 = _MULTIPLIERS
    for round_ in range(10):
        if round_:
            k0 = (k0 + _WEYL[0]) & _MASK32
            k1 = (k1 + _WEYL[1]) & _MASK32
        p0 = m0 * c0  # < 2^64: exact in uint64
        p1 = m1 * c2
        c0, c1, c2, c3 = (p1 >> numpy.uint64(32)) ^ c1 ^ k0, p1 & _MASK32, \
            (p0 >> numpy.uint64(32)) ^ c3 ^ k1, p0 & _MASK32
    return c0, c1, c2, c3


def keep_mask(n: int, p: float, seed: int) -> numpy.ndarray:
    """The keep mask of ``n`` elements (bool, NumPy): element i is kept when Philox word
    i mod 4 of counter i // 4 is >= round(p · 2^32)."""
    groups = numpy.arange((n + 3) // 4, dtype=numpy.uint64)
    zeros = numpy.zeros_like(groups)
    words = philox4x32_10((groups & _MASK32, groups >> numpy.uint64(32), zeros, zeros),
                          (seed & 0xFFFFFFFF, seed >> 32))
    return (numpy.stack(words, axis=1).reshape(-1)[:n] >= numpy.uint64(_threshold(p)))


def _threshold(p: float) -> int:
    return min(round(p * 2.0**32), 2**32)


def _check_params(op: str, p: Any, seed: Any, training: Any) -> tuple[float, int]:
    """The drop probability (0 when not training: the identity) and the seed."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{op}: p must be a Python float, got {p!r}")
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"{op}: p must be in [0, 1], got {p!r}")
    key = _args.integer(op, "seed", seed)
    if not 0 <= key < 2**64:
        raise ValueError(f"{op}: seed must be in [0, 2^64), got {seed!r}")
    return (float(p) if _args.boolean(op, "training", training) else 0.0), key


# ---- NumPy and the kernel dropout_<dtype>(x, y, n, key0, key1, threshold, scale): --------
# y = x · scale where kept, 0 where dropped, the forward on x and the gradient on gy.
# p = 0 (also training=False) is the identity, p = 1 drops every element.

def _dropout_cpu(x: Array, y: Array, p: float, seed: int, scale: numpy.generic) -> None:
    if p == 0.0:
        y[...] = x
    elif p == 1.0:
        y[...] = 0
    else:
        numpy.multiply(x, scale, out=y)
        y[~keep_mask(x.size, p, seed).reshape(x.shape)] = 0


def _dropout_gpu(call: Call, x: Array, y: Array, p: float, seed: int,
                 scale: numpy.generic) -> None:
    if p == 0.0:
        y[...] = x
        return
    n = x.size  # (p = 1: threshold 2^32, no element is kept)
    launch_vectors(call, "dropout", n,
                   (x, y, numpy.int64(n), numpy.int64(seed & 0xFFFFFFFF), numpy.int64(seed >> 32),
                    numpy.int64(_threshold(p)), call.scalar(float(scale))))


DROPOUT = Signature("dropout", FAMILY, ("x1",), kernel_dtypes=ALL_FLOAT_DTYPES)
DROPOUT_GRAD = Signature("dropout_wrt_x1", FAMILY, ("x1", "y", "gy"),
                         kernel_dtypes=ALL_FLOAT_DTYPES)


def _keep_scale(call: Call, p: float) -> numpy.generic:
    """1 / (1 - p), the scale of the kept elements, in the call's computing dtype (float32
    for a 16-bit call: not rounded to 16 bits); 0 for p = 1."""
    return call.scalar(1.0 / (1.0 - p) if p < 1.0 else 0.0)


def dropout(x1: Array, *, p: float = 0.5, seed: int, training: bool = True,
            out: Array | None = None) -> Array:
    """Inverted dropout: each element is dropped (0) with probability p, kept and scaled
    by 1/(1 - p) otherwise; the mask is a function of (seed, element index).
    ``training=False`` or p = 0 is the identity, p = 1 gives zeros."""
    prob, key = _check_params("dropout", p, seed, training)
    call = DROPOUT.bind(x1)
    (x,) = call.inputs
    return call.run(out, x.shape, _dropout_cpu, _dropout_gpu, prob, key,
                    _keep_scale(call, prob))


def dropout_wrt_x1(x1: Array, y: Array, gy: Array, *, p: float = 0.5, seed: int,
                   training: bool = True, out: Array | None = None) -> Array:
    """gy where x1 was kept (scaled by 1/(1 - p)), 0 where dropped: the same mask,
    regenerated from ``seed``."""
    prob, key = _check_params("dropout_wrt_x1", p, seed, training)
    call = DROPOUT_GRAD.bind(x1, y, gy)
    x, y, gy = call.inputs
    check_shape(call.op, "y", y, x.shape)
    check_shape(call.op, "gy", gy, x.shape)
    # dropout is linear in x: its gradient is dropout applied to gy
    return call.run(out, x.shape, _dropout_cpu, _dropout_gpu, prob, key,
                    _keep_scale(call, prob), dtype=x.dtype, inputs=(gy,))


register(FAMILY, dropout, dropout_wrt_x1)
