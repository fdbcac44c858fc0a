"""attention beyond the generic tests: PyTorch's scaled_dot_product_attention forward and
backward, the kernels' memory (no Tq x Tk buffer), head dims 64, 128 and 256 (16-bit),
the D limit of the kernels, scores of ~1e3 (the online max), bitwise repeatable
gradients, empty key sets, keys a row does not see, and the NumPy path's chunks."""
from __future__ import annotations

import tracemalloc

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from gpuops.ops import attention as attention_module
from records.attention import _attention, _grad_k, _grad_q, _grad_v, _probabilities

GRADS = (gpuops.attention_wrt_x1, gpuops.attention_wrt_x2, gpuops.attention_wrt_x3)
REF_GRADS = (_grad_q, _grad_k, _grad_v)


def _dtypes(backend):
    return [numpy.float32, numpy.float64] + ([numpy.float16] if backend.name != "numpy" else [])


def _tol(dtype):
    # bfloat16: two roundings (2^-8 each) relative, and absolute for the gradients' Δ read
    # from the rounded y (see the record); measured at D = 256: 7.7e-3 at |g| = 4
    return {numpy.dtype(numpy.float16): (2e-2, 1e-2),
            numpy.dtype(gpuops.bfloat16): (2.0 ** -7, 2.0 ** -7),
            numpy.dtype(numpy.float32): (1e-4, 1e-5),
            numpy.dtype(numpy.float64): (1e-10, 1e-12)}[numpy.dtype(dtype)]


def _inputs(rng, qs, ks, vs, magnitude=1.0):
    return tuple(magnitude * rng.standard_normal(s) for s in (qs, ks, vs))


def _run(backend, dtype, inputs, gy, **params):
    """y and the three gradients on ``backend``, as NumPy arrays."""
    with backend.active():
        dev = [backend.asarray(x, dtype=dtype) for x in inputs]
        y = gpuops.attention(*dev, **params)
        gyd = backend.asarray(gy, dtype=dtype)
        grads = [g(*dev, y, gyd, **params) for g in GRADS]
        return [backend.to_numpy(r) for r in (y, *grads)]


# (q, k, v shapes, causal, scale): causal with Tq < Tk and Tq > Tk, heads, D != Dv, tiles
TORCH_CASES = [((2, 5, 8), (2, 7, 8), (2, 7, 8), False, None),
               ((2, 5, 8), (2, 7, 8), (2, 7, 8), True, None),
               ((2, 9, 4), (2, 6, 4), (2, 6, 3), True, None),
               ((2, 3, 6, 4), (2, 3, 6, 4), (2, 3, 6, 4), False, 0.5),
               ((1, 21, 4), (1, 19, 4), (1, 19, 5), True, 0.3),
               ((1, 20, 4), (1, 37, 4), (1, 37, 5), False, None)]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("qs,ks,vs,causal,scale", TORCH_CASES)
