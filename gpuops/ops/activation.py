"""Activations: relu, leaky_relu, sigmoid, tanh, gelu, silu. Kernels in cuda/activation.cu.

Every float dtype on every backend: float16 and bfloat16 are loaded (widened to float32),
computed in float32 and rounded once on store; the slope of a 16-bit call is a float32.

The gradients read x (y is accepted, per the API, and unused): relu'(0) = 0 and
leaky_relu'(0) = slope (the conventions of PyTorch); σ'(x) = e/(1+e)², e = e^-|x|, and
tanh'(x) = 4e/(1+e)², e = e^-2|x|. Those are as cheap as y(1-y) and 1-y² on a
memory-bound GPU (same bytes read) and stay accurate in the tails, where a rounded y
equals 1 (|x| > 17 in float32, > 8 in float16) and y(1-y), 1-y² give 0.

gelu (PyTorch's torch.nn.functional.gelu), with Φ the standard normal CDF and φ its density:

    approximate="none":  y = x Φ(x) = ½ x erfc(-x/√2),   y' = Φ(x) + x φ(x),
                         φ(x) = e^(-x²/2) / √(2π);
    approximate="tanh":  y = ½ x (1 + tanh u) = x σ(2u),  u = √(2/π) (x + 0.044715 x³),
                         y' = σ(2u) + x σ'(2u) · 2u',     2u' = 2√(2/π) (1 + 3 · 0.044715 x²).

silu: y = x σ(x), y' = σ(x) + x σ'(x).

Tails: erfc(-x/√2) (not 1 + erf) and σ(2u) (not 1 + tanh u) keep full relative precision
for x << 0, where 1 + erf and 1 + tanh cancel to 0. In the gradients the term x·density
(x φ(x), x σ'(2u) 2u', x σ'(x)) is 0 where the density underflows to 0: for finite x the
exact term is then a few subnormal units at most, and the factor beside it may overflow
(x · 2u' grows like x³) or be ±inf (x itself), where 0 · inf would give NaN. So
y'(+inf) = 1 and y'(-inf) = 0 (PyTorch gives NaN there); the forwards follow the formulas
(y(-inf) = -inf · 0 = NaN, as PyTorch).

NumPy has no erf: :func:`_erfc` is the float64 erfc of fdlibm (Sun's s_erf.c), vectorized
(within 5.5e-16 relative of math.erfc, tests/ops/test_gelu_silu.py); float32 inputs are
computed in float64 and rounded once.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy

from ..backend import ALL_FLOAT_DTYPES
from ..call import TABLE, Call, Signature, check_shape
from ..registry import register
from . import _args, _math
from .elementwise import launch_vectors

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu",
           "relu_wrt_x1", "leaky_relu_wrt_x1", "sigmoid_wrt_x1", "tanh_wrt_x1", "gelu_wrt_x1",
           "silu_wrt_x1"]

FAMILY = "activation"
Array = Any


# ---- NumPy: forward f(x, y, slope) and gradient g(x, y, gy, gx, slope) ------------------
# (the call protocol hands over an out that overlaps no input)

def _relu_cpu(x: Array, y: Array, slope: Any) -> None:
    numpy.maximum(x, 0, out=y)  # NaN stays NaN


def _relu_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    numpy.multiply(gy, x > 0, out=gx)


def _leaky_relu_cpu(x: Array, y: Array, slope: Any) -> None:
    numpy.multiply(x, slope, out=y)
    numpy.copyto(y, x, where=~(x < 0))  # x itself where x >= 0 (and where x is NaN)


def _leaky_relu_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    numpy.multiply(gy, slope, out=gx)
    numpy.copyto(gx, gy, where=x > 0, casting="same_kind")


def _sigmoid_cpu(x: Array, y: Array, slope: Any) -> None:
    _math.sigmoid(x, out=y)


def _sigmoid_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    numpy.multiply(gy, _math.logistic_slope(x, 1), out=gx)


def _tanh_cpu(x: Array, y: Array, slope: Any) -> None:
    numpy.tanh(x, out=y)


def _tanh_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    numpy.multiply(gy, 4 * _math.logistic_slope(x, 2), out=gx)


# gelu and silu in float64 NumPy (float32 inputs are widened, the result rounded once)

_SQRT_HALF = 0.7071067811865476  # 1/√2
_INV_SQRT_2PI = 0.3989422804014327  # 1/√(2π): φ(x) = e^(-x²/2) / √(2π)
_GELU_TANH_K = 1.5957691216057308  # 2√(2/π): 2u = K (x + C x³)
_GELU_TANH_C = 0.044715

# erfc of fdlibm (s_erf.c, Sun Microsystems 1993, as in FreeBSD's libm and Go's math): rational
# approximations on [0, 0.84375), [0.84375, 1.25), [1.25, 1/0.35), [1/0.35, 28).
_ERFC_NEAR_P = (1.28379167095512558561e-01, -3.25042107247001499370e-01,
                -2.84817495755985104766e-02, -5.77027029648944159157e-03,
                -2.37630166566501626084e-05)
_ERFC_NEAR_Q = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02,
                5.08130628187576562776e-03, 1.32494738004321644526e-04,
                -3.96022827877536812320e-06)
_ERFC_ONE_ERX = 8.45062911510467529297e-01  # erf(1) rounded to 24 bits
_ERFC_ONE_P = (-2.36211856075265944077e-03, 4.14856118683748331666e-01,
               -3.72207876035701323847e-01, 3.18346619901161753674e-01,
               -1.10894694282396677476e-01, 3.54783043256182359371e-02,
               -2.16637559486879084300e-03)
_ERFC_ONE_Q = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01,
               7.18286544141962662868e-02, 1.26171219808761642112e-01,
               1.36370839120290507362e-02, 1.19844998467991074170e-02)
_ERFC_MID_R = (-9.86494403484714822705e-03, -6.93858572707181764372e-01,
               -1.05586262253232909814e+01, -6.23753324503260060396e+01,
               -1.62396669462573470355e+02, -1.84605092906711035994e+02,
               -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_ERFC_MID_S = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02,
               4.34565877475229228821e+02, 6.45387271733267880336e+02,
               4.29008140027567833386e+02, 1.08635005541779435134e+02,
               6.57024977031928170135e+00, -6.04244152148580987438e-02)
_ERFC_FAR_R = (-9.86494292470009928597e-03, -7.99283237680523006574e-01,
               -1.77579549177547519889e+01, -1.60636384855821916062e+02,
               -6.37566443368389627722e+02, -1.02509513161107724954e+03,
               -4.83519191608651397019e+02)
_ERFC_FAR_S = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02,
               1.53672958608443695994e+03, 3.19985821950859553908e+03,
               2.55305040643316442583e+03, 4.74528541206955367215e+02,
               -2.24409524465858183362e+01)


def _polynomial(coefficients: tuple, t: Array) -> Array:
    """Σ c_k t^k by Horner's rule (coefficients from c_0)."""
    result = numpy.full_like(t, coefficients[-1])
    for c in coefficients[-2::-1]:
        result *= t
        result += c
    return result


