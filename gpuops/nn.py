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
import types
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

import ml_dtypes
import numpy

from .autograd import Tensor, apply
from .backend import get_array_module, to_cpu, to_gpu
from .ops import _args
from .ops.normalization import update_running_stats

__all__ = ["manual_seed", "Parameter", "Module", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d",
           "LocalResponseNorm", "BatchNorm1d", "BatchNorm2d", "Dropout", "ReLU", "Sigmoid",
           "Tanh", "GELU", "SiLU", "Flatten", "Sequential", "Embedding", "LayerNorm", "RMSNorm",
           "MultiheadAttention", "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss", "utils"]

_generator = numpy.random.default_rng(0)
_BFLOAT16 = numpy.dtype(ml_dtypes.bfloat16)


def manual_seed(seed: int) -> None:
    """Seed the generator that initializes parameters and seeds Dropout layers."""
    global _generator
    _generator = numpy.random.default_rng(seed)


def _is_number(dtype: numpy.dtype) -> bool:
    """NumPy's numeric dtypes and bfloat16 (an ml_dtypes extension dtype, kind 'V')."""
    return numpy.issubdtype(dtype, numpy.number) or dtype == _BFLOAT16


def _uniform(shape: tuple, bound: float, dtype: Any) -> numpy.ndarray:
    return _generator.uniform(-bound, bound, size=shape).astype(dtype)


def normal_(p: Tensor, std: float = 1.0) -> Tensor:
    """Fill ``p`` in place with N(0, std²) from the global generator (``torch.nn.init.normal_``
    with mean 0); returns ``p``."""
    values = _generator.normal(0.0, std, size=p.shape)
    p.data[...] = get_array_module(p.data).asarray(values, dtype=p.dtype)
    return p


class Parameter(Tensor):
    """A leaf Tensor that requires a gradient and that :meth:`Module.parameters` finds."""

    __slots__ = ()

    def __init__(self, data: Any) -> None:
        super().__init__(data, requires_grad=True)


class _IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns (as ``torch.nn.Module``'s)."""

    missing_keys: list
    unexpected_keys: list


def _check_int(layer: str, name: str, value: Any, minimum: int | None) -> int:
    return _args.integer(layer, name, value, minimum)


def _check_flag(layer: str, name: str, value: Any) -> None:
    if not isinstance(value, (bool, numpy.bool_)):
        raise TypeError(f"{layer}: {name} must be a bool, got {value!r}")


def _check_reduction(layer: str, reduction: Any) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{layer}: reduction must be one of 'mean', 'sum', 'none', "
                         f"got {reduction!r}")


def _check_number(layer: str, name: str, value: Any, low: float | None = None,
                  high: float | None = None, low_open: bool = False) -> float:
    value = _args.finite_float(layer, name, value)
    if (low is not None and (value <= low if low_open else value < low)) or (
            high is not None and value > high):
        bound = f"{'(' if low_open else '['}{'-inf' if low is None else low}, " \
                f"{'inf' if high is None else high}]"
        raise ValueError(f"{layer}: {name}={value!r} is outside {bound}")
    return value


