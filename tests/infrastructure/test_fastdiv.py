"""Division by invariant integers (``FastDiv`` of cuda/gpuops.cuh, magic words from
``gpuops.kernels.fastdiv_magic``) against exact division: every divisor class (1, powers of
two, small odd, 641, 2^31 - 1, 2^32 - 1, random) over dividends at both ends of the 32-bit
range and random ones, in a NumPy model of the device arithmetic and on the emulator; and
the 64-bit fallback (magic word 0) where a number exceeds 32 bits."""
from __future__ import annotations

import numpy
import pytest

from gpuops import kernels

U32 = numpy.uint64(0xFFFFFFFF)


def _divisors():
    rng = numpy.random.default_rng(7)
    powers = [2**k for k in range(32)]
    small = list(range(1, 130))
    special = [3, 5, 6, 7, 9, 10, 11, 12, 25, 100, 125, 641, 1000, 6700417, 2**16 + 1,
               2**31 - 1, 2**31 + 1, 3 * 2**30, 2**32 - 3, 2**32 - 1]
    near_powers = [2**k + e for k in range(2, 32) for e in (-1, 1)]
    rand = [int(v) for v in rng.integers(1, 2**32, 200)] + \
           [int(v) for v in rng.integers(1, 2**16, 100)]
    return sorted({d for d in powers + small + special + near_powers + rand if d <= 2**32 - 1})