def _erfc(x: Array) -> Array:
    """erfc(x) of a float64 array (fdlibm's algorithm): full relative precision up to
    x = 26.5, where erfc leaves the float64 range, and 2 - erfc(-x) below 0."""
    a = numpy.abs(x)
    result = numpy.where(x < 0, 2.0, numpy.where(x >= 0, 0.0, x))  # |x| >= 28 (and NaN)
    near = a < 0.84375  # erfc(x) = 1 - (x + x P/Q(x²))
    t = x[near]
    z = t * t
    xy = t * (_polynomial(_ERFC_NEAR_P, z) / _polynomial(_ERFC_NEAR_Q, z))
    result[near] = numpy.where(t < 0.25, 1 - (t + xy), 0.5 - (xy + (t - 0.5)))
    one = (a >= 0.84375) & (a < 1.25)  # erfc(x) = (1 - erx) - P/Q(|x| - 1), mirrored below 0
    t = x[one]
    s = numpy.abs(t) - 1
    r = _polynomial(_ERFC_ONE_P, s) / _polynomial(_ERFC_ONE_Q, s)
    result[one] = numpy.where(t < 0, (1 + _ERFC_ONE_ERX) + r, (1 - _ERFC_ONE_ERX) - r)
    tail = (a >= 1.25) & (a < 28)  # erfc(|x|) = e^(-x² - 0.5625 + R/S(1/x²)) / |x|
    t = x[tail]
    b = numpy.abs(t)
    s = 1 / (b * b)
    mid = b < 1 / 0.35
    ratio = numpy.where(mid, _polynomial(_ERFC_MID_R, s) / _polynomial(_ERFC_MID_S, s),
                        _polynomial(_ERFC_FAR_R, s) / _polynomial(_ERFC_FAR_S, s))
    # e^(-x²) as e^(-h²) e^((h - b)(h + b)) with h = b rounded to 32 bits: h² is exact
    h = (b.view(numpy.uint64) & numpy.uint64(0xFFFFFFFF00000000)).view(numpy.float64)
    e = numpy.exp(-h * h - 0.5625) * numpy.exp((h - b) * (h + b) + ratio) / b
    result[tail] = numpy.where(t < 0, 2 - e, e)
    return result


