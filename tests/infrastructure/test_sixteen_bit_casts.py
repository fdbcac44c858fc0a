"""The NumPy backend's 16-bit conversions (gpuops/call.py: widen, narrow and their float16
passes) bit for bit against NumPy's and ml_dtypes' own casts (``astype``): every float16 and
bfloat16 pattern widened, dense float32 patterns rounded (every exponent; ties, the values
next to them, subnormals, the float16 overflow threshold, ±inf, NaN payloads), the float16
passes on arrays past ``_PASSES_MIN`` elements and NumPy's cast below it; and elementwise
calls past one chunk (the flat and the block paths) equal to the straightforward rule; each
on both paths: the native conversions (gpuops/native) and the NumPy code. The native library's
build: cached and reused by a second process, off with GPUOPS_NATIVE=0, a failed build
falling back."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import ml_dtypes
import numpy
import pytest

import gpuops
from gpuops import call as call_module
from gpuops import native

BF16 = numpy.dtype(ml_dtypes.bfloat16)
F16 = numpy.dtype(numpy.float16)
ALL_16 = numpy.arange(1 << 16, dtype=numpy.uint32).astype(numpy.uint16)


def _bits(a: numpy.ndarray) -> numpy.ndarray:
    return a.view(numpy.uint16 if a.dtype.itemsize == 2 else numpy.uint32)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_widen_every_pattern(dtype, path):
    x = ALL_16.view(dtype)
    assert x.size >= call_module._PASSES_MIN  # the float16 passes
    for view in (x, x[::-3], x.reshape(256, 256).T, x[:100]):  # strided, 2-D, NumPy's cast
        numpy.testing.assert_array_equal(_bits(call_module.widen(view)),
                                         _bits(view.astype(numpy.float32)))
        out = numpy.empty(view.shape, numpy.float32)
        assert call_module.widen(view, out) is out


def _float32_patterns(rng: numpy.random.Generator) -> numpy.ndarray:
    """Every exponent with mantissas at and around the float16 and bfloat16 rounding points
    (ties to even, one below and above a tie, all ones), plus random ones; both signs."""
    exponents = numpy.arange(256, dtype=numpy.uint32) << 23
    marks = []
    for shift in (13, 16):  # float16 keeps 10 of float32's 23 mantissa bits, bfloat16 7
        half = 1 << (shift - 1)
        for lsb in (0, 1 << shift):  # the kept part even / odd
            marks += [lsb + half - 1, lsb + half, lsb + half + 1, lsb, lsb + 1]
    marks += [0x7FFFFF, 0x400000, 0x3FFFFF, 0x7FE000, 0x7FF000, 0x7FEFFF, 0x7FFFFE]
    mantissas = numpy.concatenate([numpy.array(marks, numpy.uint32),
                                   rng.integers(0, 1 << 23, 3000, dtype=numpy.uint32)])
    patterns = (exponents[:, None] | mantissas[None, :]).reshape(-1)
    return numpy.concatenate([patterns, patterns | numpy.uint32(0x80000000)])


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("nan", [False, True], ids=["finite-and-inf", "with-nan"])
def test_narrow_dense_float32_patterns(dtype, nan, path):
    """float16 without NaN: the passes; with NaN: NumPy's cast (payloads kept as it keeps
    them). bfloat16: ml_dtypes' cast either way (quiet NaN, sign kept)."""
    patterns = _float32_patterns(numpy.random.default_rng(13))
    is_nan = (patterns & numpy.uint32(0x7FFFFFFF)) > numpy.uint32(0x7F800000)
    y = (patterns if nan else patterns[~is_nan]).view(numpy.float32)
    with numpy.errstate(all="ignore"):
        want = y.astype(dtype)
    got = call_module.narrow(y, numpy.empty(y.shape, dtype))
    numpy.testing.assert_array_equal(_bits(got), _bits(want))
    numpy.testing.assert_array_equal(_bits(y), _bits(patterns if nan else patterns[~is_nan]))


