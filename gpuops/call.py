"""The call protocol: one operator call, from the user's arrays to a result.

Every operator function is three steps, the same for all of them::

    SIGMOID = Signature("sigmoid", FAMILY, ("x1",), kernel_dtypes=HALF_DTYPES)

    def sigmoid(x1, *, out=None):
        call = SIGMOID.bind(x1)                      # 1. check the inputs, pick the backend
        (x,) = call.inputs
        return call.run(out, x.shape, _sigmoid_cpu, _sigmoid_gpu)   # 2. + 3.

1. :meth:`Signature.bind` checks the inputs: arrays of one backend (NumPy or CuPy, no
   subclasses), accepted dtypes (``kernel_dtypes`` where kernels compute: CuPy and the
   emulator), promotion (:func:`result_dtype`), Python scalars where allowed (they take
   the arrays' dtype), integer labels, optional inputs. It returns a :class:`Call`.
2. :meth:`Call.run` checks ``out`` (type, shape, dtype, writable) and decides where the
   result is computed: into ``out`` itself, or into a fresh buffer that is copied into
   ``out`` at the end when ``out`` shares memory with an input (so ``out=x`` and
   overlapping views are always correct), or, for kernels, when ``out`` is not
   C-contiguous or not of the compute dtype.
3. It runs the family's math: ``cpu(*inputs, y, *params)`` with NumPy arrays, or
   ``gpu(call, *inputs, y, *params)`` with C-contiguous inputs of the compute dtype
   (unless the signature says the kernels read strides), launching through
   :meth:`Call.launch`. An empty result computes nothing.

A family module therefore states only its math: the NumPy computation and the
kernel launch side by side (Chainer's ``forward_cpu`` / ``forward_gpu``).

16-bit floats (float16, bfloat16) follow one rule on every backend: loads widen to
float32, all arithmetic is float32, the result is rounded once to the 16-bit dtype
(to nearest even). The kernels do it per element (``cuda/half.cuh``); on the NumPy
backend :meth:`Call.run` does it for every operator: the 16-bit inputs are widened to
float32 (exactly), the NumPy code computes in float32 and the float32 result is
rounded once (``astype``). Float parameters of a 16-bit call are float32 scalars, not
rounded to 16 bits: :meth:`Call.scalar`, on every backend.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy

from . import kernels
from . import backend as _backend
from .backend import (FLOAT_DTYPES, INT_DTYPES, NUMPY, SIXTEEN_BIT_DTYPES, Backend,
                      cpu_backend, describe, gpu_backend, is_cupy_array)

__all__ = ["Signature", "Call", "check_shape", "result_dtype"]

Array = Any
_ndarray = numpy.ndarray
_SCALAR_TYPES = (int, float)
# Roles of an operator's inputs.
_ARRAY, _SCALAR, _OPTIONAL, _INTS = 0, 1, 2, 3
_FLOAT32 = numpy.dtype(numpy.float32)
_SIXTEEN_BIT = frozenset(SIXTEEN_BIT_DTYPES)


def result_dtype(dtypes: Sequence[Any]) -> numpy.dtype:
    """The dtype of a call with float inputs of ``dtypes``: NumPy's promotion with float32
    between the 16-bit dtypes. One dtype stays itself; float16 + bfloat16 -> float32
    (neither holds the other); a 16-bit dtype + float32 -> float32, + float64 -> float64."""
    first = numpy.dtype(dtypes[0])
    if all(numpy.dtype(d) == first for d in dtypes):
        return first
    return numpy.result_type(*[_FLOAT32 if numpy.dtype(d) in _SIXTEEN_BIT else d
                               for d in dtypes])


class Signature:
    """The inputs one operator function accepts, declared once per function.

    ``names``: the inputs in order. ``scalars``: inputs that may be a Python ``int`` or
    ``float`` (they take the array dtype). ``optional``: inputs that may be None.
    ``ints``: integer data (class labels): int32/int64 arrays on the same backend, left
    out of the dtype check and of the promotion. ``dtypes``: the float dtypes accepted by
    the NumPy code; the NumPy backend also takes float16 and bfloat16 wherever the NumPy
    code takes float32 (it computes them in float32: :meth:`Call.run`). ``kernel_dtypes``:
    where the kernels compute (default: ``dtypes`` as given); a family whose kernels have
    16-bit instantiations names them (``backend.HALF_DTYPES``, ``ALL_FLOAT_DTYPES``).
    ``strided``: the kernels read the inputs through strides (no contiguous copies).
    """

    __slots__ = ("op", "family", "names", "roles", "dtypes", "kernel_dtypes", "strided",
                 "_arrays_only")

    def __init__(self, op: str, family: str, names: Sequence[str], *,
                 scalars: Sequence[str] = (), optional: Sequence[str] = (),
                 ints: Sequence[str] = (), dtypes: Sequence[Any] = FLOAT_DTYPES,
                 kernel_dtypes: Sequence[Any] | None = None, strided: bool = False) -> None:
        self.op = op
        self.family = family
        self.names = tuple(names)
        self.roles = tuple(_INTS if n in ints else _SCALAR if n in scalars
                           else _OPTIONAL if n in optional else _ARRAY for n in self.names)
        numpy_dtypes = frozenset(numpy.dtype(d) for d in dtypes)
        self.kernel_dtypes = (numpy_dtypes if kernel_dtypes is None
                              else frozenset(numpy.dtype(d) for d in kernel_dtypes))
        self.dtypes = numpy_dtypes | _SIXTEEN_BIT if _FLOAT32 in numpy_dtypes else numpy_dtypes
        self.strided = strided
        # Whether a call whose inputs are all NumPy arrays of one dtype may skip the per-input
        # checks (no integer labels among the inputs).
        self._arrays_only = _INTS not in self.roles

    def bind(self, *values: Any) -> "Call":
        """Check ``values`` (the inputs, in the order of ``names``); raise ``TypeError``
        or ``ValueError`` naming the operator and the input, else return the call."""
        if self._arrays_only and not _backend._launcher_scopes \
                and len(values) == len(self.names):
            # The common case, checked in one pass: NumPy arrays of one accepted dtype.
            dtype = values[0].dtype if type(values[0]) is _ndarray else None
            if dtype is not None and dtype in self.dtypes and all(type(x) is _ndarray and x.dtype == dtype
                                            for x in values):
                return Call(self, NUMPY, dtype, values, dtype in _SIXTEEN_BIT)
        op = self.op
        on_gpu: bool | None = None
        dtype = None
        promote = False
        scalars = False
        found = []
        for name, role, x in zip(self.names, self.roles, values):
            kind = type(x)
            if kind is _ndarray:
                gpu = False
            elif is_cupy_array(x):
                gpu = True
            elif x is None and role == _OPTIONAL:
                continue
            elif role == _SCALAR and kind in _SCALAR_TYPES or (
                    role == _SCALAR and isinstance(x, _SCALAR_TYPES) and kind is not bool):
                scalars = True
                continue
            else:
                raise TypeError(_not_an_array(op, name, x))
            if on_gpu is None:
                on_gpu = gpu
            elif on_gpu != gpu:
                raise TypeError(self._mixed(values))
            dt = x.dtype
            if role == _INTS:
                if dt not in INT_DTYPES:
                    raise TypeError(f"{op}: {name} has dtype {dt}; expected int32 or int64")
                continue
            found.append((name, dt))
            if dtype is None:
                dtype = dt
            elif dt != dtype:
                promote = True
        if dtype is None:
            raise TypeError(f"{op}: at least one input must be an array")
        backend = gpu_backend() if on_gpu else cpu_backend()
        allowed = self.kernel_dtypes if backend.launcher is not None else self.dtypes
        for name, dt in found:
            if dt not in allowed:
                raise TypeError(f"{op}: {name} has dtype {dt}; expected one of "
                                f"{', '.join(str(d) for d in sorted(allowed, key=str))}")
        if promote:
            dtype = result_dtype([dt for _, dt in found])
        if scalars:
            values = tuple(self._scalar(name, x, backend, dtype) if role == _SCALAR
                           and not isinstance(x, _ndarray) and not is_cupy_array(x) else x
                           for name, role, x in zip(self.names, self.roles, values))
        widen = backend.launcher is None and any(dt in _SIXTEEN_BIT for _, dt in found)
        return Call(self, backend, dtype, values, widen)

    def _scalar(self, name: str, x: Any, backend: Backend, dtype: numpy.dtype) -> Array:
        """A Python scalar operand as a 0-d array of the call's dtype."""
        try:
            value = float(x)
        except OverflowError:  # an int past the float range (10**400)
            raise ValueError(f"{self.op}: {name} = {_short(x)} is beyond the float range") \
                from None
        with numpy.errstate(over="ignore"):
            return backend.xp.asarray(value, dtype=dtype)

    def _mixed(self, values: Sequence[Any]) -> str:
        detail = ", ".join(f"{n}: {describe(x)}" for n, x in zip(self.names, values)
                           if x is not None and not isinstance(x, _SCALAR_TYPES))
        return (f"{self.op}: mixed NumPy and CuPy inputs ({detail}); "
                "move them to one device with gpuops.to_gpu/to_cpu")

