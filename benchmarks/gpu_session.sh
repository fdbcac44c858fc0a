#!/usr/bin/env bash
# The GPU programme (issues 8 and 13). From the repository root on a machine with an NVIDIA GPU:
#
#   bash benchmarks/gpu_session.sh            # the whole programme in at most 9 minutes (below)
#   bash benchmarks/gpu_session.sh check      # longer follow-ups, each a 10-minute command:
#   bash benchmarks/gpu_session.sh tests      #   versions and one call of every family; the suite
#   bash benchmarks/gpu_session.sh slow       #   on the CuPy backend (not slow); the >2^31-element
#   bash benchmarks/gpu_session.sh sanitize   #   tests; compute-sanitizer over every op's parity
#   bash benchmarks/gpu_session.sh bench      #   test; python -m benchmarks (add "quick": --quick)
#
# With no argument, six stages run in this order, each in its own time box: the Python
# drivers get SIGINT at the box (timeout --signal=INT), write what they have and stop, and
# the next stage still runs. The boxes are clipped to a budget of GPU_SESSION_BUDGET seconds
# (default 510) for all six, so the whole stays under 9 minutes (GPU_SESSION_BOXES="40 150 70
# 130 80 40" sets the six boxes):
#   1 versions  40 s  nvidia-smi, driver, CUDA runtime, CuPy, NumPy, PyTorch, the device, and
#                     the device-to-device copy of 1 GiB (benchmarks/gpu_probe.py versions)
#   2 start    150 s  every family compiled with an empty kernel cache and its first call
#                     (cold), then the same in a fresh process with that cache (warm: the
#                     warm-start figure) (benchmarks/gpu_probe.py start)
#   3 check     70 s  every operator's forward and gradients on the CuPy backend against the
#                     float64 references, every dtype of its record, two samples each
#                     (benchmarks/gpu_check.py), with the list of failures
#   4 sanitize 130 s  compute-sanitizer memcheck over every operator's forward and gradients
#                     (float32, one sample, CuPy's memory pool off so that every array is its
#                     own allocation), then racecheck over the families whose kernels use
#                     shared memory; error counts attributed to the case
#   5 bench     80 s  python -m benchmarks over elementwise, activation (with float16 and
#                     bfloat16 cases), softmax, loss (fused softmax-cross-entropy), matmul
#                     (against cuBLAS), training (MLP step eager, CUDA graph and bf16 autocast;
#                     CNN step; against PyTorch) and overhead (per-call time of tiny calls
#                     against PyTorch's CUDA eager calls)
#   6 ncu       40 s  Nsight Compute (--clock-control none) memory counters of six kernels,
#                     keyed by case/launch/kernel, beside the emulator's counters for the
#                     same launches (computed on the CPU during stages 3-4; benchmarks/gpu_ncu.py)
# It leaves at most 6 files in $OUT: summary.txt, session.json (every stage's figures),
# ncu.json, the benchmark's .json and .md, and gpu_session_logs.tar.gz (every log and raw
# file); the summary is printed last. Without a GPU every stage is skipped with its reason
# and the exit status is 0. Kernels compiled in stage 2 stay cached for stages 3-6.
#
# The subcommands write their logs to $OUT too (what the device tool brings back;
# /tmp/gpuops-out elsewhere) and cache kernels in /tmp/gpuops-kernels, shared by the stages of
# one machine. The emulator backend is off (GPUOPS_TEST_EMU=0): CI runs it.
set -u
stage=${1:-all}
OUT=${OUT:-/tmp/gpuops-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" GPUOPS_TEST_EMU=0 PYTHONUNBUFFERED=1
PYTEST=("$PY" -m pytest -p no:cacheprovider -q -rfE)

summary() { echo "== $stage: $*"; }

# Why this machine cannot run the GPU stages; empty when it can.
no_gpu_reason() {
    command -v nvidia-smi > /dev/null 2>&1 || { echo "no GPU: nvidia-smi not found"; return; }
    timeout 30 nvidia-smi -L > /dev/null 2>&1 || { echo "no GPU: nvidia-smi lists no device"; return; }
    timeout 60 "$PY" -c "import cupy" > /dev/null 2>&1 || { echo "no GPU: CuPy does not import"; return; }
    timeout 60 "$PY" -c "import sys, gpuops; sys.exit(0 if gpuops.gpu_available() else 1)" \
        > /dev/null 2>&1 || echo "no GPU: CuPy sees no CUDA device"
}

# bounded SECONDS COMMAND...: the command, interrupted (SIGINT) at SECONDS (at least 1: a
# timeout of 0 would be none), killed 10 s later.
bounded() {
    local secs=$(( $1 > 1 ? $1 : 1 ))
    shift
    timeout --signal=INT --kill-after=10 "$secs" "$@"
}

stage_versions() {
    { date -u; timeout 10 nvidia-smi
      timeout 10 nvidia-smi --format=csv --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,power.draw,power.limit
      for tool in nvcc compute-sanitizer ncu; do
          command -v "$tool" && timeout 10 "$tool" --version | tail -n 2
      done; } > "$WORK/versions.log" 2>&1
    bounded "$1" "$PY" benchmarks/gpu_probe.py versions --json "$WORK/versions.json" \
        >> "$WORK/versions.log" 2>&1
    local rc=$?
    NOTE=$(tail -n 1 "$WORK/versions.log")
    return $rc
}

stage_start() {
    local s0=$SECONDS rc warm_rc warm
    bounded $(( $1 > 60 ? $1 - 30 : $1 / 2 )) "$PY" benchmarks/gpu_probe.py start \
        --json "$WORK/start_cold.json" > "$WORK/start_cold.log" 2>&1
    rc=$?
    NOTE="cold: $(tail -n 1 "$WORK/start_cold.log")"
    warm=$(( $1 - (SECONDS - s0) ))
    if (( warm < 5 )); then NOTE+="; warm: no time left"; return 124; fi
    bounded "$warm" "$PY" benchmarks/gpu_probe.py start --json "$WORK/start_warm.json" \
        > "$WORK/start_warm.log" 2>&1
    warm_rc=$?
    (( rc == 0 )) && rc=$warm_rc
    NOTE+="; warm: $(tail -n 1 "$WORK/start_warm.log")"
    return $rc
}

stage_check() {
    bounded "$1" "$PY" benchmarks/gpu_check.py --backend cupy --samples 2 \
        --json "$WORK/check.json" > "$WORK/check.log" 2>&1
    local rc=$?
    NOTE=$(grep "^gpu_check " "$WORK/check.log" | tail -n 1)
    [ -n "$NOTE" ] || NOTE=$(tail -n 1 "$WORK/check.log")
    return $(( rc == 3 ? 0 : rc ))  # 3: cases failed, listed in the summary
}

# sanitize TOOL SECONDS [gpu_check options]: gpu_check.py under compute-sanitizer's TOOL.
sanitize() {
    local tool=$1 secs=$2 rc
    shift 2
    # the driver gets SIGINT 10 s before the box, so the tool has time to print its summary
    timeout --kill-after=10 "$secs" compute-sanitizer --tool "$tool" --target-processes all \
        timeout --signal=INT --kill-after=5 $(( secs > 20 ? secs - 10 : secs / 2 + 1 )) \
        "$PY" benchmarks/gpu_check.py --backend cupy --samples 1 --dtype float32 \
        --breadth-first --no-memory-pool --json "$WORK/sanitize_${tool}_check.json" "$@" \
        > "$WORK/sanitize_$tool.log" 2>&1
    rc=$?
    NOTE+="$tool: $("$PY" benchmarks/gpu_report.py sanitizer "$WORK/sanitize_$tool.log" \
        --json "$WORK/sanitize_$tool.json"); "
    return $rc
}

stage_sanitize() {
    local s0=$SECONDS rc race_rc race
    sanitize memcheck $(( $1 * 3 / 5 ))
    rc=$?
    race=$(( $1 - (SECONDS - s0) ))
    if (( race < 20 )); then NOTE+="racecheck: no time left"; return 124; fi
    sanitize racecheck "$race" --shared-memory-only
    race_rc=$?
    (( rc == 0 )) && rc=$race_rc
    return $(( rc == 3 ? 0 : rc ))  # 3: gpu_check's failed cases (the check stage lists them)
}

stage_bench() {
    bounded "$1" "$PY" -m benchmarks --family elementwise --family activation --family softmax \
        --family loss --family matmul --family training --family overhead --out "$WORK/bench" \
        > "$WORK/bench.log" 2>&1
    local rc=$?
    NOTE="$(grep -c " ms " "$WORK/bench.log") cases timed; $(tail -n 1 "$WORK/bench.log")"
    return $rc
}

stage_ncu() {
    local metrics rc
    metrics=$("$PY" benchmarks/gpu_ncu.py metrics) || return 1
    # the report file first, then its raw page as CSV (ncu --import): the documented route
    timeout --kill-after=10 "$(( $1 > 20 ? $1 - 10 : $1 ))" ncu --clock-control none \
        --target-processes all --kernel-name 'regex:.*_f(16|32|64)$' --metrics "$metrics" \
        --export "$WORK/ncu" --force-overwrite \
        "$PY" benchmarks/gpu_ncu.py run --backend cupy --manifest "$WORK/ncu_launches.json" \
        > "$WORK/ncu.log" 2>&1
    rc=$?
    timeout 10 ncu --import "$WORK/ncu.ncu-rep" --csv --page raw > "$WORK/ncu.csv" 2>> "$WORK/ncu.log"
    "$PY" benchmarks/gpu_ncu.py join --manifest "$WORK/ncu_launches.json" \
        --csv "$WORK/ncu.csv" "$WORK/ncu.log" --emu "$WORK/ncu_emu.json" --json "$WORK/ncu.json" \
        > "$WORK/ncu_join.log" 2>&1
    NOTE="$(head -n 1 "$WORK/ncu_join.log"); emulator's counters: $EMU_STATUS"
    return $rc
}

# The emulator's counters for stage 6's launches (gpu_ncu.py run --backend emu-counters), on
# the CPU at the lowest priority beside stages 3 and 4 (correctness checks, not timings);
# stopped before the benchmarks if not done. GPU_SESSION_EMU=0: not run.
start_emu() {
    EMU_PID=""
    EMU_STATUS="not run (GPU_SESSION_EMU=0)"
    [ "${GPU_SESSION_EMU:-1}" = 0 ] && return
    EMU_STATUS="not run (no g++)"
    command -v g++ > /dev/null 2>&1 || return
    nice -n 19 "$PY" benchmarks/gpu_ncu.py run --backend emu-counters \
        --manifest "$WORK/ncu_emu.json" > "$WORK/ncu_emu.log" 2>&1 &
    EMU_PID=$!
    EMU_STATUS="running"
}

stop_emu() {
    [ -n "$EMU_PID" ] || return
    if kill -0 "$EMU_PID" 2> /dev/null; then
        kill "$EMU_PID"
        EMU_STATUS="cut off before the benchmarks (ncu_emu.log)"
    else
        EMU_STATUS="done"
    fi
    wait "$EMU_PID" 2> /dev/null
    [ "$EMU_STATUS" = done ] && [ ! -f "$WORK/ncu_emu.json" ] && EMU_STATUS="failed (ncu_emu.log)"
}

# run_stage NUMBER NAME BOX FUNCTION [TOOL]: the stage in its box (clipped to what is left of
# the budget), or skipped with the reason; one line of $WORK/stages.tsv either way.
run_stage() {
    local n=$1 name=$2 box=$3 fn=$4 tool=${5:-} reason="" left s0 rc status
    left=$(( BUDGET - (SECONDS - T0) ))
    if [ -n "$NOGPU" ]; then
        reason=$NOGPU
    elif [ -n "$tool" ] && ! command -v "$tool" > /dev/null 2>&1; then
        reason="$tool not found"
    elif (( left < 15 )); then
        reason="no time left of the $BUDGET-second budget"
    fi
    if [ -n "$reason" ]; then
        printf '%s\t%s\t%s\t%s\n' "$n $name" skipped 0 "$reason" >> "$WORK/stages.tsv"
        echo "stage $n $name: skipped ($reason)"
        return
    fi
    (( left < box )) && box=$left
    echo "stage $n $name: running, box $box s"
    NOTE=""
    s0=$SECONDS
    "$fn" "$box"
    rc=$?
    case $rc in
        0) status=done ;;
        124|130|137) status="cut off at its box" ;;
        *) status="ended with rc=$rc" ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$n $name" "$status" $(( SECONDS - s0 )) "${NOTE//$'\t'/ }" \
        >> "$WORK/stages.tsv"
    echo "stage $n $name: $status after $(( SECONDS - s0 )) s: $NOTE"
}

