"""OpInfo records of matmul and linear (float64 references with einsum, not matmul).

Tolerances: float32 sums of up to 130 products carry about K·2^-24 of Σ|a·b| of
rounding, so float32 gets (1e-4, 1e-5). float16 (kernel backends only) is rounded once
at the end (2^-11 relative) against the reference, but the parity test compares it with
float32 NumPy on inputs *not* rounded to half: that input rounding moves a sum of K = 130
products of unit normals by about √K·2^-11·√2 ≈ 0.01 (several times that at the tail),
so float16 gets (1e-2, 4e-2). bfloat16 takes the 16-bit default, float32's plus two
roundings (2 · 2^-8): its cases (forward, reference gradients, kernel-vs-NumPy parity)
compare on the bfloat16-rounded inputs, so only the float32 sums and the rounding of
the result (and of the gradients' intermediate g = gy·act'(y)) enter.
"""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

TOL = {F32: (1e-4, 1e-5), F16: (1e-2, 4e-2)}


def _unbroadcast(g, shape):
    """Sum g over the leading dims and the size-1 dims broadcasting added to ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, s in enumerate(shape):
        if s == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def _matrices(x1, x2, *results):
    """NumPy's 1-d rule, written out: a 1-d x1 is the row (1, n), a 1-d x2 the column
    (n, 1), and the product's arrays (y, gy) get those unit axes back."""
    if x2.ndim == 1:
        x2 = x2[:, None]
        results = tuple(r[..., None] for r in results)
    if x1.ndim == 1:
        x1 = x1[None, :]
        results = tuple(r[..., None, :] for r in results)
    return (x1, x2, *results)


def _matmul_ref(x1, x2):
    ys = numpy.einsum("...mk,...kn->...mn", *_matrices(x1, x2))
    if x2.ndim == 1:
        ys = ys[..., 0]
    if x1.ndim == 1:
        ys = ys[..., 0, :] if x2.ndim > 1 else ys[..., 0]
    return ys


def _matmul_grad1(x1, x2, y, gy):
    a, b, g = _matrices(x1, x2, gy)
    return _unbroadcast(numpy.einsum("...mn,...kn->...mk", g, b), a.shape).reshape(x1.shape)


def _matmul_grad2(x1, x2, y, gy):
    a, b, g = _matrices(x1, x2, gy)
    return _unbroadcast(numpy.einsum("...mk,...mn->...kn", a, g), b.shape).reshape(x2.shape)


# (x1 shape, x2 shape): 1 and primes for M, N, K; sizes past one 128 tile; K = 0;
# 0-size batch, rows and columns; batch broadcasting both ways; 4 batch dims that no
# coalescing folds (the kernels' fallback paths); a transposed (column-major) x1.
MATMUL_SHAPES = [
    ((1, 1), (1, 1)), ((3, 5), (5, 7)), ((13, 1), (1, 17)), ((1, 11), (11, 1)),
    ((131, 7), (7, 129)), ((67, 130), (130, 3)), ((3, 0), (0, 4)), ((0, 3), (3, 4)),
    ((2, 0, 3, 3), (3, 2)), ((2, 3, 4), (4, 5)), ((4, 3), (2, 3, 5)),
    ((2, 1, 3, 4), (1, 3, 4, 5)), ((2, 1, 2, 1, 2, 3), (1, 2, 1, 2, 3, 2)),
    # 1-d operands (NumPy's rules): vector·vector (0-d), vector @ matrix, matrix @ vector,
    # a vector against a batch, K = 0, a 0-size batch, past one 128 tile
    ((5,), (5,)), ((1,), (1,)), ((7,), (7, 3)), ((4, 6), (6,)), ((3,), (2, 3, 4)),
    ((2, 3, 4), (4,)), ((0,), (0,)), ((0,), (0, 3)), ((2, 0, 3), (3,)), ((130,), (130, 129)),
]


def _matmul_samples(rng):
    for s1, s2 in MATMUL_SHAPES:
        yield Sample((rng.standard_normal(s1), rng.standard_normal(s2)))
    x1t = rng.standard_normal((5, 9)).T  # (9, 5), column-major: the transposed path
    yield Sample((x1t, rng.standard_normal((5, 6))), name="transposed-9x5-5x6")


def _matmul_errors(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 6))
    yield ErrorInput((a, b), {}, ValueError, r"\(3, 4\) and \(5, 6\) do not match")
    yield ErrorInput((a, b), {}, ValueError, r"\(3, 4\) and \(5, 6\) do not match", fn=1)
    yield ErrorInput((rng.standard_normal(4), rng.standard_normal((5, 2))), {}, ValueError,
                     r"\(4,\) and \(5, 2\) do not match.*x1.shape\[-1\] = 4 != "
                     r"x2.shape\[-2\] = 5")
    yield ErrorInput((a, rng.standard_normal(5)), {}, ValueError,
                     r"\(3, 4\) and \(5,\) do not match.*x2.shape\[0\] = 5", fn=2)
    yield ErrorInput((rng.standard_normal(4), rng.standard_normal(3)), {}, ValueError,
                     r"\(4,\) and \(3,\) do not match", fn=1)
    yield ErrorInput((rng.standard_normal(4), a), {}, ValueError,
                     r"\(4,\) and \(3, 4\) do not match")
    yield ErrorInput((rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4, 5))), {},
                     ValueError, r"batch dims of \(2, 3, 4\) and \(3, 4, 5\) do not broadcast")
    yield ErrorInput((numpy.ones(()), a), {}, ValueError, r"at least 1 dim, got shapes \(\)")
    yield ErrorInput((a, numpy.ones(())), {}, ValueError,
                     r"at least 1 dim, got shapes \(3, 4\) and \(\)", fn=2)
    v = rng.standard_normal(4)
    yield ErrorInput((v, v, numpy.ones(1), numpy.ones(())), {}, ValueError,
                     r"y has shape \(1,\); expected \(\)", fn=1)
    yield ErrorInput((v, v[:, None], numpy.ones(()), numpy.ones(())), {}, ValueError,
                     r"y has shape \(\); expected \(1,\)", fn=2)
    yield ErrorInput((a, b), {}, ValueError, r"\(3, 4\) and \(5, 6\) do not match", fn=2)
    yield ErrorInput((a, a.T, numpy.ones((3, 4)), numpy.ones((3, 3))), {}, ValueError,
                     r"y has shape \(3, 4\)", fn=1)


