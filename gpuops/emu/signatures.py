"""Kernel signatures read from (preprocessed) CUDA source, and the argument check.

CuPy passes kernel arguments without looking at the C signature: a Python ``int``
becomes a 64-bit integer, a ``float`` a ``double``, any array a pointer. The
emulator instead checks every launch against the ``extern "C" __global__``
signature and raises ``TypeError`` for what a GPU would silently misread.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection, Sequence

import ml_dtypes
import numpy

# C type (normalized spelling) -> NumPy dtype of the value (scalar or pointee).
_SCALARS: dict[str, Any] = {
    "float": numpy.float32, "double": numpy.float64, "__half": numpy.float16,
    "half": numpy.float16, "__nv_bfloat16": ml_dtypes.bfloat16,
    "nv_bfloat16": ml_dtypes.bfloat16, "bool": numpy.bool_,
    "char": numpy.int8, "signed char": numpy.int8, "unsigned char": numpy.uint8,
    "short": numpy.int16, "unsigned short": numpy.uint16,
    "int": numpy.int32, "unsigned int": numpy.uint32,
    "long": numpy.int64, "unsigned long": numpy.uint64,
    "long long": numpy.int64, "unsigned long long": numpy.uint64,
    "int8_t": numpy.int8, "uint8_t": numpy.uint8, "int16_t": numpy.int16,
    "uint16_t": numpy.uint16, "int32_t": numpy.int32, "uint32_t": numpy.uint32,
    "int64_t": numpy.int64, "uint64_t": numpy.uint64, "size_t": numpy.uint64,
    "ptrdiff_t": numpy.int64,
}
# CUDA vector types: pointers to them take arrays of the element dtype, aligned
# to the vector's size (a GPU faults on a misaligned vector load).
_VECTORS: dict[str, tuple[Any, int]] = {}
for _base, _dtype, _name in [("float", numpy.float32, "float"), ("double", numpy.float64, "double"),
                             ("int", numpy.int32, "int"), ("unsigned int", numpy.uint32, "uint"),
                             ("long long", numpy.int64, "longlong"),
                             ("unsigned long long", numpy.uint64, "ulonglong"),
                             ("short", numpy.int16, "short"), ("unsigned short", numpy.uint16, "ushort"),
                             ("signed char", numpy.int8, "char"), ("unsigned char", numpy.uint8, "uchar")]:
    for _n in (2, 4):
        _VECTORS[f"{_name}{_n}"] = (_dtype, _n * numpy.dtype(_dtype).itemsize)
_VECTORS["__half2"] = _VECTORS["half2"] = (numpy.float16, 4)

_QUALIFIERS = {"const", "volatile", "__restrict__", "__restrict", "restrict",
               "__grid_constant__", "struct", "signed"}
_SPELLINGS = {"unsigned": "unsigned int", "long int": "long", "long long int": "long long",
              "unsigned long int": "unsigned long", "unsigned long long int": "unsigned long long",
              "short int": "short", "unsigned short int": "unsigned short",
              "char": "char", "std::size_t": "size_t"}
_TYPE_WORDS = {"unsigned", "signed", "long", "short", "int", "char", "float", "double", "bool",
               "void"}

# extern "C" <specifiers> [__launch_bounds__(...)] name(params) {   (a definition)
_KERNEL = re.compile(
    r'extern\s*"C"\s+((?:[A-Za-z_]\w*(?:\s*\([^()]*\))?\s+)+?)([A-Za-z_]\w*)\s*\(([^()]*)\)\s*\{')
_EXTERN_SHARED = re.compile(r"\bextern\s+__shared__\b[^;{}]*?([A-Za-z_]\w*)\s*\[\s*\]\s*;")


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its C type, whether it is a pointer, the dtype it takes."""

    name: str
    ctype: str  # e.g. "const float*", "long long"
    base: str  # the type without qualifiers and pointer: "float"
    pointer: int  # levels of indirection
    read_only: bool  # a pointer to const
    dtype: numpy.dtype | None  # None: a type the emulator does not know (checked by size)
    align: int  # required alignment of a pointer argument's address


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[Param, ...]

    def signature(self) -> str:
        return f"{self.name}({', '.join(f'{p.ctype} {p.name}'.strip() for p in self.params)})"


def _normalize(words: list[str]) -> str:
    spelled = " ".join(words)
    if "signed" in words and spelled not in ("signed char",):
        spelled = " ".join(w for w in words if w != "signed") or "int"
    return _SPELLINGS.get(spelled, spelled)


