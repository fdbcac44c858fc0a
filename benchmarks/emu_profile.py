"""``python -m benchmarks --profile [--family F ...]`` (or ``python -m benchmarks.emu_profile``):
every benchmark case, at a small size, on the emulator's counting mode (issue 13 C;
``gpuops.emu.profile``); then every kernel of ``cuda/`` no case launched, on the smallest
test-record samples (``tests/records``) that launch it, then on the gates' calls; then the
driver's own calls (:func:`driver_cases`): the optimizer steps (their pointer-table arrays
registered with ``emu.profile(indirect=...)``) and the row widths and head sizes that no
case, sample or gate call selects, so that every kernel base name of ``cuda/`` is profiled.

Writes ``benchmarks/results/emu-profile.json`` and ``.md``: one row per kernel launch with
the sectors per request of its global loads and stores, the bank-conflict ways of its
shared loads and stores, bytes moved (sectors x 32) and the distinct footprint, the
worst source line, ptxas' registers and static shared memory (NVRTC, sm_90, when
installed) with the occupancy they allow at the launch's block size and its limiter;
per case, the bytes moved over the case's minimum bytes and a roofline prediction for an
H200: the minimum traffic, and the modelled traffic, at the measured 4.3 TB/s
device-to-device copy rate. The report also renders the gates' exception table
(tests/infrastructure/test_emu_gates.py) and the before/after figures of the fixes.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import pkgutil
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy

import gpuops
from gpuops import backend, emu, kernels
from gpuops.emu import build, counters, occupancy, signatures
from gpuops.ops import optim

from . import harness


HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
H200_COPY_BYTES_PER_S = 4.3e12  # measured device-to-device copy (bytes read + written)
SIZE = 1 << 17  # elements of a "large" operand: NCHW cases need 128 x 1024
H200_SMS = 132
# cuda/optim.cu's multi-tensor kernels reach their arrays through a pointer table, not
# passed as arguments: the counters attribute those accesses to global memory only when
# the arrays are registered (emu.profile(indirect=...)), so a benchmark case that launches
# them without (it has no handle on its arrays) is marked incomplete.
POINTER_TABLE_FAMILY = "optim"
NOT_PROFILED = ("overhead",)  # Python time per call of tiny operators, 1000s of launches


def family_modules() -> dict[str, str]:
    """benchmark family name -> module name, for every ``bench_<family>.py`` here."""
    return {info.name[len("bench_"):]: f"{__package__}.{info.name}"
            for info in pkgutil.iter_modules([str(HERE)]) if info.name.startswith("bench_")}


def _load(path: Path) -> Any:
    """A module of the tests (not a package) by path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gates() -> Any:
    return _load(TESTS / "infrastructure" / "test_emu_gates.py")


def gate_exceptions() -> list[tuple[str, str, str]]:
    """The gates' one exception table: (kernel, gate, reason)."""
    return list(_gates().EXCEPTIONS)


def gate_cases(missing: set[str], nvrtc: Any) -> list[dict[str, Any]]:
    """Kernels of ``missing`` (base names) that the gates' calls (64x256 rows and the
    like, tests/infrastructure/test_emu_gates.py) launch, one row each."""
    gates, results, left = _gates(), [], set(missing)
    for name, (inputs, params) in gates.CASES.items():
        for label, run, min_bytes in gates._calls(name, inputs, params):
            result = _profile(gpuops.OPERATORS[name].family, f"gate {label}", run, min_bytes,
                              nvrtc)
            new = {_base(k["kernel"]) for k in result.get("kernels", [])} & left
            if new:
                result["kernels"] = [k for k in result["kernels"] if _base(k["kernel"]) in new]
                results.append(result)
                _print(result)
                left -= new
    return results


# The driver's own calls, for the kernels no benchmark case, test-record sample or gate call
# launches: operator (or optimizer step), a label, inputs and params; float32 unless said.
# Row kernels pick their width from the row length (gpuops/ops/_rows.py: warp<E> for
# cols <= 32 E, E <= 32 (16 in float64), else a block per row); attention's d256 kernels
# take 128 < D <= 256, in 16 bits only.
ROW_CASES = [("layer_norm", (2, 400)), ("layer_norm", (2, 1100)), ("rms_norm", (2, 400)),
             ("rms_norm", (2, 700)), ("rms_norm", (2, 1100))]
