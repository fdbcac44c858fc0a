"""OpInfo record of conv2d. The float64 reference loops over the kernel offsets
(ki, kj) and multiplies shifted, strided slices of the padded input: no im2col.
Tolerances as for matmul (sums of up to C·KH·KW = 27 products)."""
from __future__ import annotations

import numpy

from opinfo import F16, F32, F64, ErrorInput, OpInfo, Sample

TOL = {F32: (1e-4, 1e-5), F16: (1e-2, 4e-2)}


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _windows(x, w, stride, padding, dilation):
    """Yield (ki, kj, slice (N, C, OH, OW), pad view) of the zero-padded input."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw = w.shape[2:]
    xp = numpy.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    for ki in range(kh):
        for kj in range(kw):
            rows = slice(ki * dh, ki * dh + sh * (oh - 1) + 1, sh)
            cols = slice(kj * dw, kj * dw + sw * (ow - 1) + 1, sw)
            yield ki, kj, (slice(None), slice(None), rows, cols), xp, (oh, ow), (ph, pw)


def _ref(x1, x2, x3, stride=1, padding=0, dilation=1):
    y = None
    for ki, kj, index, xp, (oh, ow), _ in _windows(x1, x2, stride, padding, dilation):
        if y is None:
            y = numpy.zeros((x1.shape[0], x2.shape[0], oh, ow))
        y += numpy.einsum("nchw,oc->nohw", xp[index], x2[:, :, ki, kj])
    return y + x3[None, :, None, None]


def _grad1(x1, x2, x3, y, gy, stride=1, padding=0, dilation=1):
    gx = None
    for ki, kj, index, xp, _, (ph, pw) in _windows(x1, x2, stride, padding, dilation):
        if gx is None:
            gx = numpy.zeros_like(xp)
        gx[index] += numpy.einsum("nohw,oc->nchw", gy, x2[:, :, ki, kj])
    return gx[:, :, ph:ph + x1.shape[2], pw:pw + x1.shape[3]]


def _grad2(x1, x2, x3, y, gy, stride=1, padding=0, dilation=1):
    gw = numpy.zeros_like(x2)
    for ki, kj, index, xp, _, _ in _windows(x1, x2, stride, padding, dilation):
        gw[:, :, ki, kj] = numpy.einsum("nohw,nchw->oc", gy, xp[index])
    return gw


def _grad3(x1, x2, x3, y, gy, stride=1, padding=0, dilation=1):
    return gy.sum(axis=(0, 2, 3))


# (x1 shape, x2 shape, params): square and non-square kernels, stride/padding/dilation
# as ints and pairs, overlapping windows (stride < span) and gaps (stride > kernel),
# 1x1 kernels, a kernel as large as the input, one element, no images, no channels.
CASES = [
    ((2, 3, 5, 5), (4, 3, 3, 3), {}),
    ((1, 2, 7, 6), (3, 2, 3, 2), {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2)}),
    ((2, 1, 4, 4), (2, 1, 1, 1), {}),
    ((1, 3, 5, 5), (2, 3, 5, 5), {}),
    ((1, 1, 1, 1), (1, 1, 1, 1), {}),
    ((0, 2, 4, 4), (3, 2, 2, 2), {"padding": 1}),
    ((2, 2, 6, 5), (3, 2, 2, 3), {"stride": 3, "padding": 2}),
    ((1, 2, 6, 6), (2, 2, 3, 3), {"stride": 2, "padding": 2, "dilation": 2}),
    ((1, 0, 3, 3), (2, 0, 2, 2), {}),
    ((1, 1, 3, 2), (1, 1, 2, 2), {"padding": (0, 1), "stride": (1, 2)}),
]


def _samples(rng):
    for s1, s2, params in CASES:
        yield Sample((rng.standard_normal(s1), rng.standard_normal(s2),
                      rng.standard_normal(s2[0])), params,
                     f"{'x'.join(map(str, s1))}-w{'x'.join(map(str, s2))}-"
                     + "-".join(f"{k}{v}" for k, v in params.items()))


def _errors(rng):
    x, w, b = (rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)),
               rng.standard_normal(3))
    yield ErrorInput((x, w, b), {"stride": 0}, ValueError, "stride must be >= 1, got 0")
    yield ErrorInput((x, w, b), {"stride": (1, -2)}, ValueError,
                     r"stride must be >= 1, got \(1, -2\)")
    yield ErrorInput((x, w, b), {"padding": -1}, ValueError, "padding must be >= 0, got -1")
    yield ErrorInput((x, w, b), {"dilation": 0}, ValueError, "dilation must be >= 1, got 0",
                     fn=2)
    yield ErrorInput((x, w, b), {"stride": "2"}, TypeError, "stride must be an int or a pair")
    yield ErrorInput((x, w, b), {"stride": (1, 2, 3)}, TypeError, r"got \(1, 2, 3\)")
    yield ErrorInput((x, rng.standard_normal((3, 2, 7, 3)), b), {}, ValueError,
                     "kernel 7x3 .* does not fit the padded input 5x5")
    yield ErrorInput((x, w, b), {"dilation": 3}, ValueError, "spans 7x7")
    yield ErrorInput((x, rng.standard_normal((3, 4, 3, 3)), b), {}, ValueError,
                     r"same C; got shapes \(1, 2, 5, 5\) and \(3, 4, 3, 3\)")
    yield ErrorInput((x[0], w, b), {}, ValueError, r"\(2, 5, 5\)")
    yield ErrorInput((x, w, rng.standard_normal(2)), {}, ValueError, r"got \(2,\)", fn=1)
    yield ErrorInput((x, w, None), {}, ValueError, "x3 is None", fn=3)
    yield ErrorInput((x, w, b), {"stride": 1.5}, TypeError, "got 1.5")
    yield ErrorInput((x, w, b), {"stride": True}, TypeError, "got True")
    yield ErrorInput((x, w, b), {"padding": (1, 1.0)}, TypeError,
                     r"padding must be an int or a pair of ints, got \(1, 1.0\)")
    yield ErrorInput((x, w, b), {"dilation": -1}, ValueError, "dilation must be >= 1, got -1")
    yield ErrorInput((x, w, b), {"padding": (0, -2)}, ValueError, r"got \(0, -2\)", fn=1)
    yield ErrorInput((x, w[0], b), {}, ValueError, r"\(1, 2, 5, 5\) and \(2, 3, 3\)")
    yield ErrorInput((x, w, b[:, None]), {}, ValueError, r"must have shape \(3,\).*got \(3, 1\)")
    # a padding whose buffers no memory holds: checked before anything is allocated
    yield ErrorInput((x, w, b), {"padding": 10 ** 12}, ValueError,
                     "padding 1000000000000 asks for an impossible buffer")
    yield ErrorInput((x, w, b), {"padding": (0, 10 ** 12)}, ValueError,
                     r"padding \(0, 1000000000000\) asks for an impossible buffer", fn=1)


RECORDS = [
    OpInfo(name="conv2d", ref=_ref, samples=_samples,
           grad_refs={1: _grad1, 2: _grad2, 3: _grad3}, gpu_dtypes=(F32, F64, F16), tol=TOL,
           error_inputs=_errors),
]