def test_matches_torch_forward_and_backward(backend, qs, ks, vs, causal, scale):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(0)
    inputs = _inputs(rng, qs, ks, vs)
    gy = rng.standard_normal(qs[:-1] + vs[-1:])
    for dtype in _dtypes(backend):
        rounded = [x.astype(dtype).astype(numpy.float64) for x in inputs]
        tensors = [torch.tensor(x, requires_grad=True) for x in rounded]
        expected = torch.nn.functional.scaled_dot_product_attention(
            *tensors, is_causal=causal, scale=scale)
        expected.backward(torch.tensor(gy.astype(dtype).astype(numpy.float64)))
        got = _run(backend, dtype, rounded, gy, causal=causal, scale=scale)
        rtol, atol = _tol(dtype)
        for name, g, e in zip(("y", "gq", "gk", "gv"), got,
                              (expected.detach(), *(t.grad for t in tensors))):
            numpy.testing.assert_allclose(g.astype(numpy.float64), e.numpy(), rtol=rtol,
                                          atol=atol, err_msg=f"{name} {numpy.dtype(dtype)}")


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_kernels_never_hold_the_score_matrix(backend):
    """Tq = Tk = 256 in float64: the kernels' peak Python-side allocation during a forward
    and a backward call (the result, L and Δ, the launches' argument buffers) stays below a
    quarter of one Tq x Tk matrix (512 KiB); the NumPy path, which does hold the scores of a
    chunk, is above it (the measurement can tell)."""
    rng = numpy.random.default_rng(0)
    t, d = 256, 16
    scores = t * t * 8
    with backend.active():
        q, k, v = (backend.asarray(rng.standard_normal((1, t, d))) for _ in range(3))
        y = gpuops.attention(q, k, v, causal=True)
        gy = backend.asarray(numpy.ones((1, t, d)))
        forward = _peak(lambda: gpuops.attention(q, k, v, causal=True))
        backward = _peak(lambda: gpuops.attention_wrt_x2(q, k, v, y, gy, causal=True))
    if backend.name == "numpy":
        assert forward > scores and backward > scores, (forward, backward)
    else:
        assert max(forward, backward) < scores // 4, (forward, backward)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("d,dtype", [(64, numpy.float32), (128, numpy.float64),
                                     (128, numpy.float16), (200, numpy.float16),
                                     (256, numpy.float16), (256, gpuops.bfloat16)])
