"""OpInfo records of the elementwise family (float64 references in plain NumPy)."""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# the kernels: every float dtype (16 bits loaded into float32, rounded once on store)
KERNEL_DTYPES = (F16, BF16, F32, F64)


def offset_view(x, dtype):
    """``x`` in ``dtype`` (float16 or bfloat16) as a C-contiguous view that starts one
    element past a 16-byte boundary. The same-shape kernels move 16-byte vectors only when
    every array is 16-byte aligned (cuda/half.cuh, map_elements): this start takes their
    scalar loop. OpInfo.cast keeps a sample array already in the test's dtype, so the
    view reaches the emulator as it is in that dtype (other dtypes get an aligned copy:
    n elements run n // 8 vectors in 16 bits, then n % 8 in the scalar tail)."""
    dtype = numpy.dtype(dtype)
    whole = numpy.empty(x.size + 16 // dtype.itemsize, dtype)
    start = (dtype.itemsize - whole.ctypes.data) % 16 // dtype.itemsize
    view = whole[start:start + x.size].reshape(numpy.shape(x))
    view[...] = x
    return view


def _unbroadcast(g, shape):
    """Reference 'collapse': sum g over the axes broadcasting added to ``shape``."""
    shape = tuple(numpy.shape(shape)) if not isinstance(shape, tuple) else shape
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, s in enumerate(shape):
        if s == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


# (x1 shape, x2 shape or "scalar"): same shapes of awkward sizes, broadcasting both
# ways, 0-size, 1-element, 0-d, a scalar operand, a 5-d pattern no coalescing folds.
BINARY_SHAPES = [
    ((257,), (257,)), ((3, 5, 7), (7,)), ((7,), (3, 5, 7)), ((1, 4), (3, 1)),
    ((2, 3, 4, 5), (2, 1, 4, 1)), ((2, 3, 2, 3, 2), (1, 3, 1, 3, 1)), ((0, 3), (3,)),
    ((1,), (1,)), ((), (3,)), ((4, 5), "scalar"), ((33, 40), (33, 40)),
]


def _binary_samples(positive_x2: bool):
    def samples(rng):
        for s1, s2 in BINARY_SHAPES:
            x1 = rng.standard_normal(s1)
            if s2 == "scalar":
                x2 = 2.5 if positive_x2 else -1.25
            else:
                x2 = rng.standard_normal(s2)
                if positive_x2:  # keep division away from 0: |x2| in [0.5, 2]
                    x2 = numpy.sign(x2 + 1e-300) * rng.uniform(0.5, 2.0, s2)
            yield Sample((x1, x2))
        # same shapes, misaligned for 16-bit kernels: x1 in bfloat16, x2 in float16
        x1, x2 = rng.standard_normal(23), rng.uniform(0.5, 2.0, 23)
        yield Sample((offset_view(x1, BF16), offset_view(x2, F16)), name="16bit-offset-23")
    return samples


def _binary_errors(rng, scalar_x1=False, alpha=False):
    a, b = rng.standard_normal((3,)), rng.standard_normal((4,))
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)")
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)", fn=1)
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)", fn=2)
    if scalar_x1:
        # a Python scalar x1 has no gradient; two scalars make no call
        yield ErrorInput((2.0, a), {}, TypeError, "x1 = 2.0 is a Python scalar.*no gradient",
                         fn=1)
        for fn in ("forward", 1, 2):
            yield ErrorInput((2.0, 3.0), {}, TypeError,
                             "x1 = 2.0 and x2 = 3.0 are both Python scalars", fn=fn)
        yield ErrorInput((10 ** 400, a), {}, ValueError, "x1 = 1000.* is beyond the float range")
    else:
        yield ErrorInput((2.0, a), {}, TypeError, "x1 must be a NumPy or CuPy array, got float")
    if alpha:
        for fn in ("forward", 1, 2):
            yield ErrorInput((a, a), {"alpha": float("nan")}, ValueError,
                             "alpha must be finite, got nan", fn=fn)
        yield ErrorInput((a, a), {"alpha": float("inf")}, ValueError, "alpha must be finite")
        yield ErrorInput((a, a), {"alpha": "2"}, TypeError,
                         "alpha must be a Python int or float, got '2'")
        yield ErrorInput((a, a), {"alpha": True}, TypeError, "got True", fn=2)
        yield ErrorInput((a, a), {"alpha": a}, TypeError, "alpha must be a Python int", fn=1)
        yield ErrorInput((a, a), {"alpha": 10 ** 400}, ValueError, "alpha is beyond the float")
    # a Python int past the float range as the scalar operand
    for fn in ("forward", 1, 2):
        yield ErrorInput((a, 10 ** 400), {}, ValueError, "x2 = 1000.* is beyond the float range",
                         fn=fn)
    yield ErrorInput((a, -10 ** 400), {}, ValueError, "x2 = -1000.* is beyond the float range")