# Autograd's fused cross-entropy (the operator's forward_saving: loss and gradient in one
# launch, softmax_cross_entropy_with_grad_{lanes<W>,warp<E>,block}; its backward: the saved
# gradient times gy, softmax_cross_entropy_scale_grad), which the forward / gradient calls
# above do not take: rows of these lengths select W = 2 ... 16, E = 1 ... 32 and the block
# kernel.
FUSED_CROSS_ENTROPY_COLS = (2, 3, 8, 16, 20, 50, 100, 200, 400, 700, 1100)
OPTIMIZER_SHAPES = [(64, 64), (1000,)]


def _optimizer_calls() -> list[tuple[str, Any, int, list]]:
    """(label, thunk, minimum bytes, the arrays its kernels reach through the pointer
    table) of each fused optimizer launch: SGD with momentum and Adam in float32 and with
    float32 masters of float16 / bfloat16 parameters, loss-scale unscaling and gradient
    clipping. Minimum bytes: every array the step reads once and writes once."""
    rng = numpy.random.default_rng(0)

    def arrays(dtype: Any) -> list[numpy.ndarray]:
        return [rng.standard_normal(s).astype(dtype) for s in OPTIMIZER_SHAPES]

    def zeros() -> list[numpy.ndarray]:
        return [numpy.zeros(s, numpy.float32) for s in OPTIMIZER_SHAPES]

    def size(*rows: list[numpy.ndarray]) -> int:
        return sum(a.nbytes for row in rows for a in row)

    p, g, b, m, v = arrays(numpy.float32), arrays(numpy.float32), zeros(), zeros(), zeros()
    half = {name: (arrays(dtype), arrays(dtype), zeros(), zeros(), zeros())
            for name, dtype in (("float16", numpy.float16), ("bfloat16", gpuops.bfloat16))}
    calls = [
        ("sgd_step momentum=0.9 float32",
         lambda: gpuops.sgd_step(p, g, b, lr=0.1, momentum=0.9),
         2 * size(p, b) + size(g), [*p, *g, *b]),
        ("adam_step float32", lambda: gpuops.adam_step(p, g, m, v, step=1),
         2 * size(p, m, v) + size(g), [*p, *g, *m, *v]),
        ("unscale_grads float32", lambda: optim.unscale_grads(g, 0.5), 2 * size(g), g),
        ("clip_grad_norm float32", lambda: gpuops.clip_grad_norm(g, 1e-3), 3 * size(g), g),
    ]
    for dtype, (p16, g16, master, s1, s2) in half.items():
        for master_row, copy in zip(master, p16):
            master_row[...] = copy.astype(numpy.float32)
        step = "sgd_step" if dtype == "float16" else "adam_step"
        if step == "sgd_step":
            run = (lambda p16=p16, g16=g16, s1=s1, master=master: gpuops.sgd_step(
                p16, g16, s1, lr=0.1, momentum=0.9, master_params=master))
            state = [s1]
        else:
            run = (lambda p16=p16, g16=g16, s1=s1, s2=s2, master=master: gpuops.adam_step(
                p16, g16, s1, s2, step=1, master_params=master))
            state = [s1, s2]
        calls.append((f"{step} master_params float32, {dtype} params", run,
                      2 * size(master, *state) + size(g16, p16),
                      [a for row in (p16, g16, master, *state) for a in row]))
    return calls


