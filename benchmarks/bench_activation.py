"""Activations: relu, leaky_relu, sigmoid, tanh and their gradients (float32; float16 and
bfloat16 on the GPU; on the CPU bfloat16 and float16 against the same call in float32, gelu and
silu too). Baselines: the bare expression (NumPy, CuPy) and PyTorch's own op.
``bytes``: forward reads x and writes y; a gradient reads x and gy and writes gx
(the kernels read x, not y)."""
from __future__ import annotations

import functools

import numpy

import gpuops

from .bench_elementwise import KERNEL_SIXTEEN_BIT, sixteen_bit_cases
from .harness import Case, Env


def _is_torch(m) -> bool:
    return m.__name__ == "torch"


REFERENCES = {
    "relu": lambda m, u: m.relu(u) if _is_torch(m) else m.maximum(u, 0),
    "leaky_relu": lambda m, u: (m.nn.functional.leaky_relu(u, 0.01) if _is_torch(m)
                                else m.where(u < 0, 0.01 * u, u)),
    "sigmoid": lambda m, u: m.sigmoid(u) if _is_torch(m) else 1 / (1 + m.exp(-u)),
    "tanh": lambda m, u: m.tanh(u),
}
GRAD_REFERENCES = {
    "relu": lambda m, x, y, g: g * (x > 0),
    "leaky_relu": lambda m, x, y, g: m.where(x > 0, g, 0.01 * g),
    "sigmoid": lambda m, x, y, g: g * y * (1 - y),
    "tanh": lambda m, x, y, g: g * (1 - y * y),
}


def cases(env: Env) -> list[Case]:
    n = env.size
    out: list[Case] = []
    dtypes = [("", numpy.float32)] + (KERNEL_SIXTEEN_BIT if env.on_gpu else [])
    for tag, dtype in dtypes:
        item = numpy.dtype(dtype).itemsize
        x = env.random(n, -4.0, 4.0, dtype)
        gy = env.random(n, -1.0, 1.0, dtype)
        for name, ref in REFERENCES.items():
            fn = getattr(gpuops, name)
            out.append(Case(f"{name}{tag}", fn, (x,), 2 * n * item, ref))
            grad = getattr(gpuops, f"{name}_wrt_x1")
            y = fn(x)
            out.append(Case(f"{name}_wrt_x1{tag}", grad, (x, y, gy), 3 * n * item,
                            GRAD_REFERENCES[name]))
    if not env.on_gpu and not env.quick:  # NumPy's 16-bit path vs float32, full sizes
        x = env.random(n, -4.0, 4.0)
        gy = env.random(n, -1.0, 1.0)
        for name in ("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu"):
            fn = getattr(gpuops, name)
            out += sixteen_bit_cases(name, fn, (x,))
            out += sixteen_bit_cases(f"{name}_wrt_x1", getattr(gpuops, f"{name}_wrt_x1"),
                                     (x, fn(x), gy))
        gelu_tanh = functools.partial(gpuops.gelu, approximate="tanh")
        out += sixteen_bit_cases("gelu tanh", gelu_tanh, (x,))
        out += sixteen_bit_cases("gelu_wrt_x1 tanh",
                                 functools.partial(gpuops.gelu_wrt_x1, approximate="tanh"),
                                 (x, gelu_tanh(x), gy))
    return out
