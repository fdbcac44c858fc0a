"""gpuops: machine-learning operators and their gradients, as CUDA kernels and NumPy twins.

Every operator is ``gpuops.<name>(x1, ..., *, params, out=None)`` and every
differentiable input k has ``gpuops.<name>_wrt_x<k>(x1, ..., y, gy, *, params,
out=None)``. NumPy arrays in, NumPy out (NumPy implementation); CuPy arrays in,
CuPy out (CUDA kernels).
"""
from ml_dtypes import bfloat16  # the bfloat16 scalar type: numpy.dtype(gpuops.bfloat16)

from .backend import get_array_module, gpu_available, to_cpu, to_gpu
from .registry import OPERATORS
from .ops.elementwise import *  # noqa: F401,F403
from .ops.activation import *  # noqa: F401,F403
from .ops.softmax import *  # noqa: F401,F403
from .ops.loss import *  # noqa: F401,F403
from .ops.dropout import *  # noqa: F401,F403
from .ops.reduction import *  # noqa: F401,F403
from .ops.transpose import *  # noqa: F401,F403
from .ops.pooling import *  # noqa: F401,F403
from .ops.lrn import *  # noqa: F401,F403
from .ops.matmul import *  # noqa: F401,F403
from .ops.conv import *  # noqa: F401,F403
from .ops.normalization import *  # noqa: F401,F403
from .ops.embedding import *  # noqa: F401,F403
from .ops.attention import *  # noqa: F401,F403
from . import ops

_operators_all = [name for family in ops.FAMILIES for name in family.__all__]

from .autograd import Tensor, from_dlpack, no_grad
from .optim import adam_step, clip_grad_norm, sgd_step
from . import autograd, nn, optim
from . import amp
from .amp import autocast
from .serialization import load, save

__version__ = "0.1.0"
__all__ = ["get_array_module", "gpu_available", "to_cpu", "to_gpu", "OPERATORS", *_operators_all]
__all__ += ["Tensor", "no_grad", "from_dlpack", "sgd_step", "adam_step", "clip_grad_norm", "nn",
            "optim"]
__all__ += ["save", "load"]
__all__ += ["autocast", "amp"]
__all__ += ["bfloat16"]