def driver_cases(nvrtc: Any) -> list[dict[str, Any]]:
    """The optimizer steps (:func:`_optimizer_calls`), the row widths of :data:`ROW_CASES`,
    autograd's fused cross-entropy (:data:`FUSED_CROSS_ENTROPY_COLS`), matmul's smaller GEMM
    tiles (planned for :data:`H200_SMS` SMs), the tensor-core GEMM (float16, bfloat16, TF32)
    and attention with D = 136 in float16: every kernel they launch, one row each."""
    results = []
    for label, run, min_bytes, indirect in _optimizer_calls():
        results.append(_profile(POINTER_TABLE_FAMILY, f"driver {label}", run, min_bytes,
                                nvrtc, indirect=indirect))
        _print(results[-1])
    rng = numpy.random.default_rng(0)
    calls = []
    for name, shape in ROW_CASES:
        cols = shape[-1]
        inputs = (rng.standard_normal(shape).astype(numpy.float32),
                  *[rng.standard_normal(cols).astype(numpy.float32)
                    for _ in range(2 if name == "layer_norm" else 1)])
        calls += [(gpuops.OPERATORS[name].family, f"{what} {'x'.join(map(str, shape))} float32",
                   run, min_bytes)
                  for what, run, min_bytes in _calls(name, gpuops.OPERATORS[name], inputs, {})]
    cross_entropy = gpuops.OPERATORS["softmax_cross_entropy"]
    for cols in FUSED_CROSS_ENTROPY_COLS:
        x = rng.standard_normal((4, cols)).astype(numpy.float32)
        labels = rng.integers(0, cols, 4)
        y, saved = cross_entropy.forward_saving(x, labels)
        gy = numpy.ones_like(y)
        calls += [("loss", f"softmax_cross_entropy forward_saving 4x{cols} float32",
                   lambda x=x, labels=labels: cross_entropy.forward_saving(x, labels),
                   2 * x.nbytes + y.nbytes),  # x read; the gradient and the loss written
                  ("loss", f"softmax_cross_entropy backward (saved) 4x{cols} float32",
                   lambda x=x, labels=labels, y=y, gy=gy, saved=saved: cross_entropy.backward(
                       x, labels, y, gy, needs=(True, False), saved=saved),
                   2 * saved.nbytes + gy.nbytes)]  # the saved gradient read, gx written
    # The GEMM planner (gpuops/ops/matmul.py) takes the 64x64 and 32x32 tiles when the
    # 128x128 ones leave a GPU's SMs idle: sized for an H200's 132 SMs, (96, 64) @ (64, 96)
    # runs gemm_small, (64, 64) @ (64, 64) gemm_tiny.
    for m, k, n in ((96, 64, 96), (64, 64, 64)):
        a, b = (rng.standard_normal(shape).astype(numpy.float32) for shape in ((m, k), (k, n)))
        calls += [("matmul", f"{what} {m}x{k} @ {k}x{n} float32, 132 SMs", run, min_bytes,
                   {"sm_count": H200_SMS})
                  for what, run, min_bytes in _calls("matmul", gpuops.OPERATORS["matmul"],
                                                     (a, b), {})[:1]]
    # The tensor-core GEMM (a GPU from sm_80 on): matmul and linear's backward layouts in
    # float16 and bfloat16, and linear's forward in TF32 (set_matmul_precision("high")).
    for dtype in (numpy.float16, gpuops.bfloat16):
        a, b = (rng.standard_normal(shape).astype(dtype) for shape in ((64, 48), (48, 64)))
        name = numpy.dtype(dtype).name
        calls += [("matmul", f"{what} 64x48 @ 48x64 {name}, tensor cores", run, min_bytes,
                   {"tensor_cores": True})
                  for what, run, min_bytes in _calls("matmul", gpuops.OPERATORS["matmul"],
                                                     (a, b), {})]
    x, w = (rng.standard_normal(shape).astype(numpy.float32) for shape in ((64, 48), (64, 48)))

    def tf32_linear(x: Any = x, w: Any = w) -> Any:
        previous = gpuops.get_matmul_precision()
        gpuops.set_matmul_precision("high")
        try:
            return gpuops.linear(x, w)
        finally:
            gpuops.set_matmul_precision(previous)

    calls.append(("matmul", "linear 64x48 @ (64x48)ᵀ float32, TF32 (precision 'high')",
                  tf32_linear, x.nbytes + w.nbytes + 64 * 64 * 4, {"tensor_cores": True}))
    qkv = tuple(rng.standard_normal(shape).astype(numpy.float16)
                for shape in ((1, 5, 136), (1, 6, 136), (1, 6, 8)))
    calls += [("attention", f"{what} q 1x5x136, k 1x6x136, v 1x6x8 float16", run, min_bytes)
              for what, run, min_bytes in _calls("attention", gpuops.OPERATORS["attention"],
                                                 qkv, {})]
    for family, label, run, min_bytes, *options in calls:
        results.append(_profile(family, f"driver {label}", run, min_bytes, nvrtc,
                                **(options[0] if options else {})))
        _print(results[-1])
    return results


