"""Reverse-mode automatic differentiation over the registered operators.

A :class:`Tensor` wraps a NumPy or CuPy array. Calling an operator on tensors
(:func:`apply`, or a Tensor method such as ``t.relu()``) runs the operator's
forward from :data:`gpuops.OPERATORS` and, when an input requires a gradient,
records one generic :class:`Function` node: the operator's registry entry, its
inputs, its keyword parameters and its output. ``backward`` walks those nodes
in reverse topological order (an explicit stack, no recursion) and calls the
registered ``<name>_wrt_x<k>`` functions; the only arithmetic of this module
is the accumulation of gradients of tensors used more than once, through
``gpuops.add(..., out=...)``. ``reshape`` is a view and needs no operator.

Decisions: ``Tensor.grad`` is a plain array (what the optimizer operators take);
comparisons return boolean Tensors that never require a gradient; the graph is
freed by ``backward`` unless ``retain_graph=True`` (a second backward through a
freed node raises ``RuntimeError``).
"""
from __future__ import annotations

import contextlib
import inspect
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

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

    __slots__ = ("name", "inputs", "arrays", "params", "y", "released", "_grads")

    def __init__(self, name: str, grads: dict, inputs: tuple, arrays: tuple, params: dict,
                 y: Array) -> None:
        self.name = name
        self._grads = grads
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
        out = []
        for k, t in enumerate(self.inputs, start=1):
            if isinstance(t, Tensor) and t.requires_grad:
                out.append((t, self._grads[k](*self.arrays, self.y, gy, **self.params)))
        return out

    def release(self) -> None:
        self.inputs = self.arrays = ()
        self.y = None
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


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def apply(name: str, *inputs: Any, **params: Any) -> "Tensor":
    """``gpuops.<name>(*inputs, **params)`` on Tensors (arrays, scalars and None pass through),
    recording the call for ``backward`` when an input requires a gradient."""
    op = OPERATORS.get(name) or _operator(name)
    arrays = tuple([x.data if isinstance(x, Tensor) else x for x in inputs])
    y = op.forward(*arrays, **params)
    needs = False
    if is_grad_enabled():
        for k, x in enumerate(inputs, start=1):
            if isinstance(x, Tensor) and x.requires_grad:
                if k not in op.grads:
                    raise TypeError(f"{name}: input x{k} requires a gradient but {name} has "
                                    f"no {name}_wrt_x{k}")
                needs = True
    if not needs:
        return Tensor._wrap(y, None)
    return Tensor._wrap(y, Function(name, op.grads, inputs, arrays, params, y))


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
            data = numpy.asarray(data)
        if requires_grad and data.dtype.kind != "f":
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
            return
        order = _topological(self.creator)
        arriving: dict[int, _Accumulator] = {id(self.creator): _Accumulator(gy)}
        for fn in order:
            gy_fn = arriving.pop(id(fn)).value
            for t, g in fn.backward(gy_fn):
                if t.creator is None:
                    t._accumulate(g)
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
        return NotImplemented

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
    device_type, _ = x.__dlpack_device__()
    if device_type == 1:  # kDLCPU
        data = numpy.from_dlpack(x)
    elif device_type in (2, 3):  # kDLCUDA, kDLCUDAHost
        cp = _backend._cupy()
        if cp is None:
            raise TypeError("from_dlpack: a CUDA tensor needs CuPy, which is not installed")
        data = cp.from_dlpack(x)
    else:
        raise TypeError(f"from_dlpack: unsupported DLPack device type {device_type}")
    return Tensor(data, requires_grad=requires_grad)