def _density_term(density: Array, factor: Array) -> Array:
    """density · factor, 0 where the density underflowed to 0 (the factor may then be
    huge or ±inf: x φ(x), x σ'(2u) 2u', x σ'(x) at x = ±inf are 0, not 0 · inf = NaN)."""
    with numpy.errstate(invalid="ignore", over="ignore"):
        return numpy.where(density == 0, 0.0, density * factor)


def _gelu_cpu(x: Array, y: Array, slope: Any) -> None:
    x = x.astype(numpy.float64, copy=False)
    with numpy.errstate(invalid="ignore"):  # -inf · 0 = NaN, as the kernels
        numpy.multiply(0.5 * x, _erfc(-_SQRT_HALF * x), out=y, casting="same_kind")


def _gelu_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    x = x.astype(numpy.float64, copy=False)
    with numpy.errstate(over="ignore"):
        pdf = _INV_SQRT_2PI * numpy.exp(-0.5 * x * x)
    slope_x = 0.5 * _erfc(-_SQRT_HALF * x) + _density_term(pdf, x)
    numpy.multiply(gy, slope_x, out=gx, casting="same_kind")


def _gelu_tanh_parts(x: Array) -> tuple[Array, Array]:
    """(2u, 2u') of gelu's tanh form, in float64."""
    x = x.astype(numpy.float64, copy=False)
    with numpy.errstate(over="ignore", invalid="ignore"):
        square = x * x
        return _GELU_TANH_K * x * (1 + _GELU_TANH_C * square), \
            _GELU_TANH_K * (1 + 3 * _GELU_TANH_C * square)


def _gelu_tanh_cpu(x: Array, y: Array, slope: Any) -> None:
    z, _ = _gelu_tanh_parts(x)
    with numpy.errstate(invalid="ignore"):
        numpy.multiply(x, _math.sigmoid(z), out=y, casting="same_kind")


def _gelu_tanh_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    z, dz = _gelu_tanh_parts(x)
    with numpy.errstate(invalid="ignore", over="ignore"):
        slope_x = _math.sigmoid(z) + _density_term(_math.logistic_slope(z, 1), x * dz)
    numpy.multiply(gy, slope_x, out=gx, casting="same_kind")


def _silu_cpu(x: Array, y: Array, slope: Any) -> None:
    _math.sigmoid(x, out=y)
    with numpy.errstate(invalid="ignore"):
        numpy.multiply(y, x, out=y)


def _silu_grad_cpu(x: Array, y: Array, gy: Array, gx: Array, slope: Any) -> None:
    slope_x = _math.sigmoid(x) + _density_term(_math.logistic_slope(x, 1), x)
    numpy.multiply(gy, slope_x, out=gx, casting="same_kind")


# One entry per kernel: gelu has two (approximate="none" and "tanh").
_CPU = {"relu": (_relu_cpu, _relu_grad_cpu), "leaky_relu": (_leaky_relu_cpu, _leaky_relu_grad_cpu),
        "sigmoid": (_sigmoid_cpu, _sigmoid_grad_cpu), "tanh": (_tanh_cpu, _tanh_grad_cpu),
        "gelu": (_gelu_cpu, _gelu_grad_cpu), "gelu_tanh": (_gelu_tanh_cpu, _gelu_tanh_grad_cpu),
        "silu": (_silu_cpu, _silu_grad_cpu)}
_GELU_KERNELS = {"none": "gelu", "tanh": "gelu_tanh"}  # approximate -> kernel


# ---- kernels: <k>_<dtype>(x, y, slope, n), <k>_wrt_x1_<dtype>(x, y, gy, gx, slope, n) ------

def _forward_gpu(kernel: str, call: Call, x: Array, y: Array, slope: Any) -> None:
    launch_vectors(call, kernel, y.size, (x, y, slope, numpy.int64(y.size)))


def _gradient_gpu(kernel: str, call: Call, x: Array, y: Array, gy: Array, gx: Array,
                  slope: Any) -> None:
    launch_vectors(call, f"{kernel}_wrt_x1", gx.size,
                   (x, y, gy, gx, slope, numpy.int64(gx.size)))


_GPU = {k: (functools.partial(_forward_gpu, k), functools.partial(_gradient_gpu, k))
        for k in _CPU}
_OPS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu")


def _tanh_slope(x: Array) -> Array:
    """tanh'(x) as _tanh_grad_cpu computes it (the table of its fused form)."""
    return 4 * _math.logistic_slope(x, 2)


# The 16-bit fused forms of the gradients (gpuops.native.fused): gy times a table of x.
_FUSED_GRADIENT = {
    "relu": lambda x, y, gy, slope: gy * x.map(numpy.greater, 0),
    "sigmoid": lambda x, y, gy, slope: gy * x.map(_math.logistic_slope, 1),
    "tanh": lambda x, y, gy, slope: gy * x.map(_tanh_slope),
}
_FORWARD = {op: Signature(op, FAMILY, ("x1",), kernel_dtypes=ALL_FLOAT_DTYPES, elementwise=True,
                          fused=TABLE)
            for op in _OPS}
