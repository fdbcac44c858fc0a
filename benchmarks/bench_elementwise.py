"""Elementwise family: binary (same shape and broadcast), per-axis, unary, and gradients.

Each baseline is the bare expression a user would write instead (``a + b``,
``(gy * a).sum((0, 2, 3))``, ...), evaluated with NumPy on the CPU and with CuPy /
PyTorch on the GPU. ``bytes`` counts each operand read once and the result written once.
On the CPU at full sizes (not --quick, nor the emulator profile), the 16-bit cases
(``bf16``, ``f16``) time the NumPy backend's 16-bit path against the same gpuops call in
float32 (their baseline column; issue 14's target: within 1.5x of float32 for elementwise
operators). On the GPU, add, exp and mul_wrt_x1 also run in float16 and bfloat16 (half the
bytes) against CuPy and PyTorch on the same 16-bit arrays.
"""
from __future__ import annotations

from typing import Any, Callable

import ml_dtypes
import numpy

import gpuops

from .harness import Case, Env

ITEM = 4  # float32
COLUMNS = 1024  # broadcast cases: (n / 1024, 1024) with a (1024,) row
CHANNELS = 128  # per-axis cases: NCHW (n / 128 / 1024, 128, 32, 32), per-channel x2


def cases(env: Env) -> list[Case]:
    n = env.size
    a = env.random(n, 0.5, 2.0)
    b = env.random(n, 0.5, 2.0)
    gy = env.random(n)
    rows = env.random((n // COLUMNS, COLUMNS), 0.5, 2.0)
    row = env.random(COLUMNS, 0.5, 2.0)
    gy_rows = env.random((n // COLUMNS, COLUMNS))
    nchw = env.random((n // (CHANNELS * 1024), CHANNELS, 32, 32), 0.5, 2.0)
    channel = env.random(CHANNELS, 0.5, 2.0)
    gy_nchw = env.random(nchw.shape)
    full, small = n * ITEM, COLUMNS * ITEM

    out: list[Case] = []
    for name, expr in (("add", lambda m, u, v: u + v), ("mul", lambda m, u, v: u * v),
                       ("div", lambda m, u, v: u / v)):
        fn = getattr(gpuops, name)
        out.append(Case(f"{name} same shape", fn, (a, b), 3 * full, expr))
        out.append(Case(f"{name} broadcast (n/1024,1024)+(1024,)", fn, (rows, row),
                        2 * full + small, expr))
    out.append(Case("add python scalar", gpuops.add, (a, 2.0), 2 * full,
                    lambda m, u, s: u + s))
    for name, expr in (("axis_add", lambda m, u, c: u + c.reshape(1, -1, 1, 1)),
                       ("axis_mul", lambda m, u, c: u * c.reshape(1, -1, 1, 1))):
        out.append(Case(f"{name} NCHW axis=1", getattr(gpuops, name), (nchw, channel),
                        2 * full, expr))
    for name, expr in (("exp", lambda m, u: m.exp(u)), ("log", lambda m, u: m.log(u)),
                       ("sqrt", lambda m, u: m.sqrt(u)), ("sin", lambda m, u: m.sin(u))):
        out.append(Case(name, getattr(gpuops, name), (a,), 2 * full, expr))
    for p in (2.0, 3.0):
        out.append(Case(f"pow p={p:g}", lambda u, p=p: gpuops.pow(u, p=p), (a,), 2 * full,
                        lambda m, u, p=p: u ** p))

    # ---- gradients ----
    y_rows = gpuops.add(rows, row)
    out.append(Case("add_wrt_x2 broadcast (sum over rows)",
                    lambda u, v, y, g: gpuops.add_wrt_x2(u, v, y, g), (rows, row, y_rows, gy_rows),
                    full + small, lambda m, u, v, y, g: g.sum(0)))
    y_mul = gpuops.mul(a, b)
    out.append(Case("mul_wrt_x1 same shape", lambda u, v, y, g: gpuops.mul_wrt_x1(u, v, y, g),
                    (a, b, y_mul, gy), 3 * full, lambda m, u, v, y, g: g * v))
    y_div = gpuops.div(a, b)
    out.append(Case("div_wrt_x1 same shape", lambda u, v, y, g: gpuops.div_wrt_x1(u, v, y, g),
                    (a, b, y_div, gy), 3 * full, lambda m, u, v, y, g: g / v))
    out.append(Case("div_wrt_x2 same shape", lambda u, v, y, g: gpuops.div_wrt_x2(u, v, y, g),
                    (a, b, y_div, gy), 4 * full, lambda m, u, v, y, g: -g * u / (v * v)))
    y_div_rows = gpuops.div(rows, row)
    out.append(Case("div_wrt_x2 broadcast (sum over rows)",
                    lambda u, v, y, g: gpuops.div_wrt_x2(u, v, y, g),
                    (rows, row, y_div_rows, gy_rows), 2 * full + 2 * small,
                    lambda m, u, v, y, g: (-g * u / (v * v)).sum(0)))
    for name, expr, traffic in (
            ("axis_add_wrt_x2", lambda m, u, c, y, g: g.sum((0, 2, 3)), full),
            ("axis_mul_wrt_x2", lambda m, u, c, y, g: (g * u).sum((0, 2, 3)), 2 * full),
            ("axis_mul_wrt_x1", lambda m, u, c, y, g: g * c.reshape(1, -1, 1, 1), 2 * full)):
        fn = getattr(gpuops, name)
        y_axis = gpuops.axis_mul(nchw, channel)
        out.append(Case(f"{name} NCHW axis=1",
                        lambda u, c, y, g, fn=fn: fn(u, c, y, g, axis=1),
                        (nchw, channel, y_axis, gy_nchw), traffic, expr))
    for name, expr, traffic in (
            ("exp", lambda m, x, y, g: g * y, 3 * full),
            ("log", lambda m, x, y, g: g / x, 3 * full),
            ("sqrt", lambda m, x, y, g: g / (2 * y), 3 * full),
            ("neg", lambda m, x, y, g: -g, 2 * full),
            ("square", lambda m, x, y, g: 2 * x * g, 3 * full),
            ("abs", lambda m, x, y, g: g * m.sign(x), 3 * full),
            ("sin", lambda m, x, y, g: g * m.cos(x), 3 * full),
            ("cos", lambda m, x, y, g: -g * m.sin(x), 3 * full)):
        y = getattr(gpuops, name)(a)
        grad = getattr(gpuops, f"{name}_wrt_x1")
        out.append(Case(f"{name}_wrt_x1", lambda x, y, g, grad=grad: grad(x, y, g), (a, y, gy),
                        traffic, expr))
    y_pow = gpuops.pow(a, p=3.0)
    out.append(Case("pow_wrt_x1 p=3", lambda x, y, g: gpuops.pow_wrt_x1(x, y, g, p=3.0),
                    (a, y_pow, gy), 3 * full, lambda m, x, y, g: g * 3.0 * x ** 2.0))
    if not env.on_gpu and not env.quick:  # full CPU sizes (not the emulator profile's)
        out += _sixteen_bit(a, b, gy, rows, row, nchw, channel, gy_nchw)
    if env.on_gpu:
        out += _kernel_sixteen_bit(env)
    return out


# The 16-bit dtypes of the GPU cases: (name suffix, dtype).
KERNEL_SIXTEEN_BIT = [(" f16", numpy.float16), (" bf16", ml_dtypes.bfloat16)]


def _kernel_sixteen_bit(env: Env) -> list[Case]:
    """Memory-bound kernels at half float32's bytes (issue 14): binary, unary and a
    gradient in float16 and bfloat16, against the same expression in CuPy and PyTorch on
    the same 16-bit arrays (a baseline without the dtype is dropped with a note)."""
    n = env.size
    out: list[Case] = []
    for tag, dtype in KERNEL_SIXTEEN_BIT:
        u, v, g = (env.random(n, 0.5, 2.0, dtype) for _ in range(3))
        item = numpy.dtype(dtype).itemsize
        out.append(Case(f"add same shape{tag}", gpuops.add, (u, v), 3 * n * item,
                        lambda m, x1, x2: x1 + x2, note="float32 arithmetic, one rounding"))
        out.append(Case(f"exp{tag}", gpuops.exp, (u,), 2 * n * item, lambda m, x: m.exp(x)))
        out.append(Case(f"mul_wrt_x1 same shape{tag}", gpuops.mul_wrt_x1,
                        (u, v, gpuops.mul(u, v), g), 3 * n * item,
                        lambda m, x1, x2, y, gy: gy * x2, note="reads x2 and gy"))
    return out


def _sixteen_bit(a: Any, b: Any, gy: Any, rows: Any, row: Any, nchw: Any, channel: Any,
                 gy_nchw: Any) -> list[Case]:
    """Every elementwise operator and gradient of this family in 16 bits on the NumPy
    backend, against the same call in float32 (issue 14: within 1.5x)."""
    out: list[Case] = []
    for op in ("add", "sub", "mul", "div"):
        fn = getattr(gpuops, op)
        y = fn(a, b)
        out += sixteen_bit_cases(op, fn, (a, b))
        for k in (1, 2):
            out += sixteen_bit_cases(f"{op}_wrt_x{k}", getattr(gpuops, f"{op}_wrt_x{k}"),
                                     (a, b, y, gy))
    out += sixteen_bit_cases("add alpha=2", lambda u, v: gpuops.add(u, v, alpha=2), (a, b))
    out += sixteen_bit_cases("add python scalar", lambda u: gpuops.add(u, 2.0), (a,))
    out += sixteen_bit_cases("div python scalar x1", lambda u: gpuops.div(1.0, u), (a,))
    out += sixteen_bit_cases("mul broadcast (n/1024,1024)+(1024,)", gpuops.mul, (rows, row))
    out += sixteen_bit_cases("mul_wrt_x2 broadcast (sum over rows)", gpuops.mul_wrt_x2,
                             (rows, row, gpuops.mul(rows, row), gpuops.mul(rows, row)))
    for op in ("axis_add", "axis_mul"):
        fn = getattr(gpuops, op)
        out += sixteen_bit_cases(f"{op} NCHW axis=1", fn, (nchw, channel))
        out += sixteen_bit_cases(f"{op}_wrt_x1 NCHW axis=1", getattr(gpuops, f"{op}_wrt_x1"),
                                 (nchw, channel, fn(nchw, channel), gy_nchw))
    for op in ("neg", "exp", "log", "sqrt", "square", "abs", "sin", "cos"):
        fn = getattr(gpuops, op)
        out += sixteen_bit_cases(op, fn, (a,))
        out += sixteen_bit_cases(f"{op}_wrt_x1", getattr(gpuops, f"{op}_wrt_x1"),
                                 (a, fn(a), gy))
    for p in (2.0, 3.0):
        out += sixteen_bit_cases(f"pow p={p:g}", lambda u, p=p: gpuops.pow(u, p=p), (a,))
        out += sixteen_bit_cases(f"pow_wrt_x1 p={p:g}",
                                 lambda x, y, g, p=p: gpuops.pow_wrt_x1(x, y, g, p=p),
                                 (a, gpuops.pow(a, p=p), gy))
    out += sixteen_bit_cases("pow x2 array", gpuops.pow, (a, b))
    return out


SIXTEEN_BIT = (("bf16", ml_dtypes.bfloat16), ("f16", numpy.float16))


def sixteen_bit_cases(name: str, fn: Callable[..., Any], inputs: tuple) -> list[Case]:
    """``fn`` on ``inputs`` (float32 arrays, the first of the result's shape) rounded to
    bfloat16 and float16, each against ``fn`` on the float32 inputs (the baseline column:
    the ratio is what 16 bits cost on the NumPy backend). ``bytes``: the 16-bit traffic."""
    cases = []
    for tag, dtype in SIXTEEN_BIT:
        low = tuple(x.astype(dtype) for x in inputs)
        traffic = 2 * (sum(x.size for x in inputs) + inputs[0].size)
        cases.append(Case(f"{name} {tag}", fn, low, traffic,
                          lambda m, *_, fn=fn, inputs=inputs: fn(*inputs),
                          note="baseline: the same gpuops call in float32"))
    return cases
