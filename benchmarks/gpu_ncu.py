"""Stage 6 of ``benchmarks/gpu_session.sh``: Nsight Compute's memory counters for six
representative kernels, keyed so that other figures for the same launches can be joined.

    ncu --clock-control none --kernel-name 'regex:.*_f(16|32|64)$' --metrics <METRICS> \\
        --export ncu python benchmarks/gpu_ncu.py run --backend cupy --manifest launches.json
    ncu --import ncu.ncu-rep --csv --page raw > ncu.csv
    python benchmarks/gpu_ncu.py join --manifest launches.json --csv ncu.csv --json ncu.json

``run`` makes each case's call once (inputs built on the host and copied over, so the
only kernels are gpuops') and writes the manifest: every launch in order, with its key
``<case>/<ordinal>/<kernel>``, family, grid, block and dynamic shared memory. ``join``
pairs the n-th kernel ncu profiled with the n-th launch of the manifest (ncu was told to
profile only kernels named ``*_f16|_f32|_f64``, which are gpuops' alone) and writes, per
key, the launch and its metrics, plus sectors per request and bank conflicts per shared
load.

The emulator's figures for the same launches: ``run --backend emu-counters`` makes the
same calls on the counting emulator (``gpuops.emu``, counters=True) with an H200's launch
geometry (``max_blocks`` = 132 SMs x 32, the tensor-core GEMM), so its launches are the
GPU's, and stores each launch's counters under the same Nsight Compute metric names;
``join --emu <that manifest>`` puts them beside ncu's, key by key (``grid_matches`` says
whether the two launches had the same grid). The emulator side needs g++ and no GPU: it
can run beside the GPU session or afterwards on any machine, from the same commit, and be
joined with the session's ``ncu.csv`` (``--backend recording`` runs nothing, for tests).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gpuops  # noqa: E402
from gpuops import backend  # noqa: E402

METRICS = (
    "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
    "smsp__sass_inst_executed_op_shared_ld.sum",
    "gpu__time_duration.sum",
)
H200_MAX_BLOCKS = 132 * 32  # the CuPy launcher's max_blocks on an H200 (SMs x 32)


def _inputs(shape: tuple, dtype: Any = numpy.float32, seed: int = 0) -> numpy.ndarray:
    return numpy.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)


# name -> (call, inputs): a memory-bound elementwise op, a row reduction, a column
# reduction (strided reads), the shared-memory tile transpose, and the GEMM in float32
# and on the float16 tensor cores.
CASES: dict[str, tuple[Callable[..., Any], tuple]] = {
    "add_f32_256x256": (gpuops.add, (_inputs((256, 256)), _inputs((256, 256), seed=1))),
    "softmax_f32_256x256": (gpuops.softmax, (_inputs((256, 256)),)),
    "sum_axis0_f32_256x256": (lambda x: gpuops.sum(x, axis=0), (_inputs((256, 256)),)),
    "transpose_f32_256x256": (gpuops.transpose, (_inputs((256, 256)),)),
    "matmul_f32_256x256x256": (gpuops.matmul, (_inputs((256, 256)),
                                               _inputs((256, 256), seed=1))),
    "matmul_f16_256x256x256": (gpuops.matmul, (_inputs((256, 256), numpy.float16),
                                               _inputs((256, 256), numpy.float16, seed=1))),
}


@contextlib.contextmanager
def _backend(name: str) -> Iterator[tuple[Any, Callable[[Any], Any], Callable[[], None]]]:
    """(launcher, move an input there, wait for the device) of backend ``name``."""
    if name == "cupy":
        import cupy
        yield backend.gpu_backend().kernel_launcher, cupy.asarray, \
            cupy.cuda.Device().synchronize
        return
    if name == "emu":
        from gpuops import emu
        launcher: Any = emu.launcher()
    elif name == "emu-counters":
        from gpuops import emu
        launcher = emu.EmuLauncher(max_blocks=H200_MAX_BLOCKS, record=False,
                                   tensor_cores=True, counters=True)
    else:
        from launch_fakes import RecordingLauncher
        launcher = RecordingLauncher(record=False)
    with backend.use_cpu_launcher(launcher):
        yield launcher, numpy.asarray, lambda: None


def run_cases(backend_name: str) -> list[dict[str, Any]]:
    """Each case's call once on ``backend_name``; every launch in order, keyed."""
    launches: list[dict[str, Any]] = []
    with _backend(backend_name) as (launcher, put, synchronize):
        original = launcher.launch
        case = ""

        def recording(family: str, kernel: str, grid: Any, block: Any, args: Any,
                      shared_mem: int = 0) -> None:
            ordinal = sum(1 for launch in launches if launch["case"] == case)
            launch = {"key": f"{case}/{ordinal}/{kernel}", "case": case, "ordinal": ordinal,
                      "kernel": kernel, "family": family, "grid": list(grid),
                      "block": list(block), "shared_mem": shared_mem}
            launches.append(launch)
            original(family, kernel, grid, block, args, shared_mem)
            if getattr(launcher, "counters", False):  # the counting emulator's report
                report = launcher.reports[-1]
                launch["metrics"] = {m: report.metrics[m] for m in METRICS
                                     if m in report.metrics}
                worst = report.worst
                launch["emu"] = {"footprint_bytes": report.footprint_bytes,
                                 "bytes_moved": report.bytes_moved(),
                                 "worst_line": None if worst is None else
                                 f"{worst.site.where}: {worst.site.text.strip()}"}

        launcher.launch = recording  # this instance only; removed below
        try:
            for case, (call, inputs) in CASES.items():
                call(*[put(x) for x in inputs])
                synchronize()
        finally:
            del launcher.launch
    return launches


