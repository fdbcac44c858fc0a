"""Reverse-mode automatic differentiation over the registered operators.

A :class:`Tensor` wraps a NumPy or CuPy array. Calling an operator on tensors
(:func:`apply`, or a Tensor method such as ``t.relu()``) runs the operator's
forward from :data:`gpuops.OPERATORS` and, when an input requires a gradient,
records one generic :class:`Function` node: the operator's registry entry, its
inputs, its keyword parameters and its output. ``backward`` walks those nodes
in reverse topological order (an explicit stack, no recursion) and calls the
registered ``<name>_wrt_x<k>`` functions; the only arithmetic of this module
is the accumulation of gradients of tensors used more than once, through
``gpuops.add(..., out=...)``. ``reshape`` is a view and needs no operator. A few Tensor
methods that are no registered operator record a node with a closure gradient
(:class:`_Closure`): ``clone``, ``astype``/``to``, indexing (``t[key]``: zeros with ``gy``
scattered in, repeated indices summed deterministically, without atomics on CuPy) and
``s ** t`` for a base ``s <= 0`` (``s > 0`` goes through the exp and mul operators).

Decisions: ``Tensor.grad`` is a plain array (what the optimizer operators take);
comparisons return boolean Tensors that never require a gradient; the graph is
freed by ``backward`` unless ``retain_graph=True`` (a second backward through a
freed node raises ``RuntimeError``); in-place ``+= -= *= /=`` write into ``data`` under
``no_grad`` or on tensors without a gradient, raise ``RuntimeError`` on a leaf that requires
one, and rebind a non-leaf to a new recorded node (no version counters).
"""
from __future__ import annotations

import collections
import contextlib
import inspect
import math
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

import ml_dtypes
import numpy

from . import backend as _backend
from . import ops as _ops  # noqa: F401  (registers every operator before the methods are made)
from .registry import OPERATORS

__all__ = ["Tensor", "Function", "apply", "no_grad", "is_grad_enabled", "from_dlpack"]

Array = Any
_state = threading.local()
# How many no_grad scopes are open in any thread: while none is, recording is on everywhere
# and is_grad_enabled() needs no thread-local look-up (it runs on every operator call).
_no_grad_scopes = 0
_scopes_lock = threading.Lock()
# How many autocast regions (gpuops.amp.autocast) are open in any thread: while none is,
# apply() does not look at the autocast policy.
_autocast_scopes = 0
# Called with each leaf once its gradient of the running backward is complete (every use
# of it accumulated): gpuops.distributed all-reduces gradients while backward still runs.
# While the list is empty, backward does no bookkeeping for it.
grad_ready_hooks: list[Callable[["Tensor"], None]] = []


