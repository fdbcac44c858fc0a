"""OpInfo record of the attention family (float64 references in plain NumPy: the whole
score matrix, a masked softmax, the dense gradient formulas)."""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# (q shape, k shape, v shape, params): Tq != Tk both ways, D != Dv, causal and not, a batch
# of heads, 2-d inputs (one slice), D = 1, Tq = 1, several tiles of 16 (8 for float64)
# rows, an explicit scale, Tk = 0 (rows that see no key: y = 0) and Tq = 0.
CASES = [
    ((2, 5, 8), (2, 7, 8), (2, 7, 8), {}),
    ((2, 5, 8), (2, 7, 8), (2, 7, 8), {"causal": True}),
    ((2, 9, 4), (2, 6, 4), (2, 6, 3), {"causal": True}),
    ((2, 3, 6, 4), (2, 3, 6, 4), (2, 3, 6, 4), {"scale": 0.5}),
    ((4, 1), (6, 1), (6, 2), {}),
    ((2, 1, 8), (2, 10, 8), (2, 10, 8), {"causal": True}),
    ((1, 19, 4), (1, 21, 4), (1, 21, 3), {"causal": True}),
    ((1, 18, 3), (1, 35, 3), (1, 35, 2), {"scale": -0.7}),
    ((2, 3, 4), (2, 0, 4), (2, 0, 5), {}),
    ((2, 0, 4), (2, 3, 4), (2, 3, 5), {"causal": True}),
]


def _samples(rng):
    for qs, ks, vs, params in CASES:
        name = "-".join("x".join(map(str, s)) for s in (qs, ks, vs))
        name += "".join(f"-{key}={value}" for key, value in params.items())
        yield Sample((rng.standard_normal(qs), rng.standard_normal(ks), rng.standard_normal(vs)),
                     params, name)


def _probabilities(q, k, causal=False, scale=None):
    scale = 1 / numpy.sqrt(q.shape[-1]) if scale is None else scale
    s = scale * numpy.einsum("...id,...jd->...ij", q, k)
    if causal:
        tq, tk = s.shape[-2:]
        s = numpy.where(numpy.tri(tq, tk, dtype=bool), s, -numpy.inf)
    if s.shape[-1] == 0:
        return s, scale
    e = numpy.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True), scale


def _attention(q, k, v, causal=False, scale=None):
    p, _ = _probabilities(q, k, causal, scale)
    return p @ v


def _score_gradient(q, k, v, gy, causal, scale):
    """scale dS with dS_ij = P_ij (dP_ij - Σ_l P_il dP_il), dP = gy v^T (the softmax Jacobian)."""
    p, scale = _probabilities(q, k, causal, scale)
    dp = gy @ numpy.swapaxes(v, -1, -2)
    return p, scale * p * (dp - (p * dp).sum(axis=-1, keepdims=True))


def _grad_q(q, k, v, y, gy, causal=False, scale=None):
    return _score_gradient(q, k, v, gy, causal, scale)[1] @ k


def _grad_k(q, k, v, y, gy, causal=False, scale=None):
    return numpy.swapaxes(_score_gradient(q, k, v, gy, causal, scale)[1], -1, -2) @ q


def _grad_v(q, k, v, y, gy, causal=False, scale=None):
    return numpy.swapaxes(_probabilities(q, k, causal, scale)[0], -1, -2) @ gy


def _errors(rng):
    q, k, v = (rng.standard_normal(s) for s in ((2, 3, 4), (2, 5, 4), (2, 5, 6)))
    yield ErrorInput((q, k, v), {"causal": 1}, TypeError, "causal must be a bool, got 1")
    yield ErrorInput((q, k, v), {"causal": None}, TypeError, "causal must be a bool", fn=2)
    yield ErrorInput((q, k, v), {"scale": "2"}, TypeError, "scale must be a Python int or float")
    yield ErrorInput((q, k, v), {"scale": float("nan")}, ValueError, "scale must be finite")
    yield ErrorInput((q, k, v), {"scale": float("inf")}, ValueError, "finite, got inf", fn=3)
    yield ErrorInput((q[0, 0], k, v), {}, ValueError, r"x1 must have at least 2 dims.*\(4,\)")
    yield ErrorInput((q, k, v[0, 0]), {}, ValueError, r"x3 must have at least 2 dims")
    yield ErrorInput((q, k[:1], v[:1]), {}, ValueError,
                     r"x2 has shape \(1, 5, 4\); its leading axes must be x1's \(2,\)")
    yield ErrorInput((q, k, v[None]), {}, ValueError, r"x3 has shape \(1, 2, 5, 6\)", fn=1)
    yield ErrorInput((q, k[..., :3], v), {}, ValueError, r"x2 has shape \(2, 5, 3\): D = 3, "
                     r"expected x1's D = 4")
    yield ErrorInput((q, k, v[:, :4]), {}, ValueError, r"x3 has shape \(2, 4, 6\): 4 keys, "
                     r"expected x2's Tk = 5", fn=2)
    yield ErrorInput((q[..., :0], k[..., :0], v), {}, ValueError, "D = 0, expected D >= 1")
    # the gradients: y and gy of the result's shape (2, 3, 6)
    yield ErrorInput((q, k, v, numpy.ones((2, 3, 4)), numpy.ones((2, 3, 6))), {}, ValueError,
                     r"y has shape \(2, 3, 4\); expected \(2, 3, 6\)", fn=1)
    yield ErrorInput((q, k, v, numpy.ones((2, 3, 6)), numpy.ones((3, 6))), {}, ValueError,
                     r"gy has shape \(3, 6\); expected \(2, 3, 6\)", fn=3)


RECORDS = [
    OpInfo(name="attention", ref=_attention, samples=_samples,
           grad_refs={1: _grad_q, 2: _grad_k, 3: _grad_v}, gpu_dtypes=(F16, BF16, F32, F64),
           # float16: inputs rounded to 2^-11 relative move scores by ~1e-3 and the
           # gradients (sums over up to 35 keys) by a few 1e-3.
           # bfloat16: the gradients read Δ_i = Σ_c gy_ic y_ic from the rounded y (as
           # PyTorch's backward does), off by up to 2^-8 Σ_c |gy_ic y_ic|; gq_i =
           # scale Σ_j P_ij (dP_ij - Δ_i) k_j moves by scale δΔ_i Σ_j P_ij k_j, an absolute
           # error (Σ_j dS_ij = 0: gq cancels, the error does not), likewise gk. Worst case
           # on these samples 2.5e-2; the Dv roundings have random signs, the excess over
           # the rtol measured at most 1.7e-3: atol 2^-8. Against Δ from the rounded y the
           # kernels and NumPy need no atol (tests/ops/test_attention.py).
           tol={F16: (1e-2, 5e-3), BF16: (2e-5 + 2.0 ** -7, 2.0 ** -8)}, error_inputs=_errors),
]
