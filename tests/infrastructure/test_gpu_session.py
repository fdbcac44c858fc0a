"""``bash benchmarks/gpu_session.sh`` (the whole GPU programme) on a machine without a GPU:
every stage skipped with its reason, exit status 0, at most 8 files left in $OUT; and the
Python drivers of its stages on the CPU (benchmarks/gpu_check.py, gpu_ncu.py, gpu_report.py)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks import gpu_check, gpu_ncu, gpu_report  # noqa: E402

STAGES = ("1 versions", "2 start", "3 check", "4 sanitize", "5 bench", "6 ncu")


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_whole_programme_without_a_gpu_skips_every_stage(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the no-GPU path is tested where there is none")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for stage in STAGES:
        assert f"stage {stage}: skipped (no GPU: nvidia-smi not found)" in done.stdout
    assert "== gpu_session summary" in done.stdout
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8
    assert {"summary.txt", "session.json", "gpu_session_logs.tar.gz"} <= set(files)
    session = json.loads((out / "session.json").read_text())
    assert [s["stage"] for s in session["stages"]] == list(STAGES)
    assert {s["status"] for s in session["stages"]} == {"skipped"}
    with tarfile.open(out / "gpu_session_logs.tar.gz") as archive:
        assert "./stages.tsv" in archive.getnames()
    assert not list(tmp_path.glob("gpu_session.*")), "the work folder is removed"


# A machine that looks like it has a GPU: nvidia-smi, compute-sanitizer and ncu stand-ins that
# run the command they wrap, and a ``cupy`` that finds one device whose Device() never
# answers (stage 1 hangs until its box) and that has no arrays (the later stages fail fast).
_STUBS = {
    "nvidia-smi": 'echo "GPU 0: stand-in"',
    "compute-sanitizer": 'while [ $# -gt 0 ] && [ "$1" != timeout ]; do shift; done\n'
                         '[ $# -gt 0 ] || exit 0\n"$@"; rc=$?\n'
                         'echo "========= ERROR SUMMARY: 0 errors"\nexit $rc',
    "ncu": 'while [ $# -gt 0 ] && [[ "$1" != *python* ]]; do shift; done\n'
           '[ $# -gt 0 ] || exit 0\nexec "$@"',
}
_FAKE_CUPY = """
import time
class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1
class _Device:
    def __init__(self, *args):
        time.sleep(120)
class cuda:
    runtime = _Runtime
    Device = _Device
