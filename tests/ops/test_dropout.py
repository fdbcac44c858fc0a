"""Dropout: the Philox generator, the kept fraction, the same mask on every backend,
the identities (p = 0, training=False), p = 1, and bad parameters."""
from __future__ import annotations

import math

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from gpuops.ops.dropout import keep_mask, philox4x32_10
from records.dropout import philox_words, reference_keep

# Known-answer vectors of Random123 (kat_vectors, philox4x32 with 10 rounds):
# counter, key, output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(w) for w in philox4x32_10(counter, key)) == expected


def test_numpy_mask_matches_scalar_reference():
    for n, p, seed in [(1001, 0.5, 0), (37, 0.1, 2**64 - 1), (64, 0.75, 2**33 + 1)]:
        numpy.testing.assert_array_equal(keep_mask(n, p, seed), reference_keep(n, p, seed))
    # counters above 2^32 use the high word (j >> 32) of the counter
    j = 2**32 + 7
    words = philox4x32_10((j & 0xFFFFFFFF, j >> 32, 0, 0), (5, 0))
    assert [int(w) for w in words] == philox_words(j, 5)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_within_statistical_bounds(p):
    n = 200_000
    x = numpy.ones(n, numpy.float32)
    for seed in (0, 1, 2**63 + 11):
        kept = int(numpy.count_nonzero(gpuops.dropout(x, p=p, seed=seed)))
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(kept - n * (1 - p)) < 5 * sigma, (p, seed, kept)


def test_masks_look_independent():
    """Neighbouring elements, words of one Philox call, and seeds are uncorrelated."""
    n = 100_000
    a = keep_mask(n, 0.5, 42).astype(float)
    b = keep_mask(n, 0.5, 43).astype(float)
    bound = 5 / math.sqrt(n)
    assert abs(numpy.corrcoef(a[:-1], a[1:])[0, 1]) < bound
    assert abs(numpy.corrcoef(a[0::4], a[1::4])[0, 1]) < 2 * bound
    assert abs(numpy.corrcoef(a, b)[0, 1]) < bound


def test_kept_values_are_scaled_and_dropped_are_zero():
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal(5000)
    y = gpuops.dropout(x, p=0.2, seed=3)
    keep = keep_mask(x.size, 0.2, 3)
    numpy.testing.assert_array_equal(y[~keep], 0.0)
    numpy.testing.assert_allclose(y[keep], x[keep] / 0.8, rtol=1e-15)




@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64, numpy.float16, gpuops.bfloat16])
@pytest.mark.parametrize("n,p,seed", [(4099, 0.5, 0), (1030, 0.1, 2**64 - 1),
                                      (257, 0.9, 2**32 + 3), (3, 0.5, 77)])
def test_kernel_mask_equals_numpy_mask_bit_for_bit(backend, dtype, n, p, seed):
    rng = numpy.random.default_rng(1)
    x = rng.standard_normal(n).astype(dtype)
    gy = rng.standard_normal(n).astype(dtype)
    y_cpu = gpuops.dropout(x, p=p, seed=seed)
    g_cpu = gpuops.dropout_wrt_x1(x, y_cpu, gy, p=p, seed=seed)
    with backend.active():
        dx, dgy = backend.asarray(x), backend.asarray(gy)
        y = gpuops.dropout(dx, p=p, seed=seed)
        g = gpuops.dropout_wrt_x1(dx, y, dgy, p=p, seed=seed)
    assert backend.to_numpy(y).tobytes() == y_cpu.tobytes()
    assert backend.to_numpy(g).tobytes() == g_cpu.tobytes()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_gradient_regenerates_the_forward_mask(backend):
    rng = numpy.random.default_rng(2)
    x = rng.uniform(0.5, 1.5, (17, 19))  # no zeros: y == 0 exactly where dropped
    gy = rng.standard_normal(x.shape)
    with backend.active():
        y = backend.to_numpy(gpuops.dropout(backend.asarray(x), p=0.4, seed=5))
        g = backend.to_numpy(gpuops.dropout_wrt_x1(backend.asarray(x), backend.asarray(y),
                                                   backend.asarray(gy), p=0.4, seed=5))
    dropped = y == 0
    assert 0 < dropped.sum() < dropped.size
    numpy.testing.assert_array_equal(g[dropped], 0.0)
    numpy.testing.assert_allclose(g[~dropped], gy[~dropped] / 0.6, rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("params", [{"p": 0.0}, {"p": 0.5, "training": False},
                                    {"p": 1.0, "training": False}])
def test_identity(backend, params):
    x = numpy.random.default_rng(3).standard_normal((6, 7)).astype(numpy.float32)
    with backend.active():
        dx = backend.asarray(x)
        y = gpuops.dropout(dx, seed=1, **params)
        g = gpuops.dropout_wrt_x1(dx, y, dx, seed=1, **params)
    assert backend.to_numpy(y).tobytes() == x.tobytes()
    assert backend.to_numpy(g).tobytes() == x.tobytes()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [numpy.float16, gpuops.bfloat16])
def test_16bit_kept_values_are_one_rounding_of_the_float32_product(backend, dtype):
    """A kept 16-bit x is scaled by the float32 1/(1 - p) (not rounded to 16 bits: 1/0.7)
    and rounded once; bfloat16 has float32's range: 1e30 / 0.7 is finite, while float16
    overflows past 65504 (60000 / 0.7 is inf)."""
    big = 1e30 if dtype == gpuops.bfloat16 else 60000.0
    x = numpy.array([1.0, -3.0, 0.1, big, -big, 7.5, 2.0 ** -10, 0.3] * 8).astype(dtype)
    p, seed = 0.3, 11
    keep = reference_keep(x.size, p, seed)
    scale = numpy.float32(1 / (1 - p))
    with numpy.errstate(over="ignore"), backend.active():  # float16's overflow is the point
        expected = numpy.where(keep, x.astype(numpy.float32) * scale, 0).astype(dtype)
        y = backend.to_numpy(gpuops.dropout(backend.asarray(x), p=p, seed=seed))
    assert y.dtype == dtype
    assert y.tobytes() == expected.tobytes()
    kept_big = keep & (numpy.abs(x.astype(numpy.float64)) > 1000)
    assert kept_big.any()
    assert numpy.isfinite(y[kept_big].astype(numpy.float64)).all() == (dtype == gpuops.bfloat16)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_p_one_gives_zeros(backend):
    x = numpy.full((5, 3), numpy.inf)
    with backend.active():
        y = gpuops.dropout(backend.asarray(x), p=1.0, seed=0)
    numpy.testing.assert_array_equal(backend.to_numpy(y), 0.0)


@pytest.mark.parametrize("p", [-1e-9, 1.0000001, 2, float("nan"), float("inf")])
def test_p_outside_unit_interval_raises(p):
    x = numpy.ones(4)
    with pytest.raises(ValueError, match="dropout: p must be in"):
        gpuops.dropout(x, p=p, seed=0)
    with pytest.raises(ValueError, match="dropout_wrt_x1: p must be in"):
        gpuops.dropout_wrt_x1(x, x, x, p=p, seed=0)


def test_seed_is_required_and_keyword_only():
    x = numpy.ones(4)
    with pytest.raises(TypeError):
        gpuops.dropout(x, p=0.5)  # no seed
    with pytest.raises(TypeError):
        gpuops.dropout(x, 0.5, 1)  # positional parameters
