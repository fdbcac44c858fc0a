"""Scaled dot-product attention, fused (FlashAttention-2). Kernels in cuda/attention.cu."""
from __future__ import annotations

__all__: list[str] = []