def _dividends(d: int):
    rng = numpy.random.default_rng(d % 2**31)
    top = 2**32 - 1
    edges = [0, 1, 2, d - 1, d, d + 1, 2 * d - 1, 2 * d, 2**31 - 1, 2**31, 2**31 + 1,
             top - d, top - 1, top]
    multiples = [k * d + e for k in (top // d, top // d - 1, (top // d) // 2) for e in (-1, 0, 1)]
    values = [v for v in edges + multiples if 0 <= v <= top]
    return numpy.concatenate([numpy.array(values, numpy.uint64),
                              rng.integers(0, 2**32, 2000, dtype=numpy.uint64),
                              numpy.arange(top - 300, top + 1, dtype=numpy.uint64)])


def _model(n: numpy.ndarray, magic: int) -> numpy.ndarray:
    """The device's quotient (FastDiv::div, 32-bit unsigned arithmetic) in uint64 NumPy."""
    m, shift = numpy.uint64(magic >> 32), magic & 0xFF
    s1, s2 = numpy.uint64(min(shift, 1)), numpy.uint64(max(shift - 1, 0))
    t = (n * m) >> numpy.uint64(32)  # umulhi: both < 2^32, the product fits 64 bits
    return ((t + ((n - t) >> s1)) & U32) >> s2  # the sum wraps at 2^32 as on the GPU


def test_magic_word_fields():
    assert kernels.fastdiv_magic(1, 10) == 1 << 32  # m = 1, l = 0: n / 1 = n
    assert kernels.fastdiv_magic(8, 10) == (1 << 32) | 3  # a power of two: m = 1
    assert kernels.fastdiv_magic(7, 2**32 - 1) != 0
    # past 32 bits, and no divisor: the 64-bit division (word 0)
    assert kernels.fastdiv_magic(7, 2**32) == 0
    assert kernels.fastdiv_magic(2**32, 2**40) == 0
    assert kernels.fastdiv_magic(0, 0) == 0
    assert kernels.fastdiv(641, 10**6) == (641, kernels.fastdiv_magic(641, 10**6))


def test_model_matches_exact_division_for_every_divisor_class():
    failures = []
    for d in _divisors():
        magic = int(kernels.fastdiv_magic(d, 2**32 - 1))
        assert magic >> 32 < 2**32 and magic != 0
        n = _dividends(d)
        q = _model(n, magic)
        bad = numpy.flatnonzero(q != n // numpy.uint64(d))
        if bad.size:
            failures.append((d, int(n[bad[0]]), int(q[bad[0]])))
    assert not failures, failures[:5]


def test_model_exhaustive_over_small_dividends():
    n = numpy.arange(0, 1 << 20, dtype=numpy.uint64)
    for d in [1, 2, 3, 5, 7, 10, 12, 27, 641, 1000, 4095, 65535, 2**20 - 1, 2**31 - 1]:
        assert numpy.array_equal(_model(n, int(kernels.fastdiv_magic(d, 2**32 - 1))),
                                 n // numpy.uint64(d)), d


_KERNEL = r"""
extern "C" __global__ void fastdiv_check(const unsigned long long* __restrict__ n,
                                         long long count, FASTDIV_PARAM(d),
                                         long long* __restrict__ q, long long* __restrict__ r,
                                         long long* __restrict__ q_only) {
    const FastDiv fd = FASTDIV(d);
    GRID_STRIDE_LOOP(i, count) {
        long long rem;
        q[i] = fd.divmod((long long)n[i], rem);
        r[i] = rem;
        q_only[i] = fd.div((long long)n[i]);
    }
}
"""


@pytest.fixture(scope="module")
def module():
    emu = pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")
    from gpuops.emu import build
    if build.compiler() is None:
        pytest.skip("no C++ compiler for the emulator")
    header = (kernels.cuda_dir() / "gpuops.cuh").read_text()
    return emu.load(header + _KERNEL, label="fastdiv_check")


def _run(module, n: numpy.ndarray, d: int, magic) -> tuple:
    q, r, q_only = (numpy.zeros(n.size, numpy.int64) for _ in range(3))
    module.launch("fastdiv_check", (2,), (64,),
                  (n, numpy.int64(n.size), numpy.int64(d), numpy.uint64(magic), q, r, q_only))
    return q, r, q_only


@pytest.mark.parametrize("d", [1, 2, 3, 7, 64, 641, 1000, 2**31 - 1, 2**31, 2**32 - 1,
                               2914807291])
def test_device_fastdiv_on_the_emulator(module, d):
    rng = numpy.random.default_rng(d)
    n = numpy.concatenate([_dividends(d)[:40], rng.integers(0, 2**32, 400, dtype=numpy.uint64),
                           numpy.arange(2**32 - 40, 2**32, dtype=numpy.uint64)])
    q, r, q_only = _run(module, n, d, kernels.fastdiv_magic(d, 2**32 - 1))
    exact = n.astype(object)
    assert [int(v) for v in q] == [int(v) // d for v in exact]
    assert [int(v) for v in r] == [int(v) % d for v in exact]
    assert numpy.array_equal(q, q_only)


@pytest.mark.parametrize("d", [3, 641, 2**33 + 5])
def test_device_64_bit_fallback(module, d):
    """A magic word of 0 (what the host passes for tensors of 2^32 or more elements):
    the 64-bit division, exact for dividends and divisors past 32 bits."""
    rng = numpy.random.default_rng(1)
    n = numpy.concatenate([rng.integers(0, 2**62, 300, dtype=numpy.uint64),
                           numpy.array([0, 2**32, 2**32 + 1, 2**40 - 1], numpy.uint64)])
    magic = kernels.fastdiv_magic(d, 2**62)
    assert magic == 0
    q, r, _ = _run(module, n, d, magic)
    assert [int(v) for v in q] == [int(v) // d for v in n]
    assert [int(v) for v in r] == [int(v) % d for v in n]


# ---- the operators on the 64-bit path ---------------------------------------------------
# Past FASTDIV_MAX (tensors of 2^32 or more elements) every magic word is 0 and the kernels
# divide in 64 bits. Lowering the limit sends small tensors down that path: both paths must
# give the NumPy backend's results (bitwise: the index math changes, not the arithmetic).

def _f64(rng, *shape):
    return rng.standard_normal(shape)


_OPERATOR_CASES = {
    "add broadcast": lambda g, r: g.add(_f64(r, 3, 1, 5, 7), _f64(r, 4, 1, 7)),
    "div_wrt_x2 broadcast": lambda g, r: g.div_wrt_x2(
        _f64(r, 3, 4, 5), 1.5 + _f64(r, 4, 1) ** 2, _f64(r, 3, 4, 5), _f64(r, 3, 4, 5)),
    "axis_mul": lambda g, r: g.axis_mul(_f64(r, 3, 5, 7), _f64(r, 5), axis=1),
    "axis_mul_wrt_x2": lambda g, r: g.axis_mul_wrt_x2(
        _f64(r, 3, 5, 7), _f64(r, 5), _f64(r, 3, 5, 7), _f64(r, 3, 5, 7), axis=1),
    "max_pool2d": lambda g, r: g.max_pool2d(_f64(r, 2, 3, 9, 10), kernel_size=3, stride=2,
                                            padding=1),
    "max_pool2d x at an odd offset": lambda g, r: g.max_pool2d(  # no pair loads
        _f64(r, 2 * 3 * 9 * 10 + 1)[1:].reshape(2, 3, 9, 10), kernel_size=3, stride=2),
    "max_pool2d_wrt_x1": lambda g, r: _pool_grad(g, r, "max_pool2d", dilation=2),
    "avg_pool2d_wrt_x1": lambda g, r: _pool_grad(g, r, "avg_pool2d", ceil_mode=True),
    "lrn_wrt_x1": lambda g, r: _lrn_grad(g, r),
    "transpose 4-d": lambda g, r: g.transpose(_f64(r, 3, 4, 5, 6), axes=(2, 0, 3, 1)),
    "transpose inner kept": lambda g, r: g.transpose(_f64(r, 3, 4, 5, 6), axes=(2, 1, 0, 3)),
}


def _pool_grad(g, r, name, **options):
    x = _f64(r, 2, 3, 9, 10)
    y = getattr(g, name)(x, kernel_size=3, stride=2, padding=1, **options)
    return getattr(g, f"{name}_wrt_x1")(x, y, _f64(r, *y.shape), kernel_size=3, stride=2,
                                         padding=1, **options)


def _lrn_grad(g, r):
    x = _f64(r, 2, 7, 3, 4)
    return g.lrn_wrt_x1(x, g.lrn(x), _f64(r, 2, 7, 3, 4))


@pytest.mark.parametrize("case", sorted(_OPERATOR_CASES))
@pytest.mark.parametrize("limit", [kernels.FASTDIV_MAX, 4])
def test_operators_on_both_division_paths(module, monkeypatch, case, limit):
    import gpuops
    monkeypatch.setattr(kernels, "FASTDIV_MAX", limit)
    expected = _OPERATOR_CASES[case](gpuops, numpy.random.default_rng(3))
    with gpuops.backend.use_cpu_launcher(gpuops.emu.launcher()):
        got = _OPERATOR_CASES[case](gpuops, numpy.random.default_rng(3))
    numpy.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