class Module:
    """Base layer: finds parameters, buffers and sub-modules among its attributes
    (directly, or inside a list or tuple attribute), in attribute order."""

    _buffers: tuple = ()  # names of integer/array state saved in state_dict

    def __init__(self) -> None:
        self.training = True

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def _children(self) -> Iterator[tuple[str, Any]]:
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, (Parameter, Module)):
                        yield f"{name}.{i}", item

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """The direct sub-modules by name; one shared by two names is given once."""
        seen: set[int] = set()
        for name, value in self._children():
            if isinstance(value, Module) and id(value) not in seen:
                seen.add(id(value))
                yield name, value

    def children(self) -> Iterator["Module"]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """This module (name ``prefix``) and every sub-module, depth first, by dotted name;
        a module reached twice is given once unless ``remove_duplicate=False``."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, value in self._children():
            if isinstance(value, Module):
                yield from value.named_modules(memo, f"{prefix}.{name}" if prefix else name,
                                               remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Parameters by dotted name, in order. A parameter shared by several layers (or
        reached twice) is given once, under its first name, unless ``remove_duplicate=False``
        (as ``torch.nn.Module.named_parameters``); ``recurse=False``: this module's own."""
        seen: set[int] = set()
        for name, p in self._all_parameters(prefix, recurse):
            if remove_duplicate:
                if id(p) in seen:
                    continue
                seen.add(id(p))
            yield name, p

    def _all_parameters(self, prefix: str, recurse: bool) -> Iterator[tuple[str, Parameter]]:
        for name, value in self._children():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif recurse:
                yield from value._all_parameters(f"{prefix}{name}.", True)

    def parameters(self, recurse: bool = True) -> list[Parameter]:
        """The parameters, each once (by identity), in order."""
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def apply(self, fn: Callable[["Module"], Any]) -> "Module":
        """Call ``fn`` on every sub-module (children first, as torch) and on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def train(self, mode: bool = True) -> "Module":
        """Set the ``training`` flag of this module and its sub-modules (Dropout reads it)."""
        if not isinstance(mode, (bool, numpy.bool_)):
            raise ValueError(f"{type(self).__name__}.train: mode must be a bool, got {mode!r}")
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (``set_to_none=True``, the default) or zero them in place."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def _named_buffers(self, prefix: str = "") -> Iterator[tuple[str, "Module", str]]:
        for name in self._buffers:
            yield prefix + name, self, name
        for name, value in self._children():
            if isinstance(value, Module):
                yield from value._named_buffers(f"{prefix}{name}.")

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """Parameters and buffers by dotted name, as NumPy copies (a shared parameter under
        each of its names, as torch)."""
        state = {name: to_cpu(p.data).copy()
                 for name, p in self.named_parameters(remove_duplicate=False)}
        for name, module, attr in self._named_buffers():
            value = getattr(module, attr)
            # array buffers (BatchNorm's running statistics) as NumPy copies too
            state[name] = to_cpu(value).copy() if hasattr(value, "shape") else numpy.asarray(value)
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> _IncompatibleKeys:
        """Copy ``state`` into the parameters (in place, on their device) and buffers.

        ``strict=True``: the keys must be exactly :meth:`state_dict`'s, else ValueError
        listing the missing and unexpected keys; ``strict=False``: the keys present are
        loaded and the others returned. Shapes must match either way. Everything is
        checked before anything is written. Returns ``(missing_keys, unexpected_keys)``.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, Mapping):
            raise TypeError(f"{where}: state must be a dict, got {type(state).__name__}")
        params = list(self.named_parameters(remove_duplicate=False))
        buffers = list(self._named_buffers())
        expected = [name for name, _ in params] + [name for name, _, _ in buffers]
        missing = [k for k in expected if k not in state]
        unexpected = sorted(k for k in state if k not in set(expected))
        if strict and (missing or unexpected):
            raise ValueError(f"{where}: missing keys {missing}, unexpected keys {unexpected}")
        values = {}
        for name, p in params:
            if name in state:
                try:
                    value = numpy.asarray(state[name])
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{where}: {name} is not an array ({e})") from None
                if value.shape != p.shape:
                    raise ValueError(f"{where}: {name} has shape {value.shape}; "
                                     f"expected {p.shape}")
                if not (_is_number(value.dtype) or value.dtype == numpy.bool_):
                    raise ValueError(f"{where}: {name} has dtype {value.dtype}; expected "
                                     f"numbers like {p.dtype}")
                values[name] = value
        buffer_values = {}
        for name, module, attr in buffers:
            if name in state:
                value = numpy.asarray(state[name])
                current = getattr(module, attr)
                if hasattr(current, "shape"):  # an array buffer: same shape, numbers
                    if value.shape != tuple(current.shape) or not _is_number(value.dtype):
                        raise ValueError(f"{where}: {name} has shape {value.shape} and dtype "
                                         f"{value.dtype}; expected {tuple(current.shape)} "
                                         f"numbers")
                    buffer_values[name] = value
                    continue
                kind = type(current)
                if kind is int and (value.shape != () or not numpy.issubdtype(value.dtype,
                                                                              numpy.integer)):
                    raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
                buffer_values[name] = kind(value)
        for name, p in params:
            if name in values:
                p.data[...] = get_array_module(p.data).asarray(values[name], dtype=p.dtype)
        for name, module, attr in buffers:
            if name in buffer_values:
                current = getattr(module, attr)
                if hasattr(current, "shape"):  # in place, on its device
                    current[...] = get_array_module(current).asarray(buffer_values[name],
                                                                     dtype=current.dtype)
                else:
                    setattr(module, attr, buffer_values[name])
        return _IncompatibleKeys(missing, unexpected)

    def to_gpu(self) -> "Module":
        """Move every parameter to the GPU (in place; gradients are dropped)."""
        for p in self.parameters():
            p.data, p.grad = to_gpu(p.data), None
        self._move_buffers(to_gpu)
        return self

    def _move_buffers(self, move: Callable) -> None:
        """Array buffers (BatchNorm's running statistics) follow the parameters."""
        for _, module, attr in self._named_buffers():
            if hasattr(getattr(module, attr), "shape"):
                setattr(module, attr, move(getattr(module, attr)))

    def to_cpu(self) -> "Module":
        for p in self.parameters():
            p.data, p.grad = to_cpu(p.data), None
        self._move_buffers(to_cpu)
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
        in_features = _check_int("Linear", "in_features", in_features, 0)
        out_features = _check_int("Linear", "out_features", out_features, 0)
        _check_flag("Linear", "bias", bias)
        if activation not in (None, "relu", "sigmoid", "tanh"):
            raise ValueError("Linear: activation must be one of None, 'relu', 'sigmoid', "
                             f"'tanh'; got {activation!r}")
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
    """``torch.nn.Conv2d``: 2-d convolution of NCHW (or unbatched CHW) input with weight
    (out, in / groups, kh, kw) and bias (out,); ``padding`` an int, a pair, "same" or "valid"."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 dtype: Any = numpy.float32) -> None:
        super().__init__()
        in_channels = _check_int("Conv2d", "in_channels", in_channels, 0)
        out_channels = _check_int("Conv2d", "out_channels", out_channels, 0)
        kh, kw = _args.pair("Conv2d", "kernel_size", kernel_size, 1)
        stride_pair = _args.pair("Conv2d", "stride", stride, 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and stride_pair != (1, 1):
                raise ValueError(f"Conv2d: padding='same' needs stride 1, got stride={stride!r}")
        else:
            _args.pair("Conv2d", "padding", padding, 0)
        _args.pair("Conv2d", "dilation", dilation, 1)
        groups = _check_int("Conv2d", "groups", groups, 1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        _check_flag("Conv2d", "bias", bias)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        fan_in = in_channels // groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
        self.weight = Parameter(_uniform((out_channels, in_channels // groups, kh, kw), bound,
                                         dtype))
        self.bias = Parameter(_uniform((out_channels,), bound, dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return x.conv2d(self.weight, self.bias, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=self.groups)

    def extra_repr(self) -> str:
        o, c, kh, kw = self.weight.shape
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return (f"{c * self.groups}, {o}, kernel_size=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}{groups}")


class _Pool2d(Module):
    """What both pooling layers share: the window, its stride and padding, and ceil_mode; the
    operator checks every option again when it runs (``gpuops.max_pool2d``/``avg_pool2d``)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        layer = type(self).__name__
        _args.pair(layer, "kernel_size", kernel_size, 1)
        if stride is not None:
            _args.pair(layer, "stride", stride, 1)
        _args.pair(layer, "padding", padding, 0)
        _args.boolean(layer, "ceil_mode", ceil_mode)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode = bool(ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                + (", ceil_mode=True" if self.ceil_mode else ""))


