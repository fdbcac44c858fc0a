"""The fused 16-bit forms (gpuops/native/fused.py, fused.c: Signature's ``fused``) bit for
bit against the NumPy path (widen, the NumPy code in float32, round once) with the NumPy
conversions (as without a compiler): one-input forwards (tables) and their gradients on all
65536 patterns of both 16-bit dtypes, the binary operators and their gradients on every
pair of edge patterns (±0, subnormals, the largest finite, ±inf, quiet and signaling NaNs
of both signs and several payloads) plus random patterns; broadcast rows, Python scalars,
per-axis operands, ``out`` aliasing; and that each declared form does run natively."""
from __future__ import annotations

import functools

import ml_dtypes
import numpy
import pytest

import gpuops
from gpuops import call as call_module
from gpuops import native
from gpuops.native import fused

BF16 = numpy.dtype(ml_dtypes.bfloat16)
F16 = numpy.dtype(numpy.float16)
DTYPES = [F16, BF16]
EDGES = {
    F16: [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x3800, 0x4000,
          0x3555, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0xFD55, 0x7FFF],
    BF16: [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x3F80, 0xBF80, 0x3F00, 0x4000,
           0x3EAB, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81, 0xFFA5, 0x7FFF],
}

if not native.available():
    pytest.skip("the native library is not built here (no C compiler or GPUOPS_NATIVE=0)",
                allow_module_level=True)


def _bits(a):
    return numpy.ascontiguousarray(a).view(numpy.uint16)


def _all_patterns(dtype):
    return numpy.arange(1 << 16, dtype=numpy.uint32).astype(numpy.uint16).view(dtype)


def _patterns(dtype, size, seed):
    """Random 16-bit patterns (NaN, inf and subnormals among them) with every edge."""
    rng = numpy.random.default_rng(seed)
    bits = rng.integers(0, 1 << 16, size, dtype=numpy.uint32).astype(numpy.uint16)
    edges = numpy.array(EDGES[dtype], numpy.uint16)
    bits[:edges.size] = edges
    return bits.view(dtype)


