"""Neural-network layers on :class:`gpuops.Tensor`, in the shape of ``torch.nn``.

Layers only arrange operator calls (``Tensor`` methods, i.e. registered
operators); they hold parameters and do no arithmetic of their own. Weights get
PyTorch's default initialization: ``kaiming_uniform_(a=√5)``, i.e.
U(±1/√fan_in), and biases U(±1/√fan_in). Random numbers come from a global
NumPy generator seeded with :func:`manual_seed`, so a model built after
``manual_seed(s)`` is the same every time.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy

from .autograd import Tensor
from .backend import get_array_module, to_cpu, to_gpu
from .ops import _args

__all__ = ["manual_seed", "Parameter", "Module", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d",
           "LocalResponseNorm", "Dropout", "ReLU", "Sigmoid", "Tanh", "Flatten", "Sequential",
           "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss"]

_generator = numpy.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed the generator that initializes parameters and seeds Dropout layers."""
    global _generator
    _generator = numpy.random.default_rng(seed)


def _uniform(shape: tuple, bound: float, dtype: Any) -> numpy.ndarray:
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)


class Parameter(Tensor):
    """A leaf Tensor that requires a gradient and that :meth:`Module.parameters` finds."""

    __slots__ = ()

    def __init__(self, data: Any) -> None:
        super().__init__(data, requires_grad=True)


class Module:
    """Base layer: finds parameters, buffers and sub-modules among its attributes."""

    _buffers: tuple = ()  # names of integer/array state saved in state_dict

    def __init__(self) -> None:
        self.training = True

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any) -> Any:
        return self.forward(*args)

    def _children(self) -> Iterator[tuple[str, Any]]:
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, (Parameter, Module)):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, value in self._children():
            if isinstance(value, Parameter):
                yield prefix + name, value
            else:
                yield from value.named_parameters(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator["Module"]:
        yield self
        for _, value in self._children():
            if isinstance(value, Module):
                yield from value.modules()

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def _named_buffers(self, prefix: str = "") -> Iterator[tuple[str, "Module", str]]:
        for name in self._buffers:
            yield prefix + name, self, name
        for name, value in self._children():
            if isinstance(value, Module):
                yield from value._named_buffers(f"{prefix}{name}.")

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """Parameters and buffers by dotted name, as NumPy copies."""
        state = {name: to_cpu(p.data).copy() for name, p in self.named_parameters()}
        for name, module, attr in self._named_buffers():
            state[name] = numpy.asarray(getattr(module, attr))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy ``state`` into the parameters (in place, on their device) and buffers."""
        expected = {name for name, _ in self.named_parameters()} | {
            name for name, _, _ in self._named_buffers()}
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {sorted(missing)}, "
                             f"unexpected keys {sorted(unexpected)}")
        for name, p in self.named_parameters():
            value = numpy.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {value.shape}; "
                                 f"expected {p.shape}")
            p.data[...] = get_array_module(p.data).asarray(value, dtype=p.dtype)
        for name, module, attr in self._named_buffers():
            setattr(module, attr, type(getattr(module, attr))(numpy.asarray(state[name])))

    def to_gpu(self) -> "Module":
        """Move every parameter to the GPU (in place; gradients are dropped)."""
        for p in self.parameters():
            p.data, p.grad = to_gpu(p.data), None
        return self

    def to_cpu(self) -> "Module":
        for p in self.parameters():
            p.data, p.grad = to_cpu(p.data), None
        return self

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [f"  ({n}): {repr(m)}".replace("\n", "\n  ")
                    for n, m in self._children() if isinstance(m, Module)]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        return f"{type(self).__name__}(\n" + "\n".join(children) + "\n)"


class Linear(Module):
    """y = x · Wᵀ + b, W (out_features, in_features); one fused ``gpuops.linear`` call."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str | None = None, dtype: Any = numpy.float32) -> None:
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype))
        self.bias = Parameter(_uniform((out_features,), bound, dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return x.linear(self.weight, self.bias, activation=self.activation)

    def extra_repr(self) -> str:
        act = f", activation={self.activation!r}" if self.activation else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}{act}")


class Conv2d(Module):
    """2-d convolution of NCHW input with weight (out, in, kh, kw) and bias (out,)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, bias: bool = True,
                 dtype: Any = numpy.float32) -> None:
        super().__init__()
        kh, kw = _args.pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        fan_in = in_channels * kh * kw
        bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
        self.weight = Parameter(_uniform((out_channels, in_channels, kh, kw), bound, dtype))
        self.bias = Parameter(_uniform((out_channels,), bound, dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return x.conv2d(self.weight, self.bias, stride=self.stride, padding=self.padding,
                        dilation=self.dilation)

    def extra_repr(self) -> str:
        o, c, kh, kw = self.weight.shape
        return f"{c}, {o}, kernel_size=({kh}, {kw}), stride={self.stride}, padding={self.padding}"


class MaxPool2d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return x.max_pool2d(self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    def forward(self, x: Tensor) -> Tensor:
        return x.avg_pool2d(self.kernel_size, stride=self.stride, padding=self.padding)


class LocalResponseNorm(Module):
    """Cross-channel LRN with PyTorch's semantics (``gpuops.lrn``)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: Tensor) -> Tensor:
        return x.lrn(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class Dropout(Module):
    """Inverted dropout. Each call in training mode draws a fresh mask.

    The mask seed of call n is a pure function of (the layer's base seed, n): the base
    seed comes from the global generator when the layer is built (:func:`manual_seed`),
    and the call counter ``calls`` is a buffer saved in ``state_dict``, so a resumed run
    continues the same sequence of masks.
    """

    _buffers = ("calls",)

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p={p} is outside [0, 1]")
        self.p = p
        self.base_seed = int(_generator.integers(0, 2**62))
        self.calls = 0

    def next_seed(self) -> int:
        """The seed of the next mask; advances the counter."""
        # A 64-bit mix (SplitMix64 increment and finalizer) of (base seed, call number).
        z = (self.base_seed + (self.calls + 1) * 0x9E3779B97F4A7C15) & (2**64 - 1)
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        self.calls += 1
        return (z ^ (z >> 31)) >> 1  # 63 bits: fits a signed 64-bit seed

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x.dropout(p=self.p, seed=self.next_seed(), training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Activation(Module):
    method = ""

    def forward(self, x: Tensor) -> Tensor:
        return getattr(x, self.method)()


class ReLU(_Activation):
    method = "relu"


class Sigmoid(_Activation):
    method = "sigmoid"


class Tanh(_Activation):
    method = "tanh"


class Flatten(Module):
    """(N, d1, d2, ...) → (N, d1·d2·...): a view."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class Sequential(Module):
    def __init__(self, *layers: Module) -> None:
        super().__init__()
        self.layers = list(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of logits (N, C) and integer labels (N,): the fused operator."""

    def __init__(self, reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__()
        self.reduction, self.ignore_index = reduction, ignore_index

    def forward(self, logits: Tensor, labels: Any) -> Tensor:
        return logits.cross_entropy(labels, reduction=self.reduction,
                                    ignore_index=self.ignore_index)


class MSELoss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, prediction: Tensor, target: Any) -> Tensor:
        return prediction.mse(target, reduction=self.reduction)


class BCEWithLogitsLoss(MSELoss):
    def forward(self, logits: Tensor, target: Any) -> Tensor:
        return logits.bce_with_logits(target, reduction=self.reduction)
