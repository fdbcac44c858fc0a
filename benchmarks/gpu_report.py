"""The bookkeeping of ``benchmarks/gpu_session.sh``: reads compute-sanitizer logs, and
gathers the stages' files into one summary.

    python benchmarks/gpu_report.py sanitizer LOG --json PATH
        the tool's error count (its ERROR/RACECHECK SUMMARY lines, or, when the run was cut
        off before them, its report lines), each report attributed to the case that
        ``gpu_check.py`` announced last (``== <op>/<dtype>/<sample>``)
    python benchmarks/gpu_report.py summary WORKDIR
        WORKDIR/stages.tsv (stage, status, seconds, note, as the session wrote them) and
        each stage's JSON -> WORKDIR/session.json and WORKDIR/summary.txt; prints the
        summary

Standard library only: it runs on a machine without a GPU (where every stage skipped).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

_HEADLINE = re.compile(r"^========= (Invalid|Race|Error|Uninitialized|Barrier|Warning|"
                       r"Program hit|Malloc|Leaked|Cuda API error)")
_SUMMARY = re.compile(r"(ERROR|RACECHECK) SUMMARY: (\d+) (error|hazard)")
_RACE_ERRORS = re.compile(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?")


def sanitizer(log: str) -> dict[str, Any]:
    """Error count and the cases the reports fall in, from one compute-sanitizer log."""
    case = "(before the first case)"
    by_case: dict[str, int] = {}
    headlines = 0
    summary: int | None = None
    for line in log.splitlines():
        if line.startswith("== ") and not line.startswith("=== "):
            case = line[3:].strip()
        elif _HEADLINE.match(line):
            headlines += 1
            by_case[case] = by_case.get(case, 0) + 1
        race = _RACE_ERRORS.search(line)
        match = _SUMMARY.search(line)
        if race:
            summary = (summary or 0) + int(race.group(1))
        elif match:
            summary = (summary or 0) + int(match.group(2))
    cases = sum(1 for line in log.splitlines() if line.startswith("== "))
    finished = summary is not None
    return {"errors": summary if finished else headlines, "summary_seen": finished,
            "report_lines": headlines, "cases_started": cases, "by_case": by_case}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stages(work: Path) -> list[dict[str, str]]:
    rows = []
    path = work / "stages.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                rows.append({"stage": parts[0], "status": parts[1], "seconds": parts[2],
                             "note": parts[3] if len(parts) > 3 else ""})
    return rows


def summary(work: Path) -> list[str]:
    """The summary lines; writes session.json (every stage's figures) and summary.txt."""
    stages = _stages(work)
    session: dict[str, Any] = {"stages": stages}
    lines = ["== gpu_session summary"]
    for row in stages:
        lines.append(f"stage {row['stage']}: {row['status']} ({row['seconds']} s)"
                     + (f": {row['note']}" if row["note"] else ""))
    versions = _load(work / "versions.json")
    if versions:
        session["versions"] = versions
        if "gpu" in versions:
            lines.append(f"device: {versions['gpu']}, CUDA runtime {versions['cuda_runtime']}, "
                         f"driver {versions['cuda_driver']}, CuPy {versions['cupy']}, "
                         f"PyTorch {versions.get('torch')}; copy {versions['copy_gbps_best']} GB/s")
    for label in ("cold", "warm"):
        start = _load(work / f"start_{label}.json")
        if start:
            session[f"start_{label}"] = start
            families = start.get("families", {})
            modules = sum(r.get("module_s", 0) for r in families.values())
            lines.append(f"{label} start: {start.get('to_last_result_s')} s to the first result "
                         f"of {len(families)} families (import {start.get('import_s')} s, "
                         f"modules {modules:.2f} s)"
                         + (" INTERRUPTED" if start.get("interrupted") else ""))
            lines += [f"  FAILED {family}: {row['error'][:160]}"
                      for family, row in families.items() if "error" in row]
    check = _load(work / "check.json")
    if check:
        session["check"] = check
        lines.append(f"check: {check['passed']} of {check['cases']} cases passed, "
                     f"{len(check['failures'])} failed"
                     + (" INTERRUPTED" if check.get("interrupted") else ""))
        lines += [f"  FAIL {f['case']}: {f['problems'][0][:160]}" for f in check["failures"][:20]]
    for tool in ("memcheck", "racecheck"):
        found = _load(work / f"sanitize_{tool}.json")
        if found:
            session[f"sanitize_{tool}"] = found
            where = ", ".join(f"{c} ({n})" for c, n in list(found["by_case"].items())[:5])
            lines.append(f"{tool}: {found['errors']} errors over {found['cases_started']} cases"
                         + ("" if found["summary_seen"] else " (no summary: cut off)")
                         + (f"; in {where}" if where else ""))
    bench = sorted(work.glob("bench/*.json"))
    if bench:
        results = _load(bench[0]) or {}
        session["bench"] = {"file": bench[0].name, "cases": len(results.get("results", [])),
                            "copy_gbps": results.get("copy_gbps"),
                            "warm_start": results.get("warm_start")}
        lines.append(f"bench: {len(results.get('results', []))} cases in {bench[0].name}")
    ncu = _load(work / "ncu.json")
    if ncu:
        session["ncu"] = ncu
        lines.append(f"ncu: {len(ncu['launches'])} launches with counters"
                     + (f"; {len(ncu['unmatched_launches'])} launches without"
                        if ncu["unmatched_launches"] else ""))
    (work / "session.json").write_text(json.dumps(session, indent=1) + "\n")
    (work / "summary.txt").write_text("\n".join(lines) + "\n")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_report.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    san = sub.add_parser("sanitizer")
    san.add_argument("log", type=Path)
    san.add_argument("--json", type=Path, required=True)
    summ = sub.add_parser("summary")
    summ.add_argument("work", type=Path)
    args = parser.parse_args(argv)
    if args.what == "sanitizer":
        text = args.log.read_text(errors="replace") if args.log.is_file() else ""
        found = sanitizer(text)
        args.json.write_text(json.dumps(found, indent=1) + "\n")
        print(f"{found['errors']} errors over {found['cases_started']} cases"
              + ("" if found["summary_seen"] else " (no summary line: cut off)"))
        return 0
    print("\n".join(summary(args.work)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
