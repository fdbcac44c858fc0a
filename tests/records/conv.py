"""OpInfo record of conv2d. The float64 reference loops over the kernel offsets
(ki, kj) and multiplies shifted, strided slices of the padded input: no im2col.
Tolerances as for matmul (sums of up to C·KH·KW = 27 products)."""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

TOL = {F32: (1e-4, 1e-5), F16: (1e-2, 4e-2)}


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pads(padding, stride, dilation, kernel):
    """((top, bottom), (left, right)): PyTorch's "same" puts the odd one at the end."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        assert _pair(stride) == (1, 1)
        totals = [d * (k - 1) for d, k in zip(_pair(dilation), kernel)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in _pair(padding))


def _windows(x, w, stride, padding, dilation):
    """Yield (ki, kj, slice (N, C, OH, OW), pad view, (oh, ow), (top, left)) of the
    zero-padded input."""
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    kh, kw = w.shape[2:]
    (pt, pb), (pl, pr) = _pads(padding, stride, dilation, (kh, kw))
    xp = numpy.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    for ki in range(kh):
        for kj in range(kw):
            rows = slice(ki * dh, ki * dh + sh * (oh - 1) + 1, sh)
            cols = slice(kj * dw, kj * dw + sw * (ow - 1) + 1, sw)
            yield ki, kj, (slice(None), slice(None), rows, cols), xp, (oh, ow), (pt, pl)


def _grouped(fn):
    """fn over batched, single-group arrays, applied per group (channels k·C/G.., filters
    k·O/G..) and to an unbatched x1 as a batch of one; the group results concatenated along
    ``axis`` (the channels of y / x1 / x2, or the bias)."""
    def wrapper(x1, x2, x3, *rest, groups=1, **params):
        unbatched = x1.ndim == 3
        if unbatched:
            x1, rest = x1[None], tuple(a[None] for a in rest)
        c, o = x1.shape[1] // groups, x2.shape[0] // groups
        parts = []
        for k in range(groups):
            sub = [a[:, k * o:(k + 1) * o] for a in rest]
            parts.append(fn(x1[:, k * c:(k + 1) * c], x2[k * o:(k + 1) * o],
                            x3[k * o:(k + 1) * o], *sub, **params))
        out = numpy.concatenate(parts, axis=0 if fn in (_grad2_1, _grad3_1) else 1)
        return out[0] if unbatched and fn in (_ref_1, _grad1_1) else out
    return wrapper


def _ref_1(x1, x2, x3, stride=1, padding=0, dilation=1):
    y = None
    for ki, kj, index, xp, (oh, ow), _ in _windows(x1, x2, stride, padding, dilation):
        if y is None:
            y = numpy.zeros((x1.shape[0], x2.shape[0], oh, ow))
        y += numpy.einsum("nchw,oc->nohw", xp[index], x2[:, :, ki, kj])
    return y + x3[None, :, None, None]


def _grad1_1(x1, x2, x3, y, gy, stride=1, padding=0, dilation=1):
    gx = None
    for ki, kj, index, xp, _, (pt, pl) in _windows(x1, x2, stride, padding, dilation):
        if gx is None:
            gx = numpy.zeros_like(xp)
        gx[index] += numpy.einsum("nohw,oc->nchw", gy, x2[:, :, ki, kj])
    return gx[:, :, pt:pt + x1.shape[2], pl:pl + x1.shape[3]]


def _grad2_1(x1, x2, x3, y, gy, stride=1, padding=0, dilation=1):
    gw = numpy.zeros_like(x2)
    for ki, kj, index, xp, _, _ in _windows(x1, x2, stride, padding, dilation):
        gw[:, :, ki, kj] = numpy.einsum("nohw,nchw->oc", gy, xp[index])
    return gw


def _grad3_1(x1, x2, x3, y, gy, stride=1, padding=0, dilation=1):
    return gy.sum(axis=(0, 2, 3))


_ref, _grad1, _grad2, _grad3 = map(_grouped, (_ref_1, _grad1_1, _grad2_1, _grad3_1))


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
    # groups: two groups of two channels, depthwise (groups = C, with stride and dilation),
    # depthwise with a channel multiplier (O = 2·C), three channels per group, no channels,
    # no images
    ((2, 4, 5, 5), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((2, 3, 6, 5), (3, 1, 3, 3), {"groups": 3, "stride": 2, "dilation": (1, 2)}),
    ((1, 2, 5, 5), (4, 1, 2, 2), {"groups": 2}),
    ((1, 6, 4, 4), (4, 3, 2, 3), {"groups": 2, "padding": "same"}),
    ((1, 0, 3, 3), (2, 0, 2, 2), {"groups": 2}),
    ((0, 4, 3, 3), (4, 1, 2, 2), {"groups": 4, "padding": 1}),
    # unbatched (C, H, W): plain, grouped with "same", depthwise with strides
    ((3, 5, 5), (4, 3, 3, 3), {}),
    ((4, 5, 4), (2, 2, 3, 2), {"groups": 2, "padding": "same"}),
    ((2, 6, 6), (2, 1, 3, 3), {"groups": 2, "stride": (2, 1), "padding": (1, 0)}),
    # padding strings: "same" with even kernels and dilation (asymmetric: the odd one at the
    # bottom / right), a 1x1 kernel (no padding), stride given as the pair (1, 1); "valid"
    ((2, 2, 5, 6), (3, 2, 4, 2), {"padding": "same", "dilation": (1, 2)}),
    ((1, 1, 4, 4), (1, 1, 2, 2), {"padding": "same", "dilation": 2}),
    ((1, 2, 3, 3), (2, 2, 1, 1), {"padding": "same", "stride": (1, 1)}),
    ((1, 2, 4, 5), (2, 2, 2, 3), {"padding": "same"}),
    ((1, 2, 5, 5), (2, 2, 3, 3), {"padding": "valid", "stride": 2}),
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
    yield ErrorInput((x[0, 0], w, b), {}, ValueError, r"\(5, 5\)")
    # groups: a wrong value, C or O not divisible, x2's channels not C / groups
    yield ErrorInput((x, w, b), {"groups": 0}, ValueError, "conv2d.*groups must be >= 1, got 0")
    yield ErrorInput((x, w, b), {"groups": 1.0}, TypeError, "groups must be an int, got 1.0",
                     fn=1)
    yield ErrorInput((x, w, b), {"groups": True}, TypeError, "groups must be an int, got True")
    yield ErrorInput((x, rng.standard_normal((3, 1, 3, 3)), b), {"groups": 3}, ValueError,
                     r"conv2d: groups=3 must divide the input channels C=2")
    x4 = rng.standard_normal((1, 4, 5, 5))
    yield ErrorInput((x4, rng.standard_normal((3, 2, 3, 3)), b), {"groups": 2}, ValueError,
                     r"groups=2 must divide the output channels O=3 of x2 \(3, 2, 3, 3\)")
    yield ErrorInput((x4, rng.standard_normal((4, 4, 3, 3)), rng.standard_normal(4)),
                     {"groups": 2}, ValueError, r"C/groups = 4/2 = 2 channels along dim 1, got 4")
    yield ErrorInput((x4, rng.standard_normal((4, 1, 3, 3)), rng.standard_normal(4)),
                     {"groups": 2}, ValueError, r"C/groups = 4/2 = 2 channels along dim 1, got 1",
                     fn=2)
    # padding strings: unknown, "same" with a stride, "valid" and a kernel larger than x
    yield ErrorInput((x, w, b), {"padding": "full"}, ValueError,
                     "padding must be an int, a pair of ints, 'same' or 'valid', got 'full'")
    yield ErrorInput((x, w, b), {"padding": "same", "stride": 2}, ValueError,
                     "padding='same' needs stride 1 .*got stride 2")
    yield ErrorInput((x, w, b), {"padding": "same", "stride": (1, 2)}, ValueError,
                     r"got stride \(1, 2\)", fn=2)
    yield ErrorInput((x, rng.standard_normal((3, 2, 6, 3)), b), {"padding": "valid"}, ValueError,
                     "kernel 6x3 .* does not fit the padded input 5x5")
    # unbatched: the channels still checked
    yield ErrorInput((x[0], rng.standard_normal((3, 3, 3, 3)), b), {}, ValueError,
                     r"same C; got shapes \(2, 5, 5\) and \(3, 3, 3, 3\)")
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
           grad_refs={1: _grad1, 2: _grad2, 3: _grad3}, gpu_dtypes=(F16, BF16, F32, F64), tol=TOL,
           error_inputs=_errors),
]
