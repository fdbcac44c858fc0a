"""The CPU emulator of the CUDA kernels (gpuops.emu): its primitives against NumPy, the
errors it must raise instead of hanging or computing garbage, argument checking, and
the planted-bug kernels of tests/infrastructure/emu_kernels/ that each detector must flag (the
ASan and TSan ones in a subprocess with the sanitizer runtime preloaded).

The operators' kernels themselves run under the emulator in test_ops.py (backend
``emu``); conftest.py checks that every kernel of cuda/ was launched there.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy
import pytest

emu = pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")
if emu.compiler() is None:
    pytest.skip("no g++: the emulator cannot build kernels", allow_module_level=True)

from gpuops import kernels  # noqa: E402
from gpuops.emu import sanitize  # noqa: E402

pytestmark = pytest.mark.emu
KERNELS = Path(__file__).resolve().parent / "emu_kernels"
I64, F32 = numpy.int64, numpy.float32


@pytest.fixture(scope="module")
def primitives():
    return emu.load(KERNELS / "primitives.cu")


@pytest.fixture(scope="module")
def broken():
    return emu.load(KERNELS / "broken.cu")


# ---- primitives agree with NumPy --------------------------------------------------------

def test_warp_shuffles(primitives):
    x = numpy.random.default_rng(0).integers(-8, 8, 64).astype(F32)  # exact sums
    outs = [numpy.full(64, numpy.nan, F32) for _ in range(4)]
    primitives.launch("warp_ops", (1,), (64,), (x, *outs))
    xor_sum, down_sum, scan, bcast8 = outs
    warps = x.reshape(2, 32)
    numpy.testing.assert_array_equal(xor_sum.reshape(2, 32), warps.sum(1, keepdims=True)
                                     .repeat(32, 1))
    numpy.testing.assert_array_equal(down_sum.reshape(2, 32)[:, 0], warps.sum(1))
    numpy.testing.assert_array_equal(scan.reshape(2, 32), numpy.cumsum(warps, axis=1))
    numpy.testing.assert_array_equal(bcast8, x.reshape(8, 8)[:, 3].repeat(8))


def test_votes_and_barrier_count(primitives):
    x = numpy.random.default_rng(1).standard_normal(128).astype(F32)
    ballot = numpy.zeros(128, numpy.uint32)
    count = numpy.zeros(128, numpy.int32)
    primitives.launch("votes", (2,), (64,), (x, ballot, count))
    positive = x > 0
    for w in range(4):
        bits = sum(1 << lane for lane in range(32) if positive[32 * w + lane])
        assert (ballot[32 * w:32 * w + 32] == bits).all()
    numpy.testing.assert_array_equal(count, positive.reshape(2, 64).sum(1).repeat(64))


def test_atomics(primitives):
    rng = numpy.random.default_rng(2)
    x = rng.integers(-100, 100, 1000).astype(numpy.float64)
    keys = rng.integers(-10**6, 10**6, 1000).astype(numpy.int32)
    total, top = numpy.zeros(1), numpy.full(1, -2**31, numpy.int32)
    primitives.launch("atomics", (3,), (128,), (x, total, keys, top, I64(x.size)))
    assert total[0] == x.sum() and top[0] == keys.max()


def test_dynamic_shared_memory(primitives):
    x = numpy.arange(3 * 96, dtype=F32)
    y = numpy.zeros_like(x)
    primitives.launch("reverse_blocks", (3,), (96,), (x, y), shared_mem=96 * 4)
    numpy.testing.assert_array_equal(y, x.reshape(3, 96)[:, ::-1].ravel())


def test_unwritten_shared_memory_reads_nan(primitives):
    """Static and dynamic shared memory start as NaN in every block (not the previous
    block's values, not zeros), so reads of memory nobody wrote show up."""
    from_static, from_dynamic = numpy.zeros(128, F32), numpy.zeros(128, F32)
    primitives.launch("unwritten_shared", (2,), (64,), (from_static, from_dynamic),
                      shared_mem=64 * 4)
    assert (from_static[:64] == 1).all() and numpy.isnan(from_static[64:]).all()
    assert numpy.isnan(from_dynamic).all()


def test_unwritten_template_shared_memory_reads_nan():
    """A template function's ``__shared__`` array (outside the gpuops_shared section as
    g++ compiles it, in a source with no other; gathered there by build.py's linker
    script) starts as NaN in every block too: block 1 reads what only block 0 wrote."""
    out = numpy.zeros(128, F32)
    emu.load(KERNELS / "template_shared.cu").launch("unwritten_template_shared", (2,), (64,),
                                                    (out,))
    assert (out[:64] == 1).all() and numpy.isnan(out[64:]).all()


def test_3d_grid_and_block(primitives):
    grid, block = (2, 3, 2), (4, 2, 3)
    out = numpy.full(12 * 24, -1, numpy.int32)
    primitives.launch("indices", grid, block, (out,))
    expected = numpy.array([b * 10000 + t for b in range(12) for t in range(24)])
    numpy.testing.assert_array_equal(out, expected)


def test_threads_that_return_early_leave_the_barrier(primitives):
    y = numpy.zeros(64, F32)
    primitives.launch("early_exit", (1,), (64,), (y,))
    exited = numpy.arange(64) % 3 == 0
    assert (y[exited] == 0).all() and (y[~exited] == 2).all()


def test_scalar_parameter_types(primitives):
    out = numpy.zeros(6)
    primitives.launch("scalars", (1,), (1,), (out, F32(1.5), numpy.float64(2.25), numpy.int32(-3),
                                              numpy.uint32(4), I64(2**40), numpy.float16(0.5)))
    numpy.testing.assert_array_equal(out, [1.5, 2.25, -3, 4, 2**40, 0.5])


def test_exact_intrinsics_without_fma():
    """__expf is expf and a*b+c rounds twice (-ffp-contract=off), as the issue asks."""
    module = emu.load(textwrap.dedent("""
        extern "C" __global__ void k(const float* x, float* y) {
            y[0] = __expf(x[0]);
            y[1] = x[1] * x[2] + x[3];
            y[2] = fmaf(x[1], x[2], x[3]);
        }"""), label="intrinsics")
    x = numpy.array([0.7, 1 + 2**-12, 1 + 2**-12, -(1 + 2**-11)], F32)  # a*b = 1+2^-11+2^-24
    y = numpy.zeros(3, F32)
    module.launch("k", (1,), (1,), (x, y))
    assert y[0] == numpy.exp(x[0])
    assert y[1] == (x[1] * x[2]) + x[3]  # NumPy float32: two roundings
    assert y[2] == numpy.float32(numpy.float64(x[1]) * numpy.float64(x[2]) + x[3])
    assert y[1] == 0 and y[2] == 2**-24


# ---- errors instead of hangs ----------------------------------------------------------------

def test_divergent_barrier_raises(broken):
    with pytest.raises(emu.EmuKernelError, match=r"divergent __syncthreads.*broken"):
        broken.launch("divergent_barrier", (1,), (32,), (numpy.zeros(32, F32),))


def test_shuffle_from_exited_lane_raises(broken):
    with pytest.raises(emu.EmuKernelError, match=r"reads lane (1[6-9]|2\d|3[01]), which has exited"):
        broken.launch("shuffle_from_exited_lane", (1,), (32,), (numpy.zeros(32, F32),))


def test_deadlock_raises(broken):
    with pytest.raises(emu.EmuKernelError, match=r"deadlock: every thread") as error:
        broken.launch("deadlock", (1,), (32,), (numpy.zeros(32, F32),))
    assert "16 at __syncthreads" in str(error.value)
    assert "16 at a warp operation" in str(error.value)


def test_watchdog_stops_a_spinning_kernel(broken):
    flag = numpy.zeros(1, numpy.int32)
    with pytest.raises(emu.EmuKernelError, match=r"watchdog: no progress for 0.5 s.*1 running"):
        broken.launch("spin_forever", (1,), (32,), (flag,), watchdog=0.5)
    # the emulator is still usable afterwards (the spinning thread left at its atomic)
    y = numpy.zeros(32, F32)
    emu.load(KERNELS / "primitives.cu").launch("early_exit", (1,), (32,), (y,))
    assert y[1] == 2


def test_bounds_check_on_fixed_size_arrays(broken):
    """UBSan's -fsanitize=bounds is on by default: indexing a 32-element __shared__
    array with thread 32..63 is an error."""
    with pytest.raises(emu.EmuKernelError, match=r"out-of-bounds index [3-6]\d for type "
                                                 r"'float \[32\]'.*broken"):
        broken.launch("shared_out_of_bounds", (1,), (64,), (numpy.zeros(64, F32),))


def test_device_assert_raises(broken):
    x = numpy.ones(32, F32)
    broken.launch("failing_assert", (1,), (32,), (x,))
    x[5] = -1
    with pytest.raises(emu.EmuKernelError, match=r"thread \(5,0,0\).*assertion"):
        broken.launch("failing_assert", (1,), (32,), (x,))


# ---- argument and launch checks ----------------------------------------------------------

@pytest.fixture(scope="module")
def elementwise():
    return emu.EmuLauncher(record=False).module("elementwise")


def _add_args():
    a, b, y = numpy.ones(10, F32), numpy.ones(10, F32), numpy.zeros(10, F32)
    return a, b, y


@pytest.mark.parametrize("bad,match", [
    (lambda a, b, y: (a, b, y, 10), r"argument 3 \(long long n\): expected a numpy.int64 "
                                    r"scalar \(gpuops.kernels.size\), got Python int 10"),
    (lambda a, b, y: (a, b, y, numpy.int32(10)), r"expected a numpy.int64 scalar, got "
                                                 r"numpy.int32"),
    (lambda a, b, y: (a.astype(numpy.float64), b, y, I64(10)),
     r"argument 0 \(const float\* a\): expected a float32 array, got float64 array"),
    (lambda a, b, y: (numpy.ones(20, F32)[::2], b, y, I64(10)), r"not C-contiguous"),
    (lambda a, b, y: ([1.0] * 10, b, y, I64(10)), r"expected a NumPy array, got Python list"),
    (lambda a, b, y: (a, b, y), r"3 arguments for 4 parameters of add_f32\(const float\* a"),
    (lambda a, b, y: (a, b, y, I64(10), I64(1)), r"5 arguments for 4 parameters"),
])
def test_argument_type_errors(elementwise, bad, match):
    with pytest.raises(TypeError, match=match):
        elementwise.launch("add_f32", (1,), (32,), bad(*_add_args()))


def test_float_parameter_needs_its_dtype(elementwise):
    x, y = numpy.ones(4, F32), numpy.zeros(4, F32)
    with pytest.raises(TypeError, match=r"argument 2 \(float p\): expected a numpy.float32 "
                                        r"scalar \(gpuops.kernels.scalar\), got Python float"):
        elementwise.launch("pow_f32", (1,), (32,), (x, y, 2.0, I64(4)))
    with pytest.raises(TypeError, match=r"got numpy.float64 scalar"):
        elementwise.launch("pow_f32", (1,), (32,), (x, y, numpy.float64(2), I64(4)))
    elementwise.launch("pow_f32", (1,), (32,), (x, y, F32(2), I64(4)))
    numpy.testing.assert_array_equal(y, 1)


@pytest.mark.parametrize("grid,block,shared,match", [
    ((1,), (2048,), 0, "more than 1024 threads"),
    ((0,), (32,), 0, "grid must be 1 to 3 positive ints"),
    ((1, 70000), (32,), 0, "exceeds CUDA"),
    ((1,), (32,), -1, "shared_mem must be a non-negative int"),
    ((1,), (32,), 300 * 1024, "shared_mem of 307200 bytes exceeds"),
])
def test_launch_configuration_errors(elementwise, grid, block, shared, match):
    with pytest.raises(ValueError, match=match):
        elementwise.launch("add_f32", grid, block, (*_add_args(), I64(10)), shared_mem=shared)


def test_unknown_kernel(elementwise):
    with pytest.raises(ValueError, match="no such extern"):
        elementwise.launch("nope_f32", (1,), (32,), ())


def test_launcher_protocol():
    launcher = emu.launcher()
    assert launcher.name == "emu" and launcher.tensor_cores is False
    assert emu.EmuLauncher(tensor_cores=True).tensor_cores is True
    assert 1 < launcher.max_blocks <= 8
    assert kernels.grid_1d(launcher, 10**6) == (launcher.max_blocks,)


def test_not_imported_by_gpuops():
    code = "import sys, gpuops; print('gpuops.emu' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_kernel_nvrtc_compiles_is_emulated():
    """No kernel hides from the emulator under #ifndef GPUOPS_EMU (the tensor-core GEMM's
    mma.sync is modelled in cuda_emu.h)."""
    hidden = {family: emu.gpu_only_kernel_names(family) for family in kernels.families()}
    assert not any(hidden.values()), hidden


def test_concurrent_loads_compile_once():
    """Threads asking for the same source at once get one module (one compile)."""
    from concurrent.futures import ThreadPoolExecutor
    source = 'extern "C" __global__ void k(float* y) { y[threadIdx.x] = threadIdx.x; }\n'
    with ThreadPoolExecutor(8) as pool:
        modules = list(pool.map(lambda _: emu.load(source, label="concurrent"), range(8)))
    assert all(m is modules[0] for m in modules)
    y = numpy.zeros(32, F32)
    modules[0].launch("k", (1,), (32,), (y,))
    numpy.testing.assert_array_equal(y, numpy.arange(32))


def test_compiled_once_across_processes(tmp_path):
    """A second process finds the library in the disk cache (no g++ run)."""
    code = textwrap.dedent(f"""
        import time
        from gpuops import emu
        from gpuops.emu import build
        calls = []
        real = build._run
        build._run = lambda command, *a, **k: (calls.append(command[1]), real(command, *a, **k))[1]
        emu.load({str(KERNELS / 'oob_write.cu')!r})
        print(sum(1 for c in calls if c != '-E'))
    """)
    env = {**__import__("os").environ, "GPUOPS_EMU_CACHE": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert int(first.stdout) == 2 and int(second.stdout) == 0  # runtime + kernels, then none


# ---- sanitizers (subprocess with the runtime preloaded) ---------------------------------------

def _sanitized(mode: str, code: str) -> subprocess.CompletedProcess:
    try:
        env = sanitize.environment(mode)
    except RuntimeError as error:
        pytest.skip(str(error))
    return subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=600)


OOB = textwrap.dedent(f"""
    import numpy
    from gpuops import emu
    module = emu.load({str(KERNELS / 'oob_write.cu')!r})
    y = numpy.zeros(1000, numpy.float32)
    module.launch(KERNEL, (4,), (256,), (y, numpy.int64(y.size)))
    print("finished", y.sum())
""")


def test_asan_reports_out_of_bounds_write():
    done = _sanitized("address", "KERNEL = 'oob_write'\n" + OOB)
    assert done.returncode != 0 and "finished" not in done.stdout
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in done.stderr, done.stderr[-3000:]
    assert "WRITE of size 4" in done.stderr and "oob_write" in done.stderr


def test_asan_control_kernel_is_clean():
    done = _sanitized("address", "KERNEL = 'in_bounds_write'\n" + OOB)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished 1000.0" in done.stdout and "AddressSanitizer" not in done.stderr


MATMUL = textwrap.dedent(f"""
    import numpy
    from gpuops import emu
    module = emu.load({str(KERNELS / 'tiled_matmul.cu')!r})
    rng = numpy.random.default_rng(0)
    n = 16
    a, b = (rng.standard_normal((n, n)).astype(numpy.float32) for _ in range(2))
    c = numpy.zeros((n, n), numpy.float32)
    module.launch(KERNEL, (2, 2), (8, 8), (a, b, c, numpy.int32(n)))
    print("max error", float(abs(c - a @ b).max()))
""")


def test_tsan_reports_missing_barrier_race():
    done = _sanitized("thread", "KERNEL = 'matmul_tiled_race'\n" + MATMUL)
    assert "WARNING: ThreadSanitizer: data race" in done.stderr, done.stderr[-3000:]
    assert "matmul_tiles<false>" in done.stderr and done.returncode == 66


def test_tsan_control_kernel_is_clean():
    """The correct kernel gives no report: the emulator's barriers order the threads."""
    done = _sanitized("thread", "KERNEL = 'matmul_tiled'\n" + MATMUL)
    assert "ThreadSanitizer" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 0 and float(done.stdout.split()[-1]) < 1e-4


def test_sanitizer_mode_needs_preloaded_runtime():
    code = "from gpuops import emu; emu.load('extern \"C\" __global__ void k() {}\\n')"
    env = {**__import__("os").environ, "GPUOPS_EMU_SANITIZE": "address"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "python -m gpuops.emu sanitize address" in done.stderr