def _pairs(dtype, size=1 << 17):
    """Two operands: every pair of edges, then random patterns and random ordinary values."""
    edges = numpy.array(EDGES[dtype], numpy.uint16)
    a, b = numpy.meshgrid(edges, edges)
    rng = numpy.random.default_rng(7)
    ordinary = rng.uniform(-3, 3, (2, size // 2)).astype(numpy.float32).astype(dtype)
    first = numpy.concatenate([a.reshape(-1).view(dtype), _patterns(dtype, size // 2, 1),
                               ordinary[0]])
    second = numpy.concatenate([b.reshape(-1).view(dtype), _patterns(dtype, size // 2, 2),
                                ordinary[1]])
    return first, second


@pytest.fixture
def fused_runs(monkeypatch):
    """The return values of gpuops.native.fused.run during a test (True: done natively)."""
    runs: list[bool] = []
    real = fused.run

    def spy(*args, **kwargs):
        runs.append(real(*args, **kwargs))
        return runs[-1]
    monkeypatch.setattr(fused, "run", spy)
    return runs


def _reference(fn, *args, **kwargs):
    """``fn`` by the NumPy path with the NumPy conversions (no native library)."""
    saved = native._functions.copy()
    native._functions.clear()
    try:
        with numpy.errstate(all="ignore"):
            return fn(*args, **kwargs)
    finally:
        native._functions.update(saved)


def _check(fn, *args, runs, fused_expected=True, **kwargs):
    before = len(runs)
    with numpy.errstate(all="ignore"):
        got = fn(*args, **kwargs)
    done = runs[before:] == [True]
    want = _reference(fn, *args, **kwargs)
    assert got.dtype == want.dtype and got.shape == want.shape
    numpy.testing.assert_array_equal(_bits(got), _bits(want))
    assert done == fused_expected, f"fused form ran: {done}, expected {fused_expected}"
    return got


UNARY = ["neg", "exp", "log", "sqrt", "square", "abs", "sin", "cos",
         "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu"]
VARIANTS = {"pow p=2": (gpuops.pow, gpuops.pow_wrt_x1, {"p": 2.0}),
            "pow p=0.5": (gpuops.pow, gpuops.pow_wrt_x1, {"p": 0.5}),
            "pow p=-3": (gpuops.pow, gpuops.pow_wrt_x1, {"p": -3.0}),
            "pow p=0": (gpuops.pow, gpuops.pow_wrt_x1, {"p": 0.0}),
            "leaky_relu slope=0.2": (gpuops.leaky_relu, gpuops.leaky_relu_wrt_x1,
                                     {"slope": 0.2}),
            "gelu tanh": (gpuops.gelu, gpuops.gelu_wrt_x1, {"approximate": "tanh"})}
# Gradients with no fused form (float64 NumPy code, or a select): the NumPy path.
NOT_FUSED = {"leaky_relu_wrt_x1", "gelu_wrt_x1", "silu_wrt_x1"}


def _unary_cases():
    for name in UNARY:
        yield name, getattr(gpuops, name), getattr(gpuops, f"{name}_wrt_x1"), {}
    for label, (forward, gradient, kwargs) in VARIANTS.items():
        yield label, forward, gradient, kwargs


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(_unary_cases()), ids=lambda c: c[0])
def test_unary_every_pattern(case, dtype, fused_runs):
    """The forward on all 65536 patterns (a table), the gradient with x all patterns and
    y, gy random patterns (their NaN and inf too)."""
    _, forward, gradient, kwargs = case
    x = _all_patterns(dtype)
    _check(forward, x, runs=fused_runs, **kwargs)
    y, gy = _patterns(dtype, x.size, 3), _patterns(dtype, x.size, 4)
    expected = gradient.__name__ not in NOT_FUSED and kwargs.get("p") != 0.0
    _check(gradient, x, y, gy, runs=fused_runs, fused_expected=expected, **kwargs)


BINARY = ["add", "sub", "mul", "div"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", BINARY)
def test_binary_edge_pairs(op, dtype, fused_runs):
    """x1 op x2 and both gradients (alpha too) on every edge pair and random patterns."""
    x1, x2 = _pairs(dtype)
    gy = _patterns(dtype, x1.size, 5)
    y = _patterns(dtype, x1.size, 6)
    _check(getattr(gpuops, op), x1, x2, runs=fused_runs)
    _check(getattr(gpuops, op), x2, x1, runs=fused_runs)
    for k in (1, 2):
        _check(getattr(gpuops, f"{op}_wrt_x{k}"), x1, x2, y, gy, runs=fused_runs)
    if op in ("add", "sub"):
        _check(getattr(gpuops, op), x1, x2, alpha=-2.5, runs=fused_runs)
        for k in (1, 2):
            _check(getattr(gpuops, f"{op}_wrt_x{k}"), x1, x2, y, gy, alpha=0.3,
                   runs=fused_runs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_broadcast_scalars_and_axes(dtype, fused_runs):
    """Broadcast rows and columns, Python scalars and 0-d arrays (repeated operands), the
    per-axis operators, gradients summed to a broadcast operand (the fused term in float32,
    then the NumPy code's sum)."""
    x1, x2 = (x[:1 << 16] for x in _pairs(dtype, 1 << 16))
    rows, row = x1.reshape(64, 1024), x2[:1024]
    gy = _patterns(dtype, rows.size, 8).reshape(rows.shape)
    for op in BINARY:
        fn = getattr(gpuops, op)
        _check(fn, rows, row, runs=fused_runs)
        _check(fn, row, rows, runs=fused_runs)
        _check(fn, rows.reshape(64, 1024, 1), x2[:64].reshape(64, 1, 1), runs=fused_runs,
               fused_expected=False)  # a column: its block would be the whole result
        _check(fn, rows, 2.5, runs=fused_runs)
        _check(fn, rows, x2[5:6].reshape(()), runs=fused_runs)
        if op in ("sub", "div"):
            _check(fn, 1.0, rows, runs=fused_runs)
        _check(getattr(gpuops, f"{op}_wrt_x1"), rows, row, rows, gy, runs=fused_runs)
        # summed over the rows: the term fused into float32, NumPy's sum, one rounding
        _check(getattr(gpuops, f"{op}_wrt_x2"), rows, row, rows, gy, runs=fused_runs)
        _check(getattr(gpuops, f"{op}_wrt_x1"), row, rows, rows, gy, runs=fused_runs)
        if op in ("add", "sub"):  # alpha·gy summed: NumPy's scaled sum
            _check(getattr(gpuops, f"{op}_wrt_x2"), rows, row, rows, gy, alpha=3,
                   runs=fused_runs, fused_expected=False)
    nchw, channel = x1.reshape(16, 4, 32, 32), x2[:4]
    gy_nchw = gy.reshape(nchw.shape)
    for op in BINARY:
        _check(getattr(gpuops, f"axis_{op}"), nchw, channel, runs=fused_runs)
        _check(getattr(gpuops, f"axis_{op}"), nchw, x2[:32], axis=-1, runs=fused_runs)
        _check(getattr(gpuops, f"axis_{op}_wrt_x1"), nchw, channel, nchw, gy_nchw,
               runs=fused_runs)
        _check(getattr(gpuops, f"axis_{op}_wrt_x2"), nchw, channel, nchw, gy_nchw,
               runs=fused_runs)
        _check(getattr(gpuops, f"axis_{op}_wrt_x2"), nchw, x2[:32], nchw, gy_nchw, axis=3,
               runs=fused_runs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_layouts_and_out(dtype, fused_runs):
    """Strided inputs (the NumPy path), out=x1, out overlapping an input shifted by one
    element, a non-contiguous out; the result written where out says."""
    x1, x2 = (x[:1 << 16] for x in _pairs(dtype, 1 << 16))
    _check(gpuops.mul, x1[::2], x2[::2], runs=fused_runs, fused_expected=False)
    _check(gpuops.exp, x1[::2], runs=fused_runs, fused_expected=False)
    want = _reference(gpuops.mul, x1, x2)
    a = x1.copy()
    with numpy.errstate(all="ignore"):
        assert gpuops.mul(a, x2, out=a) is a and fused_runs[-1]
    numpy.testing.assert_array_equal(_bits(a), _bits(want))
    buffer = numpy.concatenate([x1, x1[:1]])
    shifted = buffer[1:]
    with numpy.errstate(all="ignore"):
        gpuops.add(buffer[:-1], x2, out=shifted)
    assert fused_runs[-1]
    numpy.testing.assert_array_equal(_bits(shifted), _bits(_reference(gpuops.add, x1, x2)))
    strided = numpy.empty(2 * x1.size, dtype)[::2]
    with numpy.errstate(all="ignore"):
        gpuops.tanh(x1, out=strided)
    assert fused_runs[-1]
    numpy.testing.assert_array_equal(_bits(strided), _bits(_reference(gpuops.tanh, x1)))


def test_small_and_mixed_calls_take_the_numpy_path(fused_runs):
    """Below FUSED_MIN elements, and float16 with bfloat16 (a float32 result): no fused run."""
    x = _patterns(F16, call_module.FUSED_MIN - 1, 9)
    _check(gpuops.add, x, x, runs=fused_runs, fused_expected=False)
    y = _patterns(BF16, 1 << 14, 9)
    _check(gpuops.add, _patterns(F16, 1 << 14, 9), y, runs=fused_runs, fused_expected=False)
    assert True not in fused_runs


def test_tables_are_kept_per_function_parameters_and_dtype():
    cube = functools.partial(numpy.power, 3)  # a stable function object, as a declaration's
    first = fused.table(cube, (), F16)
    assert fused.table(cube, (), F16) is first
    assert fused.table(cube, (), BF16) is not first
    rounded = fused.table(cube, (), F16, rounded=True)
    assert rounded.dtype == F16 and rounded.size == 1 << 16
    with numpy.errstate(over="ignore"):
        numpy.testing.assert_array_equal(_bits(rounded), _bits(first.astype(F16)))


def test_portable_build(tmp_path, monkeypatch, fused_runs):
    """casts.c and fused.c built without -mavx2 -mf16c -mavx512* (a CPU without them): the
    same bits through the portable loops."""
    from native_build import portable_library
    library = portable_library(tmp_path)
    functions = {}
    for (name, dtype), real in native._functions.items():
        function = getattr(library, f"{name}_{'f16' if dtype == F16 else 'bf16'}")
        function.argtypes, function.restype = real.argtypes, real.restype
        functions[name, dtype] = function
    for name in ("fused_run", "lookup16"):
        function = getattr(library, name)
        real = getattr(native, name)
        function.argtypes, function.restype = real.argtypes, real.restype
        monkeypatch.setattr(native, name, function)
    monkeypatch.setattr(native, "_functions", functions)
    monkeypatch.setattr(fused, "_plans", {})
    for dtype in DTYPES:
        x1, x2 = _pairs(dtype)
        gy = _patterns(dtype, x1.size, 5)
        for op in BINARY:
            _check(getattr(gpuops, op), x1, x2, runs=fused_runs)
        _check(gpuops.div_wrt_x2, x1, x2, x1, gy, runs=fused_runs)
        _check(gpuops.abs, x1, runs=fused_runs)
        x = _all_patterns(dtype)
        _check(gpuops.tanh, x, runs=fused_runs)
        _check(gpuops.tanh_wrt_x1, x, x, _patterns(dtype, x.size, 4), runs=fused_runs)


def test_threads_share_plans_and_tables():
    """Eight threads running fused forms at once (the plan and table caches filled while
    others read them, fused.c's per-thread registers): each result equals the one-thread
    result, bit for bit."""
    import threading
    fused._plans.clear()
    calls = []
    for dtype in DTYPES:
        x1, x2 = (x[:1 << 16] for x in _pairs(dtype, 1 << 16))
        rows, row = x1.reshape(64, 1024), x2[:1024]
        calls += [(gpuops.add, (x1, x2), {}), (gpuops.sub, (x1, x2), {"alpha": 0.5}),
                  (gpuops.tanh, (x1,), {}), (gpuops.pow, (x1,), {"p": 1.5}),
                  (gpuops.mul_wrt_x2, (rows, row, rows, rows), {}),
                  (gpuops.sigmoid_wrt_x1, (x1, x1, x2), {}),
                  (gpuops.axis_mul, (rows, row[:64]), {"axis": 0})]
    with numpy.errstate(all="ignore"):
        expected = [_bits(fn(*args, **kwargs)).copy() for fn, args, kwargs in calls]
    fused._plans.clear()
    failures = []

    def work(seed: int) -> None:
        order = numpy.random.default_rng(seed).permutation(len(calls))
        with numpy.errstate(all="ignore"):
            for _ in range(5):
                for i in order:
                    fn, args, kwargs = calls[i]
                    if not numpy.array_equal(_bits(fn(*args, **kwargs)), expected[i]):
                        failures.append((seed, fn.__name__))
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