# The fixes of issue 13 D: (case, kernel, change, figures before, as the report of b7886f6
# (git f6d0d7f) gave them). The report adds the same figures of this run.
FIXES = [
    ("dropout p=0.5", "dropout_f32", "thread j moves its group of 4 as one 128-bit vector "
     "(was 4 scalar accesses 16 bytes apart per lane)",
     {"sec/req ld": 24.58, "sec/req st": 16.00, "ld x ideal": 6.15, "st x ideal": 4.00,
      "moved / min": 3.82}),
    ("transpose axes=(3,1,0,2)", "transpose_nd_f32", "when the innermost axis moves, 32x33 "
     "shared-memory tiles over (the output dim of x's unit-stride axis, the output dims "
     "after it flattened) (was one thread per output element reading through permuted "
     "strides)",
     {"sec/req ld": 32.00, "sec/req st": 4.00, "ld x ideal": 8.00, "st x ideal": 1.00,
      "moved / min": 4.50}),
]


def inventory() -> dict[str, str]:
    """Every kernel of ``cuda/`` (each dtype instance) -> its family."""
    found = {}
    for family in kernels.families():
        for name in signatures.kernels(build.preprocess(kernels.source(family))):
            found[name] = family
    return found


def _ptxas_usage() -> Any:
    """tests/support/nvrtc.py, when it and NVRTC are there (else None)."""
    sys.path.insert(0, str(HERE.parent / "tests" / "support"))
    try:
        import nvrtc  # type: ignore[import-not-found]
        nvrtc.library()
    except Exception:  # noqa: BLE001 - any reason: occupancy is left out
        return None
    return nvrtc


_usage_cache: dict[str, dict[str, Any]] = {}


def usage(nvrtc: Any, family: str) -> dict[str, Any]:
    """ptxas' per-kernel usage of ``cuda/<family>.cu`` on sm_90."""
    if nvrtc is None:
        return {}
    if family not in _usage_cache:
        result = nvrtc.compile_cubin(kernels.source(family),
                                     [*kernels.NVRTC_OPTIONS, "--gpu-architecture=sm_90",
                                      nvrtc.VERBOSE], f"{family}.cu")
        _usage_cache[family] = nvrtc.parse_ptxas(result.log) if result.ok else {}
    return _usage_cache[family]


def row(family: str, case: str, launches: list[emu.LaunchReport], nvrtc: Any) -> dict[str, Any]:
    """The launches of one kernel (same block and shared memory) in a case, summed."""
    report = counters.merge(launches)
    out = {"family": family, "case": case, "launches": len(launches), **report.as_dict()}
    kernel_usage = usage(nvrtc, report.label).get(report.kernel)
    if kernel_usage is not None:
        threads = report.block[0] * report.block[1] * report.block[2]
        occ = occupancy.from_usage(kernel_usage, threads, report.shared_mem)
        out.update(registers=kernel_usage.registers, static_shared=kernel_usage.shared_bytes,
                   occupancy_blocks=occ.blocks, occupancy_warps=occ.warps,
                   occupancy=occ.fraction, occupancy_limiter="+".join(occ.limiters))
    return out


def profile_case(family: str, case: harness.Case, nvrtc: Any) -> dict[str, Any]:
    return _profile(family, case.name, lambda: case.run(*case.inputs), case.bytes, nvrtc)


def _profile(family: str, name: str, run: Any, min_bytes: int, nvrtc: Any,
             tensor_cores: bool = False, indirect: Any = (), sm_count: int = 0
             ) -> dict[str, Any]:
    """``run`` on the counting emulator (``emu.profile``'s launcher; ``sm_count``: the SMs
    the GEMM planner sizes its tiles for, else the launcher's default)."""
    started = time.perf_counter()
    launcher = emu.EmuLauncher(record=False, tensor_cores=tensor_cores, counters=True,
                               indirect=indirect)
    if sm_count:
        launcher.sm_count = sm_count  # read by gpuops.ops.matmul.sm_count
    reports = launcher.reports
    try:
        with backend.use_cpu_launcher(launcher):
            run()
    except (emu.CounterOverflow, emu.EmuBuildError, emu.EmuKernelError) as error:
        reason = str(error).splitlines()[0]
        return {"family": family, "case": name, "skipped": reason}
    except (TypeError, ValueError) as error:  # e.g. a dtype the family has no kernels for
        reason = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        return {"family": family, "case": name, "skipped": reason}
    moved = sum(r.bytes_moved() for r in reports)
    ratio = moved / min_bytes if min_bytes else None
    return {"family": family, "case": name, "min_bytes": min_bytes, "bytes_moved": moved,
            "moved_over_min": ratio,
            "incomplete": not indirect and any(r.label == POINTER_TABLE_FAMILY
                                               for r in reports),
            "h200_min_us": 1e6 * min_bytes / H200_COPY_BYTES_PER_S,
            "h200_modelled_us": 1e6 * moved / H200_COPY_BYTES_PER_S,
            "emulator_s": time.perf_counter() - started,
            "kernels": [row(family, name, group, nvrtc) for group in _by_kernel(reports)]}


