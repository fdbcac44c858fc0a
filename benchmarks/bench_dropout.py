"""Dropout (Philox mask computed on the fly) forward and gradient, float32.
Baselines: on the CPU the bare NumPy expression ``x * (random(shape) >= p) / (1 - p)``
(its generator is NumPy's, not Philox); on the GPU the same with CuPy, and PyTorch's
``dropout``. ``bytes``: x (or gy) read once, the result written once."""
from __future__ import annotations

import gpuops

from .harness import Case, Env

P = 0.5


def _reference(m, u):
    if m.__name__ == "torch":
        return m.nn.functional.dropout(u, P)
    return u * (m.random.random(u.shape) >= P) / (1 - P)


def cases(env: Env) -> list[Case]:
    n = env.size
    x = env.random(n)
    gy = env.random(n)
    y = gpuops.dropout(x, p=P, seed=1)
    return [
        Case("dropout p=0.5", lambda u: gpuops.dropout(u, p=P, seed=1), (x,), 2 * 4 * n,
             _reference),
        Case("dropout_wrt_x1 p=0.5",
             lambda u, y, g: gpuops.dropout_wrt_x1(u, y, g, p=P, seed=1), (x, y, gy), 2 * 4 * n,
             None, note="regenerates the mask"),
    ]
