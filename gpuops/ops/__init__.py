"""The operators, one module per family, each paired with ``cuda/<family>.cu``.

Every module states its family's math: the NumPy computation and the kernel
launch side by side, behind the call protocol of :mod:`gpuops.call`. Importing
this package registers every operator in :data:`gpuops.registry.OPERATORS`.
"""
from . import (activation, attention, conv, dropout, elementwise, embedding, loss, lrn, matmul,
               normalization, optim, pooling, reduction, softmax, transpose)

FAMILIES = (elementwise, activation, softmax, loss, dropout, reduction, transpose, pooling, lrn,
            matmul, conv, normalization, embedding, attention)
__all__ = ["FAMILIES"]