_GRADIENT = {op: Signature(f"{op}_wrt_x1", FAMILY, ("x1", "y", "gy"),
                           kernel_dtypes=ALL_FLOAT_DTYPES, elementwise=True,
                           fused=_FUSED_GRADIENT.get(op)) for op in _OPS}


def _forward(op: str, x1: Array, out: Array | None, slope: float = 0.0,
             kernel: str | None = None) -> Array:
    kernel = op if kernel is None else kernel
    call = _FORWARD[op].bind(x1)
    (x,) = call.inputs
    return call.run(out, x.shape, _CPU[kernel][0], _GPU[kernel][0], call.scalar(slope))


def _gradient(op: str, x1: Array, y: Array, gy: Array, out: Array | None,
              slope: float = 0.0, kernel: str | None = None) -> Array:
    kernel = op if kernel is None else kernel
    call = _GRADIENT[op].bind(x1, y, gy)
    x, y, gy = call.inputs
    check_shape(call.op, "y", y, x.shape)
    check_shape(call.op, "gy", gy, x.shape)
    return call.run(out, x.shape, _CPU[kernel][1], _GPU[kernel][1], call.scalar(slope),
                    dtype=x.dtype)


def _gelu_kernel(op: str, approximate: Any) -> str:
    """The kernel of gelu's ``approximate`` ("none" or "tanh", as PyTorch)."""
    if not isinstance(approximate, str):
        raise TypeError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    if approximate not in _GELU_KERNELS:
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _GELU_KERNELS[approximate]


def relu(x1: Array, *, out: Array | None = None) -> Array:
    """y = max(x1, 0) (NaN stays NaN)."""
    return _forward("relu", x1, out)


def leaky_relu(x1: Array, *, slope: float = 0.01, out: Array | None = None) -> Array:
    """y = x1 for x1 >= 0, slope · x1 below."""
    return _forward("leaky_relu", x1, out, _args.finite_float("leaky_relu", "slope", slope))


def sigmoid(x1: Array, *, out: Array | None = None) -> Array:
    """y = 1 / (1 + e^-x1), evaluated without overflow for any x1."""
    return _forward("sigmoid", x1, out)


def tanh(x1: Array, *, out: Array | None = None) -> Array:
    """y = tanh x1."""
    return _forward("tanh", x1, out)


def relu_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy where x1 > 0, else 0 (0 at x1 = 0)."""
    return _gradient("relu", x1, y, gy, out)


def leaky_relu_wrt_x1(x1: Array, y: Array, gy: Array, *, slope: float = 0.01,
                      out: Array | None = None) -> Array:
    """gy where x1 > 0, else slope · gy (slope at x1 = 0)."""
    return _gradient("leaky_relu", x1, y, gy, out, _args.finite_float("leaky_relu_wrt_x1", "slope", slope))


def sigmoid_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · σ'(x1) = gy · y (1 - y), computed from x1 as e/(1+e)², e = e^-|x1|."""
    return _gradient("sigmoid", x1, y, gy, out)


def tanh_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · (1 - y²), y = tanh x1, computed from x1 as 4e/(1+e)², e = e^-2|x1|."""
    return _gradient("tanh", x1, y, gy, out)


def gelu(x1: Array, *, approximate: str = "none", out: Array | None = None) -> Array:
    """y = x1 Φ(x1) (approximate="none"), or ½ x1 (1 + tanh(√(2/π)(x1 + 0.044715 x1³)))
    (approximate="tanh"), as torch.nn.functional.gelu."""
    return _forward("gelu", x1, out, kernel=_gelu_kernel("gelu", approximate))


def gelu_wrt_x1(x1: Array, y: Array, gy: Array, *, approximate: str = "none",
                out: Array | None = None) -> Array:
    """gy · gelu'(x1): Φ(x1) + x1 φ(x1), or the derivative of the tanh form."""
    return _gradient("gelu", x1, y, gy, out, kernel=_gelu_kernel("gelu_wrt_x1", approximate))


def silu(x1: Array, *, out: Array | None = None) -> Array:
    """y = x1 σ(x1) (the swish), σ evaluated without overflow."""
    return _forward("silu", x1, out)


def silu_wrt_x1(x1: Array, y: Array, gy: Array, *, out: Array | None = None) -> Array:
    """gy · (σ(x1) + x1 σ'(x1)), σ' = e/(1+e)², e = e^-|x1|."""
    return _gradient("silu", x1, y, gy, out)


for _op in _OPS:
    register(FAMILY, globals()[_op], globals()[f"{_op}_wrt_x1"])
del _op