def _records() -> list[Any]:
    """The tests' OpInfo records (tests/records, with tests/support on the path)."""
    for folder in (TESTS / "support", TESTS):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    return list(importlib.import_module("records").RECORDS)


def _nbytes(values: Any) -> int:
    return sum(v.nbytes for v in values if isinstance(v, numpy.ndarray))


def _base(kernel: str) -> str:
    return kernel.rsplit("_", 1)[0]


def record_cases(missing: set[str], nvrtc: Any) -> list[dict[str, Any]]:
    """Kernels of ``missing`` (base names: no dtype instance profiled yet) profiled on
    test-record samples: for each, the smallest sample (float inputs of 8 elements or more
    where there is one; forward, or a gradient) of a record of its family that launches
    it, in float32, or in float16 for a kernel without a float32 instance (with the
    tensor-core path on). The minimum bytes of
    such a case: its float inputs read once, its result written once."""
    results = []
    by_family: dict[str, list[Any]] = {}
    for record in _records():
        by_family.setdefault(gpuops.OPERATORS[record.name].family, []).append(record)
    table = inventory()
    family_of = {_base(name): kernel_family for name, kernel_family in table.items()}
    left = set(missing)
    for family in sorted({table[name] for name in table if _base(name) in missing}):
        for record in by_family.get(family, []):
            samples = sorted(record.samples(numpy.random.default_rng(0)), key=_sample_size)
            dtypes = [d for d in (numpy.float32, numpy.float16)
                      if any(numpy.dtype(k) == d for k in record.kernel_dtypes())]
            for dtype in dtypes:
                for sample in samples:
                    # other dtypes only for the kernels without a float32 instance
                    wanted = {base for base in left if family_of[base] == family and (
                        f"{base}_f32" not in table or numpy.dtype(dtype) == numpy.float32)}
                    if not any(kernels.kernel_name(base, dtype) in table for base in wanted):
                        break
                    inputs = record.cast(sample.inputs, dtype)
                    for what, run, min_bytes in _calls(record.name, record.op, inputs,
                                                       sample.params):
                        result = _profile(family, f"record {what} {sample_name(sample)} "
                                          f"{numpy.dtype(dtype).name}", run, min_bytes, nvrtc,
                                          tensor_cores=numpy.dtype(dtype).itemsize == 2)
                        new = ({_base(k["kernel"]) for k in result.get("kernels", [])}
                               & wanted & left)
                        if new:
                            result["kernels"] = [k for k in result["kernels"]
                                                 if _base(k["kernel"]) in new]
                            results.append(result)
                            _print(result)
                            left -= new
    return results


def _sample_size(sample: Any) -> tuple[bool, int]:
    floats = [x.size for x in sample.inputs
              if isinstance(x, numpy.ndarray) and x.dtype.kind == "f"]
    return min(floats, default=8) < 8, _nbytes(sample.inputs)


def sample_name(sample: Any) -> str:
    if sample.name:
        return sample.name
    return "-".join("x".join(map(str, numpy.shape(x))) or "scalar" for x in sample.inputs)


def _calls(name: str, op: Any, inputs: tuple, params: dict) -> list[tuple[str, Any, int]]:
    """(name, thunk, minimum bytes) of the operator's forward and each of its gradients."""
    y = op.forward(*inputs, **params)  # on the CPU: the gradients' y
    gy = numpy.ones_like(y)
    calls = [(name, lambda: op.forward(*inputs, **params), _nbytes(inputs) + y.nbytes)]
    for k, grad in sorted(op.grads.items()):
        gx_bytes = inputs[k - 1].nbytes if isinstance(inputs[k - 1], numpy.ndarray) else 0
        calls.append((f"{name}_wrt_x{k}",
                      lambda grad=grad: grad(*inputs, y, gy, **params),
                      _nbytes(inputs) + y.nbytes + gy.nbytes + gx_bytes))
    return calls