"""


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_a_stage_stops_at_its_box_and_the_next_still_runs(tmp_path):
    """The GPU path's plumbing on stand-ins: stage 1 hangs and is cut at its 3-second box
    (its driver writes what it has), stages 2-6 still run (and fail: no real CuPy), and
    the summary and at most 8 files come out."""
    bin_dir, py_dir, out = tmp_path / "bin", tmp_path / "py" / "cupy", tmp_path / "out"
    bin_dir.mkdir()
    py_dir.mkdir(parents=True)
    for name, body in _STUBS.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    (py_dir / "__init__.py").write_text(_FAKE_CUPY)
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(tmp_path / "py"), "GPU_SESSION_BOXES": "3 20 20 30 20 20",
           "GPU_SESSION_EMU": "0"}
    done = subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    session = json.loads((out / "session.json").read_text())
    status = {s["stage"]: s for s in session["stages"]}
    assert status["1 versions"]["status"] == "cut off at its box"
    assert int(status["1 versions"]["seconds"]) < 15
    assert session["versions"]["interrupted"] is True
    for stage in STAGES[1:]:
        assert status[stage]["status"] != "skipped", status[stage]
    assert session["check"]["cases"] > 0 and not session["check"]["passed"]
    assert "memcheck: 0 errors" in status["4 sanitize"]["note"]
    assert "emulator's counters: not run (GPU_SESSION_EMU=0)" in status["6 ncu"]["note"]
    assert "== gpu_session summary" in done.stdout
    assert len(list(out.iterdir())) <= 8


def test_gpu_session_script_parses():
    subprocess.run(["bash", "-n", "benchmarks/gpu_session.sh"], cwd=ROOT, check=True)


def test_check_driver_passes_the_numpy_backend(tmp_path):
    report_path = tmp_path / "check.json"
    code = gpu_check.main(["--backend", "numpy", "--family", "softmax", "--family",
                           "transpose", "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert code == 0
    assert report["cases"] > 0 and report["passed"] == report["cases"]
    assert set(report["per_family"]) == {"softmax", "transpose"}


def test_check_driver_interrupted_keeps_what_it_checked(tmp_path, monkeypatch):
    """SIGINT (the session's time box) in the middle: the cases done are reported, exit 130."""
    calls = []
    original = gpu_check.check_case

    def check_then_interrupt(*args):
        calls.append(args)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(gpu_check, "check_case", check_then_interrupt)
    report_path = tmp_path / "check.json"
    code = gpu_check.main(["--backend", "numpy", "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert code == 130
    assert report["interrupted"] and report["cases"] == report["passed"] == 3


def test_check_driver_reports_a_wrong_forward_and_gradient():
    from backends import TestBackend
    record = gpu_check.records(ops=["relu"])[0]
    wrong = dataclasses.replace(record, ref=lambda x, **_: numpy.maximum(x, 0) + 1e-3,
                                grad_refs={1: lambda x, y, gy, **_: gy})
    sample = gpu_check.samples_for(record, 1)[0]
    problems = gpu_check.check_case(wrong, TestBackend(), numpy.dtype(numpy.float64), sample)
    assert len(problems) == 2
    assert "forward" in problems[0] and "relu_wrt_x1" in problems[1]


def test_check_driver_takes_every_family_first_when_breadth_first():
    chosen = gpu_check.records(breadth_first=True)
    families = [gpu_check.gpuops.OPERATORS[r.name].family for r in chosen]
    distinct = len(set(families))
    assert len(set(families[:distinct])) == distinct
    assert sorted(r.name for r in chosen) == sorted(r.name for r in gpu_check.records())


def _ncu_csv(rows: list[dict[str, str]]) -> str:
    header = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context",
              "Stream", "Block Size", "Grid Size", "Device", "CC", *gpu_ncu.METRICS]
    quote = lambda cells: ",".join(f'"{c}"' for c in cells)  # noqa: E731
    lines = ["==PROF== Connected to process 1 (python3)", quote(header),
             quote(["", "", "", "", "", "", "", "", "", "", "", *["sector"] * len(gpu_ncu.METRICS)])]
    for i, row in enumerate(rows):
        cells = {"ID": str(i), "Kernel Name": row["kernel"], **row["metrics"]}
        lines.append(quote([cells.get(h, "0") for h in header]))
    return "\n".join(lines + ["==PROF== Disconnected from process 1"]) + "\n"


def test_ncu_driver_keys_launches_and_joins_counters(tmp_path):
    manifest = tmp_path / "launches.json"
    assert gpu_ncu.main(["run", "--backend", "recording", "--manifest", str(manifest)]) == 0
    launches = json.loads(manifest.read_text())["launches"]
    assert {launch["case"] for launch in launches} == set(gpu_ncu.CASES)
    assert launches[0]["key"] == f"{launches[0]['case']}/0/{launches[0]['kernel']}"
    metrics = {"l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum": "2,048",
               "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum": "8192",
               "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum": "62",
               "smsp__sass_inst_executed_op_shared_ld.sum": "31"}
    profiled = [{"kernel": launch["kernel"], "metrics": metrics} for launch in launches[:-1]]
    csv_path = tmp_path / "ncu.csv"
    csv_path.write_text(_ncu_csv(profiled))
    out = tmp_path / "ncu.json"
    assert gpu_ncu.main(["join", "--manifest", str(manifest), "--csv", str(csv_path),
                         "--json", str(out)]) == 0
    joined = json.loads(out.read_text())
    first = joined["launches"][launches[0]["key"]]
    assert first["name_matches"] and first["grid"] == launches[0]["grid"]
    assert first["sectors_per_request_ld"] == 4.0
    assert first["bank_conflicts_per_shared_ld"] == 2.0
    assert joined["unmatched_launches"] == [launches[-1]["key"]]
    assert "emu" not in first

    # the emulator's manifest (as run --backend emu-counters writes it) joins key by key
    emu_launches = [dict(launch, metrics={**{m: 0 for m in gpu_ncu.METRICS},
                                          "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum": 8,
                                          "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum": 256})
                    for launch in launches[1:]]
    emu_path = tmp_path / "emu.json"
    emu_path.write_text(json.dumps({"backend": "emu-counters", "launches": emu_launches}))
    assert gpu_ncu.main(["join", "--manifest", str(manifest), "--csv", str(csv_path),
                         "--emu", str(emu_path), "--json", str(out)]) == 0
    joined = json.loads(out.read_text())
    assert "emu" not in joined["launches"][launches[0]["key"]]
    second = joined["launches"][launches[1]["key"]]
    assert second["emu"]["grid_matches"] and second["emu"]["sectors_per_request_ld"] == 32.0
    assert second["sectors_per_request_ld"] == 4.0
    assert joined["emu_keys_missing"] == [launches[0]["key"]]


def test_sanitizer_log_counts_and_attributes_errors():
    log = "\n".join([
        "========= COMPUTE-SANITIZER", "== relu/float32/16x65", "ok",
        "== add/float32/33x40-33x40",
        "========= Invalid __global__ read of size 4 bytes",
        "=========     at add_f32+0x90", "========= Invalid __global__ read of size 4 bytes",
        "FAIL add/float32/33x40-33x40: forward",
        "========= ERROR SUMMARY: 2 errors"])
    found = gpu_report.sanitizer(log)
    assert found["errors"] == 2 and found["summary_seen"]
    assert found["by_case"] == {"add/float32/33x40-33x40": 2}
    assert found["cases_started"] == 2
    cut = gpu_report.sanitizer(log.rsplit("\n", 1)[0])
    assert cut["errors"] == 2 and not cut["summary_seen"]
    race = gpu_report.sanitizer("========= RACECHECK SUMMARY: 3 hazards displayed "
                                "(1 error, 2 warnings)")
    assert race["errors"] == 1