def is_grad_enabled() -> bool:
    return not _no_grad_scopes or getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Run operators without recording the graph (evaluation, optimizer updates)."""
    global _no_grad_scopes
    previous = is_grad_enabled()
    _state.grad_enabled = False
    with _scopes_lock:
        _no_grad_scopes += 1
    try:
        yield
    finally:
        _state.grad_enabled = previous
        with _scopes_lock:
            _no_grad_scopes -= 1


def _operator(name: str):
    op = OPERATORS.get(name)
    if op is None:
        raise NotImplementedError(f"gpuops.{name} is not available in this build of gpuops "
                                  f"(registered operators: {', '.join(sorted(OPERATORS))})")
    return op


class Function:
    """One recorded operator call: ``y = op(*inputs, **params)``.

    Built from a registry entry, so every registered operator is differentiable
    without code of its own here. Holds the input arrays and the output array
    until :meth:`release` (called by ``backward`` unless the graph is retained).
    """

    __slots__ = ("name", "inputs", "arrays", "params", "y", "released", "_grads", "_fused",
                 "_saved")

    def __init__(self, name: str, grads: dict, inputs: tuple, arrays: tuple, params: dict,
                 y: Array, fused: Callable | None = None, saved: dict | None = None) -> None:
        self.name = name
        self._grads = grads
        self._fused = fused  # the operator's fused ``backward`` (registry.Operator), if any
        self._saved = saved  # {"saved": what its forward_saving returned}, or None
        self.inputs = inputs
        self.arrays = arrays
        self.params = params
        self.y = y
        self.released = False

    def parents(self) -> Iterator["Tensor"]:
        """Inputs that need a gradient."""
        return (t for t in self.inputs if isinstance(t, Tensor) and t.requires_grad)

    def backward(self, gy: Array) -> list[tuple["Tensor", Array]]:
        """(input tensor, gradient) for each input that requires one."""
        if self.released:
            raise RuntimeError(
                f"backward through the graph of {self.name} a second time: the graph was "
                "freed by the first backward; pass retain_graph=True to keep it")
        if self._fused is not None:
            needs = tuple(isinstance(t, Tensor) and t.requires_grad for t in self.inputs)
            grads = self._fused(*self.arrays, self.y, gy, needs=needs, **(self._saved or {}),
                                **self.params)
            return [(t, g) for t, g, need in zip(self.inputs, grads, needs) if need]
        out = []
        for k, t in enumerate(self.inputs, start=1):
            if isinstance(t, Tensor) and t.requires_grad:
                out.append((t, self._grads[k](*self.arrays, self.y, gy, **self.params)))
        return out

    def release(self) -> None:
        self.inputs = self.arrays = ()
        self.y = None
        self._saved = None
        self.released = True

    def __repr__(self) -> str:
        return f"<Function {self.name}>"


class _Reshape(Function):
    """A view of the input with another shape: the gradient is ``gy`` reshaped back."""

    __slots__ = ()

    def __init__(self, x: "Tensor") -> None:
        super().__init__("reshape", {}, (x,), (), {"shape": x.shape}, None)

    def backward(self, gy: Array) -> list[tuple["Tensor", Array]]:
        if self.released:
            raise RuntimeError("backward through the graph of reshape a second time: the graph "
                               "was freed by the first backward; pass retain_graph=True to keep it")
        (x,) = self.inputs
        return [(x, gy.reshape(self.params["shape"]))]


class _Closure(Function):
    """A node whose gradient is ``backward_fn(gy)`` for its one input (clone, astype,
    indexing, scalar ** tensor with a base <= 0): Tensor methods that are not registered
    operators. The closure holds what it needs (index arrays, shapes, dtypes)."""

    __slots__ = ("_backward_fn",)

    def __init__(self, name: str, x: "Tensor", backward_fn: Callable[[Array], Array]) -> None:
        super().__init__(name, {}, (x,), (), {}, None)
        self._backward_fn = backward_fn

    def backward(self, gy: Array) -> list[tuple["Tensor", Array]]:
        if self.released:
            raise RuntimeError(
                f"backward through the graph of {self.name} a second time: the graph was "
                "freed by the first backward; pass retain_graph=True to keep it")
        (x,) = self.inputs
        return [(x, self._backward_fn(gy))]

    def release(self) -> None:
        super().release()
        self._backward_fn = None  # type: ignore[assignment]


def _segment_sum(xp: Any, index: Array, values: Array, size: int) -> Array:
    """``out[i] = Σ values[j] over j with index[j] == i`` (length ``size``) without atomics:
    a stable sort of ``index`` and a segmented inclusive scan by doubling (Hillis-Steele,
    ceil(log2 m) passes for the largest multiplicity m), so the sum order, and the result,
    is fixed for fixed inputs. Array-module calls only: the same code runs on NumPy and CuPy."""
    out = xp.zeros(size, dtype=values.dtype)
    n = int(index.size)
    if n == 0:
        return out
    # CuPy's argsort is always stable and takes no kind= but None
    order = xp.argsort(index, kind="stable") if xp is numpy else xp.argsort(index)
    keys = index[order]
    v = values[order]
    position = xp.arange(n)
    start = xp.searchsorted(keys, keys, side="left")  # first position of each key's segment
    longest = int((position - start).max()) + 1
    d = 1
    while d < longest:
        shifted = xp.zeros_like(v)
        shifted[d:] = v[:-d]
        v = v + xp.where(position - d >= start, shifted, 0)
        d *= 2
    last = xp.ones(n, dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    out[keys[last]] = v[last]
    return out


def _scatter_sum(xp: Any, shape: tuple, key: tuple, gy: Array) -> Array:
    """Zeros of ``shape`` with ``gy`` added at ``[key]``, repeated places summed, without
    atomics: the flat index of every element of ``x[key]`` (indexing an arange the same way)
    and :func:`_segment_sum` (the gradient of advanced indexing on CuPy)."""
    size = int(numpy.prod(shape))
    flat = xp.arange(size).reshape(shape)[key]
    return _segment_sum(xp, flat.ravel(), gy.ravel(), size).reshape(shape)


def _is_basic_key(key: tuple) -> bool:
    """Only ints, slices, None and Ellipsis: NumPy basic indexing (a view, no repeats)."""
    for k in key:
        if k is None or k is Ellipsis or isinstance(k, slice):
            continue
        if isinstance(k, (int, numpy.integer)) and not isinstance(k, (bool, numpy.bool_)):
            continue
        return False
    return True


def _index_key(key: Any, xp: Any) -> tuple:
    """``key`` as a tuple with Tensors replaced by their data and lists by arrays of ``xp``."""
    if not isinstance(key, tuple):
        key = (key,)
    out = []
    for k in key:
        if isinstance(k, Tensor):
            k = k.data
        if isinstance(k, list) or (xp is not numpy and isinstance(k, numpy.ndarray)):
            k = xp.asarray(k)
        out.append(k)
    return tuple(out)


def _foreign_operand(where: str, x: Any) -> TypeError | None:
    """A clear TypeError for an array-like gpuops does not take as it is (a DLPack producer
    such as a PyTorch tensor, a list or tuple), else None."""
    kind = f"{type(x).__module__}.{type(x).__qualname__}".replace("builtins.", "")
    if hasattr(x, "__dlpack__"):
        return TypeError(f"{where}: got a {kind}; gpuops takes NumPy/CuPy arrays and Tensors: "
                         "wrap a DLPack producer (a PyTorch/JAX tensor) with "
                         "gpuops.from_dlpack(x) (no copy)")
    if isinstance(x, (list, tuple)):
        return TypeError(f"{where}: got a {kind}; gpuops takes NumPy/CuPy arrays and Tensors: "
                         "pass gpuops.Tensor(numpy.asarray(x)) or numpy.asarray(x)")
    return None


# The out-of-place dunder of each in-place update (its array-module ufunc name as key).
_OUT_OF_PLACE = {"add": "add", "subtract": "sub", "multiply": "mul", "true_divide": "truediv"}


def _dim(method: str, dim: Any, n: int) -> int:
    """``dim`` in [-n, n) as a non-negative axis; IndexError like PyTorch's otherwise."""
    if not isinstance(dim, (int, numpy.integer)) or isinstance(dim, bool):
        raise TypeError(f"Tensor.{method}: dim must be an int, got {type(dim).__name__}")
    if not -n <= dim < n:
        raise IndexError(f"Tensor.{method}: dimension out of range (expected to be in range "
                         f"of [{-n}, {n - 1}], but got {dim})")
    return int(dim) % n


