"""max_pool2d / avg_pool2d (NCHW) and their gradients. ``bytes``: x read once and y written
once (gradients: gy (and x, y for max) read, gx written). Baseline: the same pooling as
shifted strided slices (NumPy/CuPy, kh·kw passes) and ``torch.nn.functional`` pooling."""
from __future__ import annotations

import math

import gpuops

from .harness import Case, Env

SHAPE_CHW = (64, 56, 56)


def _pool(m, u, kind, k, s, p):
    if m.__name__ == "torch":
        f = m.nn.functional.max_pool2d if kind == "max" else m.nn.functional.avg_pool2d
        return f(u, k, s, p)
    fill = -math.inf if kind == "max" else 0.0
    padded = m.pad(u, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    oh = (u.shape[2] + 2 * p - k) // s + 1
    ow = (u.shape[3] + 2 * p - k) // s + 1
    acc = None
    for i in range(k):
        for j in range(k):
            part = padded[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s]
            acc = part if acc is None else (m.maximum(acc, part) if kind == "max" else acc + part)
    return acc if kind == "max" else acc / (k * k)


def cases(env: Env) -> list[Case]:
    c, h, w = SHAPE_CHW
    n = max(1, env.size // (c * h * w))
    x = env.random((n, c, h, w))
    out: list[Case] = []
    for kind, k, s, p in (("max", 3, 2, 1), ("avg", 2, 2, 0)):
        name = f"{kind}_pool2d"
        fn = getattr(gpuops, name)
        params = {"kernel_size": k, "stride": s, "padding": p}
        y = fn(x, **params)
        gy = env.random(y.shape)
        tag = f"({n},{c},{h},{w}) k={k} s={s} p={p}"
        out.append(Case(f"{name} {tag}", lambda u, fn=fn, params=params: fn(u, **params), (x,),
                        4 * (x.size + y.size),
                        lambda m, u, kind=kind, k=k, s=s, p=p: _pool(m, u, kind, k, s, p)))
        grad = getattr(gpuops, f"{name}_wrt_x1")
        reads = x.size + 2 * y.size if kind == "max" else y.size
        out.append(Case(f"{name}_wrt_x1 {tag}",
                        lambda u, yy, g, grad=grad, params=params: grad(u, yy, g, **params),
                        (x, y, gy), 4 * (reads + x.size), None, note="gather, no atomics"))
    return out
