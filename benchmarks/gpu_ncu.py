"""Stage 6 of ``benchmarks/gpu_session.sh``: Nsight Compute's memory counters for six
representative kernels, keyed so that other figures for the same launches can be joined.

    ncu --clock-control none --kernel-name regex:'_f(16|32|64)$' --metrics <METRICS> \\
        --csv --page raw --log-file ncu.csv \\
        python benchmarks/gpu_ncu.py run --backend cupy --manifest launches.json
    python benchmarks/gpu_ncu.py join --manifest launches.json --csv ncu.csv --json ncu.json

``run`` makes each case's call once (inputs built on the host and copied over, so the
only kernels are gpuops') and writes the manifest: every launch in order, with its key
``<case>/<ordinal>/<kernel>``, family, grid, block and dynamic shared memory. ``join``
pairs the n-th kernel ncu profiled with the n-th launch of the manifest (ncu was told to
profile only kernels named ``*_f16|_f32|_f64``, which are gpuops' alone) and writes, per
key, the launch and its metrics, plus sectors per request and bank conflicts per shared
load. The cases are small enough for the CPU emulator: ``run --backend emu`` makes the
same calls there and writes the same keys (the grid can differ: the emulator's
``max_blocks`` is smaller), which is where the emulator's own counters for these
launches join (``--backend recording`` runs nothing, for tests without a GPU).
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
KERNEL_FILTER = "regex:_f(16|32|64)$"  # gpuops' kernel names end in their dtype suffix


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
            launches.append({"key": f"{case}/{ordinal}/{kernel}", "case": case,
                             "ordinal": ordinal, "kernel": kernel, "family": family,
                             "grid": list(grid), "block": list(block),
                             "shared_mem": shared_mem})
            original(family, kernel, grid, block, args, shared_mem)

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


def join(launches: list[dict[str, Any]], rows: list[dict[str, str]]) -> dict[str, Any]:
    """Per launch key: the launch, ncu's metrics of the kernel profiled in that position,
    and the ratios that compare with the emulator's (sectors per request, conflicts per
    shared load)."""
    joined: dict[str, Any] = {}
    for launch, row in zip(launches, rows):
        name = row.get("Kernel Name", "")
        metrics = {m: _number(row[m]) for m in METRICS if m in row}
        entry = {**launch, "ncu_kernel": name, "ncu_id": int(row["ID"]),
                 "name_matches": name.split("(")[0].strip() == launch["kernel"],
                 "ncu_grid": row.get("Grid Size"), "ncu_block": row.get("Block Size"),
                 "metrics": metrics}
        for op in ("ld", "st"):
            requests = metrics.get(f"l1tex__t_requests_pipe_lsu_mem_global_op_{op}.sum")
            sectors = metrics.get(f"l1tex__t_sectors_pipe_lsu_mem_global_op_{op}.sum")
            entry[f"sectors_per_request_{op}"] = (round(sectors / requests, 3)
                                                  if requests and sectors is not None else None)
        shared_ld = metrics.get("smsp__sass_inst_executed_op_shared_ld.sum")
        conflicts = metrics.get("l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum")
        entry["bank_conflicts_per_shared_ld"] = (round(conflicts / shared_ld, 3)
                                                 if shared_ld and conflicts is not None else None)
        joined[launch["key"]] = entry
    return {"metrics": list(METRICS), "launches": joined,
            "unmatched_launches": [launch["key"] for launch in launches[len(rows):]],
            "extra_profiled_kernels": [row.get("Kernel Name") for row in rows[len(launches):]]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_ncu.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="make each case's call once; write the launch manifest")
    run.add_argument("--backend", default="cupy", choices=("cupy", "emu", "recording"))
    run.add_argument("--manifest", type=Path, required=True)
    joining = sub.add_parser("join", help="ncu's CSV + the manifest -> JSON keyed by launch")
    joining.add_argument("--manifest", type=Path, required=True)
    joining.add_argument("--csv", type=Path, nargs="+", required=True,
                         help="ncu's output (the first file holding its table is used)")
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
    result = join(launches, rows)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"gpu_ncu: {len(rows)} profiled kernels joined to {len(launches)} launches")
    for key, entry in result["launches"].items():
        print(f"  {key:<44} ld {entry['sectors_per_request_ld']} st "
              f"{entry['sectors_per_request_st']} sectors/request, shared-ld conflicts "
              f"{entry['bank_conflicts_per_shared_ld']}/instr"
              + ("" if entry["name_matches"] else f"  (ncu: {entry['ncu_kernel']})"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