def _shape_of(x):
    return numpy.shape(x)


def _binary(name, ref, g1, g2, positive_x2=False, scalar_x1=False):
    return OpInfo(
        name=name, ref=ref, samples=_binary_samples(positive_x2),
        gpu_dtypes=KERNEL_DTYPES,
        error_inputs=lambda rng: _binary_errors(rng, scalar_x1=scalar_x1),
        grad_refs={
            1: lambda x1, x2, y, gy: _unbroadcast(g1(x1, x2, gy), _shape_of(x1)),
            2: lambda x1, x2, y, gy: _unbroadcast(g2(x1, x2, gy) * numpy.ones_like(y),
                                                  _shape_of(x2)),
        })


# add / sub with PyTorch's alpha: y = x1 ± alpha·x2, d/dx2 = ±alpha·gy. The default
# alpha = 1 on every binary shape, then other values (int, negative, 0, fractional) on
# same shapes (the contiguous kernel), broadcasting both ways, a scalar x2 and 0-size.
ALPHA_CASES = [(2.5, (257,), (257,)), (-3, (3, 5, 7), (7,)), (0.5, (7,), (3, 5, 7)),
               (0, (1, 4), (3, 1)), (-0.75, (4, 5), "scalar"), (2, (0, 3), (3,)),
               (1e-3, (2, 3, 2, 3, 2), (1, 3, 1, 3, 1))]


def _alpha_samples(rng):
    yield from _binary_samples(False)(rng)
    for alpha, s1, s2 in ALPHA_CASES:
        x2 = -1.25 if s2 == "scalar" else rng.standard_normal(s2)
        shape2 = "scalar" if s2 == "scalar" else "x".join(map(str, s2))
        yield Sample((rng.standard_normal(s1), x2), {"alpha": alpha},
                     f"alpha{alpha}-{'x'.join(map(str, s1))}-{shape2}")


def _alpha_binary(name, sign):
    return OpInfo(
        name=name, ref=lambda a, b, alpha=1: a + sign * alpha * b, samples=_alpha_samples,
        gpu_dtypes=KERNEL_DTYPES,
        error_inputs=lambda rng: _binary_errors(rng, scalar_x1=name == "sub", alpha=True),
        grad_refs={
            1: lambda x1, x2, y, gy, alpha=1: _unbroadcast(gy, _shape_of(x1)),
            2: lambda x1, x2, y, gy, alpha=1: _unbroadcast(sign * alpha * gy, _shape_of(x2)),
        })


# A Python scalar x1 (sub(2.0, x), div(1.0, x)): forward and the gradient wrt x2 (a scalar
# x1 has no gradient: TypeError, in the errors above). The first sample is all arrays
# (the generic error tests start from one).
SCALAR_X1_SHAPES = [(257,), (3, 5, 7), (0, 3), (), (1,)]


def _scalar_x1_samples(rng):
    yield Sample((rng.standard_normal(6), rng.uniform(0.5, 2.0, 6)), name="arrays-6-6")
    for x1 in (2.0, -3):
        for shape in SCALAR_X1_SHAPES:
            x2 = numpy.asarray(rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape))
            yield Sample((x1, x2), name=f"x1={x1}-{'x'.join(map(str, shape)) or '0d'}")
    yield Sample((1.5, rng.uniform(0.5, 2.0, (4, 5))), {"alpha": -2.5}, "x1=1.5-alpha-2.5")


def _scalar_x1(name, ref, g2):
    samples = _scalar_x1_samples
    if name == "div":  # no alpha
        samples = lambda rng: (s for s in _scalar_x1_samples(rng) if "alpha" not in s.params)
    return OpInfo(
        name=name, ref=ref, samples=samples, wrt=(2,),
        gpu_dtypes=KERNEL_DTYPES,
        error_inputs=lambda rng: (e for e in _binary_errors(rng, scalar_x1=True)
                                  if e.fn != 1),
        grad_refs={2: lambda x1, x2, y, gy, **kw: _unbroadcast(g2(x1, x2, gy, **kw),
                                                               _shape_of(x2))})


