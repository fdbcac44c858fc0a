"""Matrix products and convolution: matmul (square, batched-broadcast, transposed operand,
float16 tensor cores), linear with a fused epilogue vs the unfused composition, linear's
weight gradient, conv2d forward and gradients.

These are compute-bound: the note gives the case's flop count (2·M·N·K), so
TFLOP/s = GFLOP in the note / milliseconds / 1000; ``bytes`` is still the minimum
traffic (each operand read once, the result written once). Baselines: ``cupy.matmul``
(cuBLAS) and PyTorch on the GPU — the issue's bar is >= 90% of cuBLAS SGEMM and >= 60%
of cuBLAS HGEMM at 4096³ — and NumPy's BLAS on the CPU (where gpuops' NumPy backend *is*
``numpy.matmul``, so the CPU ratio only shows wrapper overhead). conv2d has no baseline
spelled alike in NumPy, CuPy and PyTorch (reference=None).
"""
from __future__ import annotations

import numpy

import gpuops

from .harness import Case, Env


def _gflop(m: int, n: int, k: int, batch: int = 1) -> str:
    return f"{2 * m * n * k * batch / 1e9:.3g} GFLOP"


def cases(env: Env) -> list[Case]:
    side = (4096 if env.on_gpu else 512) // (4 if env.quick else 1)
    item = 4
    out: list[Case] = []

    a, b = env.random((side, side)), env.random((side, side))
    out.append(Case(f"matmul f32 {side}^3", gpuops.matmul, (a, b), 3 * side * side * item,
                    lambda m, u, v: m.matmul(u, v), _gflop(side, side, side)))
    out.append(Case(f"matmul f32 {side}^3, x1 transposed view", lambda u, v: gpuops.matmul(u.T, v),
                    (a, b), 3 * side * side * item, lambda m, u, v: m.matmul(u.T, v),
                    _gflop(side, side, side) + "; x1ᵀ read through strides, no copy"))
    if env.on_gpu:  # float16 is a kernel-backend dtype (tensor cores)
        h1, h2 = (env.random((side, side), dtype=numpy.float16) for _ in range(2))
        out.append(Case(f"matmul f16 {side}^3 (tensor cores)", gpuops.matmul, (h1, h2),
                        3 * side * side * 2, lambda m, u, v: m.matmul(u, v),
                        _gflop(side, side, side) + "; float32 accumulation"))
        out.append(Case(f"matmul f16 {side}^3, x1 transposed view (tensor cores)",
                        lambda u, v: gpuops.matmul(u.T, v), (h1, h2), 3 * side * side * 2,
                        lambda m, u, v: m.matmul(u.T, v), _gflop(side, side, side)
                        + "; x1ᵀ m-contiguous: ldmatrix.trans (a weight gradient's layout)"))

    batch, small = (64, 256) if not env.quick else (16, 128)
    xb, w = env.random((batch, small, small)), env.random((small, small))
    out.append(Case(f"matmul batched ({batch},{small},{small}) @ ({small},{small})",
                    gpuops.matmul, (xb, w), (2 * batch * small * small + small * small) * item,
                    lambda m, u, v: m.matmul(u, v), _gflop(small, small, small, batch)
                    + "; x2 broadcast over the batch (stride 0)"))

    rows, features = (side * 2, side)
    x, wt, bias = env.random((rows, features)), env.random((features, features)), \
        env.random(features)
    traffic = (2 * rows * features + features * features + features) * item
    out.append(Case(f"linear tanh ({rows},{features})x({features},{features})ᵀ+b",
                    lambda u, v, c: gpuops.linear(u, v, c, activation="tanh"), (x, wt, bias),
                    traffic, lambda m, u, v, c: m.tanh(m.matmul(u, v.T) + c),
                    _gflop(rows, features, features) + "; baseline: matmul, + bias, tanh "
                    "(three launches)"))
    y = gpuops.linear(x, wt, bias, activation="tanh")
    gy = env.random(y.shape)
    out.append(Case(f"linear_wrt_x2 tanh ({features},{rows})·({rows},{features})",
                    lambda u, v, c, yy, g: gpuops.linear_wrt_x2(u, v, c, yy, g,
                                                               activation="tanh"),
                    (x, wt, bias, y, gy), traffic + rows * features * item,
                    lambda m, u, v, c, yy, g: m.matmul((g * (1 - yy * yy)).T, u),
                    _gflop(features, features, rows) + "; gᵀ read through strides"))

    n, c, hw, o = (32, 64, 56, 64) if env.on_gpu else (4, 16, 28, 32)
    if env.quick:
        n = max(1, n // 4)
    xc, wc, bc = env.random((n, c, hw, hw)), env.random((o, c, 3, 3)), env.random(o)
    yc = gpuops.conv2d(xc, wc, bc, padding=1)
    gyc = env.random(yc.shape)
    conv_flop = _gflop(o, hw * hw, c * 9, n)
    conv_bytes = (xc.size + wc.size + yc.size) * item
    out.append(Case(f"conv2d ({n},{c},{hw},{hw}) * ({o},{c},3,3) pad 1",
                    lambda u, v, bb: gpuops.conv2d(u, v, bb, padding=1), (xc, wc, bc),
                    conv_bytes, None, conv_flop + "; im2col + GEMM"))
    out.append(Case("conv2d_wrt_x1 (same shapes)",
                    lambda u, v, bb, yy, g: gpuops.conv2d_wrt_x1(u, v, bb, yy, g, padding=1),
                    (xc, wc, bc, yc, gyc), conv_bytes, None, conv_flop + "; GEMM + col2im"))
    out.append(Case("conv2d_wrt_x2 (same shapes)",
                    lambda u, v, bb, yy, g: gpuops.conv2d_wrt_x2(u, v, bb, yy, g, padding=1),
                    (xc, wc, bc, yc, gyc), conv_bytes, None,
                    conv_flop + "; im2col + GEMM summing the images"))
    return out