class MaxPool2d(_Pool2d):
    """``torch.nn.MaxPool2d`` (no ``return_indices``)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        _args.pair(type(self).__name__, "dilation", dilation, 1)
        self.dilation = dilation

    def forward(self, x: Tensor) -> Tensor:
        return x.max_pool2d(self.kernel_size, stride=self.stride, padding=self.padding,
                            dilation=self.dilation, ceil_mode=self.ceil_mode)


class AvgPool2d(_Pool2d):
    """``torch.nn.AvgPool2d``."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        _args.boolean(type(self).__name__, "count_include_pad", count_include_pad)
        if divisor_override is not None:
            _args.integer(type(self).__name__, "divisor_override", divisor_override)
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x: Tensor) -> Tensor:
        return x.avg_pool2d(self.kernel_size, stride=self.stride, padding=self.padding,
                            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                            divisor_override=self.divisor_override)


class LocalResponseNorm(Module):
    """Cross-channel LRN with PyTorch's semantics (``gpuops.lrn``)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        size = _check_int("LocalResponseNorm", "size", size, 1)
        for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
            _check_number("LocalResponseNorm", name, value)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: Tensor) -> Tensor:
        return x.lrn(size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class _BatchNorm(Module):
    """Batch normalization over axis 1 (``gpuops.batch_norm``), as ``torch.nn.BatchNorm*d``.

    Training mode: the batch statistics (biased variance) normalize; with
    ``track_running_stats`` the buffers ``running_mean`` and ``running_var`` become
    (1 - momentum) · running + momentum · batch statistic, the variance unbiased
    (M/(M-1), M values per channel), and ``num_batches_tracked`` counts the batches
    (``momentum=None``: the cumulative average, momentum 1/num_batches_tracked).
    Evaluation mode: the running statistics normalize (batch statistics when not
    tracked). The buffers are in ``state_dict`` and follow the input's device.
    """

    _ndims: tuple = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: Any = numpy.float32) -> None:
        super().__init__()
        layer = type(self).__name__
        self.num_features = _check_int(layer, "num_features", num_features, 1)
        self.eps = _check_number(layer, "eps", eps, low=0.0, low_open=True)
        self.momentum = None if momentum is None else _check_number(layer, "momentum", momentum)
        _check_flag(layer, "affine", affine)
        _check_flag(layer, "track_running_stats", track_running_stats)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        C = self.num_features
        self.running_mean: Any = None  # (C,) arrays while tracked
        self.running_var: Any = None
        self.weight = Parameter(numpy.ones(C, dtype)) if self.affine else None
        self.bias = Parameter(numpy.zeros(C, dtype)) if self.affine else None
        if self.track_running_stats:
            self._buffers = ("running_mean", "running_var", "num_batches_tracked")
            self.running_mean = numpy.zeros(C, dtype)
            self.running_var = numpy.ones(C, dtype)
            self.num_batches_tracked = 0
        else:
            self._buffers = ()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked = 0

    def forward(self, x: Tensor) -> Tensor:
        layer = type(self).__name__
        shape = tuple(x.shape)
        if len(shape) not in self._ndims:
            expected = " or ".join(f"{n}D" for n in self._ndims)
            raise ValueError(f"{layer}: expected {expected} input (got {len(shape)}D input)")
        if shape[1] != self.num_features:
            raise ValueError(f"{layer}: input has {shape[1]} channels (shape {shape}); "
                             f"expected num_features={self.num_features}")
        xp = get_array_module(x.data)
        if self.affine:
            weight, bias = self.weight, self.bias
        else:
            weight, bias = xp.ones(shape[1], x.dtype), xp.zeros(shape[1], x.dtype)
        if self.training and math.prod(shape) // shape[1] <= 1:
            raise ValueError(f"{layer}: expected more than 1 value per channel when training, "
                             f"got input size {shape}")
        if not self.track_running_stats:
            return x.batch_norm(weight, bias, axis=1, eps=self.eps)
        if get_array_module(self.running_mean) is not xp:  # follow the input's device
            move = to_cpu if xp is numpy else to_gpu
            self.running_mean, self.running_var = move(self.running_mean), move(self.running_var)
        if self.training:
            self.num_batches_tracked += 1
            momentum = (1.0 / self.num_batches_tracked if self.momentum is None
                        else self.momentum)
            update_running_stats(x.data, self.running_mean, self.running_var, axis=1,
                                 momentum=momentum)
            return x.batch_norm(weight, bias, axis=1, eps=self.eps)
        return x.batch_norm(weight, bias, axis=1, eps=self.eps, running_mean=self.running_mean,
                            running_var=self.running_var)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) inputs."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) inputs."""

    _ndims = (4,)


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
        if isinstance(p, (bool, numpy.bool_)) or not isinstance(p, (int, float, numpy.floating,
                                                                      numpy.integer)):
            raise TypeError(f"Dropout: p must be a number in [0, 1], got {p!r}")
        if not 0.0 <= p <= 1.0:  # also rejects nan
            raise ValueError(f"Dropout: p={p} is outside [0, 1]")
        p = float(p)
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


