"""transpose (materialized): a matrix and NCHW -> NHWC (32x33 shared-memory tiles) and a
general permutation (strided gather). ``bytes``: read once, written once. Baseline: a
contiguous copy of the transposed view (NumPy/CuPy ``.copy()``, PyTorch ``.contiguous()``)."""
from __future__ import annotations

import gpuops

from .harness import Case, Env


def _copy(m, v):
    return v.contiguous() if m.__name__ == "torch" else v.copy()


def cases(env: Env) -> list[Case]:
    n = env.size
    traffic = 2 * 4 * n
    mat = env.random((4096, n // 4096))
    nchw = env.random((n // (64 * 1024), 64, 32, 32))
    four = env.random((16, 32, n // (16 * 32 * 64), 64))
    return [
        Case(f"transpose (4096,n/4096) -> T", gpuops.transpose, (mat,), traffic,
             lambda m, u: _copy(m, u.T), note="tiles"),
        Case("transpose NCHW -> NHWC", lambda u: gpuops.transpose(u, axes=(0, 2, 3, 1)), (nchw,),
             traffic, lambda m, u: _copy(m, u.permute(0, 2, 3, 1) if m.__name__ == "torch"
                                         else u.transpose(0, 2, 3, 1)), note="tiles (N, C, HW)"),
        Case("transpose axes=(3,1,0,2)", lambda u: gpuops.transpose(u, axes=(3, 1, 0, 2)),
             (four,), traffic, lambda m, u: _copy(m, u.permute(3, 1, 0, 2) if m.__name__ == "torch"
                                                  else u.transpose(3, 1, 0, 2)),
             note="strided gather"),
    ]
