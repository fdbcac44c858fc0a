"""Timing, environment and result files for ``python -m benchmarks``.

A family module ``benchmarks/bench_<family>.py`` defines ``cases(env) -> list[Case]``.
Each :class:`Case` runs one gpuops call on prepared inputs and names the bytes it
must move; :func:`measure` times it (CUDA events on the GPU, ``perf_counter`` on the
CPU; warm-up, then the median of repeats) together with its baselines, written as
one expression over an array module ``m`` (NumPy, CuPy or PyTorch) so the same
lambda is the "bare NumPy expression", the CuPy built-in and the PyTorch op.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import ml_dtypes
import numpy

import gpuops

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Env:
    """What a family module needs to build its cases."""

    xp: ModuleType  # numpy, or cupy on a GPU
    on_gpu: bool
    quick: bool
    size: int  # elements of a "large" operand: 2^24 on a GPU, 2^22 on the CPU (quick: / 16)

    def random(self, shape: Any, low: float = -1.0, high: float = 1.0,
               dtype: Any = numpy.float32) -> Any:
        x = numpy.random.default_rng(0).uniform(low, high, shape).astype(dtype)
        return self.xp.asarray(x)


@dataclass
class Case:
    """One timed call: ``run(*inputs)``; ``reference(m, *inputs)`` the same math with array
    module ``m`` (the baseline; None when there is none); ``bytes`` the minimum traffic
    (each input read once, the result written once)."""

    name: str
    run: Callable[..., Any]
    inputs: tuple
    bytes: int
    reference: Callable[..., Any] | None = None
    note: str = ""
    torch_on_cpu: bool = False  # also time ``reference(torch, ...)`` on the CPU when installed
    modules: tuple[str, ...] = ("numpy", "cupy", "torch")  # the baselines ``reference`` can run


@dataclass
class Result:
    family: str
    name: str
    seconds: float  # median of gpuops
    gbps: float
    bytes: int
    baselines: dict[str, float] = field(default_factory=dict)  # name -> median seconds
    ratios: dict[str, float] = field(default_factory=dict)  # name -> gpuops / baseline
    # CPU only: the same in thread CPU time, which a busy shared machine does not inflate
    cpu_seconds: float | None = None
    cpu_baselines: dict[str, float] = field(default_factory=dict)
    cpu_ratios: dict[str, float] = field(default_factory=dict)
    copy_fraction: float | None = None  # GPU: gbps / device-to-device copy gbps
    note: str = ""


# ---- timers -----------------------------------------------------------------

def _cpu_time(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall-clock, this thread's CPU time) of one call. NumPy's elementwise loops run on
    the calling thread, so the CPU time is the work itself, without the time the OS gave
    to other processes (on a shared, oversubscribed machine the wall clock is mostly that)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def _gpu_time(fn: Callable[[], Any]) -> tuple[float, float]:
    import cupy
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    fn()
    end.record()
    end.synchronize()
    seconds = cupy.cuda.get_elapsed_time(start, end) / 1e3
    return seconds, math.nan


def time_interleaved(fns: dict[str, Callable[[], Any]], on_gpu: bool, warmup: int,
                     repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per function: (elapsed, CPU time; NaN on the GPU). The functions
    take turns in every repeat, so slow drifts of a shared machine hit all alike."""
    timer = _gpu_time if on_gpu else _cpu_time
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    if on_gpu:
        import cupy
        cupy.cuda.Device().synchronize()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(timer(fn))
    return ({name: statistics.median(w for w, _ in s) for name, s in samples.items()},
            {name: statistics.median(c for _, c in s) for name, s in samples.items()})


