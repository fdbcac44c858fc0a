"""The transformer operators (issue 15), forward and forward + backward, at GPT-2 widths:
layer_norm over rows of 768, gelu (approximate='tanh', GPT-2's; the exact erf form has no
NumPy/CuPy expression and runs without a baseline), embedding (token lookup; backward
is the table gradient, a scatter-add), and attention (q, k, v of (B, H, T, 64), plain and
causal; the backward calls attention_wrt_x1/x2/x3).

Baselines: the NumPy/CuPy expressions written out (attention materializes the T x T
scores), and PyTorch eager on the CPU too (``torch_on_cpu``): ``layer_norm``, ``gelu``,
``embedding``, ``scaled_dot_product_attention``, backward by ``torch.autograd.grad``.
``bytes``: each input read once, each result written once (attention is compute-bound:
its GB/s is only a scale). An operator not yet in ``gpuops.OPERATORS`` is left out.
"""
from __future__ import annotations

import math

import numpy

import gpuops

from .harness import Case, Env

WIDTH = 768  # GPT-2 small: channels
HEAD_DIM = 64
SEQ = 256


def _is_torch(m) -> bool:
    return m.__name__ == "torch"


def _grads(m, f, *inputs):
    """torch: f(*inputs) and the gradients of (f · gy) wrt every input (gy the last one)."""
    *xs, gy = inputs
    xs = [x.detach().requires_grad_() for x in xs]
    y = f(*xs)
    return y, m.autograd.grad(y, xs, gy)


# ---- layer_norm ---------------------------------------------------------------------------

def _layer_norm(m, x, w, b, eps=1e-5):
    if _is_torch(m):
        return m.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    rstd = 1 / m.sqrt((d * d).mean(axis=-1, keepdims=True) + eps)
    return d * rstd * w + b


def _layer_norm_fwd_bwd(m, x, w, b, gy, eps=1e-5):
    if _is_torch(m):
        return _grads(m, lambda x, w, b: _layer_norm(m, x, w, b, eps), x, w, b, gy)
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    rstd = 1 / m.sqrt((d * d).mean(axis=-1, keepdims=True) + eps)
    xhat = d * rstd
    y = xhat * w + b
    g = gy * w
    gx = (g - g.mean(axis=-1, keepdims=True)
          - xhat * (g * xhat).mean(axis=-1, keepdims=True)) * rstd
    return y, (gx, (gy * xhat).sum(axis=0), gy.sum(axis=0))


def _gpuops_layer_norm_fwd_bwd(x, w, b, gy):
    y = gpuops.layer_norm(x, w, b)
    return y, (gpuops.layer_norm_wrt_x1(x, w, b, y, gy), gpuops.layer_norm_wrt_x2(x, w, b, y, gy),
               gpuops.layer_norm_wrt_x3(x, w, b, y, gy))


# ---- gelu ---------------------------------------------------------------------------------

_K = math.sqrt(2 / math.pi)


def _gelu_tanh(m, x):
    if _is_torch(m):
        return m.nn.functional.gelu(x, approximate="tanh")
    return 0.5 * x * (1 + m.tanh(_K * (x + 0.044715 * x ** 3)))


def _gelu_tanh_fwd_bwd(m, x, gy):
    if _is_torch(m):
        return _grads(m, lambda x: _gelu_tanh(m, x), x, gy)
    t = m.tanh(_K * (x + 0.044715 * x ** 3))
    y = 0.5 * x * (1 + t)
    dt = (1 - t * t) * _K * (1 + 3 * 0.044715 * x * x)
    return y, gy * (0.5 * (1 + t) + 0.5 * x * dt)


def _gpuops_gelu_tanh_fwd_bwd(x, gy):
    y = gpuops.gelu(x, approximate="tanh")
    return y, gpuops.gelu_wrt_x1(x, y, gy, approximate="tanh")


# ---- embedding ----------------------------------------------------------------------------

def _embedding(m, ids, table):
    if _is_torch(m):
        return m.nn.functional.embedding(ids, table)
    return table[ids]


def _embedding_fwd_bwd(m, ids, table, gy):
    if _is_torch(m):
        table = table.detach().requires_grad_()
        y = m.nn.functional.embedding(ids, table)
        return y, m.autograd.grad(y, table, gy)[0]
    y = table[ids]
    gt = m.zeros_like(table)
    if m is numpy:
        numpy.add.at(gt, ids, gy)
    else:  # CuPy
        import cupyx
        cupyx.scatter_add(gt, ids, gy)
    return y, gt


def _gpuops_embedding_fwd_bwd(ids, table, gy):
    y = gpuops.embedding(ids, table)
    return y, gpuops.embedding_wrt_x2(ids, table, y, gy)


# ---- attention ----------------------------------------------------------------------------

def _scores(m, q, k, causal):
    """NumPy/CuPy: the softmax of the scaled scores, T x T per head (hidden keys -inf)."""
    s = (q @ k.swapaxes(-1, -2)) * (1 / math.sqrt(q.shape[-1]))
    if causal:
        t = s.shape[-1]
        s[..., m.triu(m.ones((t, t), dtype=bool), 1)] = -math.inf
    s = s - s.max(axis=-1, keepdims=True)
    p = m.exp(s)
    return p / p.sum(axis=-1, keepdims=True)


