"""Embedding: ``embedding`` (a table lookup) and its gradient. Kernels in cuda/embedding.cu."""
from __future__ import annotations

__all__: list[str] = []