AXIS_CASES = [((2, 3, 4, 5), 1), ((4, 6), -1), ((3,), 0), ((5, 7), 0), ((2, 0, 3), 1),
              ((2, 3, 0), 1), ((1, 300, 1), 1), ((2, 5, 3, 3), -3)]


def _axis_samples(positive_x2: bool):
    def samples(rng):
        for shape, axis in AXIS_CASES:
            x1 = rng.standard_normal(shape)
            c = shape[axis]
            x2 = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c) if positive_x2 \
                else rng.standard_normal(c)
            yield Sample((x1, x2), {"axis": axis}, f"{'x'.join(map(str, shape))}-axis{axis}")
    return samples


def _axis_errors(rng):
    x1 = rng.standard_normal((2, 3, 4))
    yield ErrorInput((x1, rng.standard_normal(3)), {"axis": 3}, ValueError, "axis 3")
    yield ErrorInput((x1, rng.standard_normal(3)), {"axis": -4}, ValueError, "axis -4")
    yield ErrorInput((x1, rng.standard_normal(3)), {"axis": 1.0}, TypeError, "1.0")
    yield ErrorInput((x1, rng.standard_normal(4)), {"axis": 1}, ValueError, r"\(4,\)")
    yield ErrorInput((x1, rng.standard_normal((3, 1))), {"axis": 1}, ValueError, r"\(3, 1\)")
    yield ErrorInput((x1, rng.standard_normal(4)), {"axis": 1}, ValueError, r"\(4,\)", fn=2)
    yield ErrorInput((numpy.ones(()), rng.standard_normal(1)), {"axis": 0},
                     ValueError, r"shape \(\)")


