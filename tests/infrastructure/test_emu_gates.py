"""Memory-efficiency gates of the memory-bound kernels, on the emulator's counting mode
(issue 13 D; ``gpuops.emu.profile``, docs in benchmarks/README.md).

Each case calls an operator (forward, and its gradient wrt x1) in float32 at a small size
and holds every kernel it launches to:

- ``ld`` / ``st``: global sectors at most 1.1x the ideal (per request, ceil(distinct bytes
  the lanes asked for / 32)) on its loads / stores;
- ``moved``: the call's bytes moved (sectors x 32, all its launches) at most 1.25x its
  minimum bytes (float inputs read once, the result written once; a gradient: inputs, y,
  gy read, gx written);
- ``ways``: shared-memory bank-conflict ways at most 1.1 on average (loads and stores).

The optimizer steps (:data:`OPTIMIZER_CASES`: cuda/optim.cu's fused multi-tensor kernels)
are held to the same gates, their arrays registered with ``emu.profile(indirect=...)``
since the kernels reach them through a pointer table.

The exceptions are all in :data:`EXCEPTIONS`, each with its reason; an exception that a
kernel no longer needs fails the test too, so the table stays true. The report
(``python -m benchmarks --profile``) renders the same table.
"""
from __future__ import annotations

import numpy
import pytest

import gpuops
from gpuops.ops import matmul as matmul_ops
from gpuops.ops import optim

emu = pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")

SECTORS_OVER_IDEAL = 1.1
MOVED_OVER_MIN = 1.25
BANK_WAYS = 1.1

# (kernel, gate, reason): the one table of exceptions. gate: ld, st, moved, ways.
EXCEPTIONS = [
    ("layer_norm_warp8_f32", "moved", "each row's warp reads the weight and bias again "
     "(2 x cols floats per row: L1/L2 hits on a GPU); x is read once, y written once"),
    ("rms_norm_warp8_f32", "moved", "as layer_norm: the weight re-read per row"),
    ("lrn_f32", "moved", "each output reads a window of `size` channels: the re-reads are "
     "cache hits on a GPU, the footprint is the minimum"),
    ("lrn_wrt_x1_f32", "moved", "as lrn_f32: a window of channels per output"),
    ("max_pool2d_f32", "moved", "overlapping 3x3 windows re-read rows (cache hits on a GPU; "
     "the footprint is the minimum)"),
    ("max_pool2d_wrt_x1_f32", "ld", "one input per thread gathering over its windows: the "
     "argmax rescans read scalars at stride 2 (pair loads as the forward's cost 94 against 58 "
     "registers on sm_90), and y, gy per window"),
    ("max_pool2d_wrt_x1_f32", "moved", "as its ld, plus y and gy per window"),
]


def _rng():
    return numpy.random.default_rng(0)


def _f32(*shape):
    return _rng().standard_normal(shape).astype(numpy.float32)


