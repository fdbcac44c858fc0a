"""OpInfo records of the activations (float64 references in plain NumPy; gelu's erf from
the math module)."""
from __future__ import annotations

import math

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

from .elementwise import offset_samples, offset_view

SHAPES = ((257,), (3, 4, 5), (0,), (1,), (), (16, 65))


def _samples(low, high, params=None):
    def samples(rng):
        def draw(shape):
            # keep |x| >= 1e-3 so relu's kink at 0 stays outside the finite-difference step
            x = rng.uniform(low, high, shape)
            return numpy.where(numpy.abs(x) < 1e-3, 0.5, x)

        for shape in SHAPES:
            yield Sample((draw(shape),), dict(params or {}))
        yield from offset_samples(draw, params)
    return samples


def _leaky_samples(rng):
    for slope in (0.01, 0.2, -0.5, 0.0):
        for shape in ((257,), (3, 4, 5), (0,), ()):
            x = rng.uniform(-3, 3, shape)
            yield Sample((x,), {"slope": slope}, f"slope{slope}-{'x'.join(map(str, shape))}")
    yield from offset_samples(lambda n: rng.uniform(-3, 3, n), {"slope": 0.2})


def _errors(rng):
    """y or gy of the wrong shape in the gradient (the forward takes no parameters)."""
    x = rng.uniform(-3, 3, (3, 4))
    yield ErrorInput((x, numpy.ones((4, 3)), numpy.ones((3, 4))), {}, ValueError,
                     r"y has shape \(4, 3\)", fn=1)
    yield ErrorInput((x, numpy.ones((3, 4)), numpy.ones((3, 4, 1))), {}, ValueError,
                     r"gy has shape \(3, 4, 1\)", fn=1)
    yield ErrorInput((x, numpy.ones((3, 4)), numpy.ones(4)), {}, ValueError,
                     r"gy has shape \(4,\)", fn=1)
    yield ErrorInput((x, numpy.ones((3, 4)).astype(numpy.int32), numpy.ones((3, 4))), {},
                     TypeError, "int32", fn=1)
    yield ErrorInput((x, numpy.ones((3, 4)), numpy.ones((3, 4)) > 0), {}, TypeError, "bool",
                     fn=1)


def _leaky_errors(rng):
    x = rng.uniform(-3, 3, (3, 4))
    yield from _errors(rng)
    yield ErrorInput((x,), {"slope": "0.1"}, TypeError, "slope must be .*, got '0.1'")
    yield ErrorInput((x,), {"slope": None}, TypeError, "got None")
    yield ErrorInput((x,), {"slope": True}, TypeError, "got True")
    yield ErrorInput((x,), {"slope": numpy.ones(2)}, TypeError, r"array\(\[1., 1.\]\)")
    yield ErrorInput((x,), {"slope": float("nan")}, ValueError, "slope must be finite, got nan")
    yield ErrorInput((x,), {"slope": float("inf")}, ValueError, "got inf")
    yield ErrorInput((x,), {"slope": "0.1"}, TypeError, "got '0.1'", fn=1)
    yield ErrorInput((x,), {"slope": -float("inf")}, ValueError, "got -inf", fn=1)


def _gelu_samples(rng):
    # |x| up to 12: gelu's negative tail (x Φ(x) ~ 1e-32 at -12) keeps its relative precision
    for approximate, low, high in (("none", -12, 12), ("tanh", -6, 6)):
        for shape in ((257,), (3, 4, 5), (0,), (), (16, 65)):
            x = rng.uniform(low, high, shape)
            yield Sample((x,), {"approximate": approximate},
                         f"{approximate}-{'x'.join(map(str, shape))}")
    # misaligned for the 16-bit kernels: gelu in float16, gelu_tanh in bfloat16 (in the
    # other 16-bit dtype each is an aligned copy: vector body and tail)
    yield Sample((offset_view(rng.uniform(-6, 6, 21), F16),), {"approximate": "none"},
                 "none-float16-offset-21")
    yield Sample((offset_view(rng.uniform(-6, 6, 23), BF16),), {"approximate": "tanh"},
                 "tanh-bfloat16-offset-23")


def _gelu_errors(rng):
    x = rng.uniform(-3, 3, (3, 4))
    yield from _errors(rng)
    yield ErrorInput((x,), {"approximate": "exact"}, ValueError,
                     "approximate must be 'none' or 'tanh', got 'exact'")
    yield ErrorInput((x,), {"approximate": "Tanh"}, ValueError, "got 'Tanh'", fn=1)
    yield ErrorInput((x,), {"approximate": None}, TypeError, "got None")
    yield ErrorInput((x,), {"approximate": True}, TypeError, "got True", fn=1)


_erfc = numpy.vectorize(math.erfc, otypes=[float])


def _normal_cdf(x):
    return 0.5 * _erfc(-x / math.sqrt(2))


def _gelu_ref(x, approximate):
    if approximate == "tanh":  # PyTorch's formula
        return 0.5 * x * (1 + numpy.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return x * _normal_cdf(x)


def _gelu_grad_ref(x, y, g, approximate):
    if approximate == "tanh":
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
        du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x ** 2)
        return g * (0.5 * (1 + numpy.tanh(u)) + 0.5 * x * du / numpy.cosh(u) ** 2)
    return g * (_normal_cdf(x) + x * numpy.exp(-x * x / 2) / math.sqrt(2 * math.pi))


def _sigmoid_ref(x):
    return 1.0 / (1.0 + numpy.exp(-x))


KERNEL_DTYPES = (F16, BF16, F32, F64)  # the kernels: every float dtype

RECORDS = [
    OpInfo(name="relu", ref=lambda x: numpy.where(x > 0, x, 0.0), samples=_samples(-3, 3),
           grad_refs={1: lambda x, y, g: numpy.where(x > 0, g, 0.0)},
           gpu_dtypes=KERNEL_DTYPES, error_inputs=_errors),
    OpInfo(name="leaky_relu", ref=lambda x, slope: numpy.where(x > 0, x, slope * x),
           samples=_leaky_samples,
           grad_refs={1: lambda x, y, g, slope: numpy.where(x > 0, g, slope * g)},
           gpu_dtypes=KERNEL_DTYPES, error_inputs=_leaky_errors),
    # |x| up to 30: sigmoid's tails (e^-30 ~ 1e-13) must neither overflow nor lose sign
    OpInfo(name="sigmoid", ref=_sigmoid_ref, samples=_samples(-30, 30),
           grad_refs={1: lambda x, y, g: g * _sigmoid_ref(x) * (1 - _sigmoid_ref(x))},
           gpu_dtypes=KERNEL_DTYPES, error_inputs=_errors),
    OpInfo(name="tanh", ref=numpy.tanh, samples=_samples(-5, 5),
           grad_refs={1: lambda x, y, g: g / numpy.cosh(x) ** 2},
           gpu_dtypes=KERNEL_DTYPES, error_inputs=_errors),
    OpInfo(name="gelu", ref=_gelu_ref, samples=_gelu_samples, grad_refs={1: _gelu_grad_ref},
           gpu_dtypes=KERNEL_DTYPES, error_inputs=_gelu_errors),
    # |x| up to 30: x σ(x) in the negative tail (-2.8e-12 at -30)
    OpInfo(name="silu", ref=lambda x: x * _sigmoid_ref(x), samples=_samples(-30, 30),
           grad_refs={1: lambda x, y, g: g * _sigmoid_ref(x) * (1 + x * (1 - _sigmoid_ref(x)))},
           gpu_dtypes=KERNEL_DTYPES, error_inputs=_errors),
]