def _channel(x2, ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return x2.reshape(shape)


def _axis(name, ref, g1, g2, positive_x2=False):
    def reduce_to_channel(g, ndim, axis):
        axes = tuple(i for i in range(ndim) if i != axis % ndim)
        return g.sum(axis=axes)

    return OpInfo(
        name=name,
        ref=lambda x1, x2, axis: ref(x1, _channel(x2, x1.ndim, axis)),
        samples=_axis_samples(positive_x2), gpu_dtypes=KERNEL_DTYPES,
        error_inputs=_axis_errors,
        grad_refs={
            1: lambda x1, x2, y, gy, axis: g1(x1, _channel(x2, x1.ndim, axis), gy)
            * numpy.ones_like(x1),
            2: lambda x1, x2, y, gy, axis: reduce_to_channel(
                g2(x1, _channel(x2, x1.ndim, axis), gy) * numpy.ones_like(x1), x1.ndim, axis),
        })


def _unary_samples(low, high, shapes=((257,), (3, 4, 5), (0,), (1,), (), (16, 65))):
    def samples(rng):
        for shape in shapes:
            yield Sample((rng.uniform(low, high, shape),))
        yield from offset_samples(lambda n: rng.uniform(low, high, n))
    return samples


def offset_samples(draw, params=None, sizes=(21, 23)):
    """Two one-input samples misaligned for the 16-bit kernels (:func:`offset_view`): a
    float16 view of ``sizes[0]`` elements (in bfloat16 an aligned copy: vector body and
    tail) and a bfloat16 view of ``sizes[1]``; ``draw(n)`` gives the values."""
    for dtype, n in zip((F16, BF16), sizes):
        yield Sample((offset_view(draw(n), dtype),), dict(params or {}),
                     f"{dtype.name}-offset-{n}")


def _unary_errors(rng):
    x = rng.uniform(0.5, 2.0, (3, 4))
    yield ErrorInput((x, numpy.ones((4, 3)), numpy.ones((3, 4))), {}, ValueError,
                     r"y has shape \(4, 3\)", fn=1)


def _unary(name, ref, grad, low=-3.0, high=3.0, **kw):
    return OpInfo(name=name, ref=ref, samples=_unary_samples(low, high),
                  grad_refs={1: grad}, gpu_dtypes=KERNEL_DTYPES, error_inputs=_unary_errors,
                  **kw)


def _pow_samples(rng):
    for p, low, high in [(3, -2, 2), (2, -2, 2), (0.5, 0.5, 3), (0, -2, 2), (-1.5, 0.5, 3),
                         (1, -2, 2)]:
        for shape in [(257,), (3, 4), (0, 2)]:
            yield Sample((rng.uniform(low, high, shape),), {"p": p}, f"p{p}-{shape}")
    # fewer elements than (3, 4): the two smallest samples are the bfloat16 kernels' cases
    yield from offset_samples(lambda n: rng.uniform(0.5, 3.0, n), {"p": -1.5}, (10, 11))


def _pow_errors(rng):
    x = rng.uniform(0.5, 2.0, (3, 4))
    yield ErrorInput((x,), {"p": "2"}, TypeError, "p must be a Python int or float, got '2'")
    yield ErrorInput((x,), {"p": [2.0]}, TypeError, r"\[2.0\]", fn=1)
    yield ErrorInput((x,), {"p": 10 ** 400}, ValueError, "p is beyond the float range")
    yield ErrorInput((x,), {"p": -10 ** 400}, ValueError, "p is beyond the float range", fn=1)
    # exactly one exponent: x2 or p
    yield ErrorInput((x,), {}, TypeError, r"p must be a Python int or float, got None \(or give")
    yield ErrorInput((x,), {}, TypeError, "got None", fn=1)
    yield ErrorInput((x,), {"p": None}, TypeError, "got None")
    yield ErrorInput((x, x), {"p": 2.0}, TypeError, "x2 or as the keyword p, not both")


def _pow_grad(x, y, gy, p):
    return numpy.zeros_like(x) if p == 0 else gy * p * x ** (p - 1)


def _pow_ref(x1, x2=None, p=None):
    return x1 ** (p if x2 is None else x2)


# pow(x1, x2) with an exponent operand: x1 > 0 with any exponents, x1 = 0 (and negative)
# with integer exponents >= 0 (PyTorch's conventions at 0: gx1 = 0 where x2 = 0, gx2 = 0
# where x1 = 0 and x2 >= 0); broadcasting both ways, a Python scalar x2, 0-size, 0-d.
def _pow_array_samples(rng):
    def exponent(shape):
        return rng.uniform(-2.0, 3.0, shape)

    for s1, s2 in [((257,), (257,)), ((3, 5, 7), (7,)), ((7,), (3, 5, 7)), ((1, 4), (3, 1)),
                   ((2, 3, 2, 3, 2), (1, 3, 1, 3, 1)), ((0, 3), (3,)), ((), (3,)),
                   ((4, 5), ())]:
        yield Sample((rng.uniform(0.3, 2.5, s1), exponent(s2)))
    yield Sample((rng.uniform(0.3, 2.5, (4, 5)), 1.75), name="4x5-scalar1.75")
    yield Sample((rng.uniform(0.3, 2.5, (4, 5)), -2), name="4x5-scalar-2")
    # x1 = 0 with x2 > 0: gx2 = 0 (not 0 · log 0 = NaN), as finite differences see it
    x1 = rng.choice([0.0, 0.5, 1.5], (6, 5))
    x1[0, :2] = 0.0
    yield Sample((x1, rng.choice([1.0, 2.0, 3.0], (6, 5))), name="zeros-positive-exponents")
    yield Sample((numpy.array([0.0, 0.0, 1.5]), numpy.array([[1.0], [2.0]])),
                 name="zeros-broadcast")


# Where x1^x2 is differentiable in x1 only (finite differences in x2 step off its domain):
# negative x1 with integer exponents, and 0^0 = 1 with gx1 = 0 (PyTorch: 0 where x2 = 0).
def _pow_integer_samples(rng):
    yield Sample((rng.uniform(0.5, 2.0, (3, 4)), rng.uniform(-1.0, 2.0, (3, 4))),
                 name="arrays-3x4")
    x1 = rng.choice([0.0, -1.25, 0.5, -2.0], (6, 5))
    x2 = rng.choice([0.0, 1.0, 2.0, 3.0], (6, 5))
    x1[0] = 0.0
    x2[0, :3] = 0.0  # 0^0
    yield Sample((x1, x2), name="negative-and-zero-integer-exponents")
    yield Sample((numpy.array([[0.0], [-1.5]]), numpy.array([0.0, 1.0, 2.0])),
                 name="zero-to-zero-broadcast")
    yield Sample((numpy.array([0.0, -3.0, 2.0]), 0), name="scalar-exponent-0")


def _pow_array_grad1(x1, x2, y, gy):
    with numpy.errstate(divide="ignore", invalid="ignore"):
        g = numpy.where(x2 == 0, 0.0, gy * x2 * x1 ** (x2 - 1))
    return _unbroadcast(g, _shape_of(x1))


def _pow_array_grad2(x1, x2, y, gy):
    with numpy.errstate(divide="ignore", invalid="ignore"):
        g = numpy.where((x1 == 0) & (x2 >= 0), 0.0, gy * x1 ** x2 * numpy.log(x1))
    return _unbroadcast(g, _shape_of(x2))


# The gradient wrt x2 reads the stored y (as PyTorch's): in 16 bits y carries one rounding
# (u = 2^-11 float16, 2^-8 bfloat16), and its sum over x2's broadcast axes of gy·y·log x1
# (terms of either sign) is then off by up to u Σ|gy y log x1|: an absolute error, about
# 8u for these samples (at most 15 terms summed, |gy y log x1| mostly below 1), on top of
# the default relative tolerance (twice one rounding).
POW_ARRAY_16BIT_TOL = {F16: (2 * 2.0 ** -11 + 2e-5, 8 * 2.0 ** -11),
                       BF16: (2 * 2.0 ** -8 + 2e-5, 8 * 2.0 ** -8)}


def _pow_array_errors(rng):
    a, b = rng.uniform(0.5, 2.0, (3,)), rng.uniform(0.5, 2.0, (4,))
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)")
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)", fn=1)
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)", fn=2)
    yield ErrorInput((2.0, a), {}, TypeError, "x1 must be a NumPy or CuPy array, got float")
    yield ErrorInput((a, "2"), {}, TypeError, "x2 must be a NumPy or CuPy array, got str")
    yield ErrorInput((a, 10 ** 400), {}, ValueError, "x2 = 1000.* is beyond the float range",
                     fn=2)
    yield ErrorInput((a, a, a, numpy.ones(4)), {}, ValueError, r"gy has shape \(4,\)", fn=2)
    yield ErrorInput((a, a, a, a), {"p": 2.0}, TypeError, "not both", fn=1)
    yield ErrorInput((a, a, a, a), {"p": 2.0}, TypeError, "p = 2.0 .* no gradient", fn=2)


