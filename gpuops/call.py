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
rounded to 16 bits: :meth:`Call.scalar`, on every backend. An ``elementwise`` signature
(its NumPy code computes each output element from the same element of each input, no
reduction) is computed in chunks of :data:`CHUNK` elements through reused per-thread
float32 scratch buffers (no fresh full-size float32 temporaries), with the same result
bit for bit: each element is widened, computed in float32 and rounded once either way.
The conversions (:func:`widen`, :func:`narrow`) go through :mod:`gpuops.native` (a small
C library built at first use) where it is available and the arrays are contiguous;
otherwise bfloat16 converts by ml_dtypes' casts and float16 by a few vectorized integer
and float32 NumPy operations, bit for bit NumPy's own float16 casts (scalar loops here:
about 1 ns per element, against 0.06 for a float32 addition). Every path gives the same
bits (docs/sixteen_bit.md). A signature that declares its float32 math as a fused form
(``fused``: :mod:`gpuops.native.fused`) runs a 16-bit call of :data:`FUSED_MIN` elements
or more in one native pass instead (16-bit loads, float32 arithmetic, one rounding; a
one-input forward by a table of its NumPy code's results), with the same bits.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy

from . import kernels
from . import native as _native
from .native import fused as _fused
from .native.fused import TABLE, Expr
from . import backend as _backend
from .backend import (FLOAT_DTYPES, INT_DTYPES, NUMPY, SIXTEEN_BIT_DTYPES, Backend,
                      cpu_backend, describe, gpu_backend, is_cupy_array)

__all__ = ["Signature", "Call", "check_shape", "result_dtype", "widen", "narrow", "TABLE", "Expr"]

Array = Any
_ndarray = numpy.ndarray
_SCALAR_TYPES = (int, float)
# Roles of an operator's inputs.
_ARRAY, _SCALAR, _OPTIONAL, _INTS = 0, 1, 2, 3
_FLOAT32 = numpy.dtype(numpy.float32)
_SIXTEEN_BIT = frozenset(SIXTEEN_BIT_DTYPES)
_FLOAT16 = numpy.dtype(numpy.float16)
_UINT16, _UINT32 = numpy.dtype(numpy.uint16), numpy.dtype(numpy.uint32)
_INT16, _INT32 = numpy.dtype(numpy.int16), numpy.dtype(numpy.int32)
# float16 <-> float32 bit arithmetic (widen, narrow): 2^±112 moves float16's exponent range
# (bias 15) onto float32's (bias 127); the clamps of the rounding's magic number.
_TWO_POW_112, _TWO_POW_M112 = numpy.float32(2.0 ** 112), numpy.float32(2.0 ** -112)
_F16_SMALLEST_NORMAL, _TWO_POW_16 = numpy.float32(2.0 ** -14), numpy.float32(2.0 ** 16)
_F32_ZERO = numpy.float32(0.0)
# float16 arrays of fewer elements convert by NumPy's cast: one call against the passes'
# six (widening) or fifteen (rounding), about 1 us each, at about 1 ns per element against
# 0.3 (widening) and 0.7 (rounding); both ways cost the same near 2^14 elements (measured).
_PASSES_MIN = 1 << 14
# Elements per chunk of the chunked 16-bit path: its float32 buffers (512 KiB each, one
# per full-size input, the result, and two for float16's rounding) stay in the L2 / L3
# cache; smaller chunks cost more Python per element.
CHUNK = 1 << 17
# Elements from which a 16-bit call with a fused form (Signature's ``fused``) runs it: below,
# its few Python steps cost more than the NumPy path's (measured).
FUSED_MIN = 1 << 12
_scratch = threading.local()


class _NoGpuArray:
    """Stands for CuPy's array type until :meth:`Signature.bind` has seen a CuPy array."""


_gpu_array: type = _NoGpuArray  # cupy.ndarray once seen: bind's one-pass check of CuPy calls


def _remember_gpu_array(kind: type) -> None:
    global _gpu_array
    _gpu_array = kind


def widen(x: Any, out: Any = None) -> Any:
    """The float16 or bfloat16 NumPy array ``x`` widened to float32 (exact), into ``out``
    (a float32 array of x's shape) or a new array: bit for bit NumPy's (ml_dtypes') cast."""
    if out is None:
        out = numpy.empty(x.shape, _FLOAT32)
    if _native.widen(x, out):  # contiguous, and the native conversions built
        pass
    elif x.dtype == _FLOAT16 and x.size >= _PASSES_MIN:
        _widen_float16(x, out)
    else:  # bfloat16: ml_dtypes' cast is a 16-bit shift, vectorized by the compiler
        numpy.copyto(out, x, casting="unsafe")
    return out


def narrow(y: Any, out: Any) -> Any:
    """The float32 array ``y`` rounded once (to nearest even) into ``out``, a float16 or
    bfloat16 array of y's shape: bit for bit NumPy's (ml_dtypes') cast, as ``astype``. A
    value past the 16-bit range becomes ±inf without a warning (as the kernels' store and
    PyTorch); a NaN stays a NaN (bfloat16: quiet; float16: its payload's top bits, as NumPy).
    The native conversions (:mod:`gpuops.native`) when both arrays are contiguous."""
    if _native.narrow(y, out):
        pass
    elif out.dtype == _FLOAT16:
        _narrow_whole(numpy.array(y, _FLOAT32), out)  # a copy: the passes overwrite it
    else:
        _narrow_into(y, out)
    return out


def _widen_float16(x: Any, out: Any) -> None:
    """float16 ``x`` into float32 ``out`` exactly, as NumPy's cast (subnormals, ±inf, NaN
    payloads), with four vectorized passes: the bits sign-extended to 32 and shifted left
    by 13 put the exponent and mantissa where float32 has them (the sign lands in bits
    31..28: bits 30..28 are cleared); read as float32 that is the value times 2^-112 (a
    float16 subnormal becomes a float32 subnormal), so ×2^112 gives the value."""
    bits = out.view(_UINT32)
    numpy.copyto(out.view(_INT32), x.view(_INT16), casting="unsafe")
    numpy.left_shift(bits, numpy.uint32(13), out=bits)
    numpy.bitwise_and(bits, numpy.uint32(0x8FFFE000), out=bits)
    numpy.multiply(out, _TWO_POW_112, out=out)
    # inf and NaN (exponent 31) came out as ±2^16·(1 + m/1024): exponent 255, payload kept
    if x.size and (numpy.max(x.view(_INT16)) >= 0x7C00 or numpy.max(x.view(_UINT16)) >= 0xFC00):
        numpy.bitwise_or(bits, numpy.uint32(0x7F800000), out=bits,
                         where=numpy.abs(out) >= _TWO_POW_16)


def _narrow_into(y: Any, out: Any, work: Any = None, sign: Any = None) -> None:
    """``y`` (float32) rounded into ``out`` (float16 or bfloat16) as :func:`narrow`. float16
    given ``work`` (uint32) and ``sign`` (uint16), scratch of y's shape: the passes, which
    overwrite ``y``; else NumPy's cast. The native conversions first (:mod:`gpuops.native`)."""
    if _native.narrow(y, out):
        return
    with numpy.errstate(over="ignore", under="ignore", invalid="ignore"):
        if out.dtype != _FLOAT16 or work is None or y.size < _PASSES_MIN \
                or numpy.isnan(numpy.max(y)):
            numpy.copyto(out, y, casting="unsafe")  # bfloat16; small or with NaN (payloads)
        else:
            _narrow_float16(y, out, work, sign)


def _narrow_whole(y: Any, out: Any) -> None:
    """``y`` (float32, C-contiguous, overwritten) rounded into ``out`` as :func:`narrow`:
    float16 by blocks of at most :data:`CHUNK` elements through two scratch buffers (the
    passes then stay in the cache; over a 2^22-element array at once they cost more than
    NumPy's cast: measured 1.8 against 1.5 ns per element, 0.8 in blocks)."""
    if out.dtype != _FLOAT16 or y.size < _PASSES_MIN or not out.flags.c_contiguous:
        _narrow_into(y, out)
        return
    y_flat, out_flat, size = y.reshape(-1), out.reshape(-1), y.size
    buffers = _take_scratch(2, min(CHUNK, size))
    try:
        work, sign = _rounding_views(buffers)
        for start in range(0, size, CHUNK):
            stop = min(start + CHUNK, size)
            _narrow_into(y_flat[start:stop], out_flat[start:stop], work[:stop - start],
                         sign[:stop - start])
    finally:
        _give_scratch(buffers)


def _narrow_float16(y: Any, out: Any, work: Any, sign: Any) -> None:
    """:func:`_narrow_into` for float16 without NaN, with vectorized passes."""
    bits, magic, out_bits = y.view(_UINT32), work.view(_FLOAT32), out.view(_UINT16)
    numpy.right_shift(bits, numpy.uint32(16), out=sign, casting="unsafe")
    numpy.bitwise_and(sign, numpy.uint16(0x8000), out=sign)
    numpy.bitwise_and(bits, numpy.uint32(0x7FFFFFFF), out=bits)  # y = |y|
    # |y| + 2^(e+13) - 2^(e+13), e = the exponent of |y| clamped to [-14, 16]: the float32
    # sum keeps 10 bits below 2^e (steps of 2^-24 below 2^-14: float16's subnormals) and the
    # FPU rounds it to nearest even. |y| past 2^16 (and inf) is clamped to 2^16, float16's
    # inf (from 65520 on, |y| rounds to it).
    numpy.clip(y, _F16_SMALLEST_NORMAL, _TWO_POW_16, out=magic)
    numpy.clip(y, _F32_ZERO, _TWO_POW_16, out=y)
    numpy.bitwise_and(work, numpy.uint32(0x7F800000), out=work)
    numpy.add(work, numpy.uint32(13 << 23), out=work)
    numpy.add(y, magic, out=y)
    numpy.subtract(y, magic, out=y)
    # ×2^-112 (exact; float16's subnormals become float32's): the bits shifted right by 13
    # are the float16 bits of the rounded |y| (2^16: 0x7c00, inf)
    numpy.multiply(y, _TWO_POW_M112, out=y)
    numpy.right_shift(bits, numpy.uint32(13), out=bits)
    numpy.copyto(out_bits, bits, casting="unsafe")
    numpy.bitwise_or(out_bits, sign, out=out_bits)


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
    ``elementwise``: the NumPy code computes each output element from the same element of
    each (broadcast) input, nothing else (no reduction, no shape-dependent step): the NumPy
    backend may then run a 16-bit call in chunks (:meth:`Call.run`). ``fused``: the NumPy
    code's float32 math as an expression (:mod:`gpuops.native.fused`: a function of symbolic
    inputs and the call's parameters returning an :class:`Expr` or None, or :data:`TABLE`
    for a one-input forward): the NumPy backend then runs a 16-bit call in one native pass
    (load 16 bits, float32 arithmetic, round once), with the same result.
    """

    __slots__ = ("op", "family", "names", "roles", "dtypes", "kernel_dtypes", "strided",
                 "elementwise", "fused", "_arrays_only")

    def __init__(self, op: str, family: str, names: Sequence[str], *,
                 scalars: Sequence[str] = (), optional: Sequence[str] = (),
                 ints: Sequence[str] = (), dtypes: Sequence[Any] = FLOAT_DTYPES,
                 kernel_dtypes: Sequence[Any] | None = None, strided: bool = False,
                 elementwise: bool = False, fused: Any = None) -> None:
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
        self.elementwise = elementwise
        self.fused = fused
        # Whether a call whose inputs are all NumPy arrays of one dtype may skip the per-input
        # checks (no integer labels among the inputs).
        self._arrays_only = _INTS not in self.roles

    def bind(self, *values: Any) -> "Call":
        """Check ``values`` (the inputs, in the order of ``names``); raise ``TypeError``
        or ``ValueError`` naming the operator and the input, else return the call."""
        if self._arrays_only and len(values) == len(self.names):
            # The common case, checked in one pass: arrays of one backend and one dtype.
            kind = type(values[0])
            if kind is _ndarray or kind is _gpu_array:
                dtype = values[0].dtype
                if all(type(x) is kind and x.dtype == dtype for x in values):
                    if kind is _gpu_array:
                        backend = gpu_backend()
                    else:
                        backend = cpu_backend() if _backend._launcher_scopes else NUMPY
                    if backend.launcher is None:
                        if dtype in self.dtypes:
                            return Call(self, backend, dtype, values, dtype in _SIXTEEN_BIT)
                    elif dtype in self.kernel_dtypes:
                        return Call(self, backend, dtype, values, False)
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
                _remember_gpu_array(kind)
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
            if y.dtype == result_dtype:
                return y
            with numpy.errstate(over="ignore"):  # past the 16-bit range: ±inf, no warning
                return y.astype(result_dtype)
        if y is not out:
            out[...] = y
        return out

    def _run_widened(self, out: Array | None, shape: tuple, cpu: Callable,
                     params: Sequence[Any], dtype: Any, inputs: Sequence[Any] | None) -> Array:
        """:meth:`run` on the NumPy backend with 16-bit float inputs: they are widened to
        float32 (exact), so are 16-bit scalar parameters; the NumPy code computes a float32
        result, rounded once to a 16-bit result dtype (to nearest even). Large calls of an
        elementwise signature go chunk by chunk through scratch buffers
        (:meth:`_run_elementwise`), with the same result."""
        result_dtype = self.dtype if dtype is None else numpy.dtype(dtype)
        if out is not None:
            self._check_out(out, shape, result_dtype)
        arrays = self.inputs if inputs is None else inputs
        # 16-bit scalars and a 16-bit compute dtype handed to the NumPy code (conv2d's and
        # linear's gradients take call.dtype) become float32: the NumPy code computes in it.
        params = [numpy.float32(p) if isinstance(p, numpy.generic) and p.dtype in _SIXTEEN_BIT
                  else _FLOAT32 if isinstance(p, numpy.dtype) and p in _SIXTEEN_BIT
                  else p for p in params]
        form = self.signature.fused
        if form is not None and result_dtype in _SIXTEEN_BIT and (
                _layout_size(shape) >= FUSED_MIN  # or a term summed to a smaller result:
                or any(getattr(x, "size", 0) >= FUSED_MIN for x in arrays)):
            done = self._run_fused(form, out, shape, cpu, params, result_dtype, arrays)
            if done is not None:
                return done
        if self.signature.elementwise and result_dtype in _SIXTEEN_BIT \
                and _layout_size(shape) > CHUNK and _chunkable(arrays, shape, result_dtype):
            return self._run_elementwise(out, shape, cpu, params, result_dtype, arrays)
        arrays = [widen(x) if isinstance(x, _ndarray) and x.dtype in _SIXTEEN_BIT else x
                  for x in arrays]
        y = numpy.empty(shape, _FLOAT32 if result_dtype in _SIXTEEN_BIT else result_dtype)
        if y.size:
            cpu(*arrays, y, *params)
        if y.dtype == result_dtype:
            if out is None:
                return y
            out[...] = y
            return out
        result = numpy.empty(shape, result_dtype) if out is None else out
        _narrow_whole(y, result)  # past the range: ±inf, silently
        return result

    @staticmethod
    def _run_fused(form: Any, out: Array | None, shape: tuple, cpu: Callable,
                   params: Sequence[Any], result_dtype: numpy.dtype,
                   arrays: Sequence[Any]) -> Array | None:
        """The 16-bit call by its declared fused form (:func:`gpuops.native.fused.run`) into
        ``out`` (when it is C-contiguous and overlaps no input other than element for
        element) or a new array; None when the form does not apply (the NumPy path)."""
        y16 = out
        if out is None or not (out.flags.c_contiguous and out.flags.aligned) or any(
                isinstance(x, _ndarray) and numpy.may_share_memory(out, x)
                and not _same_elements(out, x) for x in arrays):
            y16 = numpy.empty(shape, result_dtype)
        if not _fused.run(form, cpu, arrays, params, shape, result_dtype, y16):
            return None
        if out is not None and y16 is not out:
            out[...] = y16
            return out
        return y16

    def _run_elementwise(self, out: Array | None, shape: tuple, cpu: Callable,
                         params: Sequence[Any], result_dtype: numpy.dtype,
                         arrays: Sequence[Any]) -> Array:
        """The large 16-bit elementwise call through per-thread float32 scratch buffers of
        :data:`CHUNK` elements (no full-size float32 temporaries), block by block
        (:meth:`_run_chunked`): the full-size inputs' block widened into them, the NumPy
        code's float32 result in one, rounded into the result's block. Smaller (broadcast)
        inputs are widened once, whole."""
        target = out
        if out is None:
            out = numpy.empty(shape, result_dtype)
        per_block = [i for i, x in enumerate(arrays) if x.shape == shape]  # widened per block
        # out may be written block by block while an input is read block by block only if
        # no input shares out's memory other than element for element (out=x).
        y16 = out
        if target is not None and any(numpy.may_share_memory(out, arrays[i])
                                      and not _same_elements(out, arrays[i])
                                      for i in per_block):
            y16 = numpy.empty(shape, result_dtype)
        # per-block inputs, the float32 result, and float16's rounding scratch (uint32, uint16)
        buffers = _take_scratch(len(per_block) + (3 if result_dtype == _FLOAT16 else 1))
        views = [x if i in per_block else numpy.broadcast_to(widen(x), shape) if x.ndim
                 else widen(x) for i, x in enumerate(arrays)]
        try:
            self._run_chunked(y16, shape, cpu, params, views, per_block, buffers)
        finally:
            _give_scratch(buffers)
        if y16 is not out:
            out[...] = y16
        return out

    @staticmethod
    def _run_chunked(y16: Array, shape: tuple, cpu: Callable, params: Sequence[Any],
                     views: list[Any], per_block: list[int], buffers: list[Any]) -> None:
        """:meth:`_run_elementwise` block by block, blocks of at most :data:`CHUNK` elements:
        flat slices when every input is C-contiguous and full-size or a scalar, and so is
        the result (the fewest Python steps per block), else the blocks of :func:`_blocks`."""
        if not (y16.flags.c_contiguous and all(x.flags.c_contiguous and (x.shape == shape
                                                                         or not x.ndim)
                                               for x in views)):
            for block in _blocks(shape):
                _run_block(y16, block, tuple(s.stop - s.start for s in block), cpu, params,
                           views, per_block, buffers)
            return
        count = len(per_block)
        flat = [x.reshape(-1) if x.ndim else x for x in views]
        chunk = list(flat)
        sliced = [i for i, x in enumerate(views) if x.ndim and i not in per_block]
        y_flat, y32 = y16.reshape(-1), buffers[count]
        rounding = _rounding_views(buffers[count + 1:])
        size = y_flat.size
        for start in range(0, size, CHUNK):
            stop = min(start + CHUNK, size)
            n = stop - start
            for k, i in enumerate(per_block):
                chunk[i] = widen(flat[i][start:stop], buffers[k][:n])
            for i in sliced:
                chunk[i] = flat[i][start:stop]
            y = y32[:n]
            cpu(*chunk, y, *params)
            _narrow_into(y, y_flat[start:stop], *[r[:n] for r in rounding])

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
        if x.dtype == self.dtype and x.flags.c_contiguous:  # most inputs: nothing to do
            return x
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

def _layout_size(shape: Sequence[int]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def _chunkable(arrays: Sequence[Any], shape: tuple, dtype: numpy.dtype) -> bool:
    """Whether every input is an array of ``dtype`` broadcasting to ``shape`` (the result's
    shape: no input is reduced into it)."""
    if not all(isinstance(x, _ndarray) and x.dtype == dtype for x in arrays):
        return False
    try:
        return numpy.broadcast_shapes(shape, *(x.shape for x in arrays)) == shape
    except ValueError:
        return False


def _same_elements(a: Any, b: Any) -> bool:
    """Whether the arrays ``a`` and ``b`` (of one shape) view the same elements in the same
    order: writing a block of ``a`` then changes only the same block of ``b``."""
    return (a.shape == b.shape and a.strides == b.strides
            and a.dtype.itemsize == b.dtype.itemsize
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _blocks(shape: tuple) -> Iterator[tuple[slice, ...]]:
    """Index tuples of slices covering ``shape`` in blocks of at most :data:`CHUNK`
    elements: whole trailing axes, the first axis that does not fit split evenly."""
    inner = 1
    axis = len(shape) - 1
    while axis > 0 and inner * shape[axis] <= CHUNK:
        inner *= shape[axis]
        axis -= 1
    if inner * shape[axis] <= CHUNK:  # axis 0 fits too: one block (not reached for > CHUNK)
        yield tuple(slice(0, d) for d in shape)
        return
    length = shape[axis]
    pieces = -(-length // (CHUNK // inner))  # inner <= CHUNK
    step = -(-length // pieces)
    tail = tuple(slice(0, d) for d in shape[axis + 1:])
    for lead in itertools.product(*(range(d) for d in shape[:axis])):
        head = tuple(slice(i, i + 1) for i in lead)
        for start in range(0, length, step):
            yield head + (slice(start, min(start + step, length)),) + tail


def _take_scratch(count: int, size: int | None = None) -> list[Any]:
    """``count`` float32 buffers of ``size`` (default :data:`CHUNK`) elements or more, this
    thread's own (reused from call to call; fresh ones when a call of the same thread holds
    them already, or when the kept ones are smaller)."""
    size = CHUNK if size is None else size
    free = getattr(_scratch, "free", None)
    if free is None:
        free = _scratch.free = []
    taken = [buffer for buffer in (free.pop() for _ in range(min(count, len(free))))
             if buffer.size >= size]
    taken += [numpy.empty(size, _FLOAT32) for _ in range(count - len(taken))]
    return taken


def _give_scratch(buffers: list[Any]) -> None:
    _scratch.free.extend(buffers)


def _rounding_views(buffers: Sequence[Any]) -> list[Any]:
    """float16's rounding scratch (:func:`_narrow_into`) in two float32 scratch buffers:
    uint32 and uint16 views (none for bfloat16: no buffers)."""
    return [buffer.view(dtype) for buffer, dtype in zip(buffers, (_UINT32, _UINT16))]


def _run_block(y16: Any, block: Any, block_shape: tuple, cpu: Callable,
               params: Sequence[Any], views: Sequence[Any], per_block: list[int],
               buffers: list[Any]) -> None:
    """One block (``block``: an index of ``y16``, the 16-bit result) of an elementwise call
    (:meth:`Call._run_elementwise`): the full-size inputs (``per_block`` of ``views``)
    widened into ``buffers``, the others (float32 views broadcast to the result's shape)
    indexed, the NumPy code's result in ``buffers[len(per_block)]``, rounded into ``y16``."""
    size = _layout_size(block_shape)
    count = len(per_block)
    chunk = [x[block] if x.ndim else x for x in views]
    for k, i in enumerate(per_block):
        chunk[i] = widen(chunk[i], buffers[k][:size].reshape(block_shape))
    y = buffers[count][:size].reshape(block_shape)
    cpu(*chunk, y, *params)
    _narrow_into(y, y16[block], *[r[:size].reshape(block_shape)
                                  for r in _rounding_views(buffers[count + 1:])])


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
