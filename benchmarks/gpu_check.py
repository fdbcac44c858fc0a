"""A compact correctness run over every operator record, for a GPU's few minutes.

    python benchmarks/gpu_check.py [--backend cupy|emu|numpy] [--family F ...] [--op NAME ...]
        [--dtype float32 ...] [--samples 2] [--shared-memory-only] [--breadth-first]
        [--no-memory-pool] [--json PATH]

For every record of ``tests/records`` (one :class:`OpInfo` per operator), every dtype it
lists for the backend (``gpu_dtypes`` on the kernel backends) and its first ``--samples``
samples (the largest, then the smallest), it runs the forward and every gradient the record's
generic tests take, and compares each with the float64 reference: the record's ``ref``
and ``grad_refs``, and for a gradient without a reference function the NumPy backend's
gradient computed in float64. Tolerances are the record's (``OpInfo.tolerance``). This
is the generic suite's ``test_forward`` and ``test_gradient_reference`` on contiguous
inputs, without pytest's collection and with one or two samples instead of all.

Each case prints ``== <op>/<dtype>/<sample>`` before it runs (so a tool wrapping the
process, compute-sanitizer, can attribute its reports) and ``ok`` or ``FAIL ...`` after.
Exit status 0 when every case passed, 3 when some failed; interrupted (SIGINT, e.g.
``timeout --signal=INT``), it writes what it has and exits 130.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests", ROOT / "tests" / "support"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import gpuops  # noqa: E402
from gpuops import kernels  # noqa: E402

F64 = numpy.dtype(numpy.float64)
FAILED = 3  # the exit status when cases failed (1 is Python's for an uncaught exception)
_SHARED = re.compile(r"__shared__|\bblock_(reduce|sum|max|min)\b")


def uses_shared_memory(family: str) -> bool:
    """Whether the family's kernels declare shared memory or call the block reductions of
    ``cuda/gpuops.cuh`` (which do): the header's own definitions, inlined into every
    source, do not count."""
    header = (kernels.cuda_dir() / "gpuops.cuh").read_text()
    return bool(_SHARED.search(kernels.source(family).replace(header, "")))


def records(families: list[str] | None = None, ops: list[str] | None = None,
            shared_memory_only: bool = False, breadth_first: bool = False) -> list[Any]:
    """The OpInfo records selected by family, operator name, and whether their family's
    kernels use shared memory (the racecheck set); ``breadth_first``: every family's first
    record, then every family's second, ... (a run cut short has seen every family)."""
    from records import RECORDS
    chosen = []
    for record in RECORDS:
        family = gpuops.OPERATORS[record.name].family
        if families and family not in families:
            continue
        if ops and record.name not in ops:
            continue
        if shared_memory_only and not uses_shared_memory(family):
            continue
        chosen.append(record)
    if breadth_first:
        rank: dict[str, int] = {}
        order = []
        for record in chosen:
            family = gpuops.OPERATORS[record.name].family
            order.append((rank.get(family, 0), family))
            rank[family] = rank.get(family, 0) + 1
        chosen = [r for _, r in sorted(zip(order, chosen), key=lambda pair: pair[0])]
    return chosen


def backend(name: str) -> Any:
    """The test suite's backend of that name (tests/support/backends.py); SystemExit with
    the reason when this machine cannot run it."""
    from backends import available_backends, skipped_backends
    found = {b.name: b for b in available_backends()}
    if name not in found:
        reasons = dict(skipped_backends())
        raise SystemExit(f"gpu_check: backend {name} not available here: "
                         f"{reasons.get(name, 'unknown backend')}")
    return found[name]


def dtypes_for(record: Any, backend_name: str) -> tuple:
    if backend_name != "numpy" and record.gpu_dtypes is not None:
        return tuple(record.gpu_dtypes)
    return tuple(record.dtypes)


def samples_for(record: Any, count: int) -> list[Any]:
    """The record's largest sample (most elements: several blocks, the grid-stride loops'
    rounds), then its smallest (the edge sizes): ``count`` (1 or 2) in all."""
    listed = list(record.samples(numpy.random.default_rng(0)))
    by_size = sorted(listed, key=lambda s: sum(numpy.size(x) for x in s.inputs))
    chosen = [by_size[-1]]
    if count > 1 and len(by_size) > 1:
        chosen.append(by_size[0])
    return chosen


def _close(actual: Any, expected: Any, tol: tuple, what: str) -> str | None:
    """None when ``actual`` matches ``expected`` within ``tol``; else the mismatch."""
    rtol, atol = tol
    try:
        numpy.testing.assert_allclose(numpy.asarray(actual, dtype=F64), expected, rtol=rtol,
                                      atol=atol, err_msg=what, equal_nan=True)
    except AssertionError as error:
        return " ".join(str(error).split())[:400]
    return None