RECORDS = [
    _alpha_binary("add", 1),
    _alpha_binary("sub", -1),
    _binary("mul", lambda a, b: a * b, lambda a, b, g: g * b, lambda a, b, g: g * a),
    _binary("div", lambda a, b: a / b, lambda a, b, g: g / b,
            lambda a, b, g: -g * a / b ** 2, positive_x2=True, scalar_x1=True),
    _scalar_x1("sub", lambda a, b, alpha=1: a - alpha * b,
               lambda a, b, g, alpha=1: -alpha * g * numpy.ones_like(b)),
    _scalar_x1("div", lambda a, b: a / b, lambda a, b, g: -g * a / b ** 2),
    _axis("axis_add", lambda a, c: a + c, lambda a, c, g: g, lambda a, c, g: g),
    _axis("axis_sub", lambda a, c: a - c, lambda a, c, g: g, lambda a, c, g: -g),
    _axis("axis_mul", lambda a, c: a * c, lambda a, c, g: g * c, lambda a, c, g: g * a),
    _axis("axis_div", lambda a, c: a / c, lambda a, c, g: g / c,
          lambda a, c, g: -g * a / c ** 2, positive_x2=True),
    _unary("neg", lambda x: -x, lambda x, y, g: -g),
    _unary("exp", numpy.exp, lambda x, y, g: g * numpy.exp(x)),
    _unary("log", numpy.log, lambda x, y, g: g / x, low=0.2, high=5.0),
    _unary("sqrt", numpy.sqrt, lambda x, y, g: g / (2 * numpy.sqrt(x)), low=0.2, high=5.0),
    _unary("square", numpy.square, lambda x, y, g: 2 * x * g),
    _unary("abs", numpy.abs, lambda x, y, g: g * numpy.sign(x)),
    _unary("sin", numpy.sin, lambda x, y, g: g * numpy.cos(x)),
    _unary("cos", numpy.cos, lambda x, y, g: -g * numpy.sin(x)),
    # the keyword exponent p first (test_numerics reads the first "pow" record): only x1
    # is differentiable there
    OpInfo(name="pow", ref=_pow_ref, samples=_pow_samples, wrt=(1,),
           grad_refs={1: _pow_grad}, gpu_dtypes=KERNEL_DTYPES, error_inputs=_pow_errors),
    OpInfo(name="pow", ref=_pow_ref, samples=_pow_array_samples,
           grad_refs={1: _pow_array_grad1, 2: _pow_array_grad2},
           gpu_dtypes=KERNEL_DTYPES, error_inputs=_pow_array_errors, tol=POW_ARRAY_16BIT_TOL),
    OpInfo(name="pow", ref=_pow_ref, samples=_pow_integer_samples, wrt=(1,),
           grad_refs={1: _pow_array_grad1},
           gpu_dtypes=KERNEL_DTYPES,
           error_inputs=lambda rng: (e for e in _pow_array_errors(rng) if e.fn != 2)),
]