def _dtype(method: str, dtype: Any) -> numpy.dtype:
    try:
        return numpy.dtype(dtype)
    except TypeError:
        hint = (" (move between devices with to_gpu() / to_cpu())"
                if isinstance(dtype, str) and dtype.split(":")[0] in ("cpu", "cuda") else "")
        raise TypeError(f"Tensor.{method}: dtype must be a NumPy dtype (numpy.float32, "
                        f"'float64', ...), got {dtype!r}{hint}") from None


_BFLOAT16 = numpy.dtype(ml_dtypes.bfloat16)


def _is_float(dtype: Any) -> bool:
    """A floating dtype: NumPy's (kind 'f') or bfloat16 (an ml_dtypes extension, kind 'V')."""
    return dtype.kind == "f" or dtype == _BFLOAT16


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def apply(name: str, *inputs: Any, **params: Any) -> "Tensor":
    """``gpuops.<name>(*inputs, **params)`` on Tensors (arrays, scalars and None pass through),
    recording the call for ``backward`` when an input requires a gradient. Inside a
    ``gpuops.autocast`` region the inputs are first cast by its policy (:mod:`gpuops.amp`)."""
    op = OPERATORS.get(name) or _operator(name)
    if _autocast_scopes:
        inputs = _amp.cast_inputs(name, inputs)
    arrays = tuple([x.data if isinstance(x, Tensor) else x for x in inputs])
    needs = False
    if is_grad_enabled():
        for k, x in enumerate(inputs, start=1):
            if isinstance(x, Tensor) and x.requires_grad:
                if k not in op.grads:
                    raise TypeError(f"{name}: input x{k} requires a gradient but {name} has "
                                    f"no {name}_wrt_x{k}")
                needs = True
    if not needs:
        return Tensor._wrap(op.forward(*arrays, **params), None)
    saved = None
    if op.forward_saving is not None:
        y, kept = op.forward_saving(*arrays, **params)
        saved = {"saved": kept}
    else:
        y = op.forward(*arrays, **params)
    return Tensor._wrap(y, Function(name, op.grads, inputs, arrays, params, y, op.backward,
                                    saved))


