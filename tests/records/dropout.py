"""OpInfo record of dropout. The reference mask comes from a scalar, pure-Python
Philox-4x32-10 written here from the paper, independently of gpuops/dropout.py."""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

from .elementwise import offset_samples

MASK = 0xFFFFFFFF


def philox_words(counter: int, seed: int) -> list[int]:
    """Philox-4x32-10 of counter (counter mod 2^32, counter >> 32, 0, 0) under key
    (seed mod 2^32, seed >> 32), with Python integers."""
    c = [counter & MASK, counter >> 32, 0, 0]
    k = [seed & MASK, seed >> 32]
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & MASK, (k[1] + 0xBB67AE85) & MASK]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK]
    return c


def reference_keep(n: int, p: float, seed: int) -> numpy.ndarray:
    threshold = min(round(p * 2.0**32), 2**32)
    words = [w for j in range((n + 3) // 4) for w in philox_words(j, seed)]
    return numpy.array([w >= threshold for w in words[:n]], dtype=bool)


def _ref(x, p, seed, training=True):
    if not training or p == 0:
        return x.copy()
    if p == 1:
        return numpy.zeros_like(x)
    keep = reference_keep(x.size, p, seed).reshape(x.shape)
    return numpy.where(keep, x / (1 - p), 0.0)


def _grad_ref(x, y, g, p, seed, training=True):
    return _ref(g, p, seed, training)


CASES = [((257,), 0.5, 0), ((3, 4, 5), 0.1, 12345), ((33, 40), 0.9, 2**64 - 1),
         ((1,), 0.5, 7), ((), 0.3, 2**32 + 5), ((0,), 0.5, 1), ((1000,), 0.25, 2**40 + 3),
         ((5, 6), 0.0, 3), ((5, 6), 1.0, 3)]


def _samples(rng):
    for shape, p, seed in CASES:
        x = numpy.asarray(rng.standard_normal(shape))
        yield Sample((x,), {"p": p, "seed": seed}, f"{'x'.join(map(str, shape))}-p{p}-s{seed}")
    yield Sample((rng.standard_normal((4, 5)),), {"p": 0.5, "seed": 9, "training": False},
                 "eval")
    # misaligned for the 16-bit kernels: the groups of 4 one element at a time (the
    # bfloat16 view is the smallest sample, so the bfloat16 kernel tests take it)
    yield from offset_samples(rng.standard_normal, {"p": 0.3, "seed": 2**33 + 1}, (21, 19))


def _errors(rng):
    x = rng.standard_normal((3, 4))
    yield ErrorInput((x,), {"p": 1.5, "seed": 0}, ValueError, "1.5")
    yield ErrorInput((x,), {"p": -0.1, "seed": 0}, ValueError, "-0.1")
    yield ErrorInput((x,), {"p": float("nan"), "seed": 0}, ValueError, "nan")
    yield ErrorInput((x,), {"p": "0.5", "seed": 0}, TypeError, "'0.5'")
    yield ErrorInput((x,), {"p": 0.5, "seed": -1}, ValueError, "-1")
    yield ErrorInput((x,), {"p": 0.5, "seed": 2**64}, ValueError, str(2**64))
    yield ErrorInput((x,), {"p": 0.5, "seed": 1.0}, TypeError, "1.0")
    yield ErrorInput((x,), {"p": 0.5, "seed": 1, "training": "yes"}, TypeError, "'yes'")
    yield ErrorInput((x,), {"p": 2.0, "seed": 1}, ValueError, "2.0", fn=1)
    yield ErrorInput((x,), {"p": 0.5, "seed": None}, TypeError, "seed must be an int, got None")
    yield ErrorInput((x,), {"p": 0.5, "seed": True}, TypeError, "seed must be an int, got True")
    yield ErrorInput((x,), {"p": True, "seed": 1}, TypeError, "p must be a Python float, got True")
    yield ErrorInput((x,), {"p": float("inf"), "seed": 1}, ValueError, r"\[0, 1\], got inf")
    yield ErrorInput((x,), {"p": 0.5, "seed": 1.5}, TypeError, "seed must be an int, got 1.5",
                     fn=1)
    yield ErrorInput((x,), {"p": 0.5, "seed": -3}, ValueError, "-3", fn=1)


RECORDS = [
    OpInfo(name="dropout", ref=_ref, samples=_samples, grad_refs={1: _grad_ref},
           gpu_dtypes=(F16, BF16, F32, F64), error_inputs=_errors),
]
