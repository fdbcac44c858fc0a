"""Reductions: sum / mean / max over the patterns the kernels tell apart — a full
reduction to a scalar (two-stage), rows (warp per row, vector loads), columns (thread
per output), NCHW over (0, 2, 3) (block per output, split) — and the gradients.
``bytes``: x read once (the outputs are small). Baselines: NumPy/CuPy and PyTorch
reductions (``amax`` for max: PyTorch's ``max(dim)`` also computes indices)."""
from __future__ import annotations

import gpuops

from .harness import Case, Env

COLUMNS = 1024
CHANNELS = 64


def cases(env: Env) -> list[Case]:
    n = env.size
    full = 4 * n
    flat = env.random(n)
    rows = env.random((n // COLUMNS, COLUMNS))
    cols = env.random((COLUMNS, n // COLUMNS))
    nchw = env.random((n // (CHANNELS * 1024), CHANNELS, 32, 32))
    out = [
        Case("sum all (n,) -> ()", gpuops.sum, (flat,), full, lambda m, u: u.sum(),
             note="two-stage"),
        Case(f"sum rows (n/{COLUMNS},{COLUMNS}) axis=1", lambda u: gpuops.sum(u, axis=1), (rows,),
             full, lambda m, u: u.sum(1), note="warp per row"),
        Case(f"sum columns ({COLUMNS},n/{COLUMNS}) axis=0", lambda u: gpuops.sum(u, axis=0),
             (cols,), full, lambda m, u: u.sum(0), note="thread per output"),
        Case(f"sum NCHW C={CHANNELS} axis=(0,2,3)", lambda u: gpuops.sum(u, axis=(0, 2, 3)),
             (nchw,), full, lambda m, u: u.sum((0, 2, 3)), note="block per output, split"),
        Case(f"mean rows (n/{COLUMNS},{COLUMNS}) axis=1", lambda u: gpuops.mean(u, axis=1),
             (rows,), full, lambda m, u: u.mean(1)),
        Case("max all (n,) -> ()", gpuops.max, (flat,), full, lambda m, u: m.amax(u)),
        Case(f"max rows (n/{COLUMNS},{COLUMNS}) axis=1", lambda u: gpuops.max(u, axis=1),
             (rows,), full, lambda m, u: m.amax(u, 1)),
    ]
    y_sum = gpuops.sum(rows, axis=1)
    gy = env.random(y_sum.shape)
    out.append(Case("sum_wrt_x1 rows (broadcast back)",
                    lambda u, y, g: gpuops.sum_wrt_x1(u, y, g, axis=1), (rows, y_sum, gy),
                    full, None))
    y_max = gpuops.max(rows, axis=1)
    out.append(Case("max_wrt_x1 rows (ties split)",
                    lambda u, y, g: gpuops.max_wrt_x1(u, y, g, axis=1), (rows, y_max, gy),
                    2 * full, lambda m, u, y, g: g.reshape(-1, 1) * (u == y.reshape(-1, 1)),
                    note="3 launches (mask, count, share); baseline ignores ties"))
    return out