def _topological(root: Function) -> list[Function]:
    """Functions reachable from ``root``, each before the functions that produced its inputs.

    Iterative depth-first post-order (deep graphs do not hit the recursion limit).
    """
    post: list[Function] = []
    seen = {id(root)}
    stack = [(root, root.parents())]
    while stack:
        fn, pending = stack[-1]
        for t in pending:
            creator = t.creator
            if creator is not None and id(creator) not in seen:
                seen.add(id(creator))
                stack.append((creator, creator.parents()))
                break
        else:
            stack.pop()
            post.append(fn)
    post.reverse()
    return post


class _Accumulator:
    """The gradient arriving at one tensor, summed with ``gpuops.add`` in place.

    The first contribution is kept as given (it may be a view of another array);
    the first sum allocates a new array that later sums are written into.
    """

    __slots__ = ("value", "owned")

    def __init__(self, value: Array, owned: bool = False) -> None:
        self.value = value
        self.owned = owned

    def add(self, g: Array) -> None:
        from .ops.elementwise import add
        if self.owned:
            add(self.value, g, out=self.value)
        else:
            self.value = add(self.value, g)
            self.owned = True


class Tensor:
    """An array (NumPy or CuPy) with an optional gradient and the node that produced it."""

    __slots__ = ("data", "requires_grad", "creator", "_grad", "__weakref__")
    data: Array  # a NumPy or CuPy array
    # NumPy defers binary operators with a Tensor operand to the Tensor's methods.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data.data
        if not (isinstance(data, numpy.ndarray) or _backend.is_cupy_array(data)):
            if hasattr(data, "__dlpack_device__") and not isinstance(data, numpy.generic):
                data = _dlpack_array(data, "Tensor")  # a PyTorch/JAX tensor: shared, no copy
            else:
                data = numpy.asarray(data)
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(f"Tensor: only floating-point tensors can require a gradient, "
                            f"got dtype {data.dtype}")
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.creator: Function | None = None
        self._grad: _Accumulator | None = None

    @classmethod
    def _wrap(cls, y: Array, fn: Function | None) -> "Tensor":
        """A tensor of an operator's result ``y`` (a float array: no checks), recorded as
        made by ``fn`` (None: a constant)."""
        t = object.__new__(cls)
        t.data = y
        t.requires_grad = fn is not None
        t.creator = fn
        t._grad = None
        return t

    # ---- array-like attributes ------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> numpy.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator["Tensor"]:
        """The sub-tensors along the first axis (``self[i]``, recorded for backward)."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self.data)))

    @property
    def xp(self):
        """The array module of the data (``numpy`` or ``cupy``)."""
        return _backend.get_array_module(self.data)

    @property
    def device(self) -> str:
        return "cuda" if _backend.is_cupy_array(self.data) else "cpu"

    @property
    def is_leaf(self) -> bool:
        return self.creator is None

    @property
    def grad(self) -> Array | None:
        """The accumulated gradient (an array like ``data``) of a leaf tensor, or None."""
        return None if self._grad is None else self._grad.value

    @grad.setter
    def grad(self, value: Array | None) -> None:
        self._grad = None if value is None else _Accumulator(_data(value))

    def __repr__(self) -> str:
        extra = f", grad_fn={self.creator.name}" if self.creator is not None else (
            ", requires_grad=True" if self.requires_grad else "")
        return f"Tensor({_backend.to_cpu(self.data)!r}{extra})"

    # ---- conversion -----------------------------------------------------
    def numpy(self) -> numpy.ndarray:
        """The data as a NumPy array (copied from the GPU when needed)."""
        return _backend.to_cpu(self.data)

    def item(self) -> Any:
        if self.size != 1:
            raise ValueError(f"Tensor.item: tensor of shape {self.shape} is not one element")
        return self.numpy().reshape(()).item()

    def __float__(self) -> float:
        return float(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to_gpu(self) -> "Tensor":
        """A leaf copy on the GPU (keeps ``requires_grad``)."""
        return Tensor(_backend.to_gpu(self.data), requires_grad=self.requires_grad)

    def to_cpu(self) -> "Tensor":
        """A leaf copy in host memory (keeps ``requires_grad``)."""
        return Tensor(_backend.to_cpu(self.data), requires_grad=self.requires_grad)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Array:
        """``numpy.asarray(t)``: the data of a NumPy-backed tensor (no copy unless asked).
        Like CuPy, a tensor on the GPU refuses the implicit conversion (TypeError)."""
        if _backend.is_cupy_array(self.data):
            raise TypeError("Tensor.__array__: the data is a CuPy array on the GPU, and implicit "
                            "conversion to a NumPy array is not allowed (as for cupy.ndarray); "
                            "copy it explicitly with t.numpy(), t.to_cpu() or t.data.get()")
        a = self.data
        if dtype is not None and numpy.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(f"Tensor.__array__: dtype {numpy.dtype(dtype)} needs a copy of "
                                 f"the {a.dtype} data, but copy=False")
            return a.astype(dtype)
        return a.copy() if copy else a

    def tolist(self) -> Any:
        """The data as nested Python lists (a Python scalar for a 0-d tensor)."""
        return self.numpy().tolist()

    def __dlpack__(self, **kwargs: Any) -> Any:
        """Export the data without a copy (DLPack protocol)."""
        return self.data.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple:
        return self.data.__dlpack_device__()

    # ---- backward -------------------------------------------------------
    def backward(self, gy: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(Σ self·gy)/d(leaf) into the ``grad`` of every leaf that requires it.

        ``gy`` defaults to 1 for a one-element tensor. Iterative: graphs of any depth.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: the tensor does not require a gradient "
                               "(no input had requires_grad=True, or it was made under no_grad)")
        if gy is None:
            if self.size != 1:
                raise ValueError(f"backward: gy is required for a tensor of shape {self.shape} "
                                 "(only one-element outputs default to 1)")
            gy = self.xp.ones_like(self.data)
        else:
            gy = _data(gy)
            if isinstance(gy, (int, float)) and not isinstance(gy, bool):
                gy = self.xp.full(self.shape, gy, dtype=self.dtype)
            if tuple(gy.shape) != self.shape:
                raise ValueError(f"backward: gy has shape {tuple(gy.shape)}; expected {self.shape}")
            gy = gy.astype(self.dtype, copy=False)
        if self.creator is None:
            self._accumulate(gy)
            for hook in grad_ready_hooks:
                hook(self)
            return
        order = _topological(self.creator)
        # uses of each leaf still to come, when someone waits for complete gradients
        uses = collections.Counter(id(t) for fn in order for t in fn.parents()
                                   if t.creator is None) if grad_ready_hooks else None
        arriving: dict[int, _Accumulator] = {id(self.creator): _Accumulator(gy)}
        for fn in order:
            gy_fn = arriving.pop(id(fn)).value
            for t, g in fn.backward(gy_fn):
                if t.creator is None:
                    t._accumulate(g)
                    if uses is not None:
                        uses[id(t)] -= 1
                        if not uses[id(t)]:
                            for hook in grad_ready_hooks:
                                hook(t)
                elif id(t.creator) in arriving:
                    arriving[id(t.creator)].add(g)
                else:
                    arriving[id(t.creator)] = _Accumulator(g)
            if not retain_graph:
                fn.release()

    def _accumulate(self, g: Array) -> None:
        if self._grad is None:
            self._grad = _Accumulator(g)
        else:
            self._grad.add(g)

    # ---- operators --------------------------------------------------------
    def _other(self, x: Any) -> Any:
        """A binary operand: Tensors and Python scalars as they are, arrays as constants."""
        if isinstance(x, Tensor) or (isinstance(x, (int, float)) and not isinstance(x, bool)):
            return x
        if isinstance(x, numpy.ndarray) or _backend.is_cupy_array(x):
            return Tensor(x)
        error = _foreign_operand("Tensor arithmetic", x)
        if error is not None:
            raise error
        return NotImplemented

    def _inplace(self, name: str, other: Any, ufunc: str, symbol: str) -> "Tensor":
        """``self <symbol>= other``: the data updated in place (under no_grad, or on a tensor
        that does not require a gradient); an error on a leaf that requires one; out of place
        (the name rebound to a new recorded tensor) for a non-leaf that requires one."""
        if self.requires_grad and is_grad_enabled():
            if self.creator is None:
                raise RuntimeError(
                    f"a leaf Variable that requires grad is being used in an in-place operation "
                    f"(Tensor {symbol}=): update parameters under gpuops.no_grad(), or write "
                    f"t = t {symbol} other")
            return getattr(self, f"__{_OUT_OF_PLACE[ufunc]}__")(other)
        o = other.data if isinstance(other, Tensor) else other
        scalar = isinstance(o, (int, float)) and not isinstance(o, bool)
        if not (scalar or isinstance(o, numpy.ndarray) or _backend.is_cupy_array(o)):
            error = _foreign_operand(f"Tensor {symbol}=", o)
            if error is not None:
                raise error
            return NotImplemented
        if _is_float(self.dtype) and (scalar or o.dtype == self.dtype):
            OPERATORS[name].forward(self.data, o, out=self.data)
        else:  # other dtypes: the array module's rules (same-kind casting, as NumPy's a += b)
            getattr(self.xp, ufunc)(self.data, o, out=self.data, casting="same_kind")
        return self

    def __iadd__(self, other: Any) -> "Tensor":
        return self._inplace("add", other, "add", "+")

    def __isub__(self, other: Any) -> "Tensor":
        return self._inplace("sub", other, "subtract", "-")

    def __imul__(self, other: Any) -> "Tensor":
        return self._inplace("mul", other, "multiply", "*")

    def __itruediv__(self, other: Any) -> "Tensor":
        return self._inplace("div", other, "true_divide", "/")

    def _scalar_tensor(self, s: float) -> "Tensor":
        return Tensor(self.xp.asarray(s, dtype=self.dtype))

    def __add__(self, other: Any) -> "Tensor":
        other = self._other(other)
        return other if other is NotImplemented else apply("add", self, other)

    def __radd__(self, other: Any) -> "Tensor":
        other = self._other(other)
        if other is NotImplemented:
            return other
        return apply("add", self, other) if not isinstance(other, Tensor) else apply(
            "add", other, self)

    def __sub__(self, other: Any) -> "Tensor":
        other = self._other(other)
        return other if other is NotImplemented else apply("sub", self, other)

    def __rsub__(self, other: Any) -> "Tensor":
        other = self._other(other)
        if other is NotImplemented:
            return other
        if not isinstance(other, Tensor):
            other = self._scalar_tensor(other)
        return apply("sub", other, self)

    def __mul__(self, other: Any) -> "Tensor":
        other = self._other(other)
        return other if other is NotImplemented else apply("mul", self, other)

    def __rmul__(self, other: Any) -> "Tensor":
        other = self._other(other)
        if other is NotImplemented:
            return other
        return apply("mul", self, other) if not isinstance(other, Tensor) else apply(
            "mul", other, self)

    def __truediv__(self, other: Any) -> "Tensor":
        other = self._other(other)
        return other if other is NotImplemented else apply("div", self, other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        other = self._other(other)
        if other is NotImplemented:
            return other
        if not isinstance(other, Tensor):
            other = self._scalar_tensor(other)
        return apply("div", other, self)

    def __matmul__(self, other: Any) -> "Tensor":
        other = self._other(other)
        return other if other is NotImplemented else apply("matmul", self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        other = self._other(other)
        return other if other is NotImplemented else apply("matmul", other, self)

    def __neg__(self) -> "Tensor":
        return apply("neg", self)

    def __pos__(self) -> "Tensor":
        return self

    def __pow__(self, p: Any) -> "Tensor":
        if not isinstance(p, (int, float)) or isinstance(p, bool):
            raise TypeError(f"Tensor.__pow__: the exponent must be a Python int or float, "
                            f"got {type(p).__name__}")
        return apply("pow", self, p=float(p))

    def __rpow__(self, s: Any) -> "Tensor":
        """``s ** self`` for a Python scalar ``s``: exp(self·log s) through the exp and mul
        operators when s > 0 (gradient log(s)·s^x·gy); for s <= 0, ``xp.power`` with the
        gradient of PyTorch (0 where s == 0 and x >= 0, else log(s)·s^x·gy: nan for s < 0)."""
        if not isinstance(s, (int, float)) or isinstance(s, bool):
            return NotImplemented
        if not _is_float(self.dtype):
            return Tensor(self.xp.power(s, self.data))
        if s > 0:
            return apply("exp", apply("mul", self, math.log(s)))
        xp, x = self.xp, self.data
        with numpy.errstate(all="ignore"):
            y = xp.power(xp.asarray(s, dtype=self.dtype), x)
        if not (self.requires_grad and is_grad_enabled()):
            return Tensor(y)
        log_s = -math.inf if s == 0 else math.nan

        def backward(gy: Array) -> Array:
            with numpy.errstate(all="ignore"):
                g = gy * y * xp.asarray(log_s, dtype=y.dtype)
            return xp.where(x >= 0, xp.zeros_like(g), g) if s == 0 else g

        return Tensor._wrap(y, _Closure("rpow", self, backward))

    # Comparisons: no gradient; a boolean Tensor (data computed by the array module).
    def _compare(self, other: Any, ufunc: str) -> "Tensor":
        other = _data(other)
        return Tensor(getattr(self.xp, ufunc)(self.data, other))

    def __eq__(self, other: Any) -> "Tensor":  # type: ignore[override]  # elementwise, as NumPy
        return self._compare(other, "equal")

    def __ne__(self, other: Any) -> "Tensor":  # type: ignore[override]  # elementwise, as NumPy
        return self._compare(other, "not_equal")

    def __lt__(self, other: Any) -> "Tensor":
        return self._compare(other, "less")

    def __le__(self, other: Any) -> "Tensor":
        return self._compare(other, "less_equal")

    def __gt__(self, other: Any) -> "Tensor":
        return self._compare(other, "greater")

    def __ge__(self, other: Any) -> "Tensor":
        return self._compare(other, "greater_equal")

    __hash__ = object.__hash__

    # ---- shape ------------------------------------------------------------
    def reshape(self, *shape: Any) -> "Tensor":
        """A view with another shape (``-1`` allowed); differentiable, no arithmetic."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        y = self.data.reshape(shape)
        if not (self.requires_grad and is_grad_enabled()):
            return Tensor(y)
        return Tensor._wrap(y, _Reshape(self))

    def flatten(self, start_dim: int = 0) -> "Tensor":
        """Merge the dims from ``start_dim`` on into one."""
        start = start_dim % self.ndim if self.ndim else 0
        return self.reshape(self.shape[:start] + (-1,))

    def view(self, *shape: Any) -> "Tensor":
        """``reshape`` (PyTorch's name)."""
        return self.reshape(*shape)

    def unsqueeze(self, dim: int) -> "Tensor":
        """A size-1 axis inserted at ``dim`` (in [-ndim-1, ndim]), as a reshape."""
        n = self.ndim + 1
        d = _dim("unsqueeze", dim, n)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim: Any = None) -> "Tensor":
        """Size-1 axes removed: all of them, or those of ``dim`` (an int or a tuple) that have
        size 1 (a named axis of another size is kept, as in PyTorch), as a reshape."""
        if dim is None:
            dims = set(range(self.ndim))
        else:
            n = max(self.ndim, 1)
            dims = {_dim("squeeze", d, n) for d in (dim if isinstance(dim, (tuple, list))
                                                    else (dim,))}
        return self.reshape(tuple(s for i, s in enumerate(self.shape)
                                  if not (i in dims and s == 1)))

    def permute(self, *dims: Any) -> "Tensor":
        """The axes reordered (``y.shape[i] = x.shape[dims[i]]``), through ``gpuops.transpose``."""
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        return apply("transpose", self, axes=tuple(dims))

    def clone(self) -> "Tensor":
        """A copy of the data, recorded for backward (the gradient passes through)."""
        y = self.data.copy()
        if not (self.requires_grad and is_grad_enabled()):
            return Tensor(y)
        return Tensor._wrap(y, _Closure("clone", self, lambda gy: gy))

    def astype(self, dtype: Any) -> "Tensor":
        """A copy cast to ``dtype``; differentiable to a floating dtype (the gradient is cast
        back to this tensor's dtype); a non-float result does not require a gradient."""
        target = _dtype("astype", dtype)
        y = self.data.astype(target)
        if not (self.requires_grad and is_grad_enabled()) or not _is_float(target):
            return Tensor(y)
        source = self.dtype
        return Tensor._wrap(y, _Closure("astype", self, lambda gy: gy.astype(source)))

    def to(self, dtype: Any) -> "Tensor":
        """``astype(dtype)``, or this tensor itself when it already has that dtype (PyTorch's
        ``Tensor.to(dtype)``). Devices: ``to_gpu()`` / ``to_cpu()``."""
        target = _dtype("to", dtype)
        return self if target == self.dtype else self.astype(target)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> "Tensor":
        """The index of the largest element (over the flattened tensor when ``axis`` is None)
        as an int64 tensor without gradient; the first one on ties, as NumPy and PyTorch."""
        xp = self.xp
        return Tensor(xp.asarray(xp.argmax(self.data, axis=axis, keepdims=keepdims),
                                 dtype=xp.int64))

    def __getitem__(self, key: Any) -> "Tensor":
        """NumPy indexing: basic (ints, slices, None, Ellipsis: a view) and advanced (integer
        arrays, boolean masks, Tensors of either: a copy). The gradient is zeros of this shape
        with gy written at the indexed places; repeated indices sum their contributions
        deterministically (``numpy.add.at``; on CuPy a sort and segmented scan, no atomics)."""
        xp = self.xp
        key = _index_key(key, xp)
        y = self.data[key]
        if not isinstance(y, numpy.ndarray) and not _backend.is_cupy_array(y):
            y = xp.asarray(y)  # NumPy gives a scalar for a single element
        if not (self.requires_grad and is_grad_enabled()):
            return Tensor(y)
        shape, dtype = self.shape, self.dtype
        if _is_basic_key(key):
            def backward(gy: Array) -> Array:
                g = xp.zeros(shape, dtype=dtype)
                g[key] = gy
                return g
        elif xp is numpy:
            def backward(gy: Array) -> Array:
                g = numpy.zeros(shape, dtype=dtype)
                numpy.add.at(g, key, gy)
                return g
        else:
            def backward(gy: Array) -> Array:
                return _scatter_sum(xp, shape, key, gy)
        return Tensor._wrap(y, _Closure("getitem", self, backward))

    @property
    def T(self) -> "Tensor":
        """The transpose (all axes reversed), through ``gpuops.transpose``."""
        return apply("transpose", self)

    # ---- every registered operator as a method ------------------------------------
    # ``t.<name>(*inputs, *params)`` is ``gpuops.<name>(t, *inputs, *params)`` recorded for
    # backward: the methods are generated below from the registry (:func:`_operator_method`),
    # so each parameter's default lives only in the operator's own signature.
    if TYPE_CHECKING:  # pragma: no cover
        def __getattr__(self, name: str) -> Callable[..., "Tensor"]: ...


