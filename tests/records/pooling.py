"""OpInfo records of max_pool2d and avg_pool2d (float64 references by explicit window loops).

Max samples hold distinct values at least 0.05 apart, so finite differences never cross
a tie; ties and NaN are tested in tests/ops/test_pooling.py.
"""
from __future__ import annotations

import itertools

import numpy

from opinfo import ErrorInput, OpInfo, Sample

# (input shape, params): kernel/stride/padding as ints and pairs, stride None, windows
# that overlap, tile or leave rows over, maximal padding, 1x1, 0-size batch and channels.
CASES = [
    ((2, 3, 7, 6), {"kernel_size": 2}),
    ((2, 3, 7, 6), {"kernel_size": 3, "stride": 1, "padding": 1}),
    ((2, 3, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ((1, 2, 7, 6), {"kernel_size": 3, "stride": 3}),
    ((1, 2, 5, 8), {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0)}),
    ((1, 2, 5, 5), {"kernel_size": 2, "stride": 1, "padding": 1}),
    ((1, 1, 9, 9), {"kernel_size": 4, "stride": 2, "padding": 2}),
    ((1, 2, 3, 4), {"kernel_size": 1}),
    ((1, 1, 1, 1), {"kernel_size": 1, "stride": 2}),
    ((1, 1, 2, 2), {"kernel_size": 2, "padding": 1}),
    ((0, 2, 4, 4), {"kernel_size": 2}),
    ((2, 0, 4, 4), {"kernel_size": 2}),
    ((1, 1, 17, 20), {"kernel_size": 3, "stride": 2}),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _geometry(shape, kernel_size, stride=None, padding=0):
    kh, kw = _pair(kernel_size)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    ph, pw = _pair(padding)
    OH = (shape[2] + 2 * ph - kh) // sh + 1
    OW = (shape[3] + 2 * pw - kw) // sw + 1
    return kh, kw, sh, sw, ph, pw, OH, OW


def _window(x, n, c, oh, ow, g):
    """The input positions (h, w) of window (oh, ow), row-major, padding left out."""
    kh, kw, sh, sw, ph, pw, _, _ = g
    return [(h, w) for h in range(oh * sh - ph, oh * sh - ph + kh)
            for w in range(ow * sw - pw, ow * sw - pw + kw)
            if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]]


def _outputs(x, g):
    return itertools.product(range(x.shape[0]), range(x.shape[1]), range(g[6]), range(g[7]))


def _ref_max(x, **params):
    g = _geometry(x.shape, **params)
    y = numpy.empty(x.shape[:2] + (g[6], g[7]))
    for n, c, oh, ow in _outputs(x, g):
        y[n, c, oh, ow] = max(x[n, c, h, w] for h, w in _window(x, n, c, oh, ow, g))
    return y


def _grad_max(x, y, gy, **params):
    g = _geometry(x.shape, **params)
    gx = numpy.zeros(x.shape)
    for n, c, oh, ow in _outputs(x, g):
        cells = _window(x, n, c, oh, ow, g)
        best = max(cells, key=lambda hw: x[n, c, hw[0], hw[1]])  # the first maximum
        gx[n, c, best[0], best[1]] += gy[n, c, oh, ow]
    return gx


def _ref_avg(x, **params):
    g = _geometry(x.shape, **params)
    y = numpy.empty(x.shape[:2] + (g[6], g[7]))
    for n, c, oh, ow in _outputs(x, g):
        y[n, c, oh, ow] = sum(x[n, c, h, w] for h, w in _window(x, n, c, oh, ow, g)) / (g[0] * g[1])
    return y


def _grad_avg(x, y, gy, **params):
    g = _geometry(x.shape, **params)
    gx = numpy.zeros(x.shape)
    for n, c, oh, ow in _outputs(x, g):
        for h, w in _window(x, n, c, oh, ow, g):
            gx[n, c, h, w] += gy[n, c, oh, ow] / (g[0] * g[1])
    return gx


def _samples(distinct: bool):
    def samples(rng):
        for shape, params in CASES:
            n = int(numpy.prod(shape))
            x = ((rng.permutation(n) - n / 2) * 0.05).reshape(shape) if distinct \
                else rng.standard_normal(shape)
            yield Sample((x,), dict(params), f"{'x'.join(map(str, shape))}-{params}")
    return samples


def _errors(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    yield ErrorInput((x,), {"kernel_size": 0}, ValueError, "kernel_size must be >= 1, got 0")
    yield ErrorInput((x,), {"kernel_size": 2, "stride": (1, 0)}, ValueError,
                     r"stride must be >= 1, got \(1, 0\)")
    yield ErrorInput((x,), {"kernel_size": 2, "padding": -1}, ValueError, "padding must be >= 0")
    yield ErrorInput((x,), {"kernel_size": 3, "padding": 2}, ValueError,
                     r"padding \(2, 2\) must be at most half the kernel size \(3, 3\)")
    yield ErrorInput((x,), {"kernel_size": 6}, ValueError, r"5x5 .* smaller than the kernel \(6, 6\)")
    yield ErrorInput((x,), {"kernel_size": 2.0}, TypeError, "kernel_size must be an int or a pair")
    yield ErrorInput((x,), {"kernel_size": (2, 2, 2)}, TypeError, r"\(2, 2, 2\)")
    yield ErrorInput((x[0],), {"kernel_size": 2}, ValueError, r"4-d \(N, C, H, W\), got shape \(2, 5, 5\)")
    yield ErrorInput((x,), {"kernel_size": 0}, ValueError, "kernel_size", fn=1)
    yield ErrorInput((x, numpy.ones((1, 2, 5, 5)), numpy.ones((1, 2, 5, 5))), {"kernel_size": 2},
                     ValueError, r"y has shape \(1, 2, 5, 5\); expected \(1, 2, 2, 2\)", fn=1)
    yield ErrorInput((x,), {"kernel_size": -2}, ValueError, "kernel_size must be >= 1, got -2")
    yield ErrorInput((x,), {"kernel_size": True}, TypeError, "got True")
    yield ErrorInput((x,), {"kernel_size": None}, TypeError, "got None")
    yield ErrorInput((x,), {"kernel_size": 2, "stride": 0}, ValueError,
                     "stride must be >= 1, got 0")
    yield ErrorInput((x,), {"kernel_size": 2, "stride": 1.5}, TypeError, "got 1.5")
    yield ErrorInput((x,), {"kernel_size": 2, "padding": 1.0}, TypeError,
                     "padding must be an int or a pair of ints, got 1.0")
    yield ErrorInput((x,), {"kernel_size": 2, "stride": -1}, ValueError, "got -1", fn=1)


RECORDS = [
    OpInfo(name="max_pool2d", ref=_ref_max, samples=_samples(True), grad_refs={1: _grad_max},
           error_inputs=_errors),
    OpInfo(name="avg_pool2d", ref=_ref_avg, samples=_samples(False), grad_refs={1: _grad_avg},
           error_inputs=_errors),
]