class GELU(_Activation):
    """``torch.nn.GELU``: x·Φ(x) (``approximate="none"``) or GPT-2's tanh approximation
    0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (``approximate="tanh"``)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return x.gelu(approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Activation):
    """x·σ(x) (also called swish)."""

    method = "silu"


class Flatten(Module):
    """(N, d1, d2, ...) → (N, d1·d2·...): a view."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class Sequential(Module):
    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} must be an nn.Module, "
                                f"got {type(layer).__name__}")
        self.layers = list(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)


def _last_axis(layer: str, normalized_shape: Any) -> int:
    """``normalized_shape`` as the size of the last axis: an int or a 1-tuple (the
    normalization operators work over the last axis only)."""
    if isinstance(normalized_shape, (tuple, list)):
        if len(normalized_shape) != 1:
            raise ValueError(f"{layer}: normalized_shape must be an int or a 1-tuple (the last "
                             f"axis only), got {tuple(normalized_shape)!r}")
        normalized_shape = normalized_shape[0]
    return _check_int(layer, "normalized_shape", normalized_shape, 1)


def _check_last_axis(layer: str, x: Tensor, size: int) -> None:
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{layer}: input of shape {x.shape} does not end in the "
                         f"normalized_shape ({size},)")


class Embedding(Module):
    """``torch.nn.Embedding``: a table ``weight`` (num_embeddings, embedding_dim), N(0, 1) as
    torch; ``forward(ids)`` with integer ids of any shape gives ids.shape + (embedding_dim,)
    (``gpuops.embedding``; the gradient goes to the rows used, repeated ids summed)."""

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 dtype: Any = numpy.float32) -> None:
        super().__init__()
        self.num_embeddings = _check_int("Embedding", "num_embeddings", num_embeddings, 1)
        self.embedding_dim = _check_int("Embedding", "embedding_dim", embedding_dim, 1)
        self.weight = normal_(Parameter(numpy.zeros((num_embeddings, embedding_dim), dtype)))

    def forward(self, ids: Any) -> Tensor:
        return apply("embedding", ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """``torch.nn.LayerNorm`` over the last axis: (x - mean) / √(var + eps) · weight + bias,
    the biased variance of each row (``gpuops.layer_norm``); weight ones and bias zeros,
    learned unless ``elementwise_affine=False`` (``bias=False``: no bias, as torch)."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype: Any = numpy.float32) -> None:
        super().__init__()
        size = _last_axis("LayerNorm", normalized_shape)
        self.normalized_shape = (size,)
        self.eps = _check_number("LayerNorm", "eps", eps, low=0.0, low_open=True)
        _check_flag("LayerNorm", "elementwise_affine", elementwise_affine)
        _check_flag("LayerNorm", "bias", bias)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = Parameter(numpy.ones(size, dtype)) if elementwise_affine else None
        self.bias = Parameter(numpy.zeros(size, dtype)) if elementwise_affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        size = self.normalized_shape[0]
        _check_last_axis("LayerNorm", x, size)
        xp = get_array_module(x.data)
        weight = self.weight if self.weight is not None else xp.ones(size, x.dtype)
        bias = self.bias if self.bias is not None else xp.zeros(size, x.dtype)
        return x.layer_norm(weight, bias, eps=self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class RMSNorm(Module):
    """``torch.nn.RMSNorm`` over the last axis: x / √(mean(x²) + eps) · weight
    (``gpuops.rms_norm``); weight ones, learned unless ``elementwise_affine=False``."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-6, elementwise_affine: bool = True,
                 dtype: Any = numpy.float32) -> None:
        super().__init__()
        size = _last_axis("RMSNorm", normalized_shape)
        self.normalized_shape = (size,)
        self.eps = _check_number("RMSNorm", "eps", eps, low=0.0, low_open=True)
        _check_flag("RMSNorm", "elementwise_affine", elementwise_affine)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = Parameter(numpy.ones(size, dtype)) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        size = self.normalized_shape[0]
        _check_last_axis("RMSNorm", x, size)
        weight = self.weight if self.weight is not None else get_array_module(x.data).ones(
            size, x.dtype)
        return x.rms_norm(weight, eps=self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class MultiheadAttention(Module):
    """``torch.nn.MultiheadAttention`` with the parameters of torch's (so state dicts map):
    ``in_proj_weight`` (3E, E) holding W_q, W_k, W_v stacked, ``in_proj_bias`` (3E,) and
    ``out_proj`` (a Linear E → E). Inputs are (B, T, E) (``batch_first=True``, the default
    here; torch's default is False, (T, B, E), which is also accepted). The options after
    ``bias`` are keywords (torch has others at those positions).

    ``forward(query, key=None, value=None, is_causal=None)``: key and value default to the
    query (self-attention: one product with ``in_proj_weight``); heads are split by reshape
    and transpose to (B, H, T, E/H) and attended by the fused ``gpuops.attention`` (scale
    1/√(E/H)), causally when ``is_causal`` (default: the constructor's ``causal``). Returns
    ``(output, None)`` as torch's ``need_weights=False``: the fused operator never forms
    the attention weights. torch's ``attn_mask``/``key_padding_mask`` are not supported, and
    neither is dropout on the attention weights (``dropout`` must be 0). Initialisation as
    torch: xavier-uniform ``in_proj_weight``, zero biases, ``out_proj.weight`` U(±1/√E).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 *, batch_first: bool = True, causal: bool = False,
                 dtype: Any = numpy.float32) -> None:
        super().__init__()
        layer = "MultiheadAttention"
        self.embed_dim = _check_int(layer, "embed_dim", embed_dim, 1)
        self.num_heads = _check_int(layer, "num_heads", num_heads, 1)
        if embed_dim % num_heads:
            raise ValueError(f"{layer}: embed_dim ({embed_dim}) must be divisible by "
                             f"num_heads ({num_heads})")
        if _check_number(layer, "dropout", dropout, 0.0, 1.0) != 0.0:
            raise ValueError(f"{layer}: dropout={dropout} on the attention weights is not "
                             "supported (the fused attention operator has none); use 0.0")
        for name, flag in (("bias", bias), ("batch_first", batch_first), ("causal", causal)):
            _check_flag(layer, name, flag)
        self.batch_first, self.causal = bool(batch_first), bool(causal)
        bound = math.sqrt(6.0 / (embed_dim + 3 * embed_dim))  # xavier_uniform_ of (3E, E)
        self.in_proj_weight = Parameter(_uniform((3 * embed_dim, embed_dim), bound, dtype))
        self.in_proj_bias = Parameter(numpy.zeros(3 * embed_dim, dtype)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        if self.out_proj.bias is not None:
            self.out_proj.bias.data[...] = 0

    def _project(self, x: Tensor, part: int) -> Tensor:
        """x · W_partᵀ + b_part (part 0: query, 1: key, 2: value)."""
        E = self.embed_dim
        rows = slice(part * E, (part + 1) * E)
        bias = None if self.in_proj_bias is None else self.in_proj_bias[rows]
        return x.linear(self.in_proj_weight[rows], bias)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, T, E) → (B, H, T, E/H)."""
        B, T, _ = x.shape
        return x.reshape(B, T, self.num_heads, -1).permute(0, 2, 1, 3)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                is_causal: bool | None = None) -> tuple[Tensor, None]:
        layer = "MultiheadAttention"
        key = query if key is None else key
        value = key if value is None else value
        for name, x in (("query", query), ("key", key), ("value", value)):
            if x.ndim != 3 or x.shape[-1] != self.embed_dim:
                raise ValueError(f"{layer}: {name} must be 3-d with last axis embed_dim="
                                 f"{self.embed_dim}, got shape {x.shape}")
        causal = self.causal if is_causal is None else is_causal
        _check_flag(layer, "is_causal", causal)
        if not self.batch_first:
            query, key, value = (x.permute(1, 0, 2) for x in (query, key, value))
        B, T, E = query.shape
        if key is query and value is query:  # self-attention: one product, then split
            qkv = query.linear(self.in_proj_weight, self.in_proj_bias)
            qkv = qkv.reshape(B, T, 3, self.num_heads, E // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q, k, v = (self._heads(self._project(x, i)) for i, x in
                       enumerate((query, key, value)))
        y = q.attention(k, v, causal=bool(causal))  # (B, H, T, E/H)
        y = self.out_proj(y.permute(0, 2, 1, 3).reshape(B, T, E))
        return (y if self.batch_first else y.permute(1, 0, 2)), None

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"batch_first={self.batch_first}, causal={self.causal}")