programme() {
    T0=$SECONDS
    BUDGET=${GPU_SESSION_BUDGET:-510}
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_session.XXXXXX")
    export CUPY_CACHE_DIR="$WORK/kernels"  # empty: stage 2 compiles cold, later stages reuse it
    mkdir -p "$CUPY_CACHE_DIR"
    : > "$WORK/stages.tsv"
    NOGPU=$(no_gpu_reason)
    local boxes
    read -r -a boxes <<< "${GPU_SESSION_BOXES:-40 150 70 130 80 40}"
    run_stage 1 versions "${boxes[0]}" stage_versions
    run_stage 2 start "${boxes[1]}" stage_start
    EMU_PID=""
    EMU_STATUS="not run (no GPU)"
    [ -n "$NOGPU" ] || start_emu
    run_stage 3 check "${boxes[2]}" stage_check
    run_stage 4 sanitize "${boxes[3]}" stage_sanitize compute-sanitizer
    stop_emu
    run_stage 5 bench "${boxes[4]}" stage_bench
    run_stage 6 ncu "${boxes[5]}" stage_ncu ncu
    if ! "$PY" benchmarks/gpu_report.py summary "$WORK" > "$WORK/summary.log" 2>&1; then
        { echo "== gpu_session summary (gpu_report.py failed: see summary.log)"
          cat "$WORK/stages.tsv"; } > "$WORK/summary.txt"
    fi
    for path in "$WORK"/summary.txt "$WORK"/session.json "$WORK"/ncu.json "$WORK"/bench/*.json \
                "$WORK"/bench/*.md; do
        [ -f "$path" ] && cp "$path" "$OUT/"
    done
    tar -czf "$OUT/gpu_session_logs.tar.gz" -C "$WORK" --exclude=./kernels .
    cat "$WORK/summary.txt"
    echo "== $(ls "$OUT" | wc -l) files in $OUT after $(( SECONDS - T0 )) s"
    rm -rf "$WORK"
}

[ "$stage" = all ] || export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-/tmp/gpuops-kernels}
case "$stage" in
all)
    programme ;;
check)
    { nvidia-smi; date -u; "$PY" -m gpuops info
      "$PY" -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'cuda',
cupy.cuda.runtime.runtimeGetVersion(), 'driver', cupy.cuda.runtime.driverGetVersion());
print('numpy', numpy.__version__, 'torch', torch.__version__)"
      command -v compute-sanitizer g++ nvcc; } > "$OUT/check.log" 2>&1
    # one forward and gradient call of every operator on the GPU (compiles every family)
    timeout 500 "${PYTEST[@]}" -m gpu tests/ops/test_ops.py -k "parity and float32" -x \
        > "$OUT/check_pytest.log" 2>&1
    rc=$?
    tail -n 25 "$OUT/check.log"; tail -n 5 "$OUT/check_pytest.log"
    summary "pytest rc=$rc" ;;
tests)
    timeout 570 "${PYTEST[@]}" -m "gpu and not slow" --durations=15 \
        --junitxml="$OUT/junit.xml" > "$OUT/tests.log" 2>&1
    rc=$?
    grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -n 40; tail -n 3 "$OUT/tests.log"
    summary "pytest rc=$rc (124: the time limit; rerun with a -k subset)" ;;
slow)
    timeout 570 "${PYTEST[@]}" -m "gpu and slow" -s > "$OUT/slow.log" 2>&1
    rc=$?
    tail -n 15 "$OUT/slow.log"
    summary "pytest rc=$rc" ;;
sanitize)
    # every operator's forward and gradients once (the float32 parity tests), under each tool;
    # then the planted bugs each tool must flag (tests/infrastructure/test_gpu_sanitizer.py)
    for tool in memcheck racecheck; do
        timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 3 \
            "${PYTEST[@]}" -m gpu tests/ops/test_ops.py -k "parity and float32" -x \
            > "$OUT/sanitize_$tool.log" 2>&1
        echo "$tool rc=$?: $(grep -cE 'ERROR SUMMARY: [1-9]|Invalid|Race reported' \
            "$OUT/sanitize_$tool.log") report lines; $(tail -n 1 "$OUT/sanitize_$tool.log")"
    done
    timeout 100 "${PYTEST[@]}" tests/infrastructure/test_gpu_sanitizer.py > "$OUT/sanitize_planted.log" 2>&1
    echo "planted bugs rc=$?: $(tail -n 1 "$OUT/sanitize_planted.log")"
    summary "logs in sanitize_*.log (rc 3: the tool reported errors; 124: the time limit)" ;;
bench)
    args=()
    [ "${2:-}" = quick ] && args=(--quick)
    timeout 570 "$PY" -m benchmarks "${args[@]}" > "$OUT/bench.log" 2>&1
    rc=$?
    cp benchmarks/results/*.json benchmarks/results/*.md "$OUT/" 2>/dev/null
    tail -n 40 "$OUT/bench.log"
    summary "rc=$rc; results copied to \$OUT" ;;
*)
    echo "unknown stage $stage" >&2
    exit 2 ;;
esac
