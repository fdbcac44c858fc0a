"""NumPy math shared by several families, each formula written once."""
from __future__ import annotations

from typing import Any

import numpy

Array = Any


def sigmoid(x: Array, out: Array | None = None) -> Array:
    """σ(x) = e^min(x,0) / (1 + e^-|x|) (1/(1+e^-x) for x >= 0, e^x/(1+e^x) below):
    no overflow, full relative precision in both tails. ``out`` must not overlap ``x``."""
    if out is None:
        out = numpy.empty(numpy.shape(x), numpy.result_type(x))
    numpy.minimum(x, 0, out=out)
    numpy.exp(out, out=out)
    denominator = numpy.exp(-numpy.abs(x))
    denominator += 1
    return numpy.divide(out, denominator, out=out)


def logistic_slope(x: Array, k: int) -> Array:
    """e/(1+e)² with e = e^(-k|x|): σ'(x) for k = 1, tanh'(x)/4 for k = 2."""
    e = numpy.exp(-k * numpy.abs(x))
    return e / numpy.square(1 + e)


def log_sum_exp_parts(x: Array, axis: int) -> tuple[Array, Array]:
    """(x - m, Σ e^(x - m)) along ``axis`` (keepdims), m the max: the stable pieces of
    softmax, log-softmax and the cross-entropy."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted, numpy.exp(shifted).sum(axis=axis, keepdims=True)
