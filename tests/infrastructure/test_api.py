"""The public API convention (README "API convention"): signatures, backends, dtypes,
Python scalars, ``out=``, error messages and the array helpers.

Generic wrong calls for every operator (integer/bool/list inputs, ``out`` and ``gy`` of
the wrong shape or dtype) live in test_errors.py; this file checks the contract itself.
"""
from __future__ import annotations

import inspect
import re

import numpy
import pytest

import gpuops
from backends import BACKENDS

F32, F64 = numpy.float32, numpy.float64
BINARY = ("add", "sub", "mul", "div")
AXIS = ("axis_add", "axis_sub", "axis_mul", "axis_div")
UNARY = ("neg", "exp", "log", "sqrt", "square", "abs", "sin", "cos")


def _named(op: str) -> str:
    """A regex for an error message that names ``op`` as the operator (``"op: ..."``)."""
    return rf"^{re.escape(op)}: "


def _positive(shape, dtype, seed=0):
    return numpy.random.default_rng(seed).uniform(0.5, 2.0, shape).astype(dtype)


# ---- signatures and exports -------------------------------------------------

def _positional(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _keywords(fn) -> dict:
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind == p.KEYWORD_ONLY}


@pytest.mark.parametrize("name", sorted(gpuops.OPERATORS))
def test_signature_convention(name):
    """name(x1..xn, *, params, out=None); name_wrt_xk(x1..xn, y, gy, *, same params, out=None)."""
    op = gpuops.OPERATORS[name]
    inputs = _positional(op.forward)
    assert inputs == [f"x{i}" for i in range(1, len(inputs) + 1)], inputs
    params = _keywords(op.forward)
    assert "out" in params and params["out"] is None
    assert getattr(gpuops, name) is op.forward and name in gpuops.__all__
    for k, grad in op.grads.items():
        assert 1 <= k <= len(inputs) and grad.__name__ == f"{name}_wrt_x{k}"
        assert _positional(grad) == inputs + ["y", "gy"]
        assert _keywords(grad) == params, f"{grad.__name__} keywords differ from {name}'s"
        assert getattr(gpuops, grad.__name__) is grad and grad.__name__ in gpuops.__all__


def test_py_typed_marker_is_shipped():
    from gpuops import kernels
    assert (kernels._HERE / "py.typed").is_file()


# ---- inputs -----------------------------------------------------------------

@pytest.mark.parametrize("bad", [[1.0, 2.0], (1.0, 2.0), "x", None, {"a": 1}, 3.0],
                         ids=["list", "tuple", "str", "None", "dict", "float"])
def test_non_array_first_operand_is_a_type_error(bad):
    """Only the second operand of a binary op may be a Python scalar."""
    with pytest.raises(TypeError, match=_named("add") + "x1 must be a NumPy or CuPy array"):
        gpuops.add(bad, numpy.ones(2))
    with pytest.raises(TypeError, match=_named("exp") + "x1 "):
        gpuops.exp(bad)


@pytest.mark.parametrize("bad", [[1.0, 2.0], "x", True, numpy.bool_(True), 1j])
def test_non_scalar_second_operand_is_a_type_error(bad):
    with pytest.raises(TypeError, match=_named("mul") + "x2 "):
        gpuops.mul(numpy.ones(2), bad)


@pytest.mark.parametrize("dtype", [numpy.int32, numpy.int64, numpy.bool_, numpy.uint8,
                                   numpy.complex64])
def test_non_float_arrays_are_type_errors_naming_the_dtype(dtype):
    x = numpy.ones(3, dtype=dtype)
    dt = numpy.dtype(dtype).name
    with pytest.raises(TypeError, match=_named("sqrt") + f"x1 has dtype {dt}"):
        gpuops.sqrt(x)
    with pytest.raises(TypeError, match=_named("div") + f"x2 has dtype {dt}"):
        gpuops.div(numpy.ones(3), x)
    with pytest.raises(TypeError, match=_named("axis_mul_wrt_x2") + f"gy has dtype {dt}"):
        gpuops.axis_mul_wrt_x2(numpy.ones((2, 3)), numpy.ones(3), numpy.ones((2, 3)),
                               numpy.ones((2, 3), dtype=dtype), axis=1)


