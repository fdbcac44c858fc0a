"""A GPT-2 language model on gpuops layers (the structure of nanoGPT and llm.c).

``GPT(vocab_size, block_size, n_layer, n_head, n_embd, dropout)``::

    x = wte[ids] + wpe[0..T-1]                    token + position embeddings (B, T, C)
    x = dropout(x)
    for each of the n_layer Blocks (pre-norm):
        x = x + dropout(attn(ln_1(x)))            causal multi-head self-attention
        x = x + dropout(mlp(ln_2(x)))             C → 4C, GELU (tanh), 4C → C
    logits = ln_f(x) · wteᵀ                       tied: the token table is the output weight

The token table ``wte.weight`` is one Parameter used twice (the lookup and the output
projection), so its gradient is the sum of both uses. Initialisation as GPT-2: every
weight N(0, 0.02²), biases zero, LayerNorms (1, 0), and the two projections that write
into the residual stream (``attn.out_proj`` and ``mlp.c_proj``) N(0, (0.02/√(2·n_layer))²).
Parameter names follow the layers: ``wte``, ``wpe``, ``h.<i>.ln_1``, ``h.<i>.attn``
(``in_proj_weight``, ``in_proj_bias``, ``out_proj``: torch's MultiheadAttention),
``h.<i>.ln_2``, ``h.<i>.mlp.c_fc``, ``h.<i>.mlp.c_proj``, ``ln_f``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from . import nn
from .autograd import Tensor, no_grad
from .backend import get_array_module, to_cpu

__all__ = ["MLP", "Block", "GPT"]

INIT_STD = 0.02


class MLP(nn.Module):
    """C → 4C → GELU (tanh approximation, as GPT-2) → C."""

    def __init__(self, n_embd: int, dtype: Any = numpy.float32) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, dtype=dtype)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * n_embd, n_embd, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    """One pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0,
                 dtype: Any = numpy.float32) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, dtype=dtype)
        self.attn = nn.MultiheadAttention(n_embd, n_head, causal=True, dtype=dtype)
        self.ln_2 = nn.LayerNorm(n_embd, dtype=dtype)
        self.mlp = MLP(n_embd, dtype=dtype)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        attended, _ = self.attn(self.ln_1(x))
        x = x + self.drop(attended)
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """A byte- (or token-) level GPT-2; ``forward(ids)`` gives logits (B, T, vocab_size)."""

    def __init__(self, vocab_size: int = 256, block_size: int = 128, n_layer: int = 4,
                 n_head: int = 4, n_embd: int = 128, dropout: float = 0.0,
                 dtype: Any = numpy.float32) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size),
                            ("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
            nn._check_int("GPT", name, value, 1)
        if n_embd % n_head:
            raise ValueError(f"GPT: n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.vocab_size, self.block_size, self.n_layer = vocab_size, block_size, n_layer
        self.wte = nn.Embedding(vocab_size, n_embd, dtype=dtype)
        self.wpe = nn.Embedding(block_size, n_embd, dtype=dtype)
        self.drop = nn.Dropout(dropout)
        self.h = [Block(n_embd, n_head, dropout, dtype=dtype) for _ in range(n_layer)]
        self.ln_f = nn.LayerNorm(n_embd, dtype=dtype)
        self._init_weights()

    def _init_weights(self) -> None:
        residual_std = INIT_STD / math.sqrt(2 * self.n_layer)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.normal_(module.weight, INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data[...] = 0
            if isinstance(module, nn.MultiheadAttention):
                nn.normal_(module.in_proj_weight, INIT_STD)
                if module.in_proj_bias is not None:
                    module.in_proj_bias.data[...] = 0
        for block in self.h:  # the projections that write into the residual stream
            nn.normal_(block.attn.out_proj.weight, residual_std)
            nn.normal_(block.mlp.c_proj.weight, residual_std)

    def forward(self, ids: Any) -> Tensor:
        ids = ids.data if isinstance(ids, Tensor) else ids
        if ids.ndim != 2:
            raise ValueError(f"GPT: ids must be (B, T), got shape {tuple(ids.shape)}")
        T = ids.shape[1]
        if not 1 <= T <= self.block_size:
            raise ValueError(f"GPT: sequence length {T} is outside [1, block_size="
                             f"{self.block_size}]")
        positions = get_array_module(ids).arange(T)
        x = self.drop(self.wte(ids) + self.wpe(positions))
        for block in self.h:
            x = block(x)
        return self.ln_f(x).linear(self.wte.weight)  # tied: x · wteᵀ

    def loss(self, ids: Any, targets: Any) -> Tensor:
        """Mean cross-entropy (nats) of the next-token predictions over all B·T positions."""
        logits = self(ids)
        B, T, V = logits.shape
        targets = targets.data if isinstance(targets, Tensor) else targets
        return logits.reshape(B * T, V).cross_entropy(targets.reshape(B * T))

    def generate(self, ids: Any, n: int, temperature: float = 1.0, seed: int = 0) -> numpy.ndarray:
        """``ids`` (B, T) followed by ``n`` sampled tokens each (B, T + n), as a NumPy array.

        Each step feeds the last ``block_size`` tokens, divides the last position's logits by
        ``temperature`` (> 0) and samples from their softmax with a NumPy generator seeded by
        ``seed``: the same arguments give the same tokens. Runs in evaluation mode (no
        dropout) without recording a graph; the training flag is restored.
        """
        nn._check_int("GPT.generate", "n", n, 0)
        temperature = nn._check_number("GPT.generate", "temperature", temperature, low=0.0,
                                       low_open=True)
        out = numpy.asarray(to_cpu(ids.data if isinstance(ids, Tensor) else ids),
                            dtype=numpy.int64)
        if out.ndim != 2 or out.shape[1] < 1:
            raise ValueError(f"GPT.generate: ids must be (B, T) with T >= 1, got shape "
                             f"{out.shape}")
        rng = numpy.random.default_rng(seed)
        xp = get_array_module(self.wte.weight.data)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                for _ in range(n):
                    context = xp.asarray(out[:, -self.block_size:])
                    logits = to_cpu(self(context).data[:, -1]).astype(numpy.float64)
                    logits = logits / temperature
                    p = numpy.exp(logits - logits.max(axis=1, keepdims=True))
                    p /= p.sum(axis=1, keepdims=True)
                    # inverse-CDF sampling: one uniform per row
                    u = rng.random((len(p), 1))
                    nxt = numpy.minimum((p.cumsum(axis=1) < u).sum(axis=1), p.shape[1] - 1)
                    out = numpy.concatenate([out, nxt[:, None]], axis=1)
        finally:
            self.train(was_training)
        return out
