"""gpuops: machine-learning operators and their gradients, as CUDA kernels and NumPy twins.

Every operator is ``gpuops.<name>(x1, ..., *, params, out=None)`` and every
differentiable input k has ``gpuops.<name>_wrt_x<k>(x1, ..., y, gy, *, params,
out=None)``. NumPy arrays in, NumPy out (NumPy implementation); CuPy arrays in,
CuPy out (CUDA kernels).
"""
from .backend import get_array_module, gpu_available, to_cpu, to_gpu
from .registry import OPERATORS
from .elementwise import *  # noqa: F401,F403
from . import elementwise
from .activation import *  # noqa: F401,F403
from . import activation
from .softmax import *  # noqa: F401,F403
from .softmax import __all__ as _softmax_all  # (gpuops.softmax is the function)
from .matmul import *  # noqa: F401,F403
from .matmul import __all__ as _matmul_all  # (gpuops.matmul is the function)
from .conv import *  # noqa: F401,F403
from .conv import __all__ as _conv_all
from .loss import *  # noqa: F401,F403
from . import loss
from .dropout import *  # noqa: F401,F403
from .dropout import __all__ as _dropout_all  # (gpuops.dropout is the function)
from .reduction import *  # noqa: F401,F403
from . import reduction
from .transpose import *  # noqa: F401,F403
from .transpose import __all__ as _transpose_all  # (gpuops.transpose is the function)
from .pooling import *  # noqa: F401,F403
from . import pooling
from .lrn import *  # noqa: F401,F403
from .lrn import __all__ as _lrn_all  # (gpuops.lrn is the function)

from .autograd import Tensor, from_dlpack, no_grad
from .optim import adam_step, sgd_step
from . import autograd, nn, optim

__version__ = "0.1.0"
__all__ = ["get_array_module", "gpu_available", "to_cpu", "to_gpu", "OPERATORS",
           *elementwise.__all__, *activation.__all__, *_softmax_all, *loss.__all__, *_dropout_all,
           *reduction.__all__, *_transpose_all, *pooling.__all__, *_lrn_all, *_matmul_all, *_conv_all]
__all__ += ["Tensor", "no_grad", "from_dlpack", "sgd_step", "adam_step", "nn", "optim"]