def _operator_method(name: str, function: Callable) -> Callable[..., Tensor]:
    """The Tensor method of operator ``name``: ``self`` is its first input, its other inputs
    follow, then its keyword parameters (positional too, up to the first without a default,
    as in PyTorch), with the defaults of ``function`` itself; ``out`` is left out."""
    parameters = list(inspect.signature(function).parameters.values())
    inputs = [p for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD][1:]
    keywords = [p for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "out"]
    defaults: dict[str, Any] = {}
    declared, passed, keyword_only = ["self"], [p.name for p in inputs], False
    for p in inputs:
        if p.default is p.empty:
            declared.append(p.name)
        else:
            defaults[f"_default_{p.name}"] = p.default
            declared.append(f"{p.name}=_default_{p.name}")
    for p in keywords:
        if p.default is p.empty and defaults and not keyword_only:
            declared.append("*")  # a parameter without a default after one with a default
            keyword_only = True
        if p.default is p.empty:
            declared.append(p.name)
        else:
            defaults[f"_default_{p.name}"] = p.default
            declared.append(f"{p.name}=_default_{p.name}")
        passed.append(f"{p.name}={p.name}")
    source = (f"def {name}({', '.join(declared)}):\n"
              f"    return apply({name!r}, self, {', '.join(passed)})\n")
    namespace: dict[str, Any] = {"apply": apply, **defaults}
    exec(source, namespace)  # noqa: S102 - generated from the operator's own signature
    method = namespace[name]
    method.__qualname__ = f"Tensor.{name}"
    method.__doc__ = f"``gpuops.{name}`` with this tensor as x1: {function.__doc__ or ''}"
    return method