def test_wide_heads_match_numpy(backend, d, dtype):
    """Head dims 64 and 128 (the d128 kernels), 200 and 256 (the 16-bit d256 kernels)."""
    rng = numpy.random.default_rng(1)
    inputs = _inputs(rng, (1, 3, d), (1, 5, d), (1, 5, d))
    inputs = [x.astype(dtype).astype(numpy.float64) for x in inputs]
    gy = rng.standard_normal((1, 3, d)).astype(dtype).astype(numpy.float64)
    got = _run(backend, dtype, inputs, gy, causal=True)
    y = _attention(*inputs, causal=True)
    expected = [y] + [g(*inputs, y, gy, causal=True) for g in REF_GRADS]
    rtol, atol = _tol(dtype)
    for name, g, e in zip(("y", "gq", "gk", "gv"), got, expected):
        numpy.testing.assert_allclose(g.astype(numpy.float64), e, rtol=rtol, atol=atol,
                                      err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_head_dim_limit_of_the_kernels(backend):
    """The kernels take D and Dv up to 128 (256 for float16): beyond, a ValueError naming
    attention and D, the out array untouched; NumPy takes any D."""
    rng = numpy.random.default_rng(2)
    q, k, v = _inputs(rng, (1, 2, 129), (1, 3, 129), (1, 3, 4))
    with backend.active():
        dev = [backend.asarray(x, dtype=numpy.float32) for x in (q, k, v)]
        out = backend.asarray(numpy.full((1, 2, 4), 7.0), dtype=numpy.float32)
        if backend.name == "numpy":
            gpuops.attention(*dev, out=out)
            numpy.testing.assert_allclose(out, _attention(q, k, v), rtol=1e-5, atol=1e-6)
            return
        with pytest.raises(ValueError, match=r"attention: D = 129, Dv = 4; the float32 "
                                             r"kernels take D and Dv up to 128"):
            gpuops.attention(*dev, out=out)
        assert (backend.to_numpy(out) == 7).all()
        gy = backend.asarray(numpy.ones((1, 2, 4)), dtype=numpy.float32)
        with pytest.raises(ValueError, match="attention_wrt_x3: D = 129"):
            gpuops.attention_wrt_x3(*dev, out, gy)
        wide = [backend.asarray(x[..., :4], dtype=numpy.float16) for x in (q, k)]
        with pytest.raises(ValueError, match=r"Dv = 257; the float16 kernels take D and Dv "
                                             r"up to 256"):
            gpuops.attention(*wide, backend.asarray(numpy.ones((1, 3, 257)),
                                                    dtype=numpy.float16))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("causal", [False, True])
def test_scores_of_a_thousand(backend, causal):
    """|scores| ~ 1e3: e^s overflows any float, so only the max subtraction (the online
    max in the kernels, across tiles) gives the result; compared with float64."""
    rng = numpy.random.default_rng(3)
    q, k, v = _inputs(rng, (2, 20, 4), (2, 23, 4), (2, 23, 3))
    q *= 30
    k *= 30  # scores q.k / 2 of a few hundred to a few thousand
    gy = rng.standard_normal((2, 20, 3))
    for dtype in _dtypes(backend):
        inputs = [x.astype(dtype).astype(numpy.float64) for x in (q, k, v)]
        s = numpy.einsum("bid,bjd->bij", inputs[0], inputs[1]) / 2
        assert numpy.abs(s).max() > 1e3
        got = _run(backend, dtype, inputs, gy, causal=causal)
        y = _attention(*inputs, causal=causal)
        assert numpy.isfinite(got[0]).all()
        # a float32 score of ~1e3 is exact to ~1e-4: e^s to ~1e-4 relative
        rtol, atol = (2e-3, 1e-4) if dtype == numpy.float32 else _tol(dtype)
        numpy.testing.assert_allclose(got[0].astype(numpy.float64), y, rtol=rtol, atol=atol)
        # gv = P^T gy needs no cancellation; gq and gk are ~1 only where a row has near-ties
        numpy.testing.assert_allclose(got[3].astype(numpy.float64),
                                      _grad_v(*inputs, y, gy, causal=causal), rtol=rtol,
                                      atol=atol)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_gradients_are_bitwise_repeatable(backend):
    rng = numpy.random.default_rng(4)
    inputs = _inputs(rng, (2, 19, 5), (2, 21, 5), (2, 21, 3))
    gy = rng.standard_normal((2, 19, 3))
    for dtype in _dtypes(backend):
        first = _run(backend, dtype, inputs, gy, causal=True)
        second = _run(backend, dtype, inputs, gy, causal=True)
        for a, b in zip(first, second):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_no_keys_gives_zeros(backend):
    """Tk = 0: every row sees no key, y = 0 and gq = 0 (PyTorch: NaN); Tq = 0: gk = gv = 0."""
    for dtype in _dtypes(backend):
        with backend.active():
            q = backend.asarray(numpy.ones((2, 3, 4)), dtype=dtype)
            k = backend.asarray(numpy.ones((2, 0, 4)), dtype=dtype)
            v = backend.asarray(numpy.ones((2, 0, 5)), dtype=dtype)
            y = gpuops.attention(q, k, v, causal=True)
            assert y.shape == (2, 3, 5) and (backend.to_numpy(y) == 0).all()
            gy = backend.asarray(numpy.ones((2, 3, 5)), dtype=dtype)
            gq = gpuops.attention_wrt_x1(q, k, v, y, gy)
            assert (backend.to_numpy(gq) == 0).all()
            empty_q = backend.asarray(numpy.ones((2, 0, 4)), dtype=dtype)
            keys = backend.asarray(numpy.ones((2, 3, 4)), dtype=dtype)
            y0 = gpuops.attention(empty_q, keys, keys)
            gk = gpuops.attention_wrt_x2(empty_q, keys, keys, y0, y0)
            assert gk.shape == (2, 3, 4) and (backend.to_numpy(gk) == 0).all()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_hidden_keys_are_never_read(backend):
    """Causal with Tq = 19 < Tk = 20: no row sees key 19, so NaN and inf in its key and
    value change nothing (not even as 0 · NaN): the result of the finite inputs, and
    gk = gv = 0 for that key."""
    rng = numpy.random.default_rng(5)
    q, k, v = _inputs(rng, (1, 19, 4), (1, 20, 4), (1, 20, 3))
    gy = rng.standard_normal((1, 19, 3))
    y = _attention(q, k, v, causal=True)
    expected = [y] + [g(q, k, v, y, gy, causal=True) for g in REF_GRADS]
    k[0, -1] = numpy.nan
    v[0, -1] = (numpy.inf, -numpy.inf, numpy.nan)
    for dtype in _dtypes(backend):
        got = _run(backend, dtype, (q, k, v), gy, causal=True)
        assert (got[2][0, -1] == 0).all() and (got[3][0, -1] == 0).all()
        rtol, atol = _tol(dtype)
        for name, g, e in zip(("y", "gq", "gk", "gv"), got, expected):
            numpy.testing.assert_allclose(g.astype(numpy.float64), e, rtol=rtol, atol=atol,
                                          err_msg=f"{name} {numpy.dtype(dtype)}")


@pytest.mark.parametrize("chunk", [1, 7, 40, 1000])
@pytest.mark.parametrize("causal", [False, True])
def test_numpy_chunks_give_the_same_result(monkeypatch, chunk, causal):
    """The NumPy path in query chunks (and groups of heads) of ``chunk`` scores at most
    (one row when Tk exceeds it) equals the one-block result."""
    rng = numpy.random.default_rng(6)
    inputs = _inputs(rng, (3, 2, 9, 4), (3, 2, 11, 4), (3, 2, 11, 5))
    gy = rng.standard_normal((3, 2, 9, 5))
    whole = _run(BACKENDS[0], numpy.float64, inputs, gy, causal=causal)
    monkeypatch.setattr(attention_module, "CHUNK_SCORES", chunk)
    chunked = _run(BACKENDS[0], numpy.float64, inputs, gy, causal=causal)
    for a, b in zip(whole, chunked):
        numpy.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_bfloat16_gradients_take_delta_from_the_rounded_y(backend):
    """bfloat16 gq and gk read Δ_i = Σ_c gy_ic y_ic from the rounded y, as PyTorch's backward
    does: against the float64 formulas with that Δ they agree to one rounding (no atol);
    against Δ from the exact y (the record's reference) they differ by up to
    |scale| 2^-8 Σ_c |gy_ic y_ic| Σ_j P_ij |k_j| (the record's bfloat16 atol)."""
    bf16, f64 = numpy.dtype(gpuops.bfloat16), numpy.float64
    rng = numpy.random.default_rng(3)
    q, k, v = [x.astype(bf16).astype(f64) for x in _inputs(rng, (1, 19, 4), (1, 21, 4),
                                                            (1, 21, 3))]
    gy = rng.standard_normal((1, 19, 3)).astype(bf16).astype(f64)
    y, gq, gk, _ = [r.astype(f64) for r in _run(backend, bf16, (q, k, v), gy, causal=True)]
    p, scale = _probabilities(q, k, causal=True)
    delta = (gy * y).sum(axis=-1, keepdims=True)
    ds = scale * p * (gy @ numpy.swapaxes(v, -1, -2) - delta)
    rtol = 2e-5 + 2.0 ** -7
    numpy.testing.assert_allclose(gq, ds @ k, rtol=rtol, atol=1e-6)
    numpy.testing.assert_allclose(gk, numpy.swapaxes(ds, -1, -2) @ q, rtol=rtol, atol=1e-6)
    exact_delta = (gy * _attention(q, k, v, causal=True)).sum(axis=-1, keepdims=True)
    # one rounding of y (2^-8 relative) after its float32 computation
    bound = (2.0 ** -8 + 1e-5) * (numpy.abs(gy) * numpy.abs(y)).sum(axis=-1, keepdims=True)
    assert numpy.all(numpy.abs(delta - exact_delta) <= bound)


@pytest.fixture
def tensor_core_launches(request):
    """Run inside: (the kernel names launched), through an emulator launcher that says it has
    tensor cores (the shared one takes the SIMT path, as a pre-sm_80 GPU)."""
    emu = pytest.importorskip("gpuops.emu")
    if not any(b.name == "emu" for b in KERNEL_BACKENDS):
        pytest.skip("the emulator cannot build here")
    launcher = emu.EmuLauncher(tensor_cores=True)
    names: list[str] = []
    launch = launcher.launch

    def recording(family, kernel, *args, **kwargs):
        names.append(kernel)
        return launch(family, kernel, *args, **kwargs)

    launcher.launch = recording
    with gpuops.backend.use_cpu_launcher(launcher):
        yield names


# The tensor-core forward rounds P to the input dtype for P·V (|δy| <= u max|v|, |v| < 4
# here) and y once (u |y|), u = 2^-11 float16, 2^-8 bfloat16: float16 (1e-2, 4e-3) as
# before; bfloat16 (2u, 4u) (measured: at most 7.8e-3 absolute, one ulp at |y| in [1, 2)).
TC_DTYPES = {"float16": (numpy.float16, "f16", (1e-2, 4e-3)),
             "bfloat16": (gpuops.bfloat16, "bf16", (2.0 ** -7, 2.0 ** -6))}


@pytest.mark.parametrize("qs,ks,vs", [((2, 70, 24), (2, 45, 24), (2, 45, 20)),
                                      ((1, 5, 128), (1, 9, 128), (1, 9, 128)),
                                      ((3, 1, 1), (3, 2, 1), (3, 2, 3))])
@pytest.mark.parametrize("name", TC_DTYPES)
def test_16bit_tensor_core_forward(tensor_core_launches, qs, ks, vs, name):
    """attention_tc_f16 / attention_tc_bf16 (mma.sync, non-causal 16-bit): several 64-row
    query tiles and 32-key tiles with ragged ends, D and Dv padded to 16, D = 128 and D = 1,
    scores of a few units and of ~1e2 (the online max across key tiles): the float64
    result within the dtype's rounding, like the SIMT kernel."""
    dtype, suffix, (rtol, atol) = TC_DTYPES[name]
    rng = numpy.random.default_rng(7)
    for magnitude in (1.0, 6.0):
        inputs = [(magnitude * rng.standard_normal(s)).astype(dtype) for s in (qs, ks)]
        inputs.append(rng.standard_normal(vs).astype(dtype))
        expected = _attention(*[x.astype(numpy.float64) for x in inputs])
        y = gpuops.attention(*inputs)
        assert y.dtype == numpy.dtype(dtype)
        assert tensor_core_launches[-1] == f"attention_tc_{suffix}"
        numpy.testing.assert_allclose(y.astype(numpy.float64), expected, rtol=rtol, atol=atol)
    with gpuops.backend.use_cpu_launcher(gpuops.emu.launcher()):
        simt = gpuops.attention(*inputs)
    numpy.testing.assert_allclose(y.astype(numpy.float64), simt.astype(numpy.float64),
                                  rtol=rtol, atol=atol)


def test_tensor_cores_take_only_non_causal_16bit_up_to_128(tensor_core_launches):
    """Causal calls (a key hidden from one row of a tile but seen by another would enter the
    hidden row's mma as 0 · v), float32 and D > 128 take the SIMT kernels."""
    rng = numpy.random.default_rng(8)
    for shape, dtype, causal, kernel in [((1, 3, 8), numpy.float16, True, "attention_d128_f16"),
                                         ((1, 3, 8), numpy.float32, False, "attention_d128_f32"),
                                         ((1, 3, 130), numpy.float16, False,
                                          "attention_d256_f16"),
                                         ((1, 3, 8), numpy.float16, False, "attention_tc_f16"),
                                         ((1, 3, 8), gpuops.bfloat16, True,
                                          "attention_d128_bf16"),
                                         ((1, 3, 8), gpuops.bfloat16, False,
                                          "attention_tc_bf16")]:
        x = rng.standard_normal(shape).astype(dtype)
        gpuops.attention(x, x, x, causal=causal)
        assert tensor_core_launches[-1] == kernel