# name -> (inputs, params): float32, sizes a multiple of 32 elements per row.
CASES = {
    "add": ((_f32(64, 256), _f32(64, 256)), {}),
    "mul": ((_f32(64, 256), _f32(64, 256)), {}),
    "exp": ((_f32(64, 256),), {}),
    "relu": ((_f32(64, 256),), {}),
    "sigmoid": ((_f32(64, 256),), {}),
    "gelu": ((_f32(64, 256),), {"approximate": "tanh"}),
    "silu": ((_f32(64, 256),), {}),
    "softmax": ((_f32(64, 256),), {}),
    "log_softmax": ((_f32(64, 256),), {}),
    "mse": ((_f32(64, 256), _f32(64, 256)), {}),
    "softmax_cross_entropy": ((_f32(64, 256), _rng().integers(0, 256, 64)), {}),
    "dropout": ((_f32(64, 256),), {"p": 0.5, "seed": 1}),
    "lrn": ((_f32(2, 16, 16, 32),), {}),
    "max_pool2d": ((_f32(2, 8, 32, 32),), {"kernel_size": 3, "stride": 2, "padding": 1}),
    "avg_pool2d": ((_f32(2, 8, 32, 32),), {"kernel_size": 2, "stride": 2}),
    "sum": ((_f32(64, 256),), {"axis": 1}),
    "transpose": ((_f32(32, 4, 64),), {"axes": (2, 1, 0)}),  # transpose_nd (tiled)
    "layer_norm": ((_f32(64, 256), _f32(256), _f32(256)), {}),
    "rms_norm": ((_f32(64, 256), _f32(256)), {}),
    "embedding": ((_rng().integers(0, 512, 64), _f32(512, 256)), {}),
}
# more launches of a case's operator: transpose's (batch, rows, cols) swap and a
# permutation that keeps the innermost axis (transpose_tiles, transpose_nd untiled); the
# row kernels' other strategies: rows of 3 (4-lane groups, 8 rows per warp) and of 2000
# (one block per row, held in registers, 16-byte loads). Not the cross-entropy's rows of 3:
# at 12 bytes a row, the label's logit (a sector per row) and the labels re-read by the
# "mean" divisor (loss.cu:178) are 3-4x the minimum bytes.
_ROW_STRATEGIES = [((_f32(256, 3),), {}), ((_f32(16, 2000),), {})]
CASES_EXTRA = {"transpose": [((_f32(8, 16, 64),), {"axes": (0, 2, 1)}),
                             ((_f32(4, 8, 2, 64),), {"axes": (2, 1, 0, 3)})],
               "softmax": _ROW_STRATEGIES, "log_softmax": _ROW_STRATEGIES,
               "softmax_cross_entropy": [((_f32(16, 2000), _rng().integers(0, 2000, 16)),
                                          {})]}


def _nbytes(*values) -> int:
    return sum(v.nbytes for v in values if isinstance(v, numpy.ndarray)
               and v.dtype.kind == "f")


def _calls(name, inputs, params):
    """(label, thunk, minimum bytes): the forward and, where it has one, the gradient wrt
    the first float input."""
    op = gpuops.OPERATORS[name]
    y = op.forward(*inputs, **params)  # NumPy backend: the gradient's y
    gy = numpy.ones_like(y)
    yield name, lambda: op.forward(*inputs, **params), _nbytes(*inputs, y)
    k = next(k for k, x in enumerate(inputs, 1) if isinstance(x, numpy.ndarray)
             and x.dtype.kind == "f")
    if k in op.grads:
        yield (f"{name}_wrt_x{k}", lambda: op.grads[k](*inputs, y, gy, **params),
               _nbytes(*inputs, y, gy, inputs[k - 1]))


def _optimizer_arrays():
    """params, grads and two state lists (zeros) of a (64, 256) and a (4096,) tensor."""
    shapes = [(64, 256), (4096,)]
    return ([_f32(*s) for s in shapes], [_f32(*s) for s in shapes],
            [numpy.zeros(s, numpy.float32) for s in shapes],
            [numpy.zeros(s, numpy.float32) for s in shapes])


# name -> (call on (params, grads, state1, state2), arrays read + written at the minimum)
OPTIMIZER_CASES = {
    "sgd_step": (lambda p, g, b, _: gpuops.sgd_step(p, g, b, lr=0.1, momentum=0.9),
                 5),  # p, g, b read; p, b written
    "adam_step": (lambda p, g, m, v: gpuops.adam_step(p, g, m, v, step=1, weight_decay=0.01),
                  7),  # p, g, m, v read; p, m, v written
    "unscale_grads": (lambda p, g, m, v: optim.unscale_grads(g, 0.5), 2),  # g read, written
    # the sum of squares reads g, the scaling reads and writes it
    "clip_grad_norm": (lambda p, g, m, v: gpuops.clip_grad_norm(g, 1e-3), 3),
}


def _optimizer_calls(name):
    step, passes = OPTIMIZER_CASES[name]
    arrays = _optimizer_arrays()
    min_bytes = passes * sum(g.nbytes for g in arrays[1])
    return [(name, lambda: step(*arrays), min_bytes)], [a for row in arrays for a in row]


def _measure(name, inputs, params):
    return _check(_calls(name, inputs, params))


