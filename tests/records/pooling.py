"""OpInfo records of max_pool2d and avg_pool2d (float64 references by explicit window loops,
transcribing PyTorch's rules: output size, ceil_mode, dilation, the average's divisor).

Max samples hold distinct values at least 0.05 apart, so finite differences never cross
a tie; ties, NaN and dilated windows that hold no input element are tested in
tests/ops/test_pooling.py.
"""
from __future__ import annotations

import itertools
import math

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# (input shape, params): kernel/stride/padding as ints and pairs, stride None, windows
# that overlap, tile or leave rows over, maximal padding, 1x1, 0-size batch and channels;
# ceil_mode (last windows past the padding, an input smaller than the kernel), unbatched
# (C, H, W) inputs.
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
    ((1, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((1, 2, 5, 8), {"kernel_size": (2, 3), "stride": 2, "ceil_mode": True}),
    ((1, 1, 1, 1), {"kernel_size": 2, "ceil_mode": True}),
    ((2, 4, 4), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((3, 7, 6), {"kernel_size": 2}),
    ((0, 4, 4), {"kernel_size": 2}),
]
MAX_CASES = [  # dilation
    ((1, 2, 7, 8), {"kernel_size": 3, "stride": 1, "padding": 1, "dilation": 2}),
    ((1, 2, 9, 7), {"kernel_size": (2, 3), "stride": 2, "dilation": (3, 1), "ceil_mode": True}),
    ((2, 8, 7), {"kernel_size": 2, "stride": (1, 2), "padding": 1, "dilation": (2, 3)}),
]
AVG_CASES = [  # count_include_pad, divisor_override
    ((1, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
    ((1, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                    "count_include_pad": False}),
    ((1, 2, 5, 5), {"kernel_size": 2, "stride": 1, "padding": 1, "divisor_override": 3}),
    ((2, 6, 7), {"kernel_size": (3, 2), "stride": 2, "padding": 1, "ceil_mode": True,
                 "count_include_pad": False, "divisor_override": -5}),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _size(n, k, s, p, d, ceil_mode):
    """Output size along one axis: floor or ceil of (n + 2p - extent) / s, plus 1; in ceil
    mode the last window must start before n + p."""
    span = n + 2 * p - (d * (k - 1) + 1)
    size = (math.ceil(span / s) if ceil_mode else math.floor(span / s)) + 1
    if ceil_mode and (size - 1) * s >= n + p:
        size -= 1
    return size


def _geometry(shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
              count_include_pad=True, divisor_override=None):
    kh, kw = _pair(kernel_size)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    OH = _size(shape[2], kh, sh, ph, dh, ceil_mode)
    OW = _size(shape[3], kw, sw, pw, dw, ceil_mode)
    return dict(kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw, OH=OH, OW=OW,
                count_include_pad=count_include_pad, divisor_override=divisor_override)


def _window(x, oh, ow, g):
    """The input positions (h, w) of window (oh, ow), row-major, padding left out."""
    h0, w0 = oh * g["sh"] - g["ph"], ow * g["sw"] - g["pw"]
    return [(h, w) for h in range(h0, h0 + g["kh"] * g["dh"], g["dh"])
            for w in range(w0, w0 + g["kw"] * g["dw"], g["dw"])
            if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]]


def _divisor(x, oh, ow, g):
    """PyTorch's avg_pool2d divisor: the override, else the window clipped to the padded
    input (count_include_pad) or to the input."""
    if g["divisor_override"] is not None:
        return g["divisor_override"]
    H, W = x.shape[2], x.shape[3]
    h0, w0 = oh * g["sh"] - g["ph"], ow * g["sw"] - g["pw"]
    h1, w1 = min(h0 + g["kh"], H + g["ph"]), min(w0 + g["kw"], W + g["pw"])
    if g["count_include_pad"]:
        return (h1 - h0) * (w1 - w0)
    return (min(h1, H) - max(h0, 0)) * (min(w1, W) - max(w0, 0))


def _outputs(x, g):
    return itertools.product(range(x.shape[0]), range(x.shape[1]), range(g["OH"]),
                             range(g["OW"]))


def _batched(fn):
    """fn over (N, C, H, W) arrays, applied to an unbatched (C, H, W) x as a batch of one."""
    def wrapper(x, *arrays, **params):
        if x.ndim == 3:
            return fn(x[None], *(a[None] for a in arrays), **params)[0]
        return fn(x, *arrays, **params)
    return wrapper


@_batched
def _ref_max(x, **params):
    g = _geometry(x.shape, **params)
    y = numpy.empty(x.shape[:2] + (g["OH"], g["OW"]))
    for n, c, oh, ow in _outputs(x, g):
        y[n, c, oh, ow] = max(x[n, c, h, w] for h, w in _window(x, oh, ow, g))
    return y


@_batched
def _grad_max(x, y, gy, **params):
    g = _geometry(x.shape, **params)
    gx = numpy.zeros(x.shape)
    for n, c, oh, ow in _outputs(x, g):
        cells = _window(x, oh, ow, g)
        best = max(cells, key=lambda hw: x[n, c, hw[0], hw[1]])  # the first maximum
        gx[n, c, best[0], best[1]] += gy[n, c, oh, ow]
    return gx


@_batched
def _ref_avg(x, **params):
    g = _geometry(x.shape, **params)
    y = numpy.empty(x.shape[:2] + (g["OH"], g["OW"]))
    for n, c, oh, ow in _outputs(x, g):
        y[n, c, oh, ow] = sum(x[n, c, h, w] for h, w in _window(x, oh, ow, g)) \
            / _divisor(x, oh, ow, g)
    return y


@_batched
def _grad_avg(x, y, gy, **params):
    g = _geometry(x.shape, **params)
    gx = numpy.zeros(x.shape)
    for n, c, oh, ow in _outputs(x, g):
        for h, w in _window(x, oh, ow, g):
            gx[n, c, h, w] += gy[n, c, oh, ow] / _divisor(x, oh, ow, g)
    return gx


def _samples(distinct: bool, extra: list):
    def samples(rng):
        for shape, params in CASES + extra:
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
    yield ErrorInput((x[0, 0],), {"kernel_size": 2}, ValueError,
                     r"3-d \(C, H, W\) or 4-d \(N, C, H, W\), got shape \(5, 5\)")
    yield ErrorInput((x[None],), {"kernel_size": 2}, ValueError, r"got shape \(1, 1, 2, 5, 5\)")
    yield ErrorInput((x[:, :, :1, :1],), {"kernel_size": 3, "stride": 2, "ceil_mode": True},
                     ValueError, r"1x1 .* smaller than the kernel \(3, 3\)")
    yield ErrorInput((x,), {"kernel_size": 2, "ceil_mode": 1}, TypeError,
                     "ceil_mode must be a bool, got 1")
    yield ErrorInput((x,), {"kernel_size": 2, "ceil_mode": None}, TypeError, "got None", fn=1)
    yield ErrorInput((x[0], numpy.ones((2, 2, 2)), numpy.ones((2, 2, 3))), {"kernel_size": 2},
                     ValueError, r"gy has shape \(2, 2, 3\); expected \(2, 2, 2\)", fn=1)
    yield ErrorInput((x[0], numpy.ones((1, 2, 2, 2)), numpy.ones((1, 2, 2, 2))),
                     {"kernel_size": 2}, ValueError,
                     r"y has shape \(1, 2, 2, 2\); expected \(2, 2, 2\)", fn=1)
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


def _max_errors(rng):
    yield from _errors(rng)
    x = rng.standard_normal((1, 2, 5, 5))
    yield ErrorInput((x,), {"kernel_size": 2, "dilation": 0}, ValueError,
                     "dilation must be >= 1, got 0")
    yield ErrorInput((x,), {"kernel_size": 2, "dilation": (1, 2.0)}, TypeError,
                     r"dilation must be an int or a pair of ints, got \(1, 2.0\)")
    yield ErrorInput((x,), {"kernel_size": 3, "dilation": (1, 3)}, ValueError,
                     r"5x5 .* smaller than the kernel \(3, 3\) dilated by \(1, 3\)")
    yield ErrorInput((x,), {"kernel_size": 2, "dilation": -1}, ValueError, "got -1", fn=1)


def _avg_errors(rng):
    yield from _errors(rng)
    x = rng.standard_normal((1, 2, 5, 5))
    yield ErrorInput((x,), {"kernel_size": 2, "divisor_override": 0}, ValueError,
                     "divisor_override must be nonzero, got 0")
    yield ErrorInput((x,), {"kernel_size": 2, "divisor_override": 2.0}, TypeError,
                     "divisor_override must be an int, got 2.0")
    yield ErrorInput((x,), {"kernel_size": 2, "divisor_override": True}, TypeError, "got True")
    yield ErrorInput((x,), {"kernel_size": 2, "count_include_pad": "no"}, TypeError,
                     "count_include_pad must be a bool, got 'no'")
    yield ErrorInput((x,), {"kernel_size": 2, "divisor_override": 0}, ValueError,
                     "divisor_override", fn=1)


KERNEL_DTYPES = (F16, BF16, F32, F64)  # the kernels: every float dtype

RECORDS = [
    OpInfo(name="max_pool2d", ref=_ref_max, samples=_samples(True, MAX_CASES),
           grad_refs={1: _grad_max}, gpu_dtypes=KERNEL_DTYPES, error_inputs=_max_errors),
    OpInfo(name="avg_pool2d", ref=_ref_avg, samples=_samples(False, AVG_CASES),
           grad_refs={1: _grad_avg}, gpu_dtypes=KERNEL_DTYPES, error_inputs=_avg_errors),
]
