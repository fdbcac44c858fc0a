"""Compile check without a GPU: every kernel family, sm_80 and sm_90, with NVRTC.

Each ``cuda/<family>.cu`` (found by ``gpuops.kernels.families()``, so new files are
checked as they land) is compiled as the loader compiles it — the inlined
``kernels.source(family)`` with ``kernels.NVRTC_OPTIONS`` — plus a real architecture
(a CUBIN, so ptxas runs) and ptxas' verbose report, and no include path: the kernels
need no CUDA header. A test fails on a compile error,
a register spill, local memory or a stack frame, except where :data:`STACK_ALLOWED`
says why. ``pytest -s tests/infrastructure/test_nvrtc_compile.py`` prints the per-kernel table.
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

import nvrtc
from gpuops import kernels

# Kernels that may use a stack frame (bytes at most) and why. Nothing else may.
STACK_ALLOWED: dict[str, tuple[int, str]] = {
    name: (40, "libdevice's f64 sin/cos: the Payne-Hanek argument reduction for large |x| "
               "(__internal_trig_reduction_slowpathd) keeps its result digits in a local "
               "array; unavoidable without giving up accuracy")
    for name in ("sin_f64", "cos_f64", "sin_wrt_x1_f64", "cos_wrt_x1_f64")
}


def _unavailable() -> str | None:
    try:
        nvrtc.library()
    except nvrtc.NvrtcUnavailable as error:
        return str(error)
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None,
                                reason=f"NVRTC compile check skipped: {_unavailable()}")


def options(arch: str) -> list[str]:
    """The loader's options, a real architecture (so a CUBIN is built) and ptxas -v; no
    include path: the kernels need no CUDA header (a toolkit-less CuPy install compiles them)."""
    return [*kernels.NVRTC_OPTIONS, f"--gpu-architecture={arch}", nvrtc.VERBOSE]


@functools.lru_cache(maxsize=None)
def _all_compiles() -> dict[tuple[str, str], Future]:
    """Every (family, arch) compile, started at once on all cores (NVRTC runs without the
    GIL; large families take about a minute each on one CI core)."""
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    return {(family, arch): pool.submit(nvrtc.compile_cubin, kernels.source(family),
                                        options(arch), f"{family}.cu")
            for family in kernels.families() for arch in nvrtc.ARCHS}


def compiled(family: str, arch: str) -> nvrtc.CompileResult:
    return _all_compiles()[(family, arch)].result()


def problems(usage: nvrtc.KernelUsage) -> list[str]:
    """Why ``usage`` is not acceptable (empty when it is)."""
    found = []
    if usage.spill_stores or usage.spill_loads:
        found.append(f"spills {usage.spill_stores} B stored / {usage.spill_loads} B loaded")
    if usage.local_bytes:
        found.append(f"{usage.local_bytes} B local memory")
    stack = max(usage.stack_frame, usage.cumulative_stack)
    allowed = STACK_ALLOWED.get(usage.name, (0, ""))[0]
    if stack > allowed:
        found.append(f"{stack} B stack frame (allowed {allowed})")
    return found


def test_families_are_discovered():
    assert kernels.families(), f"no .cu files found in {kernels.cuda_dir()}"


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
@pytest.mark.parametrize("family", kernels.families())
def test_family_compiles_without_spills(family, arch):
    result = compiled(family, arch)
    assert result.ok, (f"{family}.cu does not compile for {arch} with NVRTC {nvrtc.version()} "
                       f"({result.status}):\n{result.log}")
    usages = nvrtc.parse_ptxas(result.log)
    assert usages, f"{family}.cu for {arch}: no kernels in the ptxas report:\n{result.log}"
    assert {u.arch for u in usages.values()} == {arch}
    print(f"\n{family}.cu, {arch}, NVRTC {nvrtc.version()}, options {' '.join(options(arch))}, "
          f"{result.cubin_bytes} bytes CUBIN")
    print(nvrtc.table(list(usages.values())))
    bad = {name: why for name, u in usages.items() if (why := problems(u))}
    assert not bad, f"{family}.cu for {arch}: " + "; ".join(
        f"{name}: {', '.join(why)}" for name, why in sorted(bad.items()))


def test_stack_allowlist_is_current():
    """Every allowlisted kernel exists and really needs its stack frame (no stale entries)."""
    stacks: dict[str, int] = {}
    for family, arch in _all_compiles():
        result = compiled(family, arch)
        if not result.ok:
            continue  # reported by test_family_compiles_without_spills
        for name, usage in nvrtc.parse_ptxas(result.log).items():
            stacks[name] = max(stacks.get(name, 0), usage.stack_frame, usage.cumulative_stack)
    stale = {name: stacks.get(name) for name in STACK_ALLOWED if not stacks.get(name)}
    assert not stale, f"STACK_ALLOWED entries no kernel needs (None: no such kernel): {stale}"


def test_parser_reads_spills_callees_and_local_memory():
    """The ptxas report parser on a fixed report (spills in a callee count for the entry)."""
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k_f64' for 'sm_90'
ptxas info    : Function properties for k_f64
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 264 bytes smem, 24 bytes lmem, 40 bytes cumulative stack size
ptxas info    : Function properties for helper
ptxas         .     40 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compiling entry function 'clean' for 'sm_90'
ptxas info    : Function properties for clean
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers
"""
    usages = nvrtc.parse_ptxas(log)
    k = usages["k_f64"]
    assert (k.registers, k.shared_bytes, k.local_bytes, k.cumulative_stack) == (255, 264, 24, 40)
    assert (k.stack_frame, k.spill_stores, k.spill_loads, k.callees) == (40, 12, 8, ["helper"])
    assert problems(k) and not problems(usages["clean"])


def test_compile_error_is_reported():
    result = nvrtc.compile_cubin('extern "C" __global__ void broken(float* y) { y[0] = x; }',
                                 options("sm_90"))
    assert not result.ok and "identifier \"x\" is undefined" in result.log


def test_stack_frame_is_caught_in_a_real_report():
    """A dynamically indexed local array forces a stack frame; the check must see it."""
    source = ('extern "C" __global__ void uses_stack(float* y, int k) {\n'
              "    float a[256];\n"
              "    for (int i = 0; i < 256; i++) a[i] = y[i];\n"
              "    a[k] = 1.0f;\n"
              "    y[k] = a[y[0] > 0 ? 3 : k + 1];\n"
              "}\n")
    result = nvrtc.compile_cubin(source, options("sm_90"))
    assert result.ok, result.log
    usage = nvrtc.parse_ptxas(result.log)["uses_stack"]
    assert usage.stack_frame >= 1024 and problems(usage)


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_bfloat16_kernels_are_compiled(arch):
    """The bf16 instantiations are in the compiled families (activation: the model)."""
    names = set(nvrtc.parse_ptxas(compiled("activation", arch).log))
    assert {"relu_bf16", "gelu_wrt_x1_bf16", "leaky_relu_bf16"} <= names


def test_bfloat16_conversions_compile_below_sm80():
    """half.cuh's bfloat16 store rounds with cvt.rn.bf16.f32 from sm_80 and in integer
    arithmetic below: a family with bf16 kernels still builds for an older GPU."""
    source = kernels.source("activation")
    result = nvrtc.compile_cubin(source, options("sm_75"), "activation.cu")
    assert result.ok, result.log
    assert "relu_bf16" in nvrtc.parse_ptxas(result.log)