def parse_param(text: str) -> Param:
    tokens = re.findall(r"[A-Za-z_][\w:]*|\*|&|\[\s*\]", text)
    stars = tokens.count("*") + sum(1 for t in tokens if t.startswith("["))
    words = [t for t in tokens if t not in ("*", "&") and not t.startswith("[")]
    # `const T*` (or `T const*`): a read-only pointee; const after the last `*` is top-level.
    last_star = max((i for i, t in enumerate(tokens) if t == "*"), default=-1)
    read_only = stars > 0 and "const" in tokens[:last_star]
    kept = [w for w in words if w not in _QUALIFIERS or w == "signed"]
    # the last word names the parameter unless the words alone spell a type (unnamed)
    if len(kept) > 1 and not set(kept) <= _TYPE_WORDS:
        name, type_words = kept[-1], kept[:-1]
    else:
        name, type_words = "", kept
    base = _normalize(type_words)
    if base in _VECTORS:
        dtype, align = numpy.dtype(_VECTORS[base][0]), _VECTORS[base][1]
    elif base in _SCALARS:
        dtype = numpy.dtype(_SCALARS[base])
        align = dtype.itemsize
    else:
        dtype, align = None, 1
    ctype = ("const " if read_only else "") + base + "*" * stars
    return Param(name, ctype, base, stars, read_only, dtype, align)


def _params(text: str) -> tuple[Param, ...]:
    text = text.strip()
    if text in ("", "void"):
        return ()
    return tuple(parse_param(p) for p in text.split(","))


def kernels(preprocessed: str) -> dict[str, Kernel]:
    """Every ``extern "C" __global__`` function defined in preprocessed source text."""
    found: dict[str, Kernel] = {}
    for match in _KERNEL.finditer(preprocessed):
        specifiers, name, params = match.groups()
        if "__global__" not in specifiers.split():
            continue
        found[name] = Kernel(name, _params(params))
    return found


def extern_shared_names(preprocessed: str) -> list[str]:
    """Names of the ``extern __shared__`` (dynamic shared memory) arrays."""
    return sorted(set(_EXTERN_SHARED.findall(preprocessed)))


def _what(x: Any) -> str:
    if isinstance(x, numpy.ndarray):
        layout = "" if x.flags.c_contiguous else " non-contiguous"
        return f"{x.dtype}{layout} array of shape {x.shape}"
    if isinstance(x, numpy.generic):
        return f"numpy.{type(x).__name__} scalar"
    t = type(x)
    return f"Python {t.__name__}" if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"


def check_args(where: str, kernel: Kernel, args: Sequence[Any], sizes: Sequence[int],
               strided: Collection[str] = ()) -> None:
    """``TypeError`` unless ``args`` match ``kernel``'s C parameters exactly.

    ``sizes``: ``sizeof`` of each parameter, from the compiled library (checks the
    parameters whose C type the parser does not know). ``strided``: pointer
    parameters that the kernel addresses through element strides passed beside
    them, so they may take non-contiguous views (the pointer is the first element's).
    """
    if len(args) != len(kernel.params):
        raise TypeError(f"{where}: {len(args)} arguments for {len(kernel.params)} parameters "
                        f"of {kernel.signature()}")
    for i, (param, arg, nbytes) in enumerate(zip(kernel.params, args, sizes)):
        label = f"{where}: argument {i} ({param.ctype} {param.name})".replace(" )", ")")
        if param.pointer:
            if param.pointer > 1:
                raise TypeError(f"{label}: the emulator cannot pass a pointer to pointers")
            if not isinstance(arg, numpy.ndarray):
                raise TypeError(f"{label}: expected a NumPy array, got {_what(arg)}")
            if not arg.flags.c_contiguous and param.name not in strided:
                raise TypeError(f"{label}: array is not C-contiguous (kernels ignore strides: "
                                f"use Call.contiguous, or declare the parameter in the source "
                                f"with '// gpuops-strided: <kernel glob>: <param>')")
            if param.dtype is not None and arg.dtype != param.dtype:
                raise TypeError(f"{label}: expected a {param.dtype} array, got {_what(arg)}")
            if arg.size and arg.ctypes.data % param.align:
                raise TypeError(f"{label}: array address {arg.ctypes.data:#x} is not aligned "
                                f"to {param.align} bytes")
            continue
        if not isinstance(arg, numpy.generic):
            hint = {numpy.dtype(numpy.int64): " (gpuops.kernels.size)",
                    numpy.dtype(numpy.float32): " (gpuops.kernels.scalar)",
                    numpy.dtype(numpy.float64): " (gpuops.kernels.scalar)"}.get(param.dtype, "")
            expected = f"a numpy.{param.dtype.type.__name__} scalar{hint}" if param.dtype \
                is not None else f"a NumPy scalar of {nbytes} bytes"
            raise TypeError(f"{label}: expected {expected}, got {_what(arg)}"
                            + (f" {arg!r}" if isinstance(arg, (int, float)) else ""))
        if param.dtype is not None:
            if arg.dtype != param.dtype:
                raise TypeError(f"{label}: expected a numpy.{param.dtype.type.__name__} "
                                f"scalar, got {_what(arg)}")
        elif arg.dtype.itemsize != nbytes:
            raise TypeError(f"{label}: expected {nbytes} bytes, got {_what(arg)} of "
                            f"{arg.dtype.itemsize} bytes")
