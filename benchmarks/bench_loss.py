"""Losses: softmax_cross_entropy (forward, fused gradient, and forward + backward, the
figure to compare with PyTorch's cross_entropy + backward), bce_with_logits, mse, mae.
Baselines: the stable NumPy/CuPy expressions; on PyTorch its own functional losses.
``bytes``: each input read once, the result written once."""
from __future__ import annotations

import numpy

import gpuops

from .harness import Case, Env

# 10 classes: 16 lanes per row (2 rows per warp); 1000: a warp per row; 4000: a block
# holding the row in registers; 32000: a block streaming it
CLASSES = (10, 1000, 4000, 32000)


def _is_torch(m) -> bool:
    return m.__name__ == "torch"


def _ce(m, x, t):
    if _is_torch(m):
        return m.nn.functional.cross_entropy(x, t)
    mx = x.max(axis=1, keepdims=True)
    lse = m.log(m.exp(x - mx).sum(axis=1)) + mx[:, 0]
    return (lse - x[m.arange(x.shape[0]), t]).mean()


def _ce_forward_backward(m, x, t):
    if _is_torch(m):
        x = x.detach().requires_grad_()
        return m.autograd.grad(m.nn.functional.cross_entropy(x, t), x)[0]
    loss = _ce(m, x, t)
    e = m.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    p[m.arange(x.shape[0]), t] -= 1
    return loss, p / x.shape[0]


def _gpuops_ce_forward_backward(x, t):
    y = gpuops.softmax_cross_entropy(x, t)
    return y, gpuops.softmax_cross_entropy_wrt_x1(x, t, y, 1.0)


def _pair_ref(name):
    def ref(m, u, v):
        if _is_torch(m):
            f = m.nn.functional
            return {"mse": f.mse_loss, "mae": f.l1_loss,
                    "bce_with_logits": f.binary_cross_entropy_with_logits}[name](u, v)
        if name == "mse":
            return ((u - v) ** 2).mean()
        if name == "mae":
            return abs(u - v).mean()
        return (m.maximum(u, 0) - u * v + m.log1p(m.exp(-abs(u)))).mean()
    return ref


def cases(env: Env) -> list[Case]:
    n = env.size
    out: list[Case] = []
    for classes in CLASSES:
        rows = n // classes
        x = env.random((rows, classes), -4.0, 4.0)
        t = env.xp.asarray(numpy.random.default_rng(0).integers(0, classes, rows))
        labels = 8 * rows
        out.append(Case(f"softmax_cross_entropy ({rows},{classes})", gpuops.softmax_cross_entropy,
                        (x, t), x.nbytes + labels, _ce))
        y = gpuops.softmax_cross_entropy(x, t)
        out.append(Case(f"softmax_cross_entropy_wrt_x1 ({rows},{classes})",
                        lambda x, t, y: gpuops.softmax_cross_entropy_wrt_x1(x, t, y, 1.0),
                        (x, t, y), 2 * x.nbytes + labels, None,
                        note="fused softmax - onehot"))
        out.append(Case(f"cross-entropy fwd+bwd ({rows},{classes})", _gpuops_ce_forward_backward,
                        (x, t), 3 * x.nbytes + 2 * labels, _ce_forward_backward,
                        note="vs cross_entropy + backward"))
    a = env.random(n)
    b = env.random(n, 0.0, 1.0)
    for name in ("mse", "mae", "bce_with_logits"):
        out.append(Case(f"{name} mean", getattr(gpuops, name), (a, b), 2 * 4 * n, _pair_ref(name)))
        y = getattr(gpuops, name)(a, b)
        grad = getattr(gpuops, f"{name}_wrt_x1")
        out.append(Case(f"{name}_wrt_x1 mean", lambda u, v, y, grad=grad: grad(u, v, y, 1.0),
                        (a, b, y), 3 * 4 * n, None))
    return out