def parse_csv(text: str) -> list[dict[str, str]]:
    """The rows of ncu's ``--csv --page raw`` output (its own ``==PROF==`` lines and the
    program's output around the table skipped; the units row dropped)."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    return [row for row in rows if row.get("ID", "").strip().isdigit()]


def _number(value: str) -> float | None:
    try:
        return float(value.replace(",", ""))
    except ValueError:
        return None


def ratios(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Sectors per global request (ld, st) and bank conflicts per shared load instruction."""
    def per(numerator: str, denominator: str) -> float | None:
        top, bottom = metrics.get(numerator), metrics.get(denominator)
        return round(top / bottom, 3) if bottom and top is not None else None

    out = {f"sectors_per_request_{op}": per(
        f"l1tex__t_sectors_pipe_lsu_mem_global_op_{op}.sum",
        f"l1tex__t_requests_pipe_lsu_mem_global_op_{op}.sum") for op in ("ld", "st")}
    out["bank_conflicts_per_shared_ld"] = per(
        "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
        "smsp__sass_inst_executed_op_shared_ld.sum")
    return out


def join(launches: list[dict[str, Any]], rows: list[dict[str, str]],
         emu_launches: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per launch key: the launch, ncu's metrics of the kernel profiled in that position
    and their ratios; with ``emu_launches`` (a manifest of ``run --backend emu-counters``),
    the emulator's metrics and ratios for the same key beside them."""
    emu_by_key = {launch["key"]: launch for launch in emu_launches or []}
    joined: dict[str, Any] = {}
    for launch, row in zip(launches, rows):
        name = row.get("Kernel Name", "")
        metrics = {m: _number(row[m]) for m in METRICS if m in row}
        entry = {**launch, "ncu_kernel": name, "ncu_id": int(row["ID"]),
                 "name_matches": name.split("(")[0].strip() == launch["kernel"],
                 "ncu_grid": row.get("Grid Size"), "ncu_block": row.get("Block Size"),
                 "metrics": metrics, **ratios(metrics)}
        emu_launch = emu_by_key.get(launch["key"])
        if emu_launch is not None and "metrics" in emu_launch:
            entry["emu"] = {"grid_matches": emu_launch["grid"] == launch["grid"],
                            "metrics": emu_launch["metrics"], **ratios(emu_launch["metrics"]),
                            **emu_launch.get("emu", {})}
        joined[launch["key"]] = entry
    return {"metrics": list(METRICS), "launches": joined,
            "unmatched_launches": [launch["key"] for launch in launches[len(rows):]],
            "extra_profiled_kernels": [row.get("Kernel Name") for row in rows[len(launches):]],
            "emu_keys_missing": [launch["key"] for launch in launches
                                 if emu_launches is not None and launch["key"] not in emu_by_key]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_ncu.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="make each case's call once; write the launch manifest")
    run.add_argument("--backend", default="cupy",
                     choices=("cupy", "emu", "emu-counters", "recording"))
    run.add_argument("--manifest", type=Path, required=True)
    joining = sub.add_parser("join", help="ncu's CSV + the manifest -> JSON keyed by launch")
    joining.add_argument("--manifest", type=Path, required=True)
    joining.add_argument("--csv", type=Path, nargs="+", required=True,
                         help="ncu's output (the first file holding its table is used)")
    joining.add_argument("--emu", type=Path,
                         help="a manifest of run --backend emu-counters, joined key by key")
    joining.add_argument("--json", type=Path, required=True)
    sub.add_parser("metrics", help="print the metrics, comma-separated (for ncu --metrics)")
    args = parser.parse_args(argv)
    if args.what == "metrics":
        print(",".join(METRICS))
        return 0
    if args.what == "run":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        launches = run_cases(args.backend)
        args.manifest.write_text(json.dumps({"backend": args.backend, "launches": launches},
                                            indent=1) + "\n")
        print(f"gpu_ncu: {len(CASES)} cases, {len(launches)} launches on {args.backend}")
        return 0
    if not args.manifest.is_file():
        print(f"gpu_ncu: no manifest {args.manifest} (the profiled run failed: see its log)")
        return 1
    launches = json.loads(args.manifest.read_text())["launches"]
    rows: list[dict[str, str]] = []
    for path in args.csv:
        if path.is_file():
            rows = parse_csv(path.read_text(errors="replace"))
            if rows:
                break
    emu_launches = None
    if args.emu is not None and args.emu.is_file():
        emu_launches = json.loads(args.emu.read_text())["launches"]
    result = join(launches, rows, emu_launches)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"gpu_ncu: {len(rows)} profiled kernels joined to {len(launches)} launches"
          + ("" if emu_launches is None else ", with the emulator's counters"))
    for key, entry in result["launches"].items():
        emu = entry.get("emu")
        print(f"  {key:<44} sectors/request ld {entry['sectors_per_request_ld']} st "
              f"{entry['sectors_per_request_st']}, shared-ld conflicts/instr "
              f"{entry['bank_conflicts_per_shared_ld']}"
              + ("" if emu is None else f"; emu {emu['sectors_per_request_ld']} "
                 f"{emu['sectors_per_request_st']}, {emu['bank_conflicts_per_shared_ld']}")
              + ("" if entry["name_matches"] else f"  (ncu: {entry['ncu_kernel']})"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