def copy_bandwidth(on_gpu: bool, repeats: int) -> float | None:
    """Device-to-device copy in GB/s (bytes read + written), the memory-bound ceiling."""
    if not on_gpu:
        return None
    import cupy
    n = 1 << 27  # 512 MiB of float32 per buffer
    src = cupy.ones(n, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    seconds = time_interleaved({"copy": lambda: dst.data.copy_from_device(src.data, src.nbytes)},
                               True, 3, repeats)[0]["copy"]
    return 2 * src.nbytes / seconds / 1e9


def _torch_cuda() -> ModuleType | None:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _torch_cpu() -> ModuleType | None:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _as_torch(torch: ModuleType, x: Any) -> Any:
    """NumPy or CuPy array ``x`` as a torch tensor on its device, sharing its memory
    (bfloat16, which torch cannot read from either, through its 16-bit patterns)."""
    if x.dtype == ml_dtypes.bfloat16:
        return _as_torch(torch, x.view(numpy.uint16)).view(torch.bfloat16)
    if isinstance(x, numpy.ndarray):
        return torch.from_numpy(x)
    return torch.as_tensor(x, device="cuda")


def _drop_failing_baselines(fns: dict[str, Callable[[], Any]]) -> list[str]:
    """Calls every baseline once; one that raises (a dtype its library lacks: CuPy's
    bfloat16 kernels, say) is removed, and returned as a note, so the case still runs."""
    failed = []
    for name in [name for name in fns if name != "gpuops"]:
        try:
            fns[name]()
        except Exception as error:  # noqa: BLE001 - any failure of a foreign library
            failed.append(f"{name} baseline failed: {type(error).__name__}: "
                          f"{str(error).splitlines()[0][:80] if str(error) else ''}")
            del fns[name]
    return failed


def measure(family: str, case: Case, env: Env, copy_gbps: float | None) -> Result:
    warmup, repeats = (2, 5) if env.quick else (3, 21)
    fns: dict[str, Callable[[], Any]] = {"gpuops": lambda: case.run(*case.inputs)}
    if case.reference is not None:
        if env.on_gpu:
            import cupy
            if "cupy" in case.modules:
                fns["cupy"] = lambda: case.reference(cupy, *case.inputs)
            torch = _torch_cuda() if "torch" in case.modules else None
            if torch is not None:
                tensors = tuple(_as_torch(torch, x) if isinstance(x, cupy.ndarray) else x
                                for x in case.inputs)
                fns["torch"] = lambda: case.reference(torch, *tensors)
        else:
            if "numpy" in case.modules:
                fns["numpy"] = lambda: case.reference(numpy, *case.inputs)
            torch = _torch_cpu() if case.torch_on_cpu and "torch" in case.modules else None
            if torch is not None:
                cpu_tensors = tuple(_as_torch(torch, x) if isinstance(x, numpy.ndarray) else x
                                    for x in case.inputs)
                fns["torch"] = lambda: case.reference(torch, *cpu_tensors)
    failed = _drop_failing_baselines(fns)
    times, cpu_times = time_interleaved(fns, env.on_gpu, warmup, repeats)
    seconds = times.pop("gpuops")
    gbps = case.bytes / seconds / 1e9
    result = Result(family, case.name, seconds, gbps, case.bytes, baselines=times,
                    ratios={k: seconds / v for k, v in times.items()},
                    copy_fraction=gbps / copy_gbps if copy_gbps else None,
                    note="; ".join([case.note] * bool(case.note) + failed))
    if not env.on_gpu:
        result.cpu_seconds = cpu_times.pop("gpuops")
        result.cpu_baselines = cpu_times
        result.cpu_ratios = {k: result.cpu_seconds / v for k, v in cpu_times.items()}
    return result


# ---- warm start -------------------------------------------------------------

_FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy, gpuops
x = gpuops.to_gpu(numpy.ones(1 << 20, numpy.float32))
y = gpuops.{op}(x, x)
y.get()
print(time.perf_counter() - t0)
"""


def warm_start(on_gpu: bool, op: str = "add") -> dict[str, Any]:
    """Seconds from a fresh process' ``import gpuops`` to the first kernel result, with an
    empty kernel cache (cold: NVRTC compiles) and again with the cache it left (warm)."""
    if not on_gpu:
        return {"skipped": "no GPU: the NumPy backend compiles nothing"}
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CUPY_CACHE_DIR": cache,
               "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        runs = []
        for _ in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", _FIRST_CALL.format(op=op)], env=env,
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                return {"skipped": f"first-call process failed: {done.stderr.strip()[-500:]}"}
            runs.append(float(done.stdout.strip().splitlines()[-1]))
    return {"op": op, "cold_s": runs[0], "warm_s": runs[1]}


# ---- environment and files --------------------------------------------------

def environment(on_gpu: bool) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "gpuops": gpuops.__version__,
        "numpy": numpy.__version__, "cupy": None, "torch": None,
    }
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        pass
    if on_gpu:
        import cupy
        runtime = cupy.cuda.runtime
        props = runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        info.update(cupy=cupy.__version__,
                    gpu=name.decode() if isinstance(name, bytes) else name,
                    compute_capability=f"{props['major']}.{props['minor']}",
                    driver=runtime.driverGetVersion(), cuda_runtime=runtime.runtimeGetVersion())
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_label(env_info: dict[str, Any]) -> str:
    name = env_info.get("gpu") or f"cpu-{env_info['cpu']}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write(results: list[Result], env_info: dict[str, Any], extra: dict[str, Any],
          families: list[str], folder: Path = RESULTS) -> tuple[Path, Path]:
    """``<device>_<date>[_<families>].json`` and ``.md`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{device_label(env_info)}_{env_info['date'][:10]}"
    if extra.get("families_selected"):
        stem += "_" + "-".join(families)
    if extra.get("quick"):
        stem += "_quick"
    payload = {"environment": env_info, **extra, "results": [asdict(r) for r in results]}
    json_path = folder / f"{stem}.json"
    json_path.write_text(json.dumps(payload, indent=1) + "\n")
    md_path = folder / f"{stem}.md"
    md_path.write_text(markdown(results, env_info, extra))
    return json_path, md_path


def markdown(results: list[Result], env_info: dict[str, Any], extra: dict[str, Any]) -> str:
    on_gpu = bool(env_info.get("gpu"))
    lines = [f"# gpuops benchmarks — {env_info.get('gpu') or env_info['cpu']}", ""]
    versions = ", ".join(f"{k} {env_info[k]}" for k in
                         ("gpuops", "numpy", "cupy", "torch", "python", "driver", "cuda_runtime")
                         if env_info.get(k) is not None)
    lines += [f"{env_info['date']}; {versions}; {env_info['cpu_count']} CPUs "
              f"({env_info['cpu']}).", ""]
    if extra.get("copy_gbps"):
        lines += [f"Device-to-device copy: {extra['copy_gbps']:.0f} GB/s.", ""]
    warm = extra.get("warm_start", {})
    if "cold_s" in warm:
        lines += [f"Warm start (`{warm['op']}`, fresh process, import to first result): "
                  f"cold cache {warm['cold_s']:.2f} s, warm cache {warm['warm_s']:.2f} s.", ""]
    elif warm:
        lines += [f"Warm start: skipped ({warm['skipped']}).", ""]
    lines += [extra.get("timing", ""), ""]
    baselines = sorted({b for r in results for b in r.baselines})
    head = ["family", "op", "time (ms)", "GB/s"]
    if on_gpu:
        head.append("of copy")
    head += [f"{b} (ms)" for b in baselines] + [f"× {b}" for b in baselines]
    if not on_gpu:
        head += ["CPU time (ms)"] + [f"{b} CPU time (ms)" for b in baselines] + \
                [f"× {b} (CPU time)" for b in baselines]
    head.append("note")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r.family, f"`{r.name}`", f"{r.seconds * 1e3:.3f}", f"{r.gbps:.1f}"]
        if on_gpu:
            row.append(f"{r.copy_fraction:.0%}" if r.copy_fraction else "")
        row += [f"{r.baselines[b] * 1e3:.3f}" if b in r.baselines else "" for b in baselines]
        row += [f"{r.ratios[b]:.2f}" if b in r.ratios else "" for b in baselines]
        if not on_gpu:
            row.append(f"{r.cpu_seconds * 1e3:.3f}" if r.cpu_seconds is not None else "")
            row += [f"{r.cpu_baselines[b] * 1e3:.3f}" if b in r.cpu_baselines else ""
                    for b in baselines]
            row += [f"**{r.cpu_ratios[b]:.2f}**" if r.cpu_ratios.get(b, 0) > 1.1
                    else f"{r.cpu_ratios[b]:.2f}" if b in r.cpu_ratios else "" for b in baselines]
        row.append(r.note)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