def _attention(causal):
    def ref(m, q, k, v):
        if _is_torch(m):
            return m.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return _scores(m, q, k, causal) @ v
    return ref


def _attention_fwd_bwd(causal):
    def ref(m, q, k, v, gy):
        if _is_torch(m):
            return _grads(m, lambda q, k, v: m.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=causal), q, k, v, gy)
        p = _scores(m, q, k, causal)
        y = p @ v
        dp = gy @ v.swapaxes(-1, -2)
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) * (1 / math.sqrt(q.shape[-1]))
        return y, (ds @ k, ds.swapaxes(-1, -2) @ q, p.swapaxes(-1, -2) @ gy)
    return ref


def _gpuops_attention_fwd_bwd(causal):
    def run(q, k, v, gy):
        y = gpuops.attention(q, k, v, causal=causal)
        return y, tuple(getattr(gpuops, f"attention_wrt_x{i}")(q, k, v, y, gy, causal=causal)
                        for i in (1, 2, 3))
    return run


# ---- cases --------------------------------------------------------------------------------

def cases(env: Env) -> list[Case]:
    n = env.size
    have = set(gpuops.OPERATORS)
    dtypes = [numpy.float32] + ([numpy.float16] if env.on_gpu else [])
    out: list[Case] = []
    for dtype in dtypes:
        tag = "" if dtype == numpy.float32 else " f16"
        item = numpy.dtype(dtype).itemsize
        if "layer_norm" in have:
            rows = n // WIDTH
            x = env.random((rows, WIDTH), -2.0, 2.0, dtype)
            w, b = env.random(WIDTH, 0.5, 1.5, dtype), env.random(WIDTH, dtype=dtype)
            gy = env.random((rows, WIDTH), dtype=dtype)
            size = rows * WIDTH * item
            out.append(Case(f"layer_norm{tag} ({rows},{WIDTH})", gpuops.layer_norm, (x, w, b),
                            2 * size, _layer_norm, torch_on_cpu=True))
            out.append(Case(f"layer_norm fwd+bwd{tag} ({rows},{WIDTH})",
                            _gpuops_layer_norm_fwd_bwd, (x, w, b, gy), 7 * size,
                            _layer_norm_fwd_bwd, torch_on_cpu=True,
                            note="vs layer_norm + autograd.grad (x, w, b)"))
        if "gelu" in have:
            x = env.random(n, -4.0, 4.0, dtype)
            gy = env.random(n, dtype=dtype)
            out.append(Case(f"gelu tanh{tag} (n)", lambda u: gpuops.gelu(u, approximate="tanh"),
                            (x,), 2 * n * item, _gelu_tanh, torch_on_cpu=True))
            out.append(Case(f"gelu tanh fwd+bwd{tag} (n)", _gpuops_gelu_tanh_fwd_bwd, (x, gy),
                            6 * n * item, _gelu_tanh_fwd_bwd, torch_on_cpu=True))
            out.append(Case(f"gelu exact{tag} (n)", gpuops.gelu, (x,), 2 * n * item, None,
                            note="erf form: no NumPy baseline"))
        if "embedding" in have:
            vocab = 50257 if env.on_gpu else 8192
            tokens = n // WIDTH
            table = env.random((vocab, WIDTH), dtype=dtype)
            ids = env.xp.asarray(numpy.random.default_rng(0).integers(0, vocab, tokens))
            gy = env.random((tokens, WIDTH), dtype=dtype)
            rows = tokens * WIDTH * item
            out.append(Case(f"embedding{tag} ({tokens} of {vocab}x{WIDTH})", gpuops.embedding,
                            (ids, table), 2 * rows + 8 * tokens, _embedding, torch_on_cpu=True))
            out.append(Case(f"embedding fwd+bwd{tag} ({tokens} of {vocab}x{WIDTH})",
                            _gpuops_embedding_fwd_bwd, (ids, table, gy),
                            3 * rows + table.nbytes + 8 * tokens, _embedding_fwd_bwd,
                            torch_on_cpu=True, note="table gradient: a scatter-add"))
        if "attention" in have:
            heads = max(2, n // (1 << 18))  # CPU 16 (quick 2), GPU 64 (quick 4)
            shape = (heads // 2, 2, SEQ, HEAD_DIM)
            q, k, v, gy = (env.random(shape, dtype=dtype) for _ in range(4))
            size = q.size * item
            for causal in (False, True):
                label = f"attention{' causal' if causal else ''}{tag}"
                out.append(Case(f"{label} {shape}",
                                lambda q, k, v, c=causal: gpuops.attention(q, k, v, causal=c),
                                (q, k, v), 4 * size, _attention(causal), torch_on_cpu=True,
                                note="vs scaled_dot_product_attention; compute-bound"))
                out.append(Case(f"{label} fwd+bwd {shape}", _gpuops_attention_fwd_bwd(causal),
                                (q, k, v, gy), 9 * size, _attention_fwd_bwd(causal),
                                torch_on_cpu=True, note="vs sdpa + autograd.grad (q, k, v)"))
    return out
