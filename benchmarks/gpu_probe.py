"""Stages 1 and 2 of ``benchmarks/gpu_session.sh``: what the machine is, and how long a
process takes to its first results.

    python benchmarks/gpu_probe.py versions --json PATH
        versions (gpuops, NumPy, CuPy, CUDA runtime and driver, PyTorch), the device, and
        the device-to-device copy bandwidth: a 1 GiB ``cudaMemcpy`` timed with CUDA events,
        best and median of 10 after 2 warm-ups (bytes read + written over the time).
    python benchmarks/gpu_probe.py start --json PATH
        from before ``import gpuops`` to the first result of every family, in this process:
        per family the module (NVRTC compile with an empty ``CUPY_CACHE_DIR``, a load from
        that cache otherwise), then one forward call of the family's first operator record
        (its largest sample, float32). Run once with an empty cache (cold) and once more in
        a fresh process (warm: the warm-start figure).

Both write JSON, print a summary line, and on SIGINT (the session's time box) write what
they have and exit 130.
"""
from __future__ import annotations

import time

T0 = time.perf_counter()  # before gpuops is imported: the warm-start figure counts the import

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

COPY_BYTES = 1 << 30


def versions() -> dict[str, Any]:
    import numpy

    import cupy
    import gpuops
    runtime = cupy.cuda.runtime
    device = cupy.cuda.Device()
    props = runtime.getDeviceProperties(device.id)
    name = props["name"]
    info: dict[str, Any] = {
        "gpuops": gpuops.__version__, "numpy": numpy.__version__, "cupy": cupy.__version__,
        "cuda_runtime": runtime.runtimeGetVersion(), "cuda_driver": runtime.driverGetVersion(),
        "gpu": name.decode() if isinstance(name, bytes) else name,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "multiprocessors": props["multiProcessorCount"],
        "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
        "l2_mib": round(props["l2CacheSize"] / 2**20, 1),
        "python": sys.version.split()[0],
    }
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
    except ImportError:
        info["torch"] = None
    src = cupy.arange(COPY_BYTES // 4, dtype=cupy.float32)  # not zeros (METHOD.md)
    dst = cupy.empty_like(src)
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for i in range(12):
        start.record()
        dst.data.copy_from_device(src.data, src.nbytes)
        end.record()
        end.synchronize()
        if i >= 2:
            times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    if not bool((dst == src).all()):
        raise RuntimeError("device-to-device copy: the copy differs from its source")
    info["copy_bytes"] = src.nbytes
    info["copy_gbps_best"] = round(2 * src.nbytes / min(times) / 1e9, 1)
    info["copy_gbps_median"] = round(2 * src.nbytes / statistics.median(times) / 1e9, 1)
    return info


def start(report: dict[str, Any]) -> None:
    """Fills ``report`` as it goes (so an interrupted run keeps what it measured)."""
    import numpy

    import cupy
    import gpuops
    from gpuops import backend, kernels
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_check
    report["import_s"] = round(time.perf_counter() - T0, 3)
    launcher = backend.gpu_backend().kernel_launcher
    first_record: dict[str, Any] = {}
    for record in gpu_check.records():
        first_record.setdefault(gpuops.OPERATORS[record.name].family, record)
    families = report["families"] = {}
    for family in kernels.families():
        t = time.perf_counter()
        try:
            launcher.module(family)  # the CuPy launcher's compile-or-load of one family
        except Exception as error:  # a family that does not compile: noted, the rest go on
            families[family] = {"module_s": round(time.perf_counter() - t, 3),
                                "error": f"{type(error).__name__}: {error}"[:2000]}
            continue
        row = families[family] = {"module_s": round(time.perf_counter() - t, 3)}
        record = first_record.get(family)
        if record is not None:
            dtype = numpy.dtype(numpy.float32)
            if dtype not in [numpy.dtype(d) for d in gpu_check.dtypes_for(record, "cupy")]:
                dtype = numpy.dtype(gpu_check.dtypes_for(record, "cupy")[0])
            sample = gpu_check.samples_for(record, 1)[0]
            inputs = tuple(cupy.asarray(x) if isinstance(x, numpy.ndarray) else x
                           for x in record.cast(sample.inputs, dtype))
            t = time.perf_counter()
            try:
                record.op.forward(*inputs, **sample.params)
                cupy.cuda.Device().synchronize()
            except Exception as error:
                row["error"] = f"{record.name}: {type(error).__name__}: {error}"[:2000]
            row.update(first_call=record.name, first_call_s=round(time.perf_counter() - t, 3))
        report["to_last_result_s"] = round(time.perf_counter() - T0, 3)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_probe.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("versions", "start"))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"interrupted": False}
    code = 0
    try:
        if args.what == "versions":
            report.update(versions())
        else:
            import os
            report["cache_dir"] = os.environ.get("CUPY_CACHE_DIR")
            start(report)
    except KeyboardInterrupt:
        report["interrupted"] = True
        code = 130
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.what == "versions" and "gpu" in report:
        print(f"{report['gpu']} (sm_{report['compute_capability'].replace('.', '')}, "
              f"{report['multiprocessors']} SMs, {report['memory_gib']} GiB); CUDA runtime "
              f"{report['cuda_runtime']}, driver {report['cuda_driver']}; CuPy {report['cupy']}, "
              f"NumPy {report['numpy']}, PyTorch {report.get('torch')}; device-to-device copy "
              f"{report['copy_gbps_best']} GB/s best, {report['copy_gbps_median']} median")
    elif args.what == "start" and "families" in report:
        modules = sum(r["module_s"] for r in report["families"].values())
        slowest = max(report["families"].items(), key=lambda kv: kv[1]["module_s"])
        failed = [f for f, r in report["families"].items() if "error" in r]
        print(f"import {report['import_s']} s; modules {modules:.2f} s over "
              f"{len(report['families'])} families (slowest {slowest[0]} "
              f"{slowest[1]['module_s']} s); first result of every family "
              f"{report.get('to_last_result_s')} s after start"
              + (f"; FAILED: {', '.join(failed)}" if failed else "")
              + (" (interrupted)" if report["interrupted"] else ""))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