for _name, _entry in OPERATORS.items():
    if not hasattr(Tensor, _name):
        setattr(Tensor, _name, _operator_method(_name, _entry.forward))
# The operator methods are set above with setattr, which mypy does not see.
Tensor.cross_entropy = Tensor.softmax_cross_entropy  # type: ignore[attr-defined]
del _name, _entry


def from_dlpack(x: Any, requires_grad: bool = False) -> Tensor:
    """A Tensor sharing the memory of any DLPack producer (a PyTorch/JAX tensor, an array).

    Host memory becomes a NumPy array, CUDA memory a CuPy array; no copy.
    """
    return Tensor(_dlpack_array(x, "from_dlpack"), requires_grad=requires_grad)


def _dlpack_array(x: Any, where: str) -> Array:
    """The NumPy (host memory) or CuPy (CUDA memory) array sharing the memory of ``x``."""
    device_type, _ = x.__dlpack_device__()
    if device_type == 1:  # kDLCPU
        return numpy.from_dlpack(x)
    if device_type in (2, 3):  # kDLCUDA, kDLCUDAHost
        cp = _backend._cupy()
        if cp is None:
            raise TypeError(f"{where}: a CUDA tensor needs CuPy, which is not installed")
        return cp.from_dlpack(x)
    raise TypeError(f"{where}: unsupported DLPack device type {device_type}")


from . import amp as _amp  # noqa: E402  (amp builds on Tensor; apply() calls its policy)