@pytest.mark.parametrize("d1,d2,expected", [
    ("float16", "float16", "float16"), ("bfloat16", "bfloat16", "bfloat16"),
    ("float16", "bfloat16", "float32"), ("bfloat16", "float16", "float32"),
    ("bfloat16", "float32", "float32"), ("float16", "float32", "float32"),
    ("bfloat16", "float64", "float64"), ("float64", "float16", "float64")])
def test_16bit_dtypes_promote_with_float32_between(d1, d2, expected):
    """The NumPy backend computes 16-bit inputs in float32 and rounds the result once;
    float16 + bfloat16 (neither holds the other) gives float32 (gpuops.call.result_dtype)."""
    dtypes = {"float16": numpy.float16, "bfloat16": gpuops.bfloat16,
              "float32": numpy.float32, "float64": numpy.float64}
    x1 = numpy.array([1.0, 3.0, 1e-3], dtypes[d1])
    x2 = numpy.array([2.0 ** -8, 1 / 3, 1e-3], dtypes[d2])
    y = gpuops.add(x1, x2)
    assert y.dtype == numpy.dtype(dtypes[expected])
    exact = x1.astype(numpy.float64) + x2.astype(numpy.float64)
    if y.dtype != numpy.float64:  # float32 arithmetic, one rounding to a 16-bit result
        exact = exact.astype(numpy.float32).astype(y.dtype)
    numpy.testing.assert_array_equal(y, exact)


# ---- dtypes -----------------------------------------------------------------

@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("d1,d2", [(F32, F64), (F64, F32), (F32, F32), (F64, F64)])
def test_mixed_float_dtypes_promote_like_numpy(name, d1, d2):
    x1, x2 = _positive((3, 4), d1, 1), _positive((4,), d2, 2)
    y = getattr(gpuops, name)(x1, x2)
    expected = getattr(numpy, {"sub": "subtract", "mul": "multiply", "div": "divide"}
                       .get(name, name))(x1, x2)
    assert y.dtype == expected.dtype == numpy.result_type(d1, d2)
    numpy.testing.assert_allclose(y, expected, rtol=1e-6)
    gy = numpy.ones_like(y)
    for k, x in ((1, x1), (2, x2)):
        g = getattr(gpuops, f"{name}_wrt_x{k}")(x1, x2, y, gy)
        assert g.dtype == x.dtype and g.shape == x.shape, f"{name}_wrt_x{k}"


