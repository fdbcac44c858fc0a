"""linear's fused backward (gpuops.ops.matmul.linear_backward, the registry's ``backward``
autograd calls): the gradients asked for, equal to the per-input functions, and on the
kernels one GEMM per gradient with act' in the GEMM's operand prologue and the bias
gradient out of the weight GEMM; an MLP training step's launches."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from benchmarks.launch_fakes import RecordingLauncher
from benchmarks.step_launches import make_step
from gpuops.ops import matmul as matmul_module
from gpuops.ops.matmul import linear_backward
from gpuops.registry import OPERATORS

RNG = numpy.random.default_rng(4)
GRADS = (gpuops.linear_wrt_x1, gpuops.linear_wrt_x2, gpuops.linear_wrt_x3)
ACTIVATIONS = [None, "relu", "sigmoid", "tanh"]
# dtype -> (rtol, atol) against float64 (K <= 12, values of order 1)
DTYPES = {"float64": (numpy.dtype(numpy.float64), 1e-12, 1e-12),
          "float32": (numpy.dtype(numpy.float32), 1e-5, 1e-5),
          "float16": (numpy.dtype(numpy.float16), 4e-3, 4e-3),
          "bfloat16": (numpy.dtype(gpuops.bfloat16), 3e-2, 3e-2)}


def _inputs(dtype, bias=True, rows=(2, 6), features=(5, 3)):
    x = RNG.standard_normal(rows + features[:1]).astype(dtype)
    w = (RNG.standard_normal(features[::-1]) / 2).astype(dtype)
    b = RNG.standard_normal(features[1]).astype(dtype) if bias else None
    return x, w, b


def _float64_grads(x, w, b, y, gy, activation):
    """The NumPy per-input gradients from the inputs widened to float64."""
    wide = [None if v is None else v.astype(numpy.float64) for v in (x, w, b, y, gy)]
    return [grad(*wide, activation=activation) if k < 2 or b is not None else None
            for k, grad in enumerate(GRADS)]


def test_registered_as_linears_fused_backward():
    assert OPERATORS["linear"].backward is linear_backward


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_gradients_equal_the_per_input_functions(backend, activation, dtype_name):
    """Every subset of the three gradients; None where not asked; each equal (bit for bit)
    to its linear_wrt_x<k>, and to the float64 gradient within the dtype's tolerance."""
    dtype, rtol, atol = DTYPES[dtype_name]
    x, w, b = _inputs(dtype)
    with backend.active():
        xb, wb, bb = backend.asarrays((x, w, b))
        y = gpuops.linear(xb, wb, bb, activation=activation)
        gy = backend.asarray(RNG.standard_normal(y.shape).astype(dtype))
        single = [grad(xb, wb, bb, y, gy, activation=activation) for grad in GRADS]
        for needs in [(True, True, True), (True, False, False), (False, True, False),
                      (False, False, True), (False, True, True), (True, False, True)]:
            fused = linear_backward(xb, wb, bb, y, gy, activation=activation, needs=needs)
            assert len(fused) == 3
            for need, f, s in zip(needs, fused, single):
                if not need:
                    assert f is None
                    continue
                assert f.dtype == s.dtype and f.shape == s.shape
                numpy.testing.assert_array_equal(backend.to_numpy(f), backend.to_numpy(s))
        y_np, gy_np = backend.to_numpy(y), backend.to_numpy(gy)
    for got, want in zip(single, _float64_grads(x, w, b, y_np, gy_np, activation)):
        numpy.testing.assert_allclose(backend.to_numpy(got).astype(numpy.float64), want,
                                      rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_strided_y_and_gy_and_no_bias(backend, activation):
    """y and gy with different layouts (a transposed view, a reversed one), no bias."""
    x, w, _ = _inputs(numpy.float64, bias=False, rows=(7,))
    with backend.active():
        xb, wb = backend.asarrays((x, w))
        y = backend.asarray(backend.to_numpy(gpuops.linear(xb, wb, activation=activation)
                                             ).T.copy()).T
        gy = backend.asarray(RNG.standard_normal(y.shape)[::-1], contiguous=False)
        assert not gy.flags.c_contiguous and not y.flags.c_contiguous
        gx1, gx2, gx3 = linear_backward(xb, wb, None, y, gy, activation=activation,
                                        needs=(True, True, False))
        y_np, gy_np = backend.to_numpy(y), backend.to_numpy(gy)
    assert gx3 is None
    want = _float64_grads(x, w, None, y_np, gy_np, activation)
    numpy.testing.assert_allclose(backend.to_numpy(gx1), want[0], rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(gx2), want[1], rtol=1e-12, atol=1e-12)


def test_rejects_a_bias_gradient_without_bias_and_bad_needs():
    x, w, _ = _inputs(numpy.float32, bias=False)
    y = gpuops.linear(x, w)
    with pytest.raises(ValueError, match="linear_wrt_x3: x3 is None"):
        linear_backward(x, w, None, y, y, needs=(False, False, True))
    with pytest.raises(ValueError, match="linear_backward: needs must hold 3 bools"):
        linear_backward(x, w, None, y, y, needs=(True, True))
    with pytest.raises(ValueError, match="linear_backward: activation must be one of"):
        linear_backward(x, w, None, y, y, activation="gelu")


@pytest.mark.emu
@pytest.mark.parametrize("tensor_cores", [False, True], ids=["simt", "tensor-cores"])
def test_split_weight_gradient_with_bias_row_sums(tensor_cores):
    """256 rows: the weight GEMM (M = out, K = rows) splits over a launcher of 8 SMs; the
    bias gradient's partial row sums go through the same fixed-order sum."""
    emu = pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")
    dtype = numpy.dtype(numpy.float16 if tensor_cores else numpy.float32)
    x, w, b = _inputs(dtype, rows=(256,), features=(6, 3))
    launcher = emu.EmuLauncher(tensor_cores=tensor_cores)
    launcher.sm_count = 8  # type: ignore[attr-defined]
    with gpuops.backend.use_cpu_launcher(launcher) as be:
        y = gpuops.linear(x, w, b, activation="sigmoid")
        gy = RNG.standard_normal(y.shape).astype(dtype)
        _, gx2, gx3 = linear_backward(x, w, b, y, gy, activation="sigmoid",
                                      needs=(False, True, True))
        assert matmul_module.plan(launcher, dtype, 3, 6, 256).splits > 1
        assert not matmul_module._tile_counters(be, 1).any()  # left zeroed
    want = _float64_grads(x, w, b, y, gy, "sigmoid")
    tol = dict(rtol=2e-2, atol=2e-2) if tensor_cores else dict(rtol=1e-5, atol=1e-5)
    numpy.testing.assert_allclose(gx2.astype(numpy.float64), want[1], **tol)
    numpy.testing.assert_allclose(gx3.astype(numpy.float64), want[2], **tol)


def test_mlp_training_step_launches():
    """The MLP of ``train`` (784-256-256-10, batch 512), one SGD step on the recording
    launcher: 3 forward GEMMs, 5 backward GEMMs (the first layer's input needs no
    gradient; each bias gradient comes out of its weight GEMM; act' in the prologue), no
    other matmul-family kernel; the whole step within the target of 12 launches."""
    step = make_step("mlp")
    launcher = RecordingLauncher()
    with gpuops.backend.use_cpu_launcher(launcher):
        step()
        launcher.launches.clear()
        step()
    kernels = [kernel for _, kernel, *_ in launcher.launches]
    matmul = [kernel for family, kernel, *_ in launcher.launches if family == "matmul"]
    assert len(matmul) == 8 and all(k.startswith("gemm") for k in matmul), matmul
    assert not any(k.startswith("reduce_cols") for k in kernels), kernels
    assert len(kernels) <= 12, kernels