def check_case(record: Any, test_backend: Any, dtype: numpy.dtype, sample: Any) -> list[str]:
    """The forward and each gradient of one call against the float64 references; the
    list of what failed (empty when all passed)."""
    problems: list[str] = []
    params = sample.params
    inputs = record.cast(sample.inputs, dtype)
    inputs64 = record.cast(inputs, F64)
    expected = record.ref(*inputs64, **params)
    op = record.op
    with test_backend.active():
        dev = test_backend.asarrays(inputs)
        y = op.forward(*dev, **params)
    result_dtype = numpy.result_type(*[x.dtype for x in inputs
                                       if isinstance(x, numpy.ndarray) and x.dtype.kind == "f"])
    if y.dtype != result_dtype:
        problems.append(f"forward: dtype {y.dtype}, expected {result_dtype}")
    if tuple(y.shape) != numpy.shape(expected):
        problems.append(f"forward: shape {tuple(y.shape)}, expected {numpy.shape(expected)}")
    else:
        mismatch = _close(test_backend.to_numpy(y), expected, record.tolerance(dtype), "forward")
        if mismatch:
            problems.append(mismatch)
    gy = numpy.random.default_rng(2).standard_normal(numpy.shape(expected)).astype(dtype)
    y64 = None
    for k in sorted(op.grads):
        if k in record.grad_refs:
            reference = record.grad_refs[k](*inputs64, expected, gy.astype(F64), **params)
        else:  # the NumPy implementation of the gradient, in float64
            if y64 is None:
                y64 = op.forward(*inputs64, **params)
            reference = op.grads[k](*inputs64, y64, gy.astype(F64), **params)
        with test_backend.active():
            g = op.grads[k](*dev, y, test_backend.asarray(gy), **params)
        what = f"{record.name}_wrt_x{k}"
        if tuple(g.shape) != numpy.shape(reference):
            problems.append(f"{what}: shape {tuple(g.shape)}, expected {numpy.shape(reference)}")
            continue
        mismatch = _close(test_backend.to_numpy(g), reference, record.tolerance(dtype), what)
        if mismatch:
            problems.append(mismatch)
    return problems


def run(args: argparse.Namespace) -> dict[str, Any]:
    from opinfo import sample_id
    test_backend = backend(args.backend)
    if args.no_memory_pool and args.backend == "cupy":
        import cupy
        # every array its own cudaMalloc: memcheck sees an access past an array's end
        # (inside a pool's larger block it would be a valid address)
        cupy.cuda.set_allocator(None)
    dtype_filter = {numpy.dtype(d) for d in args.dtype} if args.dtype else None
    report: dict[str, Any] = {"backend": args.backend, "samples": args.samples,
                              "dtypes": sorted(str(d) for d in dtype_filter or ()),
                              "cases": 0, "passed": 0, "failures": [], "per_family": {},
                              "interrupted": False}
    start = time.perf_counter()
    try:
        for record in records(args.family, args.op, args.shared_memory_only, args.breadth_first):
            family = gpuops.OPERATORS[record.name].family
            tally = report["per_family"].setdefault(family, {"cases": 0, "failed": 0})
            for dtype in dtypes_for(record, args.backend):
                dtype = numpy.dtype(dtype)
                if dtype_filter is not None and dtype not in dtype_filter:
                    continue
                for sample in samples_for(record, args.samples):
                    key = f"{record.name}/{dtype.name}/{sample_id(sample)}"
                    print(f"== {key}", flush=True)
                    try:
                        problems = check_case(record, test_backend, dtype, sample)
                    except Exception as error:  # a crash is a failure of this case
                        problems = [f"{type(error).__name__}: {error}"[:400]]
                        traceback.print_exc()
                    report["cases"] += 1
                    tally["cases"] += 1
                    if problems:
                        tally["failed"] += 1
                        report["failures"].append({"case": key, "family": family,
                                                   "problems": problems})
                        print(f"FAIL {key}: " + " | ".join(problems), flush=True)
                    else:
                        report["passed"] += 1
                        print("ok", flush=True)
    except KeyboardInterrupt:
        report["interrupted"] = True
    report["seconds"] = round(time.perf_counter() - start, 2)
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="cupy", choices=("cupy", "emu", "numpy"))
    parser.add_argument("--family", action="append", help="only this family (repeatable)")
    parser.add_argument("--op", action="append", help="only this operator (repeatable)")
    parser.add_argument("--dtype", action="append", help="only this dtype (repeatable)")
    parser.add_argument("--samples", type=int, default=2, help="samples per record and dtype")
    parser.add_argument("--shared-memory-only", action="store_true",
                        help="only families whose kernels declare __shared__ memory")
    parser.add_argument("--breadth-first", action="store_true",
                        help="every family's first operator, then every family's second, ...")
    parser.add_argument("--no-memory-pool", action="store_true",
                        help="cupy: allocate every array with its own cudaMalloc (for memcheck)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    state = " (interrupted)" if report["interrupted"] else ""
    print(f"gpu_check {args.backend}: {report['passed']} of {report['cases']} cases passed, "
          f"{len(report['failures'])} failed, {report['seconds']} s{state}")
    for failure in report["failures"]:
        print(f"  FAIL {failure['case']}: {failure['problems'][0]}")
    if report["interrupted"]:
        return 130
    return FAILED if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
