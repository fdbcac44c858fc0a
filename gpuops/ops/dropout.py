"""Inverted dropout with a counter-based mask. Kernels in cuda/dropout.cu.

y = x / (1 - p) where element i is kept, 0 where it is dropped. Whether element i
is kept is a pure function of (seed, i) computed with Philox-4x32-10
(:func:`philox4x32_10`, the same arithmetic as ``cuda/philox.cuh``): the NumPy and
the CUDA paths drop the same elements bit for bit, and the gradient regenerates the
mask from the seed instead of storing it. Dropped elements are exactly 0 (also for
inf/NaN inputs).
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from ..backend import check_shape, output, prepare
from ..kernels import BLOCK, contiguous, finish, grid_1d, result_buffer, scalar, size, suffix
from ..registry import register

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


def _check_params(op: str, p: Any, seed: Any, training: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{op}: p must be a Python float, got {p!r}")
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"{op}: p must be in [0, 1], got {p!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)):
        raise TypeError(f"{op}: seed must be an int, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"{op}: seed must be in [0, 2^64), got {seed!r}")
    if not isinstance(training, (bool, numpy.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {training!r}")
    return float(p)


def _apply(x: Array, out: Array, dtype: numpy.dtype, backend, p: float, seed: int,
           training: bool) -> Array:
    """out = x masked and scaled (the forward on x, the gradient on gy)."""
    if not training or p == 0.0:
        out[...] = x
        return out
    if p == 1.0:
        out[...] = 0
        return out
    scale = 1.0 / (1.0 - p)
    if not backend.uses_kernels:
        keep = keep_mask(x.size, p, seed).reshape(x.shape)
        numpy.multiply(x, dtype.type(scale), out=out)
        out[~keep] = 0
        return out
    if out.size == 0:
        return out
    target = result_buffer(backend, out, dtype)
    groups = (x.size + 3) // 4
    backend.launcher.launch(FAMILY, f"dropout_{suffix(dtype)}", grid_1d(backend.launcher, groups),
                            (BLOCK,), (contiguous(backend, x, dtype), target, size(x.size),
                                       size(seed & 0xFFFFFFFF), size(seed >> 32),
                                       size(_threshold(p)), scalar(dtype, scale)))
    return finish(out, target)


def dropout(x1: Array, *, p: float = 0.5, seed: int, training: bool = True,
            out: Array | None = None) -> Array:
    """Inverted dropout: each element is dropped (0) with probability p, kept and scaled
    by 1/(1 - p) otherwise; the mask is a function of (seed, element index).
    ``training=False`` or p = 0 is the identity, p = 1 gives zeros."""
    prob = _check_params("dropout", p, seed, training)
    pr = prepare("dropout", ("x1",), (x1,))
    (x1,) = pr.arrays
    out = output("dropout", pr.backend, out, x1.shape, pr.dtype)
    return _apply(x1, out, pr.dtype, pr.backend, prob, int(seed), training)


def dropout_wrt_x1(x1: Array, y: Array, gy: Array, *, p: float = 0.5, seed: int,
                   training: bool = True, out: Array | None = None) -> Array:
    """gy where x1 was kept (scaled by 1/(1 - p)), 0 where dropped: the same mask,
    regenerated from ``seed``."""
    name = "dropout_wrt_x1"
    prob = _check_params(name, p, seed, training)
    pr = prepare(name, ("x1", "y", "gy"), (x1, y, gy))
    x1, y, gy = pr.arrays
    check_shape(name, "y", y, x1.shape)
    check_shape(name, "gy", gy, x1.shape)
    out = output(name, pr.backend, out, x1.shape, x1.dtype)
    return _apply(gy, out, pr.dtype, pr.backend, prob, int(seed), training)


register(FAMILY, dropout, dropout_wrt_x1)
