"""Fused 16-bit elementwise forms: an operator's float32 math declared once as an
expression, run by ``fused.c`` in one pass (load 16 bits, float32 arithmetic, round once).

A signature declares its form (``Signature(..., fused=...)``): a function of symbolic
inputs (:class:`Expr`, in the signature's order) and the call's parameters (their values,
as :meth:`gpuops.call.Call.run` receives them) that returns an :class:`Expr`, or None where
these parameters have no fused form. The expression is the NumPy code's float32 arithmetic,
operand for operand and in the same order (NaN operands: x86 returns the first NaN operand
of + - * /, so ``gy * t`` and ``t * gy`` differ when both are NaN): ``+ - * /``, unary
``-`` and ``abs`` (sign bit flipped / cleared, as numpy.negative and numpy.absolute),
Python or NumPy float scalars (float32 constants), :meth:`Expr.map` (a function of one
16-bit input, computed by NumPy over all 65536 patterns once and looked up),
:meth:`Expr.along` (a per-channel operand) and :meth:`Expr.reduced` (a gradient's term
computed in float32, then summed by NumPy code to a broadcast operand's shape). An input's
``shape`` is known to the form. :data:`TABLE` declares a one-input forward whose whole
result is a table of the NumPy code itself (one 16-bit lookup per element).
tests/infrastructure/test_fused_sixteen_bit.py checks every declared form bit for bit
against the NumPy code.

Inputs the expression does not use are neither read nor widened (add_wrt_x1 = gy reads gy
only). :func:`run` declines (False: the caller takes the NumPy path) unless the native
library is built, the result is a 16-bit array of the inputs' dtype and every used input is
either contiguous of the result's shape or broadcast from trailing axes (a scalar, a row,
a channel), those at most 1/:data:`_PERIOD_SHARE` of the result: they are widened once and
repeated.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Any, Callable, Sequence

import numpy

from . import _address, available

__all__ = ["Expr", "TABLE", "run", "table"]

_FLOAT32 = numpy.dtype(numpy.float32)
_UINT16 = numpy.dtype(numpy.uint16)
_REGISTERS = 8  # fused.c's REGISTERS
# fused.c's operand kinds and opcodes
_KIND_F16, _KIND_BF16, _KIND_F32 = 0, 1, 2
_LOAD, _LOOKUP, _ADD, _SUB, _MUL, _DIV, _NEG, _ABS = range(8)
_BINARY = {"add": _ADD, "sub": _SUB, "mul": _MUL, "div": _DIV}
# Broadcast operands are widened and repeated (fused.c: KIND_F32): at most this share of the
# result's size (a larger one costs more to widen than it saves).
_PERIOD_SHARE = 8


class _Table:
    """:data:`TABLE`: the declaration of a one-input forward computed by a table."""

    def __repr__(self) -> str:
        return "TABLE"


TABLE = _Table()


class Expr:
    """A float32 value per element of the result: an input, a constant, a lookup of a
    function of an input, or + - * / and negation of those (see the module docstring)."""

    __slots__ = ("op", "args", "shape")
    __array_ufunc__ = None  # numpy.float32(2) * expr -> Expr.__rmul__, not an object array

    def __init__(self, op: str, *args: Any, shape: tuple | None = None) -> None:
        self.op = op
        self.args = args
        self.shape = shape  # an input's shape (None for the other nodes)

    def _binary(self, op: str, other: Any, reflected: bool = False) -> "Expr":
        other = other if isinstance(other, Expr) else Expr("const", numpy.float32(other))
        return Expr(op, other, self) if reflected else Expr(op, self, other)

    def __add__(self, other: Any) -> "Expr":
        return self._binary("add", other)

    def __radd__(self, other: Any) -> "Expr":
        return self._binary("add", other, True)

    def __sub__(self, other: Any) -> "Expr":
        return self._binary("sub", other)

    def __rsub__(self, other: Any) -> "Expr":
        return self._binary("sub", other, True)

    def __mul__(self, other: Any) -> "Expr":
        return self._binary("mul", other)

    def __rmul__(self, other: Any) -> "Expr":
        return self._binary("mul", other, True)

    def __truediv__(self, other: Any) -> "Expr":
        return self._binary("div", other)

    def __rtruediv__(self, other: Any) -> "Expr":
        return self._binary("div", other, True)

    def __neg__(self) -> "Expr":
        return Expr("neg", self)

    def __abs__(self) -> "Expr":
        return Expr("abs", self)

    def map(self, function: Callable[..., Any], *args: Any) -> "Expr":
        """``function(x, *args)`` of this input ``x`` (float32, widened), as NumPy computes
        it, rounded to float32: a table over the 65536 16-bit patterns (:func:`table`).
        ``function`` and ``args`` key the table: pass a module-level function."""
        if self.op != "input":
            raise ValueError("map applies to an input of the operator")
        return Expr("lookup", self, function, args)

    def reduced(self, function: Callable[[Any, Any], Any], shape: tuple) -> "Expr":
        """This expression over ``shape`` (larger than the result's: a gradient's term over
        the broadcast shape) computed in float32, then ``function(term, y)`` (NumPy code:
        sums the term into y, float32 of the result's shape), rounded once."""
        return Expr("reduce", self, function, tuple(shape))

    def along(self, axis: int) -> "Expr":
        """This input (1-d) as one value per index along the result's ``axis`` (a bias or
        scale per channel: the NumPy code's view of shape (1, .., C, .., 1))."""
        if self.op != "input":
            raise ValueError("along applies to an input of the operator")
        return Expr("along", self, axis)


def _values(function: Callable[..., Any], args: tuple, dtype: numpy.dtype) -> Any:
    from ..call import widen  # the one widening rule (gpuops.call imports this module)
    x = widen(numpy.arange(1 << 16, dtype=numpy.uint32).astype(_UINT16).view(dtype))
    with numpy.errstate(all="ignore"):  # NaN, inf: every pattern, not the caller's values
        return numpy.ascontiguousarray(function(x, *args), dtype=_FLOAT32)


_tables: dict[tuple, Any] = {}
_tables_lock = threading.Lock()
_TABLES_KEPT = 64  # 256 KiB each


def table(function: Callable[..., Any], args: tuple, dtype: numpy.dtype,
          rounded: bool = False) -> Any:
    """The float32 table of ``function(x, *args)`` over every ``dtype`` pattern x (index:
    the 16 bits), or (``rounded``) those values rounded to ``dtype``; computed once per
    (function, args, dtype, rounded) and kept (the most recent :data:`_TABLES_KEPT`)."""
    key = (function, args, dtype, rounded)
    found = _tables.get(key)
    if found is None:
        if rounded:
            from ..call import narrow
            found = narrow(table(function, args, dtype), numpy.empty(1 << 16, dtype))
        else:
            found = _values(function, args, dtype)
        with _tables_lock:
            if len(_tables) >= _TABLES_KEPT:
                _tables.pop(next(iter(_tables)))
            _tables[key] = found
    return found


def _tabulated_forward(cpu: Callable[..., Any]) -> Callable[..., Any]:
    """``cpu(x, y, *params)`` (a forward's NumPy code) as a function returning y."""
    def forward(x: Any, *args: Any) -> Any:
        y = numpy.empty(x.shape, _FLOAT32)
        cpu(x, y, *args)
        return y
    forward.__qualname__ = f"table of {getattr(cpu, '__qualname__', cpu)!r}"
    return forward


_forwards: dict[Any, Callable[..., Any]] = {}  # NumPy forward -> its table's function


class _Plan:
    """A compiled form for one layout (shapes and dtype): fused.c's code, its operands'
    recipes (``("full", i)``: input i, 16 bits; ``("repeat", i, dims)``: input i viewed
    with ``dims`` and broadcast to the trailing ``shape[lead:]``, widened; ``("const",
    array)``), their kinds and periods, the tables; ``reduce``: (function, term shape) of
    a reduced form, else None."""

    __slots__ = ("code", "recipes", "kinds", "periods", "tables", "reduce", "_keep")

    def __init__(self, code: list[int], recipes: list[tuple], kinds: list[int],
                 periods: list[int], tables: list[Any], reduce: tuple | None) -> None:
        self.code = numpy.array(code, numpy.int32)
        self.recipes = recipes
        self.kinds = (ctypes.c_int64 * len(kinds))(*kinds)
        self.periods = (ctypes.c_int64 * len(periods))(*periods)
        self.tables = (ctypes.c_void_p * max(len(tables), 1))(*map(_address, tables))
        self.reduce = reduce
        self._keep = tables  # the tables' memory while the plan is used


def _compile(expr: Expr, shape: tuple, dtype: numpy.dtype, shapes: Sequence[Any],
             reduce: tuple | None = None) -> _Plan | None:
    """The plan of ``expr`` over ``shape`` for inputs of ``shapes``, or None when an
    input's layout has no fused form."""
    size = _size(shape)
    sixteen = _KIND_F16 if dtype == numpy.float16 else _KIND_BF16
    code: list[int] = []
    recipes: list[tuple] = []
    kinds: list[int] = []
    periods: list[int] = []
    tables: list[Any] = []
    slots: dict[Any, int] = {}  # recipe -> operand
    registers: dict[int, int] = {}  # id(node) -> register (a node used twice is computed once)

    def operand(recipe: tuple | None, kind: int = _KIND_F32, period: int = 0) -> int:
        if recipe is None:
            raise _Unfit
        key = recipe if recipe[0] != "const" else ("const", recipe[1].tobytes())
        if key not in slots:
            recipes.append(recipe)
            kinds.append(kind)
            periods.append(period)
            slots[key] = len(recipes) - 1
        return slots[key]

    def input_operand(index: int) -> int:
        x_shape = shapes[index]
        if x_shape is None:
            raise _Unfit
        if tuple(x_shape) == shape:
            return operand(("full", index), sixteen)
        return repeated(index, tuple(x_shape))

    def repeated(index: int, x_shape: tuple) -> int:
        """Input ``index`` of ``x_shape`` broadcast to ``shape`` from trailing axes."""
        if len(x_shape) > len(shape) or any(d not in (1, s) for d, s in
                                             zip(x_shape[::-1], shape[::-1])):
            raise _Unfit  # a larger input (a gradient summed to a broadcast operand's shape)
        dims = (1,) * (len(shape) - len(x_shape)) + x_shape
        lead = 0
        while lead < len(shape) and dims[lead] == 1:
            lead += 1
        period = _size(shape[lead:])
        if period * _PERIOD_SHARE > size:
            raise _Unfit
        return operand(("repeat", index, dims, lead), _KIND_F32, max(period, 1))

    def emit(node: Expr) -> int:
        if id(node) in registers:
            return registers[id(node)]
        if node.op == "input":
            source = (_LOAD, input_operand(node.args[0]), 0)
        elif node.op == "along":
            index, axis = node.args[0].args[0], node.args[1]
            x_shape = shapes[index]
            if not (x_shape is not None and len(x_shape) == 1 and 0 <= axis < len(shape)
                    and x_shape[0] == shape[axis]):
                raise _Unfit
            dims = [1] * len(shape)
            dims[axis] = x_shape[0]
            source = (_LOAD, repeated(index, tuple(dims)), 0)
        elif node.op == "const":
            source = (_LOAD, operand(("const", numpy.full(1, node.args[0], _FLOAT32)),
                                     _KIND_F32, 1), 0)
        elif node.op == "lookup":
            x, function, args = node.args
            index = x.args[0]
            if shapes[index] is None or tuple(shapes[index]) != shape:
                raise _Unfit
            tables.append(table(function, args, dtype))
            source = (_LOOKUP, operand(("full", index), sixteen), len(tables) - 1)
        elif node.op in ("neg", "abs"):
            source = (_NEG if node.op == "neg" else _ABS, emit(node.args[0]), 0)
        else:
            source = (_BINARY[node.op], emit(node.args[0]), emit(node.args[1]))
        if len(registers) >= _REGISTERS:
            raise _Unfit
        registers[id(node)] = destination = len(registers)  # never one of its sources
        code.extend((source[0], destination, source[1], source[2]))
        return destination

    try:
        emit(expr)
    except _Unfit:
        return None
    return _Plan(code, recipes, kinds, periods, tables, reduce)


def _bind(plan: _Plan, arrays: Sequence[Any], shape: tuple, dtype: numpy.dtype) -> Any:
    """(operand addresses, the arrays behind them) for one call, or None when an input is
    not a contiguous array of ``dtype``."""
    from ..call import widen
    keep = []
    for recipe in plan.recipes:
        if recipe[0] == "const":
            keep.append(recipe[1])
            continue
        x = arrays[recipe[1]]
        if type(x) is not numpy.ndarray or x.dtype != dtype:
            return None
        if recipe[0] == "full":
            if not (x.flags.c_contiguous and x.flags.aligned):
                return None
            keep.append(x)
        else:
            _, _, dims, lead = recipe
            block = numpy.broadcast_to(widen(x).reshape(dims[lead:]), shape[lead:])
            keep.append(numpy.ascontiguousarray(block, dtype=_FLOAT32))
    return (ctypes.c_void_p * len(keep))(*map(_address, keep)), keep


class _Unfit(Exception):
    """An input's layout has no fused form: the caller takes the NumPy path."""


def _size(shape: Sequence[int]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def run(form: Any, cpu: Callable[..., Any], arrays: Sequence[Any], params: Sequence[Any],
        shape: tuple, dtype: numpy.dtype, out: Any) -> bool:
    """Compute the declared ``form`` of a call (:class:`Expr` factory or :data:`TABLE`)
    into ``out`` (a C-contiguous ``dtype`` array of ``shape``, overlapping no input other
    than element for element); whether it was done (False: the NumPy path)."""
    if not out.size or not available():
        return False
    from . import lookup16
    if form is TABLE:  # one 16-bit pass: y = table[x], the table of rounded results
        x = arrays[0]
        if not (isinstance(x, numpy.ndarray) and x.dtype == dtype and x.shape == shape
                and x.flags.c_contiguous and x.flags.aligned):
            return False
        forward = _forwards.get(cpu)
        if forward is None:
            forward = _forwards[cpu] = _tabulated_forward(cpu)
        values = table(forward, tuple(params), dtype, rounded=True)
        lookup16(_address(x), _address(values), _address(out), out.size)
        return True
    try:
        key: Any = (form, tuple(params), dtype, shape,
                    tuple(getattr(x, "shape", None) for x in arrays))
        plan: Any = _plans.get(key, _MISSING)
    except TypeError:  # an unhashable parameter: compiled for this call only
        key, plan = None, _MISSING
    if plan is _MISSING:
        plan = _plan(form, arrays, params, shape, dtype)
        if key is not None:
            if len(_plans) >= _PLANS_KEPT:
                _plans.clear()
            _plans[key] = plan
    if plan is None:
        return False
    if plan.reduce is None:
        return _execute(plan, arrays, shape, dtype, out,
                        _KIND_F16 if dtype == numpy.float16 else _KIND_BF16)
    function, term_shape = plan.reduce
    term = numpy.empty(term_shape, _FLOAT32)
    if not _execute(plan, arrays, term_shape, dtype, term, _KIND_F32):
        return False
    from ..call import narrow
    y = numpy.empty(shape, _FLOAT32)
    with numpy.errstate(all="ignore"):
        function(term, y)
    narrow(y, out)
    return True


_MISSING = object()
_plans: dict[Any, _Plan | None] = {}  # (form, params, dtype, shape, input shapes) -> plan
_PLANS_KEPT = 512


def _plan(form: Callable[..., Any], arrays: Sequence[Any], params: Sequence[Any],
          shape: tuple, dtype: numpy.dtype) -> _Plan | None:
    """The form's expression for these parameters and input shapes, compiled."""
    shapes = [getattr(x, "shape", None) for x in arrays]
    expr = form(*[Expr("input", i, shape=s) for i, s in enumerate(shapes)], *params)
    if expr is None:
        return None
    if expr.op == "reduce":
        term, function, term_shape = expr.args
        return _compile(term, term_shape, dtype, shapes, (function, term_shape))
    return _compile(expr, shape, dtype, shapes)


def _execute(plan: _Plan, arrays: Sequence[Any], shape: tuple, dtype: numpy.dtype, out: Any,
             out_kind: int) -> bool:
    """fused_run of ``plan`` over ``shape`` into ``out`` (C-contiguous, of ``out_kind``)."""
    from . import fused_run
    bound = _bind(plan, arrays, shape, dtype)
    if bound is None:
        return False
    data, keep = bound
    status = fused_run(plan.code.ctypes.data, plan.code.size // 4, data, plan.kinds,
                       plan.periods, plan.tables, _address(out), out_kind, out.size)
    del keep
    return status == 0