class Call:
    """One checked operator call: the backend, the compute dtype, the inputs."""

    __slots__ = ("signature", "backend", "dtype", "inputs", "widen")

    def __init__(self, signature: Signature, backend: Backend, dtype: numpy.dtype,
                 inputs: Sequence[Any], widen: bool | None = None) -> None:
        self.signature = signature
        self.backend = backend
        self.dtype = dtype  # promotion of the float inputs (result_dtype): the kernels' dtype
        self.inputs = inputs
        # The NumPy backend with 16-bit float inputs: run() widens them to float32.
        self.widen = (backend.launcher is None and dtype in _SIXTEEN_BIT) if widen is None \
            else widen

    @property
    def op(self) -> str:
        return self.signature.op

    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def uses_kernels(self) -> bool:
        return self.backend.launcher is not None

    def run(self, out: Array | None, shape: tuple, cpu: Callable, gpu: Callable, *params: Any,
            dtype: Any = None, inputs: Sequence[Any] | None = None) -> Array:
        """Compute the result of ``shape`` (and ``dtype``, default the call's) into ``out``
        or a new array, with ``cpu`` or ``gpu`` (see the module's docstring); ``inputs``
        replaces the bound inputs (after a family reshaped or reordered them)."""
        backend = self.backend
        if self.widen:
            return self._run_widened(out, shape, cpu, params, dtype, inputs)
        if out is None and backend is NUMPY and dtype is None and inputs is None:
            y = numpy.empty(shape, self.dtype)  # the common case: NumPy, no out
            if y.size:
                cpu(*self.inputs, y, *params)
            return y
        result_dtype = self.dtype if dtype is None else numpy.dtype(dtype)
        xp = backend.xp
        arrays = self.inputs if inputs is None else inputs
        on_kernels = backend.launcher is not None
        # Kernels compute in the call's dtype into a C-contiguous buffer; NumPy writes any layout.
        work_dtype = self.dtype if on_kernels else result_dtype
        if out is None:
            y = xp.empty(shape, work_dtype)
        else:
            self._check_out(out, shape, result_dtype)
            usable = (out.flags.c_contiguous and out.dtype == work_dtype) if on_kernels else True
            y = out if usable and not self._aliases(out, arrays) else xp.empty(shape, work_dtype)
        if y.size:
            if on_kernels:
                if not self.signature.strided:
                    arrays = [self.contiguous(x) for x in arrays]
                gpu(self, *arrays, y, *params)
            else:
                cpu(*arrays, y, *params)
        if out is None:
            return y if y.dtype == result_dtype else y.astype(result_dtype)
        if y is not out:
            out[...] = y
        return out

    def _run_widened(self, out: Array | None, shape: tuple, cpu: Callable,
                     params: Sequence[Any], dtype: Any, inputs: Sequence[Any] | None) -> Array:
        """:meth:`run` on the NumPy backend with 16-bit float inputs: they are widened to
        float32 (exact), so are 16-bit scalar parameters; the NumPy code computes a float32
        result, rounded once to a 16-bit result dtype (to nearest even)."""
        result_dtype = self.dtype if dtype is None else numpy.dtype(dtype)
        if out is not None:
            self._check_out(out, shape, result_dtype)
        arrays = [x.astype(_FLOAT32) if isinstance(x, _ndarray) and x.dtype in _SIXTEEN_BIT
                  else x for x in (self.inputs if inputs is None else inputs)]
        params = [numpy.float32(p) if isinstance(p, numpy.generic) and p.dtype in _SIXTEEN_BIT
                  else p for p in params]
        y = numpy.empty(shape, _FLOAT32 if result_dtype in _SIXTEEN_BIT else result_dtype)
        if y.size:
            cpu(*arrays, y, *params)
        if out is None:
            return y if y.dtype == result_dtype else y.astype(result_dtype)
        out[...] = y
        return out

    def _check_out(self, out: Any, shape: tuple, dtype: numpy.dtype) -> None:
        op = self.op
        gpu = self.backend.name == "cupy"
        if not (is_cupy_array(out) if gpu else type(out) is _ndarray):
            expected = "cupy.ndarray" if gpu else "numpy.ndarray"
            raise TypeError(f"{op}: out must be a {expected} like the inputs, got "
                            f"{describe(out)}")
        if out.shape != shape:
            raise ValueError(f"{op}: out has shape {tuple(out.shape)}; expected {tuple(shape)}")
        if out.dtype != dtype:
            raise TypeError(f"{op}: out has dtype {out.dtype}; expected {dtype}")
        if not out.flags.writeable:
            raise ValueError(f"{op}: out is read-only")

    def _aliases(self, out: Array, arrays: Sequence[Any]) -> bool:
        """Whether ``out`` may share memory with an input (a bounds test: exact for the
        usual ``out=x``, conservative for interleaved views, which then only cost a copy)."""
        may_share = self.backend.xp.may_share_memory
        return any(x is not None and getattr(x, "ndim", None) is not None
                   and may_share(out, x) for x in arrays)

    # ---- what kernel launches need ------------------------------------------------

    def contiguous(self, x: Any) -> Any:
        """``x`` C-contiguous, float inputs in the compute dtype (a copy only when needed);
        integer labels keep their dtype, None stays None."""
        if x is None:
            return None
        if x.dtype.kind == "f" or x.dtype in _SIXTEEN_BIT:  # bfloat16's kind is "V"
            return self.backend.xp.ascontiguousarray(x, dtype=self.dtype)
        return self.backend.xp.ascontiguousarray(x)

    def launch(self, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0, *, dtype: Any = None) -> None:
        """Launch the kernel ``kernel`` of this family for ``dtype`` (default the call's):
        the name comes from :func:`gpuops.kernels.kernel_name`."""
        self.backend.kernel_launcher.launch(
            self.signature.family, kernels.kernel_name(kernel, self.dtype if dtype is None
                                                       else dtype),
            grid, block, args, shared_mem)

    def launch_1d(self, kernel: str, n: int, args: Sequence[Any], *, dtype: Any = None) -> None:
        """Launch a grid-stride kernel over ``n`` items with :data:`gpuops.kernels.BLOCK`
        threads per block."""
        self.launch(kernel, self.grid_1d(n), (kernels.BLOCK,), args, dtype=dtype)

    def grid_1d(self, n: int, block: int = kernels.BLOCK) -> tuple[int]:
        return kernels.grid_1d(self.backend.kernel_launcher, n, block)

    @property
    def max_blocks(self) -> int:
        return self.backend.kernel_launcher.max_blocks

    def scalar(self, value: float) -> numpy.generic:
        """A float parameter as the computation takes it, on every backend: float32 for a
        16-bit call (not rounded to 16 bits), else a scalar of the call's dtype
        (:func:`gpuops.kernels.scalar`). Pass parameters to :meth:`run` as
        ``call.scalar(v)``, never ``call.dtype.type(v)`` (which rounds to 16 bits)."""
        return kernels.scalar(self.dtype, value)

def check_shape(op: str, name: str, x: Any, shape: tuple) -> None:
    """``ValueError`` naming ``op`` unless ``x`` (an input) has ``shape``."""
    if x is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} has shape {tuple(x.shape)}; expected {tuple(shape)}")

def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} digits)"

def _not_an_array(op: str, name: str, x: Any) -> str:
    if isinstance(x, _ndarray):
        return (f"{op}: {name} is a {describe(x)}, a subclass of numpy.ndarray whose meaning "
                f"gpuops does not honour (masks, matrix semantics); pass numpy.asarray({name}) "
                "for its plain values")
    message = f"{op}: {name} must be a NumPy or CuPy array, got {describe(x)}"
    if type(x).__name__ == "Tensor" and type(x).__module__ == "gpuops.autograd":
        return (f"{message}; pass {name}.data, or call the Tensor method to record the "
                "gradient")
    if hasattr(x, "__dlpack__"):
        return (f"{message}; wrap a DLPack producer (a PyTorch or JAX tensor) without a copy: "
                f"numpy.from_dlpack({name}), cupy.from_dlpack({name}) or "
                f"gpuops.from_dlpack({name})")
    if isinstance(x, (list, tuple)):
        return f"{message}; pass numpy.asarray({name})"
    return message