def _check(calls, indirect=()):
    """{(kernel, gate): (value, limit, where)} of every gate the calls break, and the
    kernels they launched; ``indirect``: the arrays reached through a pointer table."""
    broken, launched = {}, set()
    for label, run, min_bytes in calls:
        with emu.profile(indirect=indirect) as reports:
            run()
        moved = sum(r.bytes_moved() for r in reports)
        for report in reports:
            launched.add(report.kernel)
            values = {"ld": (report.sectors_over_ideal("ld"), SECTORS_OVER_IDEAL),
                      "st": (report.sectors_over_ideal("st"), SECTORS_OVER_IDEAL),
                      "ways": (max(report.bank_conflict_ways("ld"),
                                   report.bank_conflict_ways("st")), BANK_WAYS),
                      "moved": (moved / min_bytes, MOVED_OVER_MIN)}
            for gate, (value, limit) in values.items():
                if value > limit:
                    broken[(report.kernel, gate)] = (value, limit, f"{label}: {report.worst}")
    return broken, launched


def _excepted(kernel: str, gate: str) -> bool:
    return any(kernel in names.split(", ") and g == gate for names, g, _ in EXCEPTIONS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_memory_bound_kernel_gates(name):
    from gpuops.emu import build
    if build.compiler() is None:
        pytest.skip("no C++ compiler for the emulator")
    broken, launched = _measure(name, *CASES[name])
    for extra in CASES_EXTRA.get(name, []):
        more, also = _measure(name, *extra)
        broken.update(more)
        launched |= also
    _assert_gates(broken, launched)


@pytest.mark.parametrize("name", sorted(OPTIMIZER_CASES))
def test_optimizer_step_gates(name):
    from gpuops.emu import build
    if build.compiler() is None:
        pytest.skip("no C++ compiler for the emulator")
    broken, launched = _check(*_optimizer_calls(name))
    _assert_gates(broken, launched)


def _assert_gates(broken, launched):
    failures = [f"{kernel} {gate}: {value:.2f} > {limit} ({where})"
                for (kernel, gate), (value, limit, where) in sorted(broken.items())
                if not _excepted(kernel, gate)]
    assert not failures, "\n".join(failures)
    stale = [f"{names} {gate}" for names, gate, _ in EXCEPTIONS
             for kernel in names.split(", ")
             if kernel in launched and (kernel, gate) not in broken]
    assert not stale, f"exceptions no longer needed (remove them from EXCEPTIONS): {stale}"


def _gemm_reports(run, prefix, sms, tensor_cores):
    """The counting reports of the GEMM kernels (names starting with ``prefix``) that
    ``run()`` launches on an emulator of ``sms`` SMs (gpuops.ops.matmul.plan sizes the tiles
    and K splits for them)."""
    from gpuops.emu import build
    if build.compiler() is None:
        pytest.skip("no C++ compiler for the emulator")
    launcher = emu.EmuLauncher(tensor_cores=tensor_cores, counters=True)
    launcher.sm_count = sms
    with gpuops.backend.use_cpu_launcher(launcher):
        run()
    reports = [r for r in launcher.reports if r.kernel.startswith(prefix)]
    assert reports, [r.kernel for r in launcher.reports]
    return reports


def _assert_no_bank_conflicts(name, report):
    metrics = report.metrics
    for op in ("ld", "st"):
        assert metrics[f"smsp__sass_inst_executed_op_shared_{op}.sum"] > 0, report
        conflicts = metrics[f"l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_{op}.sum"]
        assert conflicts == 0, f"{name}: {report.kernel} shared {op}: {report.worst}"


# ---- the tensor-core GEMM (issue 18): no shared-memory bank conflicts ---------------------
# gemm_tc_f16 / gemm_tc_bf16 stage every operand layout in XOR-swizzled 16-byte chunks, read
# fragments with ldmatrix and pass the accumulators through swizzled shared rows: each call
# below must show zero bank conflicts on shared loads and stores, and (its C stores
# vectorized, its operands aligned or not) global stores at the ideal sectors; global loads
# at the ideal where every operand is 16-byte aligned and contiguous along a dim.

def _tc_gemm_cases():
    rng = _rng()

    def h(dtype, *shape):
        return rng.standard_normal(shape).astype(dtype)

    cases = {}
    for dtype in (numpy.float16, numpy.dtype(gpuops.bfloat16)):
        tag = "f16" if dtype == numpy.float16 else "bf16"
        a, b = h(dtype, 64, 64), h(dtype, 64, 48)
        x, w, bias, gy = h(dtype, 64, 64), h(dtype, 48, 64), h(dtype, 48), h(dtype, 64, 48)
        y = gpuops.linear(x, w, bias, activation="relu")  # NumPy: the saved output
        x_odd, w_odd = h(dtype, 64, 36), h(dtype, 48, 36)
        cases[f"matmul {tag}"] = (lambda a=a, b=b: gpuops.matmul(a, b), True, 1)
        cases[f"matmul transposed {tag}"] = (
            lambda a=a, b=b: gpuops.matmul(numpy.asfortranarray(a), numpy.asfortranarray(b)),
            True, 1)
        cases[f"linear bias relu {tag}"] = (
            lambda x=x, w=w, bias=bias: gpuops.linear(x, w, bias, activation="relu"), True, 1)
        cases[f"linear backward relu {tag}"] = (  # prologue, row sums, m-contiguous gᵀ
            lambda x=x, w=w, bias=bias, y=y, gy=gy: matmul_ops.linear_backward(
                x, w, bias, y, gy, activation="relu"), True, 1)
        cases[f"linear K=36 {tag}"] = (  # the register path's scalar loads
            lambda x=x_odd, w=w_odd: gpuops.linear(x, w), False, 1)
        a_long, b_long = h(dtype, 64, 256), h(dtype, 256, 48)
        cases[f"matmul split {tag}"] = (  # partial tiles through the workspace
            lambda a=a_long, b=b_long: gpuops.matmul(a, b), True, 8)
    x, w, bias = (v.astype(numpy.float32) for v in (x, w, bias))

    def tf32_linear(x=x, w=w, bias=bias):  # gemm_tc_f32 (set_matmul_precision("high"))
        gpuops.set_matmul_precision("high")
        try:
            gpuops.linear(x, w, bias, activation="relu")
        finally:
            gpuops.set_matmul_precision("highest")

    cases["linear bias relu f32 (TF32)"] = (tf32_linear, True, 1)
    return cases


TC_GEMM_CASES = _tc_gemm_cases()


@pytest.mark.parametrize("name", sorted(TC_GEMM_CASES))
def test_tensor_core_gemm_gates(name):
    run, aligned, sms = TC_GEMM_CASES[name]
    reports = _gemm_reports(run, "gemm_tc_", sms, tensor_cores=True)
    assert (reports[0].grid[2] > 1) == (sms > 1), reports[0].grid  # split over blockIdx.z
    for report in reports:
        _assert_no_bank_conflicts(name, report)
        assert report.sectors_over_ideal("st") <= SECTORS_OVER_IDEAL, (name, report.worst)
        if aligned:
            assert report.sectors_over_ideal("ld") <= SECTORS_OVER_IDEAL, (name, report.worst)


# ---- the SIMT GEMM (issue 18): no shared-memory bank conflicts ---------------------------
# gemm_f32, gemm_small_f32, gemm_tiny_f32, gemm_f64 (and the 16-bit fallbacks gemm_f16,
# gemm_bf16) stage an operand that is contiguous along m (n) with one vector store per group
# of consecutive words, and along k with scalar stores that fall on distinct banks; each thread reads its rows and columns as vectors of
# consecutive groups across the lanes, and stores C (or its split partials) a vector per
# group: zero bank conflicts on shared loads and stores in every layout, and global stores at
# the ideal sectors where C's rows are aligned to a group (n a multiple of 4 floats, 2
# doubles, 4 halves).

def _simt_gemm_cases():
    rng = _rng()

    def r(dtype, *shape):
        return rng.standard_normal(shape).astype(dtype)

    def linear_cases(tag, dtype):
        x, w, bias, gy = r(dtype, 96, 64), r(dtype, 80, 64), r(dtype, 80), r(dtype, 96, 80)
        y = gpuops.linear(x, w, bias, activation="tanh")  # NumPy: the saved output
        return {
            f"linear bias tanh {tag}": lambda: gpuops.linear(x, w, bias, activation="tanh"),
            f"linear_wrt_x2 tanh {tag}": lambda: matmul_ops.linear_wrt_x2(
                x, w, bias, y, gy, activation="tanh"),
            f"linear backward tanh {tag}": lambda: matmul_ops.linear_backward(  # row sums
                x, w, bias, y, gy, activation="tanh"),
        }

    # name -> (run, kernel, SMs of the launcher, C rows 16-byte aligned, grid z: batches x
    # K splits)
    cases = {}
    for dtype, tag, kernel in ((numpy.float32, "f32", "gemm_f32"),
                               (numpy.float64, "f64", "gemm_f64")):
        a, b = r(dtype, 128, 64), r(dtype, 64, 128)
        a_long, b_long = r(dtype, 64, 512), r(dtype, 512, 72)
        a_odd, b_odd = r(dtype, 37, 300), r(dtype, 300, 29)
        splits = 8 if dtype == numpy.float32 else 4  # plan: 128x128 (64x64) tiles on 8 SMs
        cases[f"matmul {tag}"] = (lambda a=a, b=b: gpuops.matmul(a, b), kernel, 1, True, 1)
        cases[f"matmul transposed {tag}"] = (  # both operands staged along m / n
            lambda a=a, b=b: gpuops.matmul(numpy.asfortranarray(a), numpy.asfortranarray(b)),
            kernel, 1, True, 1)
        cases[f"matmul batched {tag}"] = (
            lambda a=r(dtype, 2, 64, 32), b=r(dtype, 32, 64): gpuops.matmul(a, b),
            kernel, 1, True, 2)
        cases.update({name: (run, kernel, 1, True, 1)
                      for name, run in linear_cases(tag, dtype).items()})
        cases[f"matmul split {tag}"] = (  # partial tiles through the workspace
            lambda a=a_long, b=b_long: gpuops.matmul(a, b), kernel, 8, True, splits)
        cases[f"matmul odd split {tag}"] = (  # n = 29: scalar stores, still no conflicts
            lambda a=a_odd, b=b_odd: gpuops.matmul(a, b), None, 8, False, 4)
    f32 = numpy.float32
    cases["matmul small f32"] = (lambda a=r(f32, 96, 64), b=r(f32, 64, 96): gpuops.matmul(a, b),
                                 "gemm_small_f32", 132, True, 1)
    cases["matmul small transposed f32"] = (
        lambda a=r(f32, 64, 96).T, b=r(f32, 96, 64).T: gpuops.matmul(a, b),
        "gemm_small_f32", 132, True, 1)
    cases["matmul tiny f32"] = (lambda a=r(f32, 64, 64), b=r(f32, 64, 64): gpuops.matmul(a, b),
                                "gemm_tiny_f32", 132, True, 1)
    cases["matmul tiny transposed f32"] = (
        lambda a=r(f32, 64, 64).T, b=r(f32, 64, 64).T: gpuops.matmul(a, b),
        "gemm_tiny_f32", 132, True, 1)
    for dtype, tag in ((numpy.float16, "f16"), (numpy.dtype(gpuops.bfloat16), "bf16")):
        kernel = f"gemm_{tag}"  # the SIMT fallback (a launcher without tensor cores)
        cases[f"matmul {tag}"] = (lambda a=r(dtype, 128, 64), b=r(dtype, 64, 128):
                                  gpuops.matmul(a, b), kernel, 1, True, 1)
        cases.update({name: (run, kernel, 1, True, 1)
                      for name, run in linear_cases(tag, dtype).items()
                      if name.startswith("linear backward")})
    return cases


SIMT_GEMM_CASES = _simt_gemm_cases()


@pytest.mark.parametrize("name", sorted(SIMT_GEMM_CASES))
def test_simt_gemm_gates(name):
    run, kernel, sms, aligned, z_blocks = SIMT_GEMM_CASES[name]
    reports = _gemm_reports(run, "gemm_", sms, tensor_cores=False)
    for report in reports:
        if kernel is not None:
            assert report.kernel == kernel, (name, report.kernel)
        assert report.grid[2] == z_blocks, (name, report.grid)  # blockIdx.z: batch x split
        _assert_no_bank_conflicts(name, report)
        if aligned:
            assert report.sectors_over_ideal("st") <= SECTORS_OVER_IDEAL, (name, report.worst)