def test_narrow_float16_edges_through_the_passes(path):
    """The float16 passes near its limits, each value in a NaN-free array past
    _PASSES_MIN: the overflow threshold (65520 rounds to inf, 65519.99 to 65504), ±inf,
    the smallest subnormal and half of it (a tie: to 0), the normal/subnormal boundary,
    ±0, and strided input and output."""
    edges = numpy.array([65504, 65519.996, 65520, 65536, 1e30, numpy.inf, 2.0 ** -24,
                         2.0 ** -25, 2.0 ** -25 * 1.0000001, 3 * 2.0 ** -26, 2.0 ** -14,
                         2.0 ** -14 * (1 - 2.0 ** -11), 2.0 ** -14 * (1 - 2.0 ** -12), 0.0,
                         1.0, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 2049, 2051], numpy.float32)
    edges = numpy.concatenate([edges, -edges])
    y = numpy.resize(edges, 4 * call_module._PASSES_MIN)
    with numpy.errstate(all="ignore"):
        want = y.astype(F16)
    numpy.testing.assert_array_equal(_bits(call_module.narrow(y, numpy.empty(y.shape, F16))),
                                     _bits(want))
    out = numpy.zeros((y.size, 2), F16)
    call_module.narrow(y[::-1], out[:, 1])  # strided input and output
    numpy.testing.assert_array_equal(_bits(out[:, 1]), _bits(want[::-1]))
    numpy.testing.assert_array_equal(_bits(out[:, 0]), 0)


