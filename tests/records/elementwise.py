"""OpInfo records of the elementwise family (float64 references in plain NumPy)."""
from __future__ import annotations

import numpy

from opinfo import ErrorInput, OpInfo, Sample


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
    return samples


def _binary_errors(rng):
    a, b = rng.standard_normal((3,)), rng.standard_normal((4,))
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)")
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)", fn=1)
    yield ErrorInput((a, b), {}, ValueError, r"\(3,\) and \(4,\)", fn=2)
    yield ErrorInput((2.0, a), {}, TypeError, "x1 must be a NumPy or CuPy array, got float")
    # a Python int past the float range as the scalar operand
    for fn in ("forward", 1, 2):
        yield ErrorInput((a, 10 ** 400), {}, ValueError, "x2 = 1000.* is beyond the float range",
                         fn=fn)
    yield ErrorInput((a, -10 ** 400), {}, ValueError, "x2 = -1000.* is beyond the float range")


def _shape_of(x):
    return numpy.shape(x)


def _binary(name, ref, g1, g2, positive_x2=False):
    return OpInfo(
        name=name, ref=ref, samples=_binary_samples(positive_x2), error_inputs=_binary_errors,
        grad_refs={
            1: lambda x1, x2, y, gy: _unbroadcast(g1(x1, x2, gy), _shape_of(x1)),
            2: lambda x1, x2, y, gy: _unbroadcast(g2(x1, x2, gy) * numpy.ones_like(y),
                                                  _shape_of(x2)),
        })


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
        samples=_axis_samples(positive_x2), error_inputs=_axis_errors,
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
    return samples


def _unary_errors(rng):
    x = rng.uniform(0.5, 2.0, (3, 4))
    yield ErrorInput((x, numpy.ones((4, 3)), numpy.ones((3, 4))), {}, ValueError,
                     r"y has shape \(4, 3\)", fn=1)


def _unary(name, ref, grad, low=-3.0, high=3.0, **kw):
    return OpInfo(name=name, ref=ref, samples=_unary_samples(low, high),
                  grad_refs={1: grad}, error_inputs=_unary_errors, **kw)


def _pow_samples(rng):
    for p, low, high in [(3, -2, 2), (2, -2, 2), (0.5, 0.5, 3), (0, -2, 2), (-1.5, 0.5, 3),
                         (1, -2, 2)]:
        for shape in [(257,), (3, 4), (0, 2)]:
            yield Sample((rng.uniform(low, high, shape),), {"p": p}, f"p{p}-{shape}")


def _pow_errors(rng):
    x = rng.uniform(0.5, 2.0, (3, 4))
    yield ErrorInput((x,), {"p": "2"}, TypeError, "p must be a Python int or float, got '2'")
    yield ErrorInput((x,), {"p": None}, TypeError, "None")
    yield ErrorInput((x,), {"p": [2.0]}, TypeError, r"\[2.0\]", fn=1)
    yield ErrorInput((x,), {"p": 10 ** 400}, ValueError, "p is beyond the float range")
    yield ErrorInput((x,), {"p": -10 ** 400}, ValueError, "p is beyond the float range", fn=1)


def _pow_grad(x, y, gy, p):
    return numpy.zeros_like(x) if p == 0 else gy * p * x ** (p - 1)


RECORDS = [
    _binary("add", lambda a, b: a + b, lambda a, b, g: g, lambda a, b, g: g),
    _binary("sub", lambda a, b: a - b, lambda a, b, g: g, lambda a, b, g: -g),
    _binary("mul", lambda a, b: a * b, lambda a, b, g: g * b, lambda a, b, g: g * a),
    _binary("div", lambda a, b: a / b, lambda a, b, g: g / b,
            lambda a, b, g: -g * a / b ** 2, positive_x2=True),
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
    OpInfo(name="pow", ref=lambda x, p: x ** p, samples=_pow_samples,
           grad_refs={1: _pow_grad}, error_inputs=_pow_errors),
]
