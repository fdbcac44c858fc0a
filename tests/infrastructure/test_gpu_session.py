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