def test_narrow_past_the_range_is_silent(path):
    y = numpy.full(2 * call_module._PASSES_MIN, 1e6, numpy.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with numpy.errstate(all="raise"):  # no overflow or underflow escapes
            assert numpy.isposinf(call_module.narrow(y, numpy.empty(y.shape, F16))).all()
            tiny = numpy.full(y.shape, 2.0 ** -20, numpy.float32)
            numpy.testing.assert_array_equal(
                _bits(call_module.narrow(tiny, numpy.empty(y.shape, F16))), 16)


def _values(rng: numpy.random.Generator, shape: tuple, dtype: numpy.dtype,
            nan: bool) -> numpy.ndarray:
    x = (rng.standard_normal(shape) * 4).astype(numpy.float32)
    flat = x.reshape(-1)
    info = ml_dtypes.finfo(dtype)
    specials = [numpy.inf, -numpy.inf, 0.0, -0.0, float(info.smallest_subnormal),
                float(info.max), -float(info.tiny)] + ([numpy.nan] if nan else [])
    where = rng.choice(flat.size, size=len(specials), replace=False)
    flat[where] = specials
    return x.astype(dtype)


def _straight(fn, *args):
    """The rule itself: every input widened by astype, the call in float32, one astype."""
    widened = [a.astype(numpy.float32) for a in args]
    with numpy.errstate(all="ignore"):
        return fn(*widened).astype(args[0].dtype)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_calls_past_one_chunk_equal_the_rule(dtype, path):
    """Real chunk size, several chunks: the flat path (C-contiguous), the block path
    (transposed, broadcast); NaN in one input (float16: that chunk through NumPy's cast)."""
    rng = numpy.random.default_rng(21)
    n = 2 * call_module.CHUNK + 1000
    x, x2, gy = (_values(rng, (n,), dtype, nan=k == 0) for k in range(3))
    with numpy.errstate(all="ignore"):
        y = gpuops.tanh(x)
        checks = [(gpuops.add(x, x2), _straight(gpuops.add, x, x2)),
                  (gpuops.tanh_wrt_x1(x, y, gy), _straight(gpuops.tanh_wrt_x1, x, y, gy)),
                  (gpuops.mul(x, 3.0), _straight(lambda u: gpuops.mul(u, 3.0), x))]
        rows = x2[:(n // 1000) * 1000].reshape(-1, 1000)
        row = x[:1000]
        checks.append((gpuops.mul(rows.T, row[:, None]),
                       _straight(gpuops.mul, rows.T, numpy.broadcast_to(row[:, None],
                                                                        rows.T.shape))))
        checks.append((gpuops.sigmoid(rows.T), _straight(gpuops.sigmoid, rows.T)))
    for got, want in checks:
        nan = numpy.isnan(want.astype(numpy.float32))
        numpy.testing.assert_array_equal(numpy.isnan(got.astype(numpy.float32)), nan)
        numpy.testing.assert_array_equal(_bits(got)[~nan], _bits(want)[~nan])


# ---- the native conversions (gpuops/native: casts.c built by the C compiler) --------------


_HAS_CC = native.compiler() is not None
needs_native = pytest.mark.skipif(
    not _HAS_CC or os.environ.get("GPUOPS_NATIVE") == "0",
    reason="no C compiler, or GPUOPS_NATIVE=0")


@pytest.fixture(params=["native", "numpy"])
def path(request, monkeypatch):
    """Each conversion test on both paths: the native one, and the NumPy code (as without
    a compiler: no native functions)."""
    if request.param == "native":
        if not (_HAS_CC and native.available()):
            pytest.skip("the native conversions are not built here")
    else:
        native.available()
        monkeypatch.setattr(native, "_functions", {})
    return request.param


@needs_native
def test_native_conversions_are_built():
    assert native.available()
    assert sorted(native._functions) == sorted(
        [("widen", F16), ("narrow", F16), ("widen", BF16), ("narrow", BF16)])


@needs_native
@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_native_widen_every_pattern(dtype):
    x = ALL_16.view(dtype)
    out = numpy.empty(x.shape, numpy.float32)
    assert native.widen(x, out)
    numpy.testing.assert_array_equal(_bits(out), _bits(x.astype(numpy.float32)))
    assert not native.widen(x[::2], out[:x.size // 2])  # strided: left to the NumPy code


def _signaling_nans() -> numpy.ndarray:
    """NaNs with the quiet bit clear, payloads in the bits float16 keeps, in those it drops
    (its result then would be inf but for NumPy's rule), and both; both signs."""
    payloads = numpy.array([1, 0x1FFF, 0x2000, 0x3FE000, 0x3FFFFF, 0x155555, 0x0AAAAA,
                            0x400000 | 1, 0x400000, 0x7FFFFF], numpy.uint32)
    nans = numpy.uint32(0x7F800000) | payloads
    return numpy.concatenate([nans, nans | numpy.uint32(0x80000000)])


@needs_native
@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_native_narrow_dense_float32_patterns(dtype):
    """Every exponent, ties and their neighbours, subnormals, overflow, ±inf, NaN payloads
    (quiet and signaling), and every float32 whose top 16 bits vary over all 65536 with a
    few low halves (every bfloat16 tie and every float16 exponent / sign)."""
    top = numpy.arange(1 << 16, dtype=numpy.uint32) << 16
    lows = numpy.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x7FFF, 0x8000, 0x8001, 0xFFFF],
                       numpy.uint32)
    patterns = numpy.concatenate([_float32_patterns(numpy.random.default_rng(5)),
                                  _signaling_nans(), (top[:, None] | lows).reshape(-1)])
    y = patterns.view(numpy.float32)
    with numpy.errstate(all="ignore"):
        want = y.astype(dtype)
    out = numpy.empty(y.shape, dtype)
    assert native.narrow(y, out)
    numpy.testing.assert_array_equal(_bits(out), _bits(want))
    numpy.testing.assert_array_equal(_bits(y), patterns)  # the input untouched


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_both_paths_give_the_same_calls(dtype, path):
    """Operators (flat and block paths, small and past one chunk) on one path equal the rule
    (widen by astype, float32, one astype) bit for bit, NaN included: so the paths agree."""
    rng = numpy.random.default_rng(34)
    n = call_module.CHUNK + 777
    x, x2, gy = (_values(rng, (n,), dtype, nan=True) for _ in range(3))
    small = x[:300].reshape(20, 15)
    with numpy.errstate(all="ignore"):
        x[:8] = _signaling_nans()[:8].view(numpy.float32).astype(dtype)
        y = gpuops.tanh(x)
        y_mul = gpuops.mul(x, x2)
        checks = [(y, _straight(gpuops.tanh, x)),
                  (gpuops.add(x, x2), _straight(gpuops.add, x, x2)),
                  (gpuops.relu(x), _straight(gpuops.relu, x)),
                  (gpuops.exp(small.T), _straight(gpuops.exp, small.T)),
                  (gpuops.mul_wrt_x1(x, x2, y_mul, gy),
                   _straight(gpuops.mul_wrt_x1, x, x2, y_mul, gy)),
                  (call_module.widen(x), x.astype(numpy.float32))]
    for got, want in checks:
        numpy.testing.assert_array_equal(_bits(got), _bits(want))


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, check=True)


_PROBE = ("import numpy, gpuops; from gpuops import native, call\n"
          "x = numpy.arange(5000, dtype=numpy.float32) / 7\n"
          "h = call.narrow(x, numpy.empty(x.shape, numpy.float16))\n"
          "assert (h == x.astype(numpy.float16)).all()\n"
          "print(native.available())\n")


@needs_native
def test_native_cache_is_reused_by_another_process(tmp_path):
    """The first process builds the library into the cache (eight threads asking at once:
    one build); a second one loads it: the compiler (a wrapper that logs its arguments) is
    then only asked for its version."""
    log, compiler = tmp_path / "log", tmp_path / "cc"
    real = native.compiler()
    compiler.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    compiler.chmod(0o755)
    env = {"CC": str(compiler), "GPUOPS_NATIVE_CACHE": str(tmp_path / "cache")}
    threads = ("import threading\nfrom gpuops import native\n"
               "ts = [threading.Thread(target=native.available) for _ in range(8)]\n"
               "[t.start() for t in ts]\n[t.join() for t in ts]\n")
    assert _python(threads + _PROBE, **env).stdout.split() == ["True"]
    built = list((tmp_path / "cache").iterdir())
    assert [p.suffix for p in built] == [".so"]
    assert sum("-shared" in line for line in log.read_text().splitlines()) == 1
    log.unlink()
    assert _python(_PROBE, **env).stdout.split() == ["True"]
    assert log.read_text().split() == ["--version"]  # no second build
    assert list((tmp_path / "cache").iterdir()) == built


def test_native_disabled_or_failing_falls_back(tmp_path):
    """GPUOPS_NATIVE=0, or a compiler that fails: no library, the NumPy code, same results."""
    cache = tmp_path / "cache"
    off = _python(_PROBE, GPUOPS_NATIVE="0", GPUOPS_NATIVE_CACHE=str(cache))
    assert off.stdout.split() == ["False"] and not cache.exists()
    failing = _python(_PROBE, CC="/bin/false", GPUOPS_NATIVE_CACHE=str(cache))
    assert failing.stdout.split() == ["False"] and not any(cache.glob("*.so"))


@needs_native
def test_native_portable_loops(tmp_path):
    """casts.c built without -mavx2 -mf16c (a CPU without them): the portable loops, which
    the F16C build uses only for blocks with a NaN and the tail, on every 16-bit pattern and
    the dense float32 patterns."""
    import ctypes
    from native_build import portable_library
    casts = portable_library(tmp_path)
    y = numpy.concatenate([_float32_patterns(numpy.random.default_rng(8)),
                           _signaling_nans()]).view(numpy.float32)
    for dtype, tag in ((F16, "f16"), (BF16, "bf16")):
        x, wide = ALL_16.view(dtype), numpy.empty(ALL_16.shape, numpy.float32)
        getattr(casts, f"widen_{tag}")(ctypes.c_void_p(x.ctypes.data),
                                       ctypes.c_void_p(wide.ctypes.data), ctypes.c_size_t(x.size))
        numpy.testing.assert_array_equal(_bits(wide), _bits(x.astype(numpy.float32)))
        out = numpy.empty(y.shape, dtype)
        getattr(casts, f"narrow_{tag}")(ctypes.c_void_p(y.ctypes.data),
                                        ctypes.c_void_p(out.ctypes.data), ctypes.c_size_t(y.size))
        with numpy.errstate(all="ignore"):
            numpy.testing.assert_array_equal(_bits(out), _bits(y.astype(dtype)))