@pytest.mark.parametrize("name", AXIS)
def test_axis_ops_promote_and_gradients_keep_input_dtypes(name):
    x1, x2 = _positive((2, 3, 4), F32), _positive((3,), F64)
    y = getattr(gpuops, name)(x1, x2, axis=1)
    assert y.dtype == F64
    g1 = getattr(gpuops, f"{name}_wrt_x1")(x1, x2, y, numpy.ones_like(y), axis=1)
    g2 = getattr(gpuops, f"{name}_wrt_x2")(x1, x2, y, numpy.ones_like(y), axis=1)
    assert (g1.dtype, g1.shape, g2.dtype, g2.shape) == (F32, x1.shape, F64, x2.shape)


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("scalar", [2.0, 3, 1e-3], ids=["float", "int", "small"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_python_scalar_second_operand_keeps_the_array_dtype(name, scalar, dtype):
    x = _positive((5,), dtype)
    y = getattr(gpuops, name)(x, scalar)
    assert y.dtype == dtype and y.shape == x.shape
    expected = {"add": x + dtype(scalar), "sub": x - dtype(scalar), "mul": x * dtype(scalar),
                "div": x / dtype(scalar)}[name]
    numpy.testing.assert_array_equal(y, expected)
    g1 = getattr(gpuops, f"{name}_wrt_x1")(x, scalar, y, numpy.ones_like(y))
    assert g1.dtype == dtype and g1.shape == x.shape


def test_scalar_gradient_wrt_the_scalar_operand_is_0d():
    x = numpy.arange(1, 5, dtype=F32)
    y = gpuops.mul(x, 2.0)
    g2 = gpuops.mul_wrt_x2(x, 2.0, y, numpy.ones_like(y))
    assert g2.shape == () and g2.dtype == F32 and float(g2) == pytest.approx(10.0)


# ---- out= -------------------------------------------------------------------

def test_out_is_written_and_returned_with_no_result_allocation():
    x1, x2 = _positive((3, 4), F32, 1), _positive((4,), F32, 2)
    out = numpy.full((3, 4), numpy.nan, F32)
    assert gpuops.div(x1, x2, out=out) is out
    numpy.testing.assert_array_equal(out, x1 / x2)
    out1 = numpy.empty(4, F32)
    y = gpuops.div(x1, x2)
    assert gpuops.div_wrt_x2(x1, x2, y, numpy.ones_like(y), out=out1) is out1
    numpy.testing.assert_allclose(out1, (-x1 / x2 ** 2).sum(axis=0), rtol=1e-6)


def test_out_may_be_a_strided_view():
    x = _positive((4, 6), F64)
    buffer = numpy.zeros((4, 12), F64)
    view = buffer[:, ::2]
    assert gpuops.sqrt(x, out=view) is view
    numpy.testing.assert_array_equal(buffer[:, ::2], numpy.sqrt(x))
    numpy.testing.assert_array_equal(buffer[:, 1::2], 0)


def test_out_may_alias_an_input():
    x = _positive((7,), F32)
    expected = numpy.exp(x)
    assert gpuops.exp(x, out=x) is x
    numpy.testing.assert_array_equal(x, expected)


def test_out_of_the_wrong_shape_is_a_value_error_naming_both_shapes():
    with pytest.raises(ValueError, match=_named("add") + r"out has shape \(3,\); expected \(2, 3\)"):
        gpuops.add(numpy.ones((2, 3)), numpy.ones(3), out=numpy.empty(3))
    with pytest.raises(ValueError, match=_named("add_wrt_x2") + r"out has shape \(2, 3\); "
                                                                 r"expected \(3,\)"):
        gpuops.add_wrt_x2(numpy.ones((2, 3)), numpy.ones(3), numpy.ones((2, 3)),
                          numpy.ones((2, 3)), out=numpy.empty((2, 3)))


def test_out_of_the_wrong_dtype_is_a_type_error_naming_both_dtypes():
    with pytest.raises(TypeError, match=_named("mul") + "out has dtype float32; expected float64"):
        gpuops.mul(numpy.ones(3), numpy.ones(3), out=numpy.empty(3, F32))
    with pytest.raises(TypeError, match=_named("log_wrt_x1") + "out has dtype float64; "
                                                                "expected float32"):
        x = numpy.ones(3, F32)
        gpuops.log_wrt_x1(x, x, x, out=numpy.empty(3, F64))


@pytest.mark.parametrize("bad", [[0.0, 0.0, 0.0], 0.0, memoryview(bytearray(24))],
                         ids=["list", "float", "buffer"])
def test_out_that_is_not_an_array_of_the_backend_is_a_type_error(bad):
    with pytest.raises(TypeError, match=_named("neg") + "out must be a numpy.ndarray"):
        gpuops.neg(numpy.ones(3), out=bad)


# ---- error messages ---------------------------------------------------------

def test_shapes_that_do_not_broadcast_name_the_op_and_shapes():
    with pytest.raises(ValueError, match=_named("sub") + r"shapes \(2, 3\) and \(4,\) do not "
                                                          "broadcast"):
        gpuops.sub(numpy.ones((2, 3)), numpy.ones(4))


def test_axis_errors_name_the_op_axis_and_shapes():
    x1 = numpy.ones((2, 3, 4))
    with pytest.raises(ValueError, match=_named("axis_add") + "axis 3 is out of range"):
        gpuops.axis_add(x1, numpy.ones(3), axis=3)
    with pytest.raises(ValueError, match=_named("axis_div") + r".*length x1.shape\[2\] = 4, "
                                                                r"got shape \(3,\)"):
        gpuops.axis_div(x1, numpy.ones(3), axis=2)
    with pytest.raises(TypeError, match=_named("axis_mul") + "axis must be an int"):
        gpuops.axis_mul(x1, numpy.ones(3), axis=1.0)


def test_gradient_shape_errors_name_the_argument():
    x = numpy.ones((2, 3))
    with pytest.raises(ValueError, match=_named("exp_wrt_x1") + r"gy has shape \(3,\); "
                                                                 r"expected \(2, 3\)"):
        gpuops.exp_wrt_x1(x, x, numpy.ones(3))
    with pytest.raises(ValueError, match=_named("mul_wrt_x1") + r"y has shape \(3, 2\)"):
        gpuops.mul_wrt_x1(x, x, numpy.ones((3, 2)), x)


@pytest.mark.parametrize("p", ["2", None, numpy.array(2.0), True])
def test_pow_exponent_must_be_a_python_number(p):
    with pytest.raises(TypeError, match=_named("pow") + "p must be a Python int or float"):
        gpuops.pow(numpy.ones(2), p=p)


# ---- helpers ----------------------------------------------------------------

def test_get_array_module_and_to_cpu_on_numpy():
    x = numpy.ones(3)
    assert gpuops.get_array_module(x) is numpy
    assert gpuops.get_array_module(x, 2.0, None) is numpy
    assert gpuops.get_array_module() is numpy
    assert gpuops.to_cpu(x) is x


def test_gpu_available_is_a_bool():
    assert isinstance(gpuops.gpu_available(), bool)


@pytest.mark.skipif(gpuops.gpu_available(), reason="a GPU is usable here")
def test_to_gpu_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="to_gpu: no usable CUDA GPU"):
        gpuops.to_gpu(numpy.ones(3))


@pytest.mark.gpu
@pytest.mark.skipif(not gpuops.gpu_available(), reason="needs CuPy and a usable CUDA GPU")
def test_gpu_helpers_and_mixed_backends():
    import cupy
    x = numpy.arange(6, dtype=F32).reshape(2, 3)
    d = gpuops.to_gpu(x)
    assert isinstance(d, cupy.ndarray) and gpuops.get_array_module(d) is cupy
    assert gpuops.get_array_module(x, d) is cupy
    back = gpuops.to_cpu(d)
    assert isinstance(back, numpy.ndarray)
    numpy.testing.assert_array_equal(back, x)
    y = gpuops.add(d, 2.0)
    assert isinstance(y, cupy.ndarray) and y.dtype == F32
    numpy.testing.assert_array_equal(gpuops.to_cpu(y), x + 2)
    with pytest.raises(TypeError, match=_named("add") + "mixed NumPy and CuPy inputs"):
        gpuops.add(x, d)
    with pytest.raises(TypeError, match=_named("exp_wrt_x1") + "mixed NumPy and CuPy"):
        gpuops.exp_wrt_x1(d, d, x)
    with pytest.raises(TypeError, match=_named("neg") + "out must be a cupy.ndarray"):
        gpuops.neg(d, out=numpy.empty_like(x))
    with pytest.raises(TypeError, match=_named("neg") + "out must be a numpy.ndarray"):
        gpuops.neg(x, out=cupy.empty_like(d))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_results_live_on_the_inputs_backend(backend):
    x = numpy.linspace(0.5, 2.0, 12).reshape(3, 4)
    with backend.active():
        dx = backend.asarray(x)
        y = gpuops.mul(dx, 3.0)
        assert type(y) is type(dx)
        numpy.testing.assert_allclose(backend.to_numpy(y), 3 * x)


class _DLPackProducer:
    """A foreign array (like a torch tensor): it offers __dlpack__ but is not an ndarray."""

    def __dlpack__(self, stream=None):  # pragma: no cover - never called
        raise AssertionError("gpuops must not import foreign arrays implicitly")

    def __dlpack_device__(self):  # pragma: no cover
        return (1, 0)


@pytest.mark.parametrize("bad,hint", [([1.0, 2.0], r"numpy\.asarray\(x1\)"),
                                      (gpuops.Tensor(numpy.ones(2)), r"x1\.data"),
                                      (_DLPackProducer(), r"from_dlpack\(x1\)")],
                         ids=["list", "Tensor", "dlpack"])
def test_foreign_input_errors_say_how_to_pass_it(bad, hint):
    with pytest.raises(TypeError, match=_named("add") + "x1 must be a NumPy or CuPy array.*"
                       + hint):
        gpuops.add(bad, numpy.ones(2))