def _by_kernel(reports: list[emu.LaunchReport]) -> list[list[emu.LaunchReport]]:
    groups: dict[tuple, list[emu.LaunchReport]] = {}
    for report in reports:
        groups.setdefault((report.label, report.kernel, report.block, report.shared_mem),
                          []).append(report)
    return list(groups.values())


def _git(args: list[str]) -> str:
    done = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def _fmt(value: float | None, empty: str = "-") -> str:
    return f"{value:.2f}" if value else empty


def _kernel_cells(launch: dict[str, Any]) -> str:
    block = "x".join(str(d) for d in launch["block"] if d > 1) or "1"
    return (f"{launch['kernel']}{' x' + str(launch['launches']) if launch['launches'] > 1 else ''}"
            f" | {block} | {launch['sectors_per_request_ld']:.2f} | "
            f"{launch['sectors_per_request_st']:.2f} | {_fmt(launch['sectors_over_ideal_ld'])} | "
            f"{_fmt(launch['sectors_over_ideal_st'])} | {_fmt(launch['bank_conflict_ways_ld'])} | "
            f"{_fmt(launch['bank_conflict_ways_st'])}")


def _table(cases: list[dict[str, Any]]) -> list[str]:
    lines = ["| family | case | kernel | block | sec/req ld | sec/req st | ld x ideal | "
             "st x ideal | ways ld | ways st | moved / min | occupancy | H200 min / "
             "modelled us | worst line |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in cases:
        if "skipped" in case:
            lines.append(f"| {case['family']} | {case['case']} | skipped: {case['skipped']} "
                         f"|||||||||||")
            continue
        ratio = _fmt(case["moved_over_min"])
        if case["incomplete"]:
            ratio += " (incomplete: pointer-table arrays not registered, not counted)"
        elif case["case"].startswith("record ") and (case["moved_over_min"] or 1) < 1:
            ratio += " (below the nominal minimum: an input it does not read)"
        roof = f"{case['h200_min_us']:.3g} / {case['h200_modelled_us']:.3g}"
        for i, launch in enumerate(case["kernels"]):
            occ = (f"{launch['occupancy']:.0%} ({launch['occupancy_limiter']})"
                   if "occupancy" in launch else "-")
            worst = (launch["worst"] or "").split(" ", 1)[0]
            lines.append(
                f"| {case['family']} | {case['case'] if i == 0 else ''} | "
                f"{_kernel_cells(launch)} | {ratio if i == 0 else ''} | {occ} | "
                f"{roof if i == 0 else ''} | {worst} |")
    return lines


def _find(cases: list[dict[str, Any]], case_name: str, kernel: str) -> tuple[dict, dict] | None:
    for case in cases:
        for launch in case.get("kernels", []):
            if case["case"] == case_name and launch["kernel"] == kernel:
                return case, launch
    return None


def markdown(cases: list[dict[str, Any]], records: list[dict[str, Any]],
             driver: list[dict[str, Any]], coverage: dict[str, Any],
             meta: dict[str, Any]) -> str:
    lines = ["# Emulator memory profile (counting mode)", "",
             f"{meta['date']}; {meta['size']} elements per large operand (quick shapes); "
             f"H200 roofline at {H200_COPY_BYTES_PER_S / 1e12:.1f} TB/s; occupancy "
             f"{'from NVRTC sm_90' if meta['nvrtc'] else 'not computed (no NVRTC)'}; "
             f"git {meta['git']}{' with uncommitted changes' if meta['uncommitted_changes'] else ''}. "
             "Made by `python -m benchmarks --profile` (docs: benchmarks/README.md).",
             "",
             "sec/req: global sectors per request (ideal: 4 for 4-byte, 8 for 8-byte, 16 for "
             "16-byte lanes, coalesced). x ideal: sectors over the ideal sectors (per request "
             "ceil(distinct bytes asked / 32); 1.00 = coalesced at any width). ways: shared "
             "wavefronts per phase (1 = no conflict, '-' = no shared access). moved / min: "
             "global sectors x 32 over the case's minimum bytes; sectors are requests to L1, "
             "re-reads included, which a cache may serve, so this bounds the DRAM traffic from "
             "above (the JSON also has each kernel's distinct footprint). H200 min / modelled: "
             "the minimum bytes and the moved bytes at the measured 4.3 TB/s copy rate. "
             "occupancy: resident warps per SM on sm_90 at the launch's block size (ptxas "
             "registers and shared memory) and the binding limit.", "",
             "## Benchmark cases", "",
             "A case skipped (more accesses than the counters keep) has its kernels "
             "profiled in another case or below (see the coverage).", "", *_table(cases), "",
             "## Kernels no benchmark case launches", "",
             "On the smallest test-record sample that launches each (`record ...`), then on "
             "the gates' calls (`gate ...`). moved / min here: over the call's float inputs "
             "read once and result written once (a gradient: inputs, y, gy and gx), a nominal "
             "minimum.", "", *_table(records), "",
             "## The driver's own calls", "",
             "For the kernels the above leave out (benchmarks/emu_profile.py, "
             "`driver_cases`): the fused optimizer steps, whose kernels reach the "
             "parameters, gradients and states through a pointer table (registered with "
             "`emu.profile(indirect=...)`, so they count as global memory; moved / min over "
             "every array the step reads once and writes once), and the row widths and the "
             "attention head size (D = 136: the 16-bit d256 kernels) no case, sample or gate "
             "call selects (moved / min nominal, as above).", "", *_table(driver), "",
             "## Coverage of cuda/", "",
             f"Base names profiled: {coverage['bases_profiled']}/{coverage['bases']} (a "
             f"base name is a kernel's name without the dtype). {coverage['kernels']} "
             f"kernels (dtype instances) in cuda/; {coverage['profiled']} instances "
             f"profiled above. The other dtype instances of a profiled base share its "
             "source (the body is one template or macro; the 16-bit ones load 2-byte "
             "lanes)" + (f"; the {coverage['bases'] - coverage['bases_profiled']} base "
                         "names not profiled are below, each with the reason."
                         if coverage["not_profiled"] else "."), ""]
    if coverage["not_profiled"]:
        lines += ["| kernel | reason not profiled |", "|---|---|"]
        lines += [f"| {name} | {reason} |" for name, reason in coverage["not_profiled"].items()]
        lines.append("")
    lines += ["## Gates (tests/infrastructure/test_emu_gates.py)", "",
              "Memory-bound kernels, float32, at the test's small sizes: global sectors at most "
              "1.1x the ideal on loads and on stores, bytes moved at most 1.25x the call's "
              "minimum, shared bank-conflict ways at most 1.1 on average. The exceptions, all "
              "in one table:", "", "| kernel | gate | reason |", "|---|---|---|"]
    lines += [f"| {kernel} | {gate} | {reason} |" for kernel, gate, reason in meta["exceptions"]]
    lines += ["", "## Fixes (before: the first report, git f6d0d7f; after: this run)", "",
              "| case | kernel | change | figure | before | after |", "|---|---|---|---|---|---|"]
    for case_name, kernel, change, before in FIXES:
        found = _find(cases, case_name, kernel)
        for i, (figure, old) in enumerate(before.items()):
            after = "-"
            if found is not None:
                case, launch = found
                after = _fmt({"sec/req ld": launch["sectors_per_request_ld"],
                              "sec/req st": launch["sectors_per_request_st"],
                              "ld x ideal": launch["sectors_over_ideal_ld"],
                              "st x ideal": launch["sectors_over_ideal_st"],
                              "moved / min": case["moved_over_min"]}[figure])
            lines.append(f"| {case_name if i == 0 else ''} | {kernel if i == 0 else ''} | "
                         f"{change if i == 0 else ''} | {figure} | {old:.2f} | {after} |")
    return "\n".join(lines) + "\n"


def coverage_of(all_kernels: dict[str, str], profiled: set[str],
                skipped_reasons: dict[str, str]) -> dict[str, Any]:
    bases = {_base(name) for name in all_kernels}
    bases_done = {_base(name) for name in profiled}
    not_profiled = {}
    for base in sorted(bases - bases_done):
        names = sorted(n for n in all_kernels if _base(n) == base)
        family = all_kernels[names[0]]
        template = re.sub(r"(warp\d+|block|d\d+)", "*", base)
        siblings = sorted(b for b in bases_done if re.sub(r"(warp\d+|block|d\d+)", "*", b)
                          == template and b != base)
        if base in skipped_reasons:
            reason = skipped_reasons[base]
        elif siblings:
            reason = (f"a specialisation (row width, head size or dtype) no benchmark case, "
                      f"test-record sample, gate or driver call selects; the same template "
                      f"as {siblings[0]} (profiled)")
        else:
            reason = (f"cuda/{family}.cu: no benchmark case, test-record sample, gate or "
                      "driver call launches it (other tests do: the emulator's coverage "
                      "check)")
        not_profiled[", ".join(names)] = reason
    return {"kernels": len(all_kernels), "profiled": len(profiled & set(all_kernels)),
            "bases": len(bases), "bases_profiled": len(bases & bases_done),
            "not_profiled": not_profiled}


def render(json_path: Path) -> str:
    """The Markdown report of a written ``emu-profile.json`` (re-rendering, no emulation)."""
    data = json.loads(json_path.read_text())
    return markdown(data["cases"], data["record_cases"], data.get("driver_cases", []),
                    data["coverage"], data["meta"])


def main(argv: list[str]) -> int:
    available = family_modules()
    parser = argparse.ArgumentParser(prog="python -m benchmarks --profile",
                                     description=__doc__)
    parser.add_argument("--family", action="append", choices=sorted(available),
                        help="only this benchmark family (repeatable); default: all but "
                             f"{', '.join(NOT_PROFILED)}, and then every kernel of cuda/ "
                             "no case launched")
    parser.add_argument("--size", type=int, default=SIZE,
                        help=f"elements per large operand (default {SIZE})")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args(argv)
    env = harness.Env(numpy, False, True, args.size)
    nvrtc = _ptxas_usage()
    cases = []
    families = args.family or sorted(set(available) - set(NOT_PROFILED))
    for family in families:
        module = importlib.import_module(available[family])
        if not hasattr(module, "cases"):
            continue
        for case in module.cases(env):
            result = profile_case(family, case, nvrtc)
            cases.append(result)
            _print(result)
    all_kernels = inventory()
    profiled = {k["kernel"] for case in cases for k in case.get("kernels", [])}
    records: list[dict[str, Any]] = []
    driver: list[dict[str, Any]] = []
    if not args.family:
        records = record_cases({_base(k) for k in all_kernels} - {_base(k) for k in profiled},
                               nvrtc)
        profiled |= {k["kernel"] for case in records for k in case.get("kernels", [])}
        records += gate_cases({_base(k) for k in all_kernels} - {_base(k) for k in profiled},
                              nvrtc)
        profiled |= {k["kernel"] for case in records for k in case.get("kernels", [])}
        driver = driver_cases(nvrtc)
        profiled |= {k["kernel"] for case in driver for k in case.get("kernels", [])}
    reasons = {}
    for case in cases:
        if "skipped" in case and "." in case["skipped"]:
            kernel = case["skipped"].split(".", 1)[1].split(":", 1)[0]
            reasons[_base(kernel)] = f"{case['case']}: {case['skipped']}"
    coverage = coverage_of(all_kernels, profiled, reasons)
    meta = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "nvrtc": nvrtc is not None,
            "git": _git(["rev-parse", "--short", "HEAD"]),
            "uncommitted_changes": bool(_git(["status", "--porcelain", "--", "cuda", "gpuops",
                                              "benchmarks"])),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "families": families, "exceptions": gate_exceptions()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emu-profile.json").write_text(json.dumps(
        {"meta": meta, "cases": cases, "record_cases": records, "driver_cases": driver,
         "coverage": coverage}, indent=1) + "\n")
    (args.out / "emu-profile.md").write_text(markdown(cases, records, driver, coverage, meta))
    print(f"# wrote {args.out / 'emu-profile.json'}, {args.out / 'emu-profile.md'}")
    return 0


def _print(result: dict[str, Any]) -> None:
    if "skipped" in result:
        print(f"{result['family']:<12} {result['case']:<40} skipped: {result['skipped']}",
              flush=True)
        return
    launches = sum(k["launches"] for k in result["kernels"])
    print(f"{result['family']:<12} {result['case']:<40} {launches} launches, moved/min "
          f"{result['moved_over_min'] or 0:.2f}, {result['emulator_s']:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