def clip_grad_norm_(parameters: Any, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_``: scale the gradients of ``parameters`` (a Tensor or
    an iterable of them; those without a gradient are skipped) in place so that their joint
    2-norm is at most ``max_norm`` (``gpuops.clip_grad_norm``: coefficient
    min(max_norm / (norm + 1e-6), 1)). Returns the norm before clipping as a 0-d Tensor."""
    from .ops.optim import clip_grad_norm
    items: Iterable = [parameters] if isinstance(parameters, Tensor) else parameters
    grads = [p.grad for p in items if p.grad is not None]
    if not grads:
        return Tensor(numpy.zeros((), numpy.float32))
    return Tensor(clip_grad_norm(grads, max_norm, norm_type=norm_type,
                                 error_if_nonfinite=error_if_nonfinite))


utils = types.SimpleNamespace(clip_grad_norm_=clip_grad_norm_)  # torch.nn.utils.clip_grad_norm_


def _data_of(x: Any) -> Any:
    """A loss option given as a Tensor or an array: the array (None stays None)."""
    return x.data if isinstance(x, Tensor) else x


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of logits (N, C) or (N, C, d1, ...) and integer labels or class
    probabilities: the fused operator, with torch's ``weight=`` and ``label_smoothing=``."""

    def __init__(self, reduction: str = "mean", ignore_index: int = -100, *,
                 weight: Any = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_reduction("CrossEntropyLoss", reduction)
        ignore_index = _check_int("CrossEntropyLoss", "ignore_index", ignore_index, None)
        _check_number("CrossEntropyLoss", "label_smoothing", label_smoothing, 0.0, 1.0)
        self.reduction, self.ignore_index = reduction, ignore_index
        self.weight, self.label_smoothing = _data_of(weight), label_smoothing

    def forward(self, logits: Tensor, labels: Any) -> Tensor:
        return logits.cross_entropy(labels, reduction=self.reduction,
                                    ignore_index=self.ignore_index, weight=self.weight,
                                    label_smoothing=self.label_smoothing)


class MSELoss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(type(self).__name__, reduction)
        self.reduction = reduction

    def forward(self, prediction: Tensor, target: Any) -> Tensor:
        return prediction.mse(target, reduction=self.reduction)


class BCEWithLogitsLoss(Module):
    """Binary cross-entropy of logits and targets, with torch's ``weight=`` and
    ``pos_weight=`` (broadcast against the logits)."""

    def __init__(self, reduction: str = "mean", *, weight: Any = None,
                 pos_weight: Any = None) -> None:
        super().__init__()
        _check_reduction(type(self).__name__, reduction)
        self.reduction = reduction
        self.weight, self.pos_weight = _data_of(weight), _data_of(pos_weight)

    def forward(self, logits: Tensor, target: Any) -> Tensor:
        return logits.bce_with_logits(target, reduction=self.reduction, weight=self.weight,
                                      pos_weight=self.pos_weight)


def __getattr__(name: str) -> Any:
    """``nn.parallel.DistributedDataParallel`` (PyTorch's place for it) is
    :class:`gpuops.distributed.DistributedDataParallel`, imported on first use (gpuops.distributed
    imports this module)."""
    if name == "parallel":
        from .distributed import DistributedDataParallel
        return types.SimpleNamespace(DistributedDataParallel=DistributedDataParallel)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