_ACT = {
    None: (lambda z: z, lambda z: numpy.ones_like(z)),
    "relu": (lambda z: numpy.where(z > 0, z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "sigmoid": (lambda z: 1 / (1 + numpy.exp(-z)),
                lambda z: numpy.exp(-z) / (1 + numpy.exp(-z)) ** 2),
    "tanh": (numpy.tanh, lambda z: 1 / numpy.cosh(z) ** 2),
}


def _pre(x1, x2, x3):
    return numpy.einsum("...i,oi->...o", x1, x2) + x3


def _linear_ref(x1, x2, x3, activation=None):
    return _ACT[activation][0](_pre(x1, x2, x3))


def _linear_g(x1, x2, x3, gy, activation):
    """gy times the activation's derivative at the pre-activation (not through y)."""
    return gy * _ACT[activation][1](_pre(x1, x2, x3))


def _linear_grad1(x1, x2, x3, y, gy, activation=None):
    return numpy.einsum("...o,oi->...i", _linear_g(x1, x2, x3, gy, activation), x2)


def _linear_grad2(x1, x2, x3, y, gy, activation=None):
    g = _linear_g(x1, x2, x3, gy, activation)
    rows = g.size // x2.shape[0]
    return numpy.einsum("ro,ri->oi", g.reshape(rows, x2.shape[0]), x1.reshape(rows, x2.shape[1]))


def _linear_grad3(x1, x2, x3, y, gy, activation=None):
    g = _linear_g(x1, x2, x3, gy, activation)
    return g.reshape(g.size // x2.shape[0], x2.shape[0]).sum(axis=0)


# (x1 shape, out_features, activation): rows of 1, leading dims, a 1-d x1, no rows,
# in_features 0 (y = act(bias)), sizes past one 128 tile. The bias is always given
# here (the generic tests differentiate every input); x3=None is in test_matmul.py.
LINEAR_CASES = [
    ((4, 5), 3, None), ((2, 3, 7), 6, "relu"), ((7,), 2, "sigmoid"), ((13, 1), 1, "tanh"),
    ((0, 4), 3, None), ((5, 0), 3, "sigmoid"), ((130, 9), 131, "relu"), ((1, 17), 5, "tanh"),
]


def _linear_samples(rng):
    for shape, out_features, activation in LINEAR_CASES:
        x1 = rng.standard_normal(shape)
        x2 = rng.standard_normal((out_features, shape[-1])) / max(1, shape[-1]) ** 0.5
        x3 = rng.standard_normal(out_features)
        yield Sample((x1, x2, x3), {"activation": activation},
                     f"{'x'.join(map(str, shape))}-out{out_features}-{activation}")


def _linear_errors(rng):
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    yield ErrorInput((x, rng.standard_normal((3, 4)), b), {}, ValueError,
                     r"got shapes \(4, 5\) and \(3, 4\)")
    yield ErrorInput((x, rng.standard_normal(5), b), {}, ValueError, r"\(5,\)")
    yield ErrorInput((x, w, rng.standard_normal(4)), {}, ValueError,
                     r"x3 \(bias\) must have shape \(3,\).*got \(4,\)")
    yield ErrorInput((x, w, b), {"activation": "gelu"}, ValueError, "'gelu'")
    yield ErrorInput((x, w, b), {"activation": "gelu"}, ValueError, "'gelu'", fn=2)
    yield ErrorInput((x, w, None), {}, ValueError, "x3 is None", fn=3)
    yield ErrorInput((x, w, b[None]), {}, ValueError, r"must have shape \(3,\).*got \(1, 3\)")
    yield ErrorInput((x, w, b), {"activation": 1}, ValueError, "got 1")
    yield ErrorInput((x, w, b), {"activation": "ReLU"}, ValueError, "'ReLU'", fn=1)
    yield ErrorInput((x, rng.standard_normal((3, 4)), b), {}, ValueError,
                     r"\(4, 5\) and \(3, 4\)", fn=1)


RECORDS = [
    OpInfo(name="matmul", ref=_matmul_ref, samples=_matmul_samples,
           grad_refs={1: _matmul_grad1, 2: _matmul_grad2}, gpu_dtypes=(F16, BF16, F32, F64),
           tol=TOL, error_inputs=_matmul_errors),
    OpInfo(name="linear", ref=_linear_ref, samples=_linear_samples,
           grad_refs={1: _linear_grad1, 2: _linear_grad2, 3: _linear_grad3},
           gpu_dtypes=(F16, BF16, F32, F64), tol=TOL, error_inputs=_linear_errors),
]
